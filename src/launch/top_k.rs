//! Launching `shaders/top_k.wgsl`: the buffers, parameters and dispatches of a checked call
//! (the variant itself is `kernels/top_k.rs`).

use crate::kernels::{Kernel, Params};
use crate::context::Context;
use crate::error::Result;
use crate::retrieval::{Metric, TopK};
use crate::plan::{Grid, Rows};
use crate::problem::{Operand, SimilarityProblem, TopKProblem};
use crate::record::{Arg, Launch};
use crate::shape::{DType, Layout, Shape};
use crate::tensor::Tensor;
use crate::kernels::similarity_mma::Mma;
use crate::kernels::top_k::*;

/// Top-k results still on the GPU, from [`Context::encode_top_k`](crate::Context::encode_top_k):
/// per query `kp` (k rounded up to a power of two, at least 16) scores and indices, best first.
/// Read them with [`TopKOutput::read`] once the work has been submitted.
#[derive(Debug, Clone)]
pub struct TopKOutput {
    /// Scores `[nq, kp]` f32 (for [`Metric::L2`], negated squared distances).
    pub scores: wgpu::Buffer,
    /// Key indices `[nq, kp]` u32.
    pub indices: wgpu::Buffer,
    /// Entries stored per query.
    pub kp: usize,
    /// Entries requested per query.
    pub k: usize,
    /// Number of queries.
    pub nq: usize,
    /// The metric (to report L2 scores as distances).
    pub metric: Metric,
    pub(crate) ctx_id: u64,
}

impl TopKOutput {
    /// Reads the results back (blocking); call after the recording encoder was submitted.
    pub fn read(&self, ctx: &Context) -> Result<TopK> {
        pollster::block_on(self.read_with(ctx, true))
    }

    /// Async twin of [`TopKOutput::read`] (see [`Tensor::download`]).
    pub async fn read_async(&self, ctx: &Context) -> Result<TopK> {
        self.read_with(ctx, false).await
    }

    async fn read_with(&self, ctx: &Context, block: bool) -> Result<TopK> {
        ctx.check_owns("top-k output", self.ctx_id)?;
        let (nq, k, kp) = (self.nq, self.k, self.kp);
        let shape = Shape::new(1, 1, nq, kp);
        let s = Tensor::from_buffer(ctx, self.scores.clone(), 0, shape, Layout::Bhsd, DType::F32)?;
        let i = Tensor::from_buffer(ctx, self.indices.clone(), 0, shape, Layout::Bhsd, DType::F32)?;
        let (s, i) = if block {
            (s.download_blocking(ctx)?, i.download_blocking(ctx)?)
        } else {
            (s.download(ctx).await?, i.download(ctx).await?)
        };
        let mut out = TopK { nq, k, indices: Vec::with_capacity(nq * k), scores: Vec::with_capacity(nq * k) };
        for q in 0..nq {
            out.indices.extend(i[q * kp..q * kp + k].iter().map(|x| x.to_bits()));
            out.scores.extend(s[q * kp..q * kp + k].iter().map(|&x| if self.metric == Metric::L2 { -x } else { x }));
        }
        Ok(out)
    }
}

async fn u32_buffer(ctx: &Context, len: usize) -> Result<wgpu::Buffer> {
    let size = (len.max(1) * 4) as u64;
    ctx.check_buffer_size("k", size)?;
    ctx.new_buffer(&wgpu::BufferDescriptor {
        label: Some("wgpu-attention candidates"),
        size,
        usage: crate::tensor::TENSOR_USAGE,
        mapped_at_creation: false,
    })
    .await
}

