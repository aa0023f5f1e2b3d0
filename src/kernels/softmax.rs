//! Host side of `shaders/softmax.wgsl` (CPU twin: `cpu::softmax`).

use super::{b, Access, Binding, Variant, PARAMS};
use crate::shape::DType;

/// Threads per workgroup (one workgroup per row).
pub(crate) const WG: u32 = 256;

/// The softmax kernel for one storage dtype: elements per thread held in registers (`e`: 4, 8 or
/// 16 for rows up to that many times `WG`; 0 streams longer rows twice), and row reductions by
/// subgroup shuffles or through workgroup memory (`sg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SoftmaxKernel {
    pub dtype: DType,
    pub e: u32,
    pub sg: bool,
}

impl SoftmaxKernel {
    /// The variant for rows of `n` columns on a device with `caps`.
    pub fn for_rows(dtype: DType, n: usize, caps: &crate::caps::Caps) -> Self {
        let e = [4u32, 8, 16].into_iter().find(|&e| n <= (e * WG) as usize).unwrap_or(0);
        SoftmaxKernel { dtype, e, sg: super::attention::subgroups_of_8(caps) }
    }

    /// Every variant for `dtype`.
    #[cfg(test)]
    pub fn all(dtype: DType) -> impl Iterator<Item = SoftmaxKernel> {
        [0u32, 4, 8, 16]
            .into_iter()
            .flat_map(move |e| [false, true].into_iter().map(move |sg| SoftmaxKernel { dtype, e, sg }))
    }
}

impl Variant for SoftmaxKernel {
    const NAME: &'static str = "softmax";
    const SOURCE: &'static str = include_str!("../../shaders/softmax.wgsl");
    fn bindings(&self) -> &'static [Binding] {
        const BINDINGS: [Binding; 6] = [
            PARAMS,
            b(1, "x", Access::Read),
            b(2, "mask", Access::Read),
            b(3, "key_lengths", Access::Read),
            b(4, "out", Access::ReadWrite),
            b(5, "heads", Access::Read),
        ];
        &BINDINGS
    }

    fn dtype(&self) -> DType {
        self.dtype
    }
    fn constants(&self) -> Vec<(&'static str, u32)> {
        vec![("WG", WG), ("E", self.e), ("ROW_LANES", 8)]
    }
    /// The partials of the reductions (and without subgroups, the 8-lane reduction buffer).
    fn workgroup_bytes(&self) -> u32 {
        4 * (WG / 8 + if self.sg { 0 } else { 2 * WG })
    }
    fn preludes(&self) -> Vec<&'static str> {
        vec![include_str!("../../shaders/masking.wgsl"), super::row_reductions(self.sg)]
    }
}

