//! CPU twins of `shaders/attention.wgsl` (fused; split-K merged by `attention_merge`) and of
//! the unfused path (`similarity` → `softmax` → `weighted_sum`).

use rayon::prelude::*;

use super::softmax::softmax_row;
use super::weighted_sum::weighted_sum_checked;
use crate::cpu::attention_merge::{attention_merge, AttentionPartial};
use std::borrow::Cow;

use crate::cpu::{dot64, to_layout, view, widen, RowMask, Scoring};
use crate::error::{Error, Result};
use crate::host::{scan, HostMask, HostTensor};
use crate::options::AttentionOptions;
use crate::pages::{BlockTable, HostKvCache, PageGeometry};
use crate::problem::{AttentionProblem, Dims, MaskSpec, Operand, PagedProblem};
use crate::shape::Element;

/// The checked problem of a host attention call: shapes and options, then one scan of each
/// input's values (NaN/inf refused, magnitudes recorded).
pub(crate) fn problem<'a, T: Element>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    mask: Option<&HostMask>,
    opts: &AttentionOptions<'a>,
) -> Result<AttentionProblem<'a>> {
    let p =
        AttentionProblem::new(Operand::host(q), Operand::host(k), Operand::host(v), mask.map(MaskSpec::host), opts)?;
    let (mq, mk, mv) = (scan("q", q.data())?, scan("k", k.data())?, scan("v", v.data())?);
    p.with_magnitudes(mq, mk, mv)
}

/// Where key `j` of key/value head `hk` of batch `b` lives: its K and V rows (contiguous
/// tensors, or pages through a block table).
pub(crate) trait KvRows: Sync {
    fn k_row(&self, b: usize, hk: usize, j: usize) -> Cow<'_, [f32]>;
    fn v_row(&self, b: usize, hk: usize, j: usize) -> Cow<'_, [f32]>;
}

/// Contiguous K and V tensors.
struct Contiguous<'a> {
    k: HostTensor<'a, f32>,
    v: HostTensor<'a, f32>,
}

impl KvRows for Contiguous<'_> {
    fn k_row(&self, b: usize, hk: usize, j: usize) -> Cow<'_, [f32]> {
        Cow::Borrowed(self.k.row(b, hk, j))
    }
    fn v_row(&self, b: usize, hk: usize, j: usize) -> Cow<'_, [f32]> {
        Cow::Borrowed(self.v.row(b, hk, j))
    }
}

/// A paged cache read in place through its block table: f32 rows borrowed, f16 and quantized
/// rows widened or dequantized one at a time as they are read (the pools are never copied).
struct Paged<'a, T> {
    cache: &'a HostKvCache<T>,
    g: PageGeometry,
    table: &'a BlockTable<'a>,
}

impl<T: Element> Paged<'_, T> {
    fn row(&self, v: bool, b: usize, hk: usize, j: usize) -> Cow<'_, [f32]> {
        let token = self.table.token(&self.g, b, j);
        let plain = if v { self.cache.v() } else { self.cache.k() };
        match plain {
            Some(pool) => {
                let at = self.g.row(token, hk);
                widen(&pool[at..at + self.g.head_dim])
            }
            None => {
                let mut out = Vec::with_capacity(self.g.head_dim);
                self.cache.read_row(v, token, hk, &mut out);
                Cow::Owned(out)
            }
        }
    }
}

impl<T: Element> KvRows for Paged<'_, T> {
    fn k_row(&self, b: usize, hk: usize, j: usize) -> Cow<'_, [f32]> {
        self.row(false, b, hk, j)
    }
    fn v_row(&self, b: usize, hk: usize, j: usize) -> Cow<'_, [f32]> {
        self.row(true, b, hk, j)
    }
}

/// Attention over a paged cache: the CPU twin of [`Context::paged_attention`](crate::Context::paged_attention),
/// with the same checks. Returns `(output, lse)`: output in `q`'s layout; lse `[batch, heads, nq]`.
/// K and V are read through the block table (no gather); the rows the table reaches are
/// checked for NaN and infinities (`Err(NonFinite)` naming `k_pages` or `v_pages`, with the
/// index in the pool).
pub fn paged_attention<T: Element>(
    q: &HostTensor<T>,
    cache: &HostKvCache<T>,
    table: &BlockTable,
    opts: &AttentionOptions,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let p = paged_problem(q, cache, table, opts)?;
    Ok(paged_checked(&p, q, cache, table))
}