/// Records a checked top-k call of `queries` (`[1, 1, nq, d]`) against `keys`.
///
/// Keys are taken in chunks. The first chunk's scores are all written and selected in segments;
/// every later chunk is scored against each query's current k-th best (its threshold), and only
/// the scores above it are written, as per-query lists that the selection reads. The segments'
/// (or the lists') bests are then merged with the best so far. The scoring runs on matrix
/// fragments where `mma` says.
pub(crate) async fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    p: &TopKProblem,
    queries: &Tensor,
    keys: &Tensor,
    mma: Option<Mma>,
) -> Result<TopKOutput> {
    let caps = ctx.caps();
    let pl = plan(p, keys.dtype.size(), caps)?;
    let (nq, nk, kp) = (p.nq, p.nk, pl.kp);
    let slots = pl.slots();
    // scores, or the thresholded lists' scores: [nq, clen] with row stride pl.chunk
    let scores = ctx.zeros_async(Shape::new(1, 1, nq, pl.chunk), Layout::Bhsd, DType::F32).await?;
    let cand_s = [u32_buffer(ctx, nq * slots * kp).await?, u32_buffer(ctx, nq * slots * kp).await?];
    let cand_i = [u32_buffer(ctx, nq * slots * kp).await?, u32_buffer(ctx, nq * slots * kp).await?];
    let (best_s, best_i) = (u32_buffer(ctx, nq * kp).await?, u32_buffer(ctx, nq * kp).await?);
    let chunks: Vec<usize> = (0..nk).step_by(pl.chunk).collect();
    // the lists' key indices and lengths (chunks after the first)
    let lists =
        if chunks.len() > 1 { Some((u32_buffer(ctx, nq * pl.chunk).await?, u32_buffer(ctx, nq).await?)) } else { None };
    let grid = Grid { bh: 1, heads: 1, nq, row_tile: 1 };

    for (c, &k0) in chunks.iter().enumerate() {
        let clen = pl.chunk.min(nk - k0);
        let kview = keys.rows(k0, clen);
        let sview = Tensor { shape: Shape::new(1, 1, nq, clen), ..scores.clone() };
        let sp = SimilarityProblem::of_top_k(Operand::gpu(queries), Operand::gpu(&kview), p.metric.similarity());
        let (x, y) = (c % 2, (c + 1) % 2);
        let (input, index_arg) = match (&lists, c) {
            (Some((list_i, counts)), 1..) => {
                // thresholds: entry kp - 1 of slot 0 of x, the best so far
                encoder.clear_buffer(counts, 0, None);
                let iview = Tensor { buffer: list_i.clone(), ..sview.clone() };
                let th = super::similarity::Thresholded {
                    thresholds: &cand_s[x],
                    row_len: slots * kp,
                    kp,
                    indices: &iview,
                    counts,
                    idx0: k0,
                };
                super::similarity::record(ctx, encoder, &sp, queries, &kview, &sview, Some(&th), mma).await?;
                (Input::Lists, Arg::matrix("indices", list_i, pl.chunk, Rows::Query, 1, 2))
            }
            _ => {
                super::similarity::record(ctx, encoder, &sp, queries, &kview, &sview, None, mma).await?;
                (Input::Scores, Arg::whole("indices", &ctx.inner.placeholder_read, 2))
            }
        };
        let counts_arg = match &lists {
            Some((_, counts)) if input == Input::Lists => Arg::whole("counts", counts, 5),
            _ => Arg::whole("counts", &ctx.inner.placeholder_read, 5),
        };
        let nseg_c = clen.div_ceil(pl.seg);
        // the best kp of each segment of this chunk, into slots 1.. of x
        let wg_sel = |_: usize, nr: usize| (nr * nseg_c) as u64;
        Launch {
            kernel: Kernel::TopK(TopKKernel::new(kp, input, caps)),
            grid,
            args: vec![
                Arg::matrix("scores", &scores.buffer, pl.chunk, Rows::Query, 0, 1),
                index_arg,
                // outputs are addressed by slot (kp entries each)
                Arg::matrix("candidates", &cand_s[x], kp, Rows::All(nq * slots), 2, 3),
                Arg::matrix("candidates", &cand_i[x], kp, Rows::All(nq * slots), 3, 4),
                counts_arg,
            ],
            params: Params {
                nk: clen as u32,
                split_len: pl.seg as u32,
                idx0: k0 as u32,
                start: 0,
                out_stride: slots as u32,
                out_offset: 1,
                ..Params::unscaled()
            },
            workgroups: &wg_sel,
        }
        .record(ctx, encoder)
        .await?;
        // merge: slot 0 (the best so far, absent for the first chunk) and this chunk's
        // segments into slot 0 of y, or into the result after the last chunk
        let last = c + 1 == chunks.len();
        let (out_s, out_i, stride) = if last { (&best_s, &best_i, 1) } else { (&cand_s[y], &cand_i[y], slots) };
        let len = (1 + nseg_c) * kp;
        let start = if c == 0 { kp } else { 0 };
        let wg_merge = |_: usize, nr: usize| nr as u64;
        Launch {
            kernel: Kernel::TopK(TopKKernel::new(kp, Input::Merge, caps)),
            grid,
            args: vec![
                Arg::matrix("candidates", &cand_s[x], slots * kp, Rows::Query, 0, 1),
                Arg::matrix("candidates", &cand_i[x], slots * kp, Rows::Query, 1, 2),
                Arg::matrix("result", out_s, kp, Rows::All(nq * stride), 2, 3),
                Arg::matrix("result", out_i, kp, Rows::All(nq * stride), 3, 4),
                Arg::whole("counts", &ctx.inner.placeholder_read, 5),
            ],
            params: Params {
                nk: len as u32,
                split_len: (len - start) as u32,
                start: start as u32,
                out_stride: stride as u32,
                out_offset: 0,
                ..Params::unscaled()
            },
            workgroups: &wg_merge,
        }
        .record(ctx, encoder)
        .await?;
    }
    Ok(TopKOutput { scores: best_s, indices: best_i, kp, k: p.k, nq, metric: p.metric, ctx_id: ctx.inner.id })
}
