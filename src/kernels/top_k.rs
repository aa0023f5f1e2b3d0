//! Exact top-k retrieval on the GPU: chunked scoring with `shaders/similarity.wgsl`, selection
//! and merging with `shaders/top_k.wgsl`, all recorded in one submission (no host round trip
//! per chunk). CPU twin: `cpu::top_k`.

use super::{b, Access, Binding, Kernel, Params, Variant, PARAMS};
use crate::caps::Caps;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::options::Similarity;
use crate::plan::{Grid, Rows};
use crate::problem::{Operand, SimilarityProblem, TopKProblem};
use crate::record::{Arg, Launch};
use crate::shape::{DType, Layout, Shape};
use crate::tensor::Tensor;

/// Largest k supported.
pub const MAX_K: usize = 1024;

/// How retrieval ranks keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Largest dot product first.
    Dot,
    /// Largest cosine similarity first (a zero vector scores 0).
    Cosine,
    /// Smallest squared Euclidean distance first; reported scores are the squared distances.
    L2,
}

impl Metric {
    pub(crate) fn similarity(&self) -> Similarity {
        match self {
            Metric::Dot => Similarity::Dot,
            Metric::Cosine => Similarity::Cosine,
            Metric::L2 => Similarity::L2,
        }
    }
}

/// Results of a top-k search: for each of `nq` queries, `k` entries best first.
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    /// Number of queries.
    pub nq: usize,
    /// Entries per query.
    pub k: usize,
    /// Key indices, `[nq, k]` row-major, best first; ties go to the lower index.
    pub indices: Vec<u32>,
    /// Scores, `[nq, k]`: dot product, cosine, or squared distance (for [`Metric::L2`]).
    pub scores: Vec<f32>,
}

impl TopK {
    /// The indices of query `i`.
    pub fn indices_of(&self, i: usize) -> &[u32] {
        &self.indices[i * self.k..(i + 1) * self.k]
    }
    /// The scores of query `i`.
    pub fn scores_of(&self, i: usize) -> &[f32] {
        &self.scores[i * self.k..(i + 1) * self.k]
    }
}

/// One variant of `shaders/top_k.wgsl`: entries kept per row (`kp`, a power of two), buffer
/// entries (`cap`), whether the input is raw scores or (score, index) pairs (`pairs`), whether
/// each row's length is its count from the thresholded scoring pass (`counted`), and whether
/// slots are claimed per subgroup (`sg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TopKKernel {
    pub kp: u32,
    pub cap: u32,
    pub pairs: bool,
    pub counted: bool,
    pub sg: bool,
}

impl Variant for TopKKernel {
    const NAME: &'static str = "top_k";
    const SOURCE: &'static str = include_str!("../../shaders/top_k.wgsl");
    fn bindings(&self) -> &'static [Binding] {
        const BINDINGS: [Binding; 6] = [
            PARAMS,
            b(1, "scores", Access::Read),
            b(2, "indices", Access::Read),
            b(3, "out_scores", Access::ReadWrite),
            b(4, "out_indices", Access::ReadWrite),
            b(5, "counts", Access::Read),
        ];
        &BINDINGS
    }

    fn dtype(&self) -> DType {
        DType::F32
    }
    fn constants(&self) -> Vec<(&'static str, u32)> {
        vec![
            ("WG", self.threads()),
            ("R", self.cap / 2),
            ("KP", self.kp),
            ("CAP", self.cap),
            ("PAIRS", self.pairs as u32),
            ("COUNTED", self.counted as u32),
        ]
    }
    /// The candidate buffer (scores and indices), its fill counter and its uniform copy.
    fn workgroup_bytes(&self) -> u32 {
        8 * self.cap + 8
    }
    fn preludes(&self) -> Vec<&'static str> {
        vec![if self.sg {
            include_str!("../../shaders/slots_subgroup.wgsl")
        } else {
            include_str!("../../shaders/slots_workgroup.wgsl")
        }]
    }
}

/// Which input a selection reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Input {
    /// Every score of a chunk, indexed by position.
    Scores,
    /// (score, index) pairs, each row as long as its count from the thresholded scoring pass.
    Lists,
    /// (score, index) pairs: the kept entries and the segments' bests.
    Merge,
}

impl TopKKernel {
    /// The variant keeping `kp` entries from `input`.
    fn new(kp: usize, input: Input, caps: &Caps) -> Self {
        TopKKernel {
            kp: kp as u32,
            cap: if kp <= 512 { 1024 } else { 2048 },
            pairs: input != Input::Scores,
            counted: input == Input::Lists,
            sg: caps.subgroups,
        }
    }

