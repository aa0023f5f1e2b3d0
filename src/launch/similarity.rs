//! Launching `shaders/similarity.wgsl`: the buffers, parameters and dispatches of a checked call
//! (the variant itself is `kernels/similarity.rs`).

use crate::kernels::row_norms::RowNormsKernel;
use crate::launch::row_norms;
use crate::kernels::similarity_mma::{self, Mma, SimilarityMmaKernel};
use crate::kernels::{Kernel, Params, Variant};
use crate::context::Context;
use crate::error::Result;
use crate::plan::{ArgSpec, Grid, Rows};
use crate::problem::SimilarityProblem;
use crate::record::{Arg, Launch};
use crate::shape::DType;
use crate::tensor::Tensor;
use crate::kernels::similarity::*;

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

/// The SIMT kernel of a checked call (`vec_out`: the output takes vector stores), and the
/// fragment kernel that runs it instead where `mma` says (f16, where its workgroup memory fits
/// the device).
pub(crate) fn kernels(
    ctx: &Context,
    p: &SimilarityProblem,
    q: &Tensor,
    k: &Tensor,
    vec_out: bool,
    topk: bool,
    mma: Option<Mma>,
) -> (SimilaritySimtKernel, Option<SimilarityMmaKernel>) {
    let kernel = SimilaritySimtKernel::for_metric(p.dtype, p.metric, vec_out, topk);
    let fragments = mma
        .filter(|_| p.dtype == DType::F16)
        .map(|mma| SimilarityMmaKernel {
            metric: kernel.metric,
            vec_in: p.dims.d.is_multiple_of(4) && q.vec4_aligned() && k.vec4_aligned(),
            vec_out: kernel.vec_out,
            topk: kernel.topk,
            mma,
        })
        .filter(|m| m.workgroup_bytes() <= ctx.caps().max_workgroup_storage);
    (kernel, fragments)
}

/// Scores of `q` against `k` into `out` (f32) for a checked problem; with `topk`, only those
/// above each row's threshold, as lists. On the fragment kernel where `mma` says (f16, where its
/// workgroup memory fits the device; the operation decides, see `Context::mma`), else on the
/// SIMT kernel.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record(
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
    let vec_out = out.vec4_aligned() && out.shape.dim.is_multiple_of(4);
    let (kernel, fragments) = kernels(ctx, p, q, k, vec_out, topk.is_some(), mma);
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
            pre: sc.q,
            kpre: sc.k,
            post: sc.post,
            post2: sc.post2,
            idx0: topk.map_or(0, |t| t.idx0 as u32),
            ..Params::of_dims(&d)
        },
        workgroups: &workgroups,
    }
    .record(ctx, encoder)
    .await
}
