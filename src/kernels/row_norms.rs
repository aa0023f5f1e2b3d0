//! Host side of `shaders/row_norms.wgsl`: the per-row factors of cosine similarity and the
//! squared lengths of L2 similarity, computed once per row of Q and of K before the similarity
//! GEMM (CPU twin: part of `cpu::similarity`).

use super::{b, Access, Binding, Variant, PARAMS};
use crate::shape::DType;

/// Threads (rows) per workgroup.
pub(crate) const WG: u32 = 64;

/// One variant of `shaders/row_norms.wgsl`: storage dtype and metric (1 cosine, 2 L2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RowNormsKernel {
    pub dtype: DType,
    pub metric: u32,
}

impl Variant for RowNormsKernel {
    const NAME: &'static str = "row_norms";
    const SOURCE: &'static str = include_str!("../../shaders/row_norms.wgsl");
    fn bindings(&self) -> &'static [Binding] {
        const BINDINGS: [Binding; 3] = [PARAMS, b(1, "x", Access::Read), b(2, "norms", Access::ReadWrite)];
        &BINDINGS
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn constants(&self) -> Vec<(&'static str, u32)> {
        vec![("WG", WG), ("METRIC", self.metric)]
    }
    fn workgroup_bytes(&self) -> u32 {
        0
    }
}

impl RowNormsKernel {
    /// Every variant for `dtype`.
    #[cfg(test)]
    pub fn all(dtype: DType) -> impl Iterator<Item = RowNormsKernel> {
        (1..3).map(move |metric| RowNormsKernel { dtype, metric })
    }
}