/// The checked problem of a host paged-attention call: shapes, table and options, then one
/// scan of `q` and of the pool rows the table reaches (NaN/inf refused), magnitudes recorded.
pub(crate) fn paged_problem<'a, T: Element>(
    q: &HostTensor<T>,
    cache: &HostKvCache<T>,
    table: &BlockTable<'a>,
    opts: &AttentionOptions<'a>,
) -> Result<PagedProblem<'a>> {
    let g = cache.geometry();
    let mut p = PagedProblem::new(Operand::host(q), g, T::DTYPE, *table, opts)?;
    let mq = scan("q", q.data())?;
    let mk = scan_pages("k_pages", cache, false, table)?;
    let mv = scan_pages("v_pages", cache, true, table)?;
    p.attn = p.attn.with_magnitudes(mq, mk, mv)?;
    Ok(p)
}

/// [`paged_attention`] for a checked problem whose pages were scanned.
pub(crate) fn paged_checked<T: Element>(
    p: &PagedProblem,
    q: &HostTensor<T>,
    cache: &HostKvCache<T>,
    table: &BlockTable,
) -> (Vec<f32>, Vec<f32>) {
    let g = cache.geometry();
    let qd = widen(q.data());
    let q = &view(q, &qd);
    let kv = Paged { cache, g, table };
    let sc = scoring(&p.attn, None, Some(table.seq_lens()));
    let (out, lse) = attend(q, &kv, &sc, &p.attn.dims, p.attn.sinks);
    (to_layout(out, &q.shape(), q.layout()), lse)
}

/// The first NaN or infinity among the pool rows that `table` reaches (K, or V where `v`), as
/// `Err(NonFinite)` with its index in the pool; else the largest magnitude among them (of the
/// dequantized values, for a quantized pool).
pub(crate) fn scan_pages<T: Element>(
    argument: &'static str,
    cache: &HostKvCache<T>,
    v: bool,
    table: &BlockTable,
) -> Result<f32> {
    let g = &cache.geometry();
    let width = g.kv_heads * g.head_dim;
    let mut max = 0.0f32;
    let mut row = Vec::with_capacity(width);
    for (b, &len) in table.seq_lens().iter().enumerate() {
        for j in 0..len as usize {
            let token = table.token(g, b, j);
            let at = g.row(token, 0);
            row.clear();
            match if v { cache.v() } else { cache.k() } {
                Some(pool) => row.extend(pool[at..at + width].iter().map(|x| x.to_f32())),
                None => (0..g.kv_heads).for_each(|hk| cache.read_row(v, token, hk, &mut row)),
            }
            for (i, &x) in row.iter().enumerate() {
                if !x.is_finite() {
                    return Err(Error::NonFinite { argument, index: at + i, value: x });
                }
                max = max.max(x.abs());
            }
        }
    }
    Ok(max)
}

/// The partial result of query row `(b, h, i)` over keys `[j0, j1)`.
fn partial(
    q: &HostTensor<f32>,
    kv: &impl KvRows,
    sc: &Scoring,
    dims: &Dims,
    (b, h, i): (usize, usize, usize),
    (j0, j1): (usize, usize),
) -> AttentionPartial {
    let qr = q.row(b, h, i);
    let hk = h / dims.group();
    // only the keys the row's window, diagonal and length allow (the kernels skip the rest too)
    let (start, limit) = sc.rm.key_range(b, i);
    let (j0, j1) = (j0.max(start), j1.min(limit).max(j0.max(start)));
    let scores: Vec<(usize, f64)> =
        (j0..j1).filter_map(|j| sc.score(b, h, i, j, || dot64(qr, &kv.k_row(b, hk, j))).map(|s| (j, s))).collect();
    let max = scores.iter().fold(f64::NEG_INFINITY, |a, s| a.max(s.1));
    let mut p = AttentionPartial::empty(dims.d);
    if max == f64::NEG_INFINITY {
        return p;
    }
    p.max = max;
    for (j, s) in scores {
        let w = (s - max).exp();
        p.sum += w;
        p.acc.iter_mut().zip(kv.v_row(b, hk, j).iter()).for_each(|(a, x)| *a += w * *x as f64);
    }
    p
}

/// Keys per range when a row's keys are split across threads: only when there are too few rows
/// to keep every thread busy and enough keys to share (as the GPU's split-K decides).
fn key_range(rows: usize, nk: usize) -> usize {
    let threads = rayon::current_num_threads();
    if rows >= 4 * threads || nk < 2048 {
        return nk.max(1);
    }
    let splits = (4 * threads).div_ceil(rows).min(nk / 512).max(1);
    nk.div_ceil(splits)
}

/// Fused attention semantics: `O = softmax(scale · Q Kᵀ + mask) V`.
///
/// Returns `(output, lse)`: output in `q`'s layout with `q`'s shape; `lse` is the natural
/// log-sum-exp of each query row's kept scores, `[batch, heads, nq]`, `-inf` for a fully
/// masked row (whose output is zeros), `+inf` where it exceeds f32's range.
pub fn attention<T: Element>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    mask: Option<&HostMask>,
    opts: &AttentionOptions,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let p = problem(q, k, v, mask, opts)?;
    Ok(attention_checked(&p, q, k, v, mask))
}

