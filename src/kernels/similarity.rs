//! Host side of `shaders/similarity.wgsl` (CPU twin: `cpu::similarity`).

use super::{b, Access, Binding, Kernel, Params, Variant, PARAMS};
use crate::context::Context;
use crate::error::Result;
use crate::options::Similarity;
use crate::plan::{Grid, Rows};
use crate::problem::SimilarityProblem;
use crate::record::{Arg, Launch};
use crate::shape::DType;
use crate::tensor::Tensor;

const WG: u32 = 256;
/// Output tile rows, columns, and head dims per step.
const TM: u32 = 64;
const TN: u32 = 64;
const TK: u32 = 16;

/// One variant of `shaders/similarity.wgsl`: storage dtype and metric (0 dot, 1 cosine, 2 L2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SimilarityKernel {
    pub dtype: DType,
    pub metric: u32,
}

impl Variant for SimilarityKernel {
    const NAME: &'static str = "similarity";
    const SOURCE: &'static str = include_str!("../../shaders/similarity.wgsl");
    fn bindings(&self) -> &'static [Binding] {
        const BINDINGS: [Binding; 4] =
            [PARAMS, b(1, "q", Access::Read), b(2, "k", Access::Read), b(3, "scores", Access::ReadWrite)];
        &BINDINGS
    }

    fn dtype(&self) -> DType {
        self.dtype
    }
    fn constants(&self) -> Vec<(&'static str, u32)> {
        vec![("WG", WG), ("TM", TM), ("TN", TN), ("TK", TK), ("METRIC", self.metric)]
    }
    /// The Q and K tiles, `TK × TM` and `TK × TN` f32.
    fn workgroup_bytes(&self) -> u32 {
        4 * TK * (TM + TN)
    }
}

impl SimilarityKernel {
    /// Every variant for `dtype`.
    #[cfg(test)]
    pub fn all(dtype: DType) -> impl Iterator<Item = SimilarityKernel> {
        (0..3).map(move |metric| SimilarityKernel { dtype, metric })
    }

    /// The variant for a metric.
    pub fn for_metric(dtype: DType, metric: Similarity) -> Self {
        let metric = match metric {
            Similarity::Dot | Similarity::ScaledDot(_) => 0,
            Similarity::Cosine => 1,
            Similarity::L2 => 2,
        };
        SimilarityKernel { dtype, metric }
    }
}

/// Scores of `q` against `k` into `out` (f32) for a checked problem.
pub(crate) async fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    p: &SimilarityProblem,
    q: &Tensor,
    k: &Tensor,
    out: &Tensor,
) -> Result<()> {
    let d = p.dims;
    let sc = p.scaling();
    let workgroups = |nbh: usize, nr: usize| (nbh * nr.div_ceil(TM as usize) * d.nk.div_ceil(TN as usize)) as u64;
    Launch {
        kernel: Kernel::Similarity(SimilarityKernel::for_metric(p.dtype, p.metric)),
        grid: Grid { bh: d.slices(), heads: d.heads, nq: d.nq, row_tile: TM as usize },
        args: vec![
            Arg::tensor("q", q, 1, Rows::Query, 0, 1),
            Arg::tensor("k", k, d.group(), Rows::All(d.nk), 1, 2),
            Arg::tensor("out", out, 1, Rows::Query, 2, 3),
        ],
        params: Params {
            heads: d.heads as u32,
            group: d.group() as u32,
            nq: d.nq as u32,
            nk: d.nk as u32,
            d: d.d as u32,
            pre: sc.q,
            kpre: sc.k,
            post: sc.post,
            post2: sc.post2,
            ..Params::default()
        },
        workgroups: &workgroups,
    }
    .record(ctx, encoder)
    .await
}
