//! Host side of `shaders/weighted_sum.wgsl` (CPU twin: `cpu::weighted_sum`).

use super::{b, Access, Binding, Variant, PARAMS};
use crate::shape::DType;

pub(crate) const WG: u32 = 256;
/// Output tile rows, columns (head dims), and keys per step.
pub(crate) const TM: u32 = 64;
pub(crate) const TN: u32 = 64;
pub(crate) const TK: u32 = 16;

/// The weighted-sum kernel for one storage dtype of V and the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct WeightedSumKernel {
    pub dtype: DType,
}

impl Variant for WeightedSumKernel {
    const NAME: &'static str = "weighted_sum";
    const SOURCE: &'static str = include_str!("../../shaders/weighted_sum.wgsl");
    fn bindings(&self) -> &'static [Binding] {
        const BINDINGS: [Binding; 4] =
            [PARAMS, b(1, "weights", Access::Read), b(2, "v", Access::Read), b(3, "out", Access::ReadWrite)];
        &BINDINGS
    }

    fn dtype(&self) -> DType {
        self.dtype
    }
    fn constants(&self) -> Vec<(&'static str, u32)> {
        vec![("WG", WG), ("TM", TM), ("TN", TN), ("TK", TK)]
    }
    /// The weights and V tiles, `TK × TM` and `TK × TN` f32.
    fn workgroup_bytes(&self) -> u32 {
        4 * TK * (TM + TN)
    }
}