/// [`attention`] for a checked problem.
pub(crate) fn attention_checked<T: Element>(
    p: &AttentionProblem,
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    mask: Option<&HostMask>,
) -> (Vec<f32>, Vec<f32>) {
    let dims = p.dims;
    let (qd, kd, vd) = (widen(q.data()), widen(k.data()), widen(v.data()));
    let q = &view(q, &qd);
    let kv = Contiguous { k: view(k, &kd), v: view(v, &vd) };
    let (out, lse) = attend(q, &kv, &scoring(p, mask, None), &dims, p.sinks);
    (to_layout(out, &q.shape(), q.layout()), lse)
}

/// The scoring rules of a checked problem (`seq_lens`: the sequence lengths of a paged cache).
pub(crate) fn scoring<'a>(
    p: &AttentionProblem<'a>,
    mask: Option<&'a HostMask<'a>>,
    seq_lens: Option<&'a [u32]>,
) -> Scoring<'a> {
    let d = p.dims;
    Scoring {
        rm: RowMask {
            mask,
            causal: p.causal,
            key_lengths: p.key_lengths,
            window: p.window,
            nq: d.nq,
            nk: d.nk,
            seq_lens,
        },
        scale: p.scale as f64,
        softcap: p.softcap.map(|c| c as f64),
        alibi_slopes: p.alibi_slopes,
    }
}

/// Every query row against its keys (read through `kv`): BHSD output and log-sum-exp. Rows run
/// in parallel, and a row's keys are split across threads when there are few rows (decoding),
/// the ranges merged as `attention_merge.wgsl` merges split-K partials.
pub(crate) fn attend(
    q: &HostTensor<f32>,
    kv: &impl KvRows,
    sc: &Scoring,
    dims: &Dims,
    sinks: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let rows = dims.slices() * dims.nq;
    let max_len = (0..dims.batch).map(|b| sc.rm.kv_len(b)).max().unwrap_or(0);
    let range = key_range(rows, max_len);
    let nranges = max_len.div_ceil(range).max(1);
    // every (row, key range) in parallel, then each row's ranges merged
    let parts: Vec<AttentionPartial> = (0..rows * nranges)
        .into_par_iter()
        .map(|t| {
            let (row, r) = (t / nranges, t % nranges);
            let i = row % dims.nq;
            let (b, h) = (row / dims.nq / dims.heads, row / dims.nq % dims.heads);
            let len = sc.rm.kv_len(b);
            partial(q, kv, sc, dims, (b, h, i), ((r * range).min(len), ((r + 1) * range).min(len)))
        })
        .collect();
    let mut out = vec![0.0f32; rows * dims.d];
    let mut lse = vec![0.0f32; rows];
    out.par_chunks_mut(dims.d.max(1)).zip(lse.par_iter_mut()).enumerate().for_each(|(row, (dst, l))| {
        let h = row / dims.nq % dims.heads;
        let (o, m) = attention_merge(&parts[row * nranges..(row + 1) * nranges], sinks.map(|s| s[h]));
        dst.copy_from_slice(&o);
        *l = m;
    });
    (out, lse)
}

/// Unfused attention, step by step: scores, softmax, then weights · V.
///
/// Returns `(output, weights)`: output in `q`'s layout; weights `[batch, heads, nq, nk]`.
pub fn attention_unfused<T: Element>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    mask: Option<&HostMask>,
    opts: &AttentionOptions,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let p = problem(q, k, v, mask, opts)?;
    Ok(attention_unfused_checked(&p, q, k, v, mask))
}

/// [`attention_unfused`] for a checked problem.
pub(crate) fn attention_unfused_checked<T: Element>(
    p: &AttentionProblem,
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    mask: Option<&HostMask>,
) -> (Vec<f32>, Vec<f32>) {
    let dims = p.dims;
    let (qd, kd) = (widen(q.data()), widen(k.data()));
    let (qw, kw) = (&view(q, &qd), &view(k, &kd));
    let sc = scoring(p, mask, None);
    let mut weights = vec![0.0f32; dims.slices() * dims.nq * dims.nk];
    weights.par_chunks_mut(dims.nk).enumerate().for_each(|(row, dst)| {
        let i = row % dims.nq;
        let (b, h) = (row / dims.nq / dims.heads, row / dims.nq % dims.heads);
        let qr = qw.row(b, h, i);
        let hk = h / dims.group();
        let scores: Vec<Option<f64>> =
            (0..dims.nk).map(|j| sc.score(b, h, i, j, || dot64(qr, kw.row(b, hk, j)))).collect();
        softmax_row(&scores, p.sinks.map(|s| s[h] as f64), dst);
    });
    let w = HostTensor::trusted(&weights[..], p.scores_shape());
    let out = weighted_sum_checked(&w, v, dims.group());
    (to_layout(out, &q.shape(), q.layout()), weights)
}
