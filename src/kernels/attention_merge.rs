//! Host side of `shaders/attention_merge.wgsl`: combines the partial results of split-K
//! attention by their log-sum-exp (CPU twin: `cpu::attention_merge`).

use super::{b, Access, Binding, Variant, PARAMS};
use crate::shape::DType;

/// Threads per workgroup (one workgroup per query row).
pub(crate) const WG: u32 = 64;

/// The merge kernel for one output dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct MergeKernel {
    pub dtype: DType,
}

impl Variant for MergeKernel {
    const NAME: &'static str = "attention_merge";
    const SOURCE: &'static str = include_str!("../../shaders/attention_merge.wgsl");
    fn bindings(&self) -> &'static [Binding] {
        const BINDINGS: [Binding; 5] = [
            PARAMS,
            b(1, "partials", Access::Read),
            b(2, "out", Access::ReadWrite),
            b(3, "lse", Access::ReadWrite),
            b(4, "heads", Access::Read),
        ];
        &BINDINGS
    }

    fn dtype(&self) -> DType {
        self.dtype
    }
    fn constants(&self) -> Vec<(&'static str, u32)> {
        vec![("WG", WG)]
    }
    fn workgroup_bytes(&self) -> u32 {
        0
    }
}

