//! Host side of `shaders/similarity.wgsl` (CPU twin: `cpu::similarity`).

use super::row_norms::{self, RowNormsKernel};
use super::similarity_mma::{self, Mma, SimilarityMmaKernel};
use super::{b, Access, Binding, Kernel, Params, Variant, PARAMS};
use crate::context::Context;
use crate::error::Result;
use crate::options::Similarity;
use crate::plan::{ArgSpec, Grid, Rows};
use crate::problem::SimilarityProblem;
use crate::record::{Arg, Launch};
use crate::shape::DType;
use crate::tensor::Tensor;

const WG: u32 = 256;
/// Output tile rows, columns, and head dims per step (the shader's staging assumes these).
const TM: u32 = 128;
const TN: u32 = 128;
const TK: u32 = 16;

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
pub(crate) struct SimilarityKernel {
    pub dtype: DType,
    pub metric: u32,
    pub vec_out: bool,
    pub topk: bool,
}

impl Variant for SimilarityKernel {
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

impl SimilarityKernel {
    /// Every variant for `dtype`.
    #[cfg(test)]
    pub fn all(dtype: DType) -> impl Iterator<Item = SimilarityKernel> {
        (0..3).flat_map(move |metric| {
            [(false, false), (true, false), (false, true), (true, true)]
                .into_iter()
                .map(move |(vec_out, topk)| SimilarityKernel { dtype, metric, vec_out, topk })
        })
    }

    /// The variant for a metric, writing `out` (vector stores where its rows allow), or top-k's
    /// scoring pass.
    pub fn for_metric(dtype: DType, metric: Similarity, out: &Tensor, topk: bool) -> Self {
        let metric = match metric {
            Similarity::Dot | Similarity::ScaledDot(_) => 0,
            Similarity::Cosine => 1,
            Similarity::L2 => 2,
        };
        let vec_out = out.vec4_aligned() && out.shape.dim.is_multiple_of(4);
        SimilarityKernel { dtype, metric, vec_out, topk }
    }
}

/// Top-k's scoring pass (one slice): where `out` and `indices` (both `[nq, nk]`, the same
/// strides) receive each row's list of the scores above its threshold, and `counts` (`[nq]`
/// u32, zeroed) their lengths.
pub(crate) struct Thresholded<'a> {
    /// Each row's threshold: element `kp - 1` of row `q` of a `[nq, row_len]` matrix.
    pub thresholds: &'a wgpu::Buffer,
    pub row_len: usize,
    pub kp: usize,
    pub indices: &'a Tensor,
    pub counts: &'a wgpu::Buffer,
    /// Index of the first key.
    pub idx0: usize,
}

/// Scores of `q` against `k` into `out` (f32) for a checked problem; with `topk`, only those
/// above each row's threshold, as lists.
pub(crate) async fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    p: &SimilarityProblem,
    q: &Tensor,
    k: &Tensor,
    out: &Tensor,
    topk: Option<&Thresholded<'_>>,
) -> Result<()> {
    // f16 on matrix fragments where the context has them (after their self-check)
    let mma = if p.dtype == DType::F16 { ctx.mma().await } else { None };
    record_with(ctx, encoder, p, q, k, out, topk, mma).await
}

/// [`record`] on the kernel given: the fragment kernel on `mma` (f16, where its workgroup memory
/// fits the device), else the SIMT kernel.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_with(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    p: &SimilarityProblem,
    q: &Tensor,
    k: &Tensor,
    out: &Tensor,
    topk: Option<&Thresholded<'_>>,
    mma: Option<Mma>,
) -> Result<()> {
    let d = p.dims;
    let sc = p.scaling();
    let kernel = SimilarityKernel::for_metric(p.dtype, p.metric, out, topk.is_some());
    let fragments = mma
        .filter(|_| p.dtype == DType::F16)
        .map(|mma| SimilarityMmaKernel {
            metric: kernel.metric,
            vec_in: d.d.is_multiple_of(4) && q.vec4_aligned() && k.vec4_aligned(),
            vec_out: kernel.vec_out,
            topk: kernel.topk,
            mma,
        })
        .filter(|m| m.workgroup_bytes() <= ctx.caps().max_workgroup_storage);
    // cosine and L2: the rows' norms first, once per row
    let norms = if kernel.metric == 0 {
        None
    } else {
        let nk = RowNormsKernel { dtype: p.dtype, metric: kernel.metric };
        let qn = row_norms::record(ctx, encoder, nk, q, sc.q).await?;
        let kn = row_norms::record(ctx, encoder, nk, k, sc.k).await?;
        Some((qn, kn))
    };
    let norm_args = match &norms {
        Some((qn, kn)) => [
            Arg::tensor("q_norms", qn, 1, Rows::Query, 3, 4),
            Arg::tensor("k_norms", kn, d.group(), Rows::All(d.nk), 4, 5),
        ],
        None => [
            Arg::whole("q_norms", &ctx.inner.placeholder_read, 4),
            Arg::whole("k_norms", &ctx.inner.placeholder_read, 5),
        ],
    };
    let (tm, tn) = match fragments {
        Some(_) => (similarity_mma::BM, similarity_mma::BN),
        None => (TM, TN),
    };
    let workgroups = |nbh: usize, nr: usize| (nbh * nr.div_ceil(tm as usize) * d.nk.div_ceil(tn as usize)) as u64;
    let mut args = vec![
        Arg::tensor("q", q, 1, Rows::Query, 0, 1),
        Arg::tensor("k", k, d.group(), Rows::All(d.nk), 1, 2),
        Arg::tensor("out", out, 1, Rows::Query, 2, 3),
    ];
    args.extend(norm_args);
    match topk {
        Some(t) => args.extend([
            Arg {
                spec: ArgSpec {
                    offset: t.kp as u64 - 1,
                    ..ArgSpec::matrix("thresholds", t.row_len, Rows::Query, t.thresholds.size())
                },
                ..Arg::matrix("thresholds", t.thresholds, t.row_len, Rows::Query, 5, 6)
            },
            // addressed through the scores' view (v2): the same strides
            Arg { view: None, ..Arg::tensor("indices", t.indices, 1, Rows::Query, 2, 7) },
            Arg::whole("counts", t.counts, 8),
        ]),
        None => args.extend([
            Arg::whole("thresholds", &ctx.inner.placeholder_read, 6),
            Arg::whole("indices", &ctx.inner.placeholder_write, 7),
            Arg::whole("counts", &ctx.inner.placeholder_counts, 8),
        ]),
    }
    Launch {
        kernel: match fragments {
            Some(m) => Kernel::SimilarityMma(m),
            None => Kernel::Similarity(kernel),
        },
        // chunks (where a binding limit splits the rows) in multiples of 16 rows, not of a whole
        // tile: the kernel handles a ragged last block, and a 128-row chunk of scores could
        // itself be over the limit
        grid: Grid { bh: d.slices(), heads: d.heads, nq: d.nq, row_tile: 16 },
        args,
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
            idx0: topk.map_or(0, |t| t.idx0 as u32),
            ..Params::default()
        },
        workgroups: &workgroups,
    }
    .record(ctx, encoder)
    .await
}
