//! Exact top-k retrieval on the GPU: chunked scoring with `similarity.wgsl`, selection and
//! merging with `topk.wgsl`, all recorded in one submission (no host round trip per chunk).

use crate::context::Context;
use crate::dispatch::{Arg, Grid, Launch, Params, Rows};
use crate::error::{Error, Result};
use crate::ops::check_dtype;
use crate::options::Similarity;
use crate::pipeline::Family;
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

/// Checks a top-k request.
pub(crate) fn check_top_k(nq: usize, nk: usize, qd: usize, kd: usize, k: usize) -> Result<()> {
    for (argument, dim, v) in [("queries", "rows", nq), ("keys", "rows", nk), ("queries", "dim", qd)] {
        if v == 0 {
            return Err(Error::EmptyDimension { argument, dim });
        }
    }
    if kd != qd {
        return Err(Error::ShapeMismatch { argument: "keys", other: "queries", dim: "dim", got: kd, expected: qd });
    }
    if k == 0 || k > MAX_K || k > nk {
        return Err(Error::InvalidArgument {
            argument: "k",
            message: format!("{k} is not in 1..={} (at most {MAX_K}, and at most the {nk} keys)", MAX_K.min(nk)),
        });
    }
    Ok(())
}

/// k rounded up to a power of two, at least 16.
fn kp(k: usize) -> usize {
    k.next_power_of_two().max(16)
}

/// Top-k results still on the GPU, from [`Context::encode_top_k`]: per query `kp` (k rounded up
/// to a power of two, at least 16) scores and indices, best first. Read them with [`TopKOutput::read`]
/// once the work has been submitted.
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
}

impl TopKOutput {
    /// Reads the results back (blocking); call after the recording encoder was submitted.
    pub fn read(&self, ctx: &Context) -> Result<TopK> {
        let (nq, k, kp) = (self.nq, self.k, self.kp);
        let shape = Shape::new(1, 1, nq, kp);
        let s = Tensor::from_buffer(self.scores.clone(), 0, shape, Layout::Bhsd, DType::F32)?.download_blocking(ctx)?;
        let i =
            Tensor::from_buffer(self.indices.clone(), 0, shape, Layout::Bhsd, DType::F32)?.download_blocking(ctx)?;
        let mut out = TopK { nq, k, indices: Vec::with_capacity(nq * k), scores: Vec::with_capacity(nq * k) };
        for q in 0..nq {
            out.indices.extend(i[q * kp..q * kp + k].iter().map(|x| x.to_bits()));
            out.scores.extend(s[q * kp..q * kp + k].iter().map(|&x| if self.metric == Metric::L2 { -x } else { x }));
        }
        Ok(out)
    }
}