    /// Threads per workgroup: 4 new inputs each per round of `cap / 2`.
    fn threads(&self) -> u32 {
        self.cap / 8
    }

    /// Every variant.
    #[cfg(test)]
    pub fn all() -> impl Iterator<Item = TopKKernel> {
        [16usize, 32, 64, 128, 256, 512, 1024].into_iter().flat_map(|kp| {
            [Input::Scores, Input::Lists, Input::Merge].into_iter().flat_map(move |input| {
                [false, true]
                    .into_iter()
                    .map(move |subgroups| TopKKernel::new(kp, input, &Caps { subgroups, ..Caps::baseline() }))
            })
        })
    }
}

/// How a top-k call is cut: keys per chunk (scored and selected at once), inputs per
/// selection segment, segments per chunk, and entries kept per row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TopKPlan {
    pub kp: usize,
    pub chunk: usize,
    pub seg: usize,
    pub nseg: usize,
}

impl TopKPlan {
    /// Candidate slots per query (the running best plus one per segment).
    pub fn slots(&self) -> usize {
        1 + self.nseg
    }
}

/// Chunk sizing for a top-k call with `key_bytes` bytes per key element, pure: the scores of a
/// chunk (`[nq, chunk]` f32) and the chunk's keys must each fit one binding (at most 256 MiB).
pub(crate) fn plan(p: &TopKProblem, key_bytes: u64, caps: &Caps) -> Result<TopKPlan> {
    let kp = p.k.next_power_of_two().max(16);
    let need = TopKKernel::new(kp, Input::Scores, caps).workgroup_bytes();
    if need > caps.max_workgroup_storage {
        return Err(Error::Unsupported(format!(
            "k = {} needs {need} bytes of workgroup memory, the device allows {}",
            p.k, caps.max_workgroup_storage
        )));
    }
    let max_binding = caps.max_binding.min(256 << 20) as usize;
    let by_scores = max_binding / (4 * p.nq);
    let by_keys = max_binding.saturating_sub(256) / (p.d * key_bytes as usize);
    let chunk = by_scores.min(by_keys).min(p.nk.next_multiple_of(64)) / 64 * 64;
    if chunk == 0 {
        return Err(Error::TooLarge {
            argument: "queries",
            message: format!(
                "{} queries of dim {} leave no room for a chunk of keys in one binding; search fewer at a time",
                p.nq, p.d
            ),
        });
    }
    let seg = (8 * kp).max(8192);
    Ok(TopKPlan { kp, chunk, seg, nseg: chunk.div_ceil(seg) })
}

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
/// (or the lists') bests are then merged with the best so far.
pub(crate) async fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    p: &TopKProblem,
    queries: &Tensor,
    keys: &Tensor,
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
                super::similarity::record(ctx, encoder, &sp, queries, &kview, &sview, Some(&th)).await?;
                (Input::Lists, Arg::matrix("indices", list_i, pl.chunk, Rows::Query, 1, 2))
            }
            _ => {
                super::similarity::record(ctx, encoder, &sp, queries, &kview, &sview, None).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(nq: usize, nk: usize, d: usize, k: usize) -> TopKProblem {
        TopKProblem::new(nq, nk, d, d, k, Metric::Dot).unwrap()
    }

    #[test]
    fn chunks_fit_the_binding_and_segments_cover_them() {
        let caps = Caps { max_binding: 128 << 20, max_workgroup_storage: 32 << 10, ..Caps::baseline() };
        let pl = plan(&problem(256, 200_000, 128, 10), 4, &caps).unwrap();
        assert_eq!(pl.kp, 16);
        assert!(pl.chunk * 256 * 4 <= 128 << 20 && pl.chunk * 128 * 4 <= 128 << 20);
        assert_eq!(pl.chunk % 64, 0);
        assert!(pl.nseg * pl.seg >= pl.chunk);
        // few keys: one chunk rounded up to 64
        let pl = plan(&problem(2, 100, 8, 100), 4, &caps).unwrap();
        assert_eq!((pl.kp, pl.chunk, pl.nseg), (128, 128, 1));
        // k > 512 needs 16 KiB + 8 bytes of workgroup memory
        let small = Caps { max_workgroup_storage: 16 << 10, ..caps.clone() };
        assert!(matches!(plan(&problem(1, 2000, 8, 600), 4, &small), Err(Error::Unsupported(_))));
        assert!(plan(&problem(1, 2000, 8, 512), 4, &small).is_ok());
        // so many queries that no chunk fits
        let tiny = Caps { max_binding: 64 << 10, ..caps };
        assert!(matches!(
            plan(&problem(20_000, 100, 8, 1), 4, &tiny),
            Err(Error::TooLarge { argument: "queries", .. })
        ));
    }
}
