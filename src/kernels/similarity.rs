//! Host side of `shaders/similarity.wgsl` (CPU twin: `cpu::similarity`).

use super::{b, Access, Binding, Variant, PARAMS};
use crate::options::Similarity;
use crate::shape::DType;

pub(crate) const WG: u32 = 256;
/// Output tile rows, columns, and head dims per step (the shader's staging assumes these).
pub(crate) const TM: u32 = 128;
pub(crate) const TN: u32 = 128;
pub(crate) const TK: u32 = 16;

/// The bindings of both similarity kernels (SIMT and matrix fragments).
pub(crate) const BINDINGS: &[Binding] = &[
    PARAMS,
    b(1, "q", Access::Read),
    b(2, "k", Access::Read),
    b(3, "scores", Access::ReadWrite),
    b(4, "q_norms", Access::Read),
    b(5, "k_norms", Access::Read),
    b(6, "thresholds", Access::Read),
    b(7, "indices", Access::ReadWrite),
    b(8, "counts", Access::ReadWrite),
];

/// One variant of `shaders/similarity.wgsl`: storage dtype, metric (0 dot, 1 cosine, 2 L2),
/// vector stores of the output (`vec_out`: every output row whole vec4s), and top-k's
/// thresholded scoring pass (`topk`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SimilaritySimtKernel {
    pub dtype: DType,
    pub metric: u32,
    pub vec_out: bool,
    pub topk: bool,
}

impl Variant for SimilaritySimtKernel {
    const NAME: &'static str = "similarity";
    const SOURCE: &'static str = include_str!("../../shaders/similarity.wgsl");
    fn bindings(&self) -> &'static [Binding] {
        BINDINGS
    }

    fn dtype(&self) -> DType {
        self.dtype
    }
    fn constants(&self) -> Vec<(&'static str, u32)> {
        vec![("WG", WG), ("TM", TM), ("TN", TN), ("TK", TK), ("METRIC", self.metric), ("TOPK", self.topk as u32)]
    }
    fn preludes(&self) -> Vec<&'static str> {
        epilogue_preludes(self.vec_out)
    }
    /// The Q and K tiles, `TK × (TM + 4)` and `TK × (TN + 4)` f32.
    fn workgroup_bytes(&self) -> u32 {
        4 * TK * (TM + 4 + TN + 4)
    }
}

/// The output stores and the epilogue, shared with `similarity_mma.wgsl`.
pub(crate) fn epilogue_preludes(vec_out: bool) -> Vec<&'static str> {
    vec![
        if vec_out {
            include_str!("../../shaders/scores_vec4.wgsl")
        } else {
            include_str!("../../shaders/scores_scalar.wgsl")
        },
        include_str!("../../shaders/similarity_epilogue.wgsl"),
    ]
}

impl SimilaritySimtKernel {
    /// Every variant for `dtype`.
    #[cfg(test)]
    pub fn all(dtype: DType) -> impl Iterator<Item = SimilaritySimtKernel> {
        (0..3).flat_map(move |metric| {
            [(false, false), (true, false), (false, true), (true, true)]
                .into_iter()
                .map(move |(vec_out, topk)| SimilaritySimtKernel { dtype, metric, vec_out, topk })
        })
    }

    /// The variant for a metric (vector stores where `vec_out`: the output's rows are whole,
    /// aligned vec4s), or top-k's scoring pass.
    pub fn for_metric(dtype: DType, metric: Similarity, vec_out: bool, topk: bool) -> Self {
        let metric = match metric {
            Similarity::Dot | Similarity::ScaledDot(_) => 0,
            Similarity::Cosine => 1,
            Similarity::L2 => 2,
        };
        SimilaritySimtKernel { dtype, metric, vec_out, topk }
    }
}