impl Context {
    fn u32_buffer(&self, len: usize) -> Result<wgpu::Buffer> {
        let size = (len.max(1) * 4) as u64;
        self.check_buffer_size("k", size)?;
        self.scoped(|| {
            Ok(self.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-attention indices"),
                size,
                usage: crate::tensor::TENSOR_USAGE,
                mapped_at_creation: false,
            }))
        })
    }

    /// Exact top-k: for each query row of `queries` (`[1, 1, nq, d]`) the `k` best rows of
    /// `keys` (`[1, 1, nk, d]`) by `metric`, best first, ties to the lower index. `k` is
    /// 1..=min(nk, 1024). Keys larger than one binding or one dispatch are processed in chunks
    /// merged on the GPU.
    pub fn top_k(&self, queries: &Tensor, keys: &Tensor, k: usize, metric: Metric) -> Result<TopK> {
        let mut out = None;
        self.submit(|enc| {
            out = Some(self.encode_top_k(enc, queries, keys, k, metric)?);
            Ok(())
        })?;
        out.ok_or_else(|| Error::Gpu("top-k recorded nothing".into()))?.read(self)
    }

    /// Records [`Context::top_k`] into `encoder` (no submit, no readback); the results stay on
    /// the GPU in the returned [`TopKOutput`] (read them after submitting). Scratch buffers for one
    /// chunk of scores and the candidates (at most 256 MiB or one binding each) are allocated for
    /// the call.
    pub fn encode_top_k(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        queries: &Tensor,
        keys: &Tensor,
        k: usize,
        metric: Metric,
    ) -> Result<TopKOutput> {
        let (qs, ks) = (queries.shape, keys.shape);
        for (argument, s) in [("queries", qs), ("keys", ks)] {
            if s.batch != 1 || s.heads != 1 {
                return Err(Error::InvalidArgument {
                    argument,
                    message: format!("expected shape [1, 1, rows, dim], got {:?}", s.dims()),
                });
            }
        }
        let (nq, nk, d) = (qs.seq, ks.seq, qs.dim);
        check_top_k(nq, nk, d, ks.dim, k)?;
        check_dtype(self, "queries", queries, None)?;
        check_dtype(self, "keys", keys, Some(queries.dtype))?;
        let kp = kp(k);
        let cap: u32 = if kp <= 512 { 1024 } else { 2048 };
        let need = cap * 8 + 8;
        if need > self.limits().max_compute_workgroup_storage_size {
            return Err(Error::Unsupported(format!(
                "k = {k} needs {need} bytes of workgroup memory, the device allows {}",
                self.limits().max_compute_workgroup_storage_size
            )));
        }
        // keys per chunk: the scores [nq, chunk] and the key window must each fit a binding
        let max_binding = self.limits().max_storage_buffer_binding_size.min(256 << 20) as usize;
        let by_scores = max_binding / (4 * nq);
        let by_keys = max_binding.saturating_sub(256) / (d * keys.dtype.size() as usize);
        let chunk = by_scores.min(by_keys).min(nk.next_multiple_of(64)) / 64 * 64;
        if chunk == 0 {
            return Err(Error::TooLarge {
                argument: "queries",
                message: format!(
                    "{nq} queries of dim {d} leave no room for a chunk of keys in one binding; search fewer at a time"
                ),
            });
        }
        let seg = (8 * kp).max(8192);
        let nseg = chunk.div_ceil(seg);
        let slots = 1 + nseg;
        let scores = self.zeros(Shape::new(1, 1, nq, chunk), Layout::Bhsd, DType::F32)?;
        let cand_s = [self.u32_buffer(nq * slots * kp)?, self.u32_buffer(nq * slots * kp)?];
        let cand_i = [self.u32_buffer(nq * slots * kp)?, self.u32_buffer(nq * slots * kp)?];
        let (best_s, best_i) = (self.u32_buffer(nq * kp)?, self.u32_buffer(nq * kp)?);
        let chunks: Vec<usize> = (0..nk).step_by(chunk).collect();
        let grid = Grid { bh: 1, heads: 1, nq, row_tile: 1 };
        let consts = |pairs: u32| vec![("KP", kp as u32), ("CAP", cap), ("PAIRS", pairs)];

        for (c, &k0) in chunks.iter().enumerate() {
            let clen = chunk.min(nk - k0);
            let kview = Tensor::from_buffer(
                keys.buffer.clone(),
                keys.offset + (k0 * d) as u64,
                Shape::new(1, 1, clen, d),
                keys.layout,
                keys.dtype,
            )?;
            let sview =
                Tensor::from_buffer(scores.buffer.clone(), 0, Shape::new(1, 1, nq, clen), Layout::Bhsd, DType::F32)?;
            self.encode_similarity(encoder, queries, &kview, metric.similarity(), &sview)?;
            let (x, y) = (c % 2, (c + 1) % 2);
            let nseg_c = clen.div_ceil(seg);
            // the best kp of each segment of this chunk, into slots 1.. of x
            let wg_sel = |_: usize, nr: usize| (nr * nseg_c) as u64;
            Launch {
                family: Family::TopK,
                dtype: DType::F32,
                consts: consts(0),
                grid,
                args: vec![
                    Arg::matrix("scores", &scores.buffer, clen, Rows::Query, 0, 1),
                    Arg::whole("indices", &self.inner.placeholder_read, 2),
                    // outputs are addressed by slot (kp entries each)
                    Arg::matrix("candidates", &cand_s[x], kp, Rows::All(nq * slots), 2, 3),
                    Arg::matrix("candidates", &cand_i[x], kp, Rows::All(nq * slots), 3, 4),
                ],
                params: Params {
                    nk: clen as u32,
                    split_len: seg as u32,
                    idx0: k0 as u32,
                    start: 0,
                    out_stride: slots as u32,
                    out_offset: 1,
                    ..Default::default()
                },
                workgroups: &wg_sel,
            }
            .record(self, encoder)?;
            // merge: slot 0 (the best so far, absent for the first chunk) and this chunk's
            // segments into slot 0 of y, or into the result after the last chunk
            let last = c + 1 == chunks.len();
            let (out_s, out_i, stride) = if last { (&best_s, &best_i, 1) } else { (&cand_s[y], &cand_i[y], slots) };
            let len = (1 + nseg_c) * kp;
            let start = if c == 0 { kp } else { 0 };
            let wg_merge = |_: usize, nr: usize| nr as u64;
            Launch {
                family: Family::TopK,
                dtype: DType::F32,
                consts: consts(1),
                grid,
                args: vec![
                    Arg::matrix("candidates", &cand_s[x], slots * kp, Rows::Query, 0, 1),
                    Arg::matrix("candidates", &cand_i[x], slots * kp, Rows::Query, 1, 2),
                    Arg::matrix("result", out_s, kp, Rows::All(nq * stride), 2, 3),
                    Arg::matrix("result", out_i, kp, Rows::All(nq * stride), 3, 4),
                ],
                params: Params {
                    nk: len as u32,
                    split_len: (len - start) as u32,
                    start: start as u32,
                    out_stride: stride as u32,
                    out_offset: 0,
                    ..Default::default()
                },
                workgroups: &wg_merge,
            }
            .record(self, encoder)?;
        }
        Ok(TopKOutput { scores: best_s, indices: best_i, kp, k, nq, metric })
    }
}
