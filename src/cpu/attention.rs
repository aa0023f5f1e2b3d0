//! Fast CPU attention (the CPU counterpart of `shaders/attention.wgsl`): blocks of query rows
//! against blocks of keys through the GEMM (`S = Q Kᵀ`, `O += P V`), an online softmax in f32
//! over each block of scores, no `nq × nk` matrix. Tasks are (batch, key/value head, block of
//! the group's query rows), so the query heads that share a key/value head read its keys
//! together (GQA decoding gets a matrix product, not a vector one); when there are too few
//! tasks for the threads, each task's keys are split and the parts merged by their
//! log-sum-exp, as split-K does on the GPU.
//!
//! Inputs whose scores, bias or sums could leave f32's range run on the f64 reference instead
//! ([`fits_f32`]), so the extreme-value rules have one implementation.

use rayon::prelude::*;

use super::gemm::{gemm, Mat};
use super::reference::attention::{paged_problem, scoring};
use crate::vecmath::online_rows;
use super::{tensor_rows, to_layout, Scoring, F32_SAFE};
use crate::error::Result;
use crate::host::{HostMask, HostMaskValues, HostTensor};
use crate::options::AttentionOptions;
use crate::pages::{BlockTable, HostKvCache, PageGeometry};
use crate::problem::{AttentionProblem, Dims, Operand};
use crate::shape::Element;

pub(crate) use super::reference::attention::problem;

/// Query rows per task.
const BQ: usize = 64;
/// Keys per block (1024: 3% faster than 512 and about 5% than 256 on 4×1024×1024×128, best of 10
/// on this project's machine: fewer repacks of the query block; the scores block stays in L2).
const BK: usize = 1024;
/// Where a task's K and V rows come from: contiguous tensors or a paged cache.
pub(crate) trait KvSource: Sync {
    /// Rows `[j0, j1)` of key head `hk` of batch `b` as a `[j1 - j0, d]` matrix: a view of the
    /// tensor when it is f32 and contiguous in rows, else widened into `scratch`.
    fn k_block<'s>(&'s self, b: usize, hk: usize, j0: usize, j1: usize, scratch: &'s mut Vec<f32>) -> Mat<'s>;
    /// The same rows of V.
    fn v_block<'s>(&'s self, b: usize, hk: usize, j0: usize, j1: usize, scratch: &'s mut Vec<f32>) -> Mat<'s>;
}

/// Contiguous K and V tensors.
struct Tensors<'a, T> {
    k: HostTensor<'a, T>,
    v: HostTensor<'a, T>,
}

impl<T: Element> KvSource for Tensors<'_, T> {
    fn k_block<'s>(&'s self, b: usize, hk: usize, j0: usize, j1: usize, scratch: &'s mut Vec<f32>) -> Mat<'s> {
        tensor_rows(&self.k, (b, hk), (j0, j1), scratch)
    }
    fn v_block<'s>(&'s self, b: usize, hk: usize, j0: usize, j1: usize, scratch: &'s mut Vec<f32>) -> Mat<'s> {
        tensor_rows(&self.v, (b, hk), (j0, j1), scratch)
    }
}

/// A paged cache read through its block table, a block's rows gathered (and widened or
/// dequantized) as needed.
struct Pages<'a, T> {
    cache: &'a HostKvCache<T>,
    g: PageGeometry,
    table: &'a BlockTable<'a>,
}

impl<T: Element> Pages<'_, T> {
    fn gather<'s>(&self, v: bool, b: usize, hk: usize, (j0, j1): (usize, usize), s: &'s mut Vec<f32>) -> Mat<'s> {
        s.clear();
        let plain = if v { self.cache.v() } else { self.cache.k() };
        for j in j0..j1 {
            let token = self.table.token(&self.g, b, j);
            match plain {
                Some(pool) => {
                    let at = self.g.row(token, hk);
                    s.extend(pool[at..at + self.g.head_dim].iter().map(|x| x.to_f32()));
                }
                None => self.cache.read_row(v, token, hk, s),
            }
        }
        Mat::rows(s, j1 - j0, self.g.head_dim)
    }
}

impl<T: Element> KvSource for Pages<'_, T> {
    fn k_block<'s>(&'s self, b: usize, hk: usize, j0: usize, j1: usize, scratch: &'s mut Vec<f32>) -> Mat<'s> {
        self.gather(false, b, hk, (j0, j1), scratch)
    }
    fn v_block<'s>(&'s self, b: usize, hk: usize, j0: usize, j1: usize, scratch: &'s mut Vec<f32>) -> Mat<'s> {
        self.gather(true, b, hk, (j0, j1), scratch)
    }
}

/// Whether f32 carries this call without overflow: `|scale · q·k|`, the additive mask, the
/// ALiBi bias and `nk · |v|` all within [`F32_SAFE`]. Unknown magnitudes (unscanned) do not fit.
pub(crate) fn fits_f32(p: &AttentionProblem, mask: Option<&HostMask>, max_len: usize) -> bool {
    let d = &p.dims;
    let mag = |o: &Operand| o.max_abs.map_or(f64::INFINITY, |m| m as f64);
    let scores = d.d as f64 * mag(&p.q) * mag(&p.k) * p.scale as f64;
    let sums = max_len as f64 * mag(&p.v);
    let bias = p
        .alibi_slopes
        .map_or(0.0, |s| s.iter().fold(0.0f64, |a, &x| a.max(x.abs() as f64)) * (d.nq as f64 + max_len as f64));
    scores <= F32_SAFE && sums <= F32_SAFE && bias <= F32_SAFE && mask_fits(mask)
}

/// Whether an additive mask's finite values stay within [`F32_SAFE`] (boolean masks always do).
pub(crate) fn mask_fits(mask: Option<&HostMask>) -> bool {
    match mask.map(|m| m.values()) {
        Some(HostMaskValues::Additive(v)) => v.iter().all(|&x| x == f32::NEG_INFINITY || x.abs() as f64 <= F32_SAFE),
        _ => true,
    }
}

/// One task's rows over one range of keys: the unnormalised accumulator, running max and sum
/// of each row.
struct Partial {
    o: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
}

/// Per-thread buffers, reused across tasks.
#[derive(Default)]
struct Scratch {
    q: Vec<f32>,
    s: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    alpha: Vec<f32>,
}

/// A task: batch `b`, key/value head `hk`, rows `[r0, r1)` of the group's `group · nq` rows
/// (row `r` is query head `hk · group + r / nq`, query `r % nq`).
#[derive(Clone, Copy)]
struct Task {
    b: usize,
    hk: usize,
    r0: usize,
    r1: usize,
}

impl Task {
    fn head_query(&self, dims: &Dims, r: usize) -> (usize, usize) {
        (self.hk * dims.group() + r / dims.nq, r % dims.nq)
    }
}

/// Applies the score rules to one row of scaled dot products (keys `j0..`): keys outside the
/// row's `[start, limit)` are dropped, then the soft-cap, ALiBi and the mask, as
/// [`Scoring::score`] orders them.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn apply_rules(
    row: &mut [f32],
    sc: &Scoring,
    (b, h, i): (usize, usize, usize),
    j0: usize,
    (start, limit): (usize, usize),
) {
    let w = row.len();
    let (a, z) = (start.saturating_sub(j0).min(w), limit.saturating_sub(j0).clamp(start.saturating_sub(j0).min(w), w));
    row[..a].iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
    row[z..].iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
    if sc.softcap.is_none() && sc.alibi_slopes.is_none() && sc.rm.mask.is_none() {
        return;
    }
    let p = sc.rm.position(b, i);
    for (jj, s) in row.iter_mut().enumerate().take(z).skip(a) {
        let j = j0 + jj;
        let mut v = *s;
        if let Some(cap) = sc.softcap {
            let cap = cap as f32;
            v = cap * (v / cap).tanh();
        }
        if let Some(slopes) = sc.alibi_slopes {
            v -= (slopes[h] as f64 * (p - j as i64).unsigned_abs() as f64) as f32;
        }
        if let Some(m) = sc.rm.mask {
            let (keep, add) = m.at(b, h, i, j);
            v = if keep { v + add } else { f32::NEG_INFINITY };
        }
        *s = v;
    }
}

/// The rows of `task` over keys `[s0, s1)` (intersected with each row's own range).
#[allow(clippy::too_many_arguments)]
fn run_task<T: Element>(
    q: &HostTensor<T>,
    kv: &impl KvSource,
    sc: &Scoring,
    dims: &Dims,
    task: Task,
    (s0, s1): (usize, usize),
    scratch: &mut Scratch,
) -> Partial {
    let (d, nr) = (dims.d, task.r1 - task.r0);
    let scale = sc.scale as f32;
    let Scratch { q: qb, s, k: ks, v: vs, alpha } = scratch;
    qb.clear();
    let mut ranges = Vec::with_capacity(nr);
    for r in task.r0..task.r1 {
        let (h, i) = task.head_query(dims, r);
        qb.extend(q.row(task.b, h, i).iter().map(|x| x.to_f32() * scale));
        let (a, z) = sc.rm.key_range(task.b, i);
        let (a, z) = (a.max(s0), z.min(s1));
        ranges.push((a, z.max(a)));
    }
    let mut part = Partial { o: vec![0.0; nr * d], m: vec![f32::NEG_INFINITY; nr], l: vec![0.0; nr] };
    let lo = ranges.iter().filter(|r| r.0 < r.1).map(|r| r.0).min();
    let hi = ranges.iter().map(|r| r.1).max().unwrap_or(0);
    let Some(lo) = lo else { return part };
    alpha.resize(nr, 1.0);
    let mut j0 = lo;
    while j0 < hi {
        let j1 = (j0 + BK).min(hi);
        let w = j1 - j0;
        s.resize(nr * w, 0.0);
        let kb = kv.k_block(task.b, task.hk, j0, j1, ks);
        gemm(1.0, Mat::rows(qb, nr, d), kb.t(), 0.0, s, w);
        for (rr, row) in s.chunks_exact_mut(w).enumerate() {
            let (h, i) = task.head_query(dims, task.r0 + rr);
            apply_rules(row, sc, (task.b, h, i), j0, ranges[rr]);
        }
        online_rows(s, w, &mut part.m, &mut part.l, alpha);
        for (row, &a) in part.o.chunks_exact_mut(d).zip(alpha.iter()) {
            if a != 1.0 {
                row.iter_mut().for_each(|x| *x *= a);
            }
        }
        let vb = kv.v_block(task.b, task.hk, j0, j1, vs);
        gemm(1.0, Mat::rows(s, nr, w), vb, 1.0, &mut part.o, d);
        j0 = j1;
    }
    part
}

/// Attention of every query row of `q` over `kv` on the fast path: BHSD output and the
/// log-sum-exp of each row.
pub(crate) fn attend<T: Element>(
    q: &HostTensor<T>,
    kv: &impl KvSource,
    sc: &Scoring,
    dims: &Dims,
    sinks: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let (group, d) = (dims.group(), dims.d);
    let rows_per_head = group * dims.nq;
    let mut tasks = vec![];
    for b in 0..dims.batch {
        for hk in 0..dims.kv_heads {
            for r0 in (0..rows_per_head).step_by(BQ) {
                tasks.push(Task { b, hk, r0, r1: (r0 + BQ).min(rows_per_head) });
            }
        }
    }
    // too few tasks for the threads: split each task's keys (decoding)
    let max_len = (0..dims.batch).map(|b| sc.rm.kv_len(b)).max().unwrap_or(0);
    let threads = rayon::current_num_threads();
    let splits = if tasks.len() >= 2 * threads {
        1
    } else {
        (2 * threads).div_ceil(tasks.len().max(1)).min(max_len / 512).max(1)
    };
    let split_len = max_len.div_ceil(splits).div_ceil(BK).max(1) * BK;
    let parts: Vec<Partial> = (0..tasks.len() * splits)
        .into_par_iter()
        .map_init(Scratch::default, |scratch, t| {
            let (task, sp) = (tasks[t / splits], t % splits);
            run_task(q, kv, sc, dims, task, (sp * split_len, (sp + 1) * split_len), scratch)
        })
        .collect();
    let mut out = vec![0.0f32; dims.slices() * dims.nq * d];
    let mut lse = vec![f32::NEG_INFINITY; dims.slices() * dims.nq];
    for (t, task) in tasks.iter().enumerate() {
        let parts = &parts[t * splits..(t + 1) * splits];
        for rr in 0..task.r1 - task.r0 {
            let (h, i) = task.head_query(dims, task.r0 + rr);
            let row = (task.b * dims.heads + h) * dims.nq + i;
            let sink = sinks.map_or(f32::NEG_INFINITY, |s| s[h]);
            let m = parts.iter().fold(sink, |a, p| a.max(p.m[rr]));
            if m == f32::NEG_INFINITY {
                continue;
            }
            let l: f32 = parts.iter().map(|p| p.l[rr] * (p.m[rr] - m).exp()).sum::<f32>() + (sink - m).exp();
            let dst = &mut out[row * d..(row + 1) * d];
            for p in parts {
                let w = (p.m[rr] - m).exp() / l;
                if w != 0.0 {
                    dst.iter_mut().zip(&p.o[rr * d..(rr + 1) * d]).for_each(|(o, x)| *o += w * x);
                }
            }
            lse[row] = m + l.ln();
        }
    }
    (out, lse)
}

/// Fused attention `O = softmax(scale · Q Kᵀ + mask) V` on the fast CPU path (f32, blocked,
/// multi-threaded); semantics, arguments and errors of the GPU's
/// [`Context::attention`](crate::Context::attention) and of the f64
/// [`reference`](super::reference::attention()).
///
/// Returns `(output, lse)`: output in `q`'s layout with `q`'s shape; `lse` is the natural
/// log-sum-exp of each query row's kept scores, `[batch, heads, nq]`, `-inf` for a fully
/// masked row (whose output is zeros).
///
/// Accuracy: f32 accumulation (relative error around 1e-6 against the f64 reference for
/// ordinary inputs). Calls whose scores, bias or sums could pass 1e30 in magnitude run on the
/// f64 reference, which handles the extremes (README, "Extreme values").
///
/// ```
/// use wgpu_attention::{cpu, AttentionOptions, HostTensor, Shape};
/// let s = Shape::new(1, 2, 5, 8);
/// let x: Vec<f32> = (0..s.numel()).map(|i| (i as f32 * 0.37).cos()).collect();
/// let t = HostTensor::new(&x, s)?;
/// let (out, lse) = cpu::attention(&t, &t, &t, None, &AttentionOptions { causal: true, ..Default::default() })?;
/// // the first query sees only the first key: its output is that key's value
/// assert!((out[0] - x[0]).abs() < 1e-6);
/// assert_eq!(lse.len(), 2 * 5);
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
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
    // (the fixed reduction order: each row on the reference, its keys in order)
    if !fits_f32(p, mask, p.dims.nk) || p.fixed_order {
        return super::reference::attention::attention_checked(p, q, k, v, mask);
    }
    let kv = Tensors { k: k.with_data(k.data()), v: v.with_data(v.data()) };
    let (out, lse) = attend(q, &kv, &scoring(p, mask, None), &p.dims, p.sinks);
    (to_layout(out, &q.shape(), q.layout()), lse)
}

/// Attention over a paged cache on the fast CPU path: the CPU twin of
/// [`Context::paged_attention`](crate::Context::paged_attention), with the same checks.
/// Returns `(output, lse)`: output in `q`'s layout; lse `[batch, heads, nq]`. K and V are read
/// through the block table, a block of rows at a time (no gather of the whole cache); the rows
/// the table reaches are checked for NaN and infinities (`Err(NonFinite)` naming `k_pages` or
/// `v_pages`, with the index in the pool).
///
/// ```
/// use wgpu_attention::{cpu, AttentionOptions, BlockTable, HostKvCache, HostTensor, PageGeometry, Shape};
/// let g = PageGeometry { num_pages: 4, page_size: 4, kv_heads: 1, head_dim: 8 };
/// let mut cache = HostKvCache::<f32>::new(g)?;
/// // one sequence of 6 tokens in pages 2 and 0
/// let (pages, lens) = ([2u32, 0], [6u32]);
/// let table = BlockTable::new(&pages, 2, &lens)?;
/// let kv: Vec<f32> = (0..6 * 8).map(|i| i as f32 / 48.0).collect();
/// let t = HostTensor::new(&kv, Shape::new(1, 1, 6, 8))?;
/// cpu::append_kv(&mut cache, &table, &t, &t)?;
/// let q = vec![0.1f32; 2 * 8]; // 2 query heads on the 1 key/value head, one query each
/// let (out, _lse) = cpu::paged_attention(&HostTensor::new(&q, Shape::new(1, 2, 1, 8))?, &cache, &table, &AttentionOptions::default())?;
/// // the same as attention over the contiguous keys
/// let (want, _) = cpu::attention(&HostTensor::new(&q, Shape::new(1, 2, 1, 8))?, &t, &t, None, &AttentionOptions::default())?;
/// assert!(out.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6));
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
pub fn paged_attention<T: Element>(
    q: &HostTensor<T>,
    cache: &HostKvCache<T>,
    table: &BlockTable,
    opts: &AttentionOptions,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let p = paged_problem(q, cache, table, opts)?;
    let max_len = table.seq_lens().iter().map(|&l| l as usize).max().unwrap_or(0);
    if !fits_f32(&p.attn, None, max_len) || p.attn.fixed_order {
        return Ok(super::reference::attention::paged_checked(&p, q, cache, table));
    }
    let kv = Pages { cache, g: cache.geometry(), table };
    let sc = scoring(&p.attn, None, Some(table.seq_lens()));
    let (out, lse) = attend(q, &kv, &sc, &p.attn.dims, p.attn.sinks);
    Ok((to_layout(out, &q.shape(), q.layout()), lse))
}

/// Unfused attention, step by step on the fast CPU path: scores (GEMM), softmax with the same
/// rules, weights · V (GEMM). Returns `(output, weights)`: output in `q`'s layout; weights
/// `[batch, heads, nq, nk]`. Calls outside f32's safe range run on the f64 reference.
///
/// ```
/// use wgpu_attention::{cpu, AttentionOptions, HostTensor, Shape};
/// let s = Shape::new(1, 1, 3, 4);
/// let x: Vec<f32> = (0..s.numel()).map(|i| i as f32 / 12.0).collect();
/// let t = HostTensor::new(&x, s)?;
/// let (_out, weights) = cpu::attention_unfused(&t, &t, &t, None, &AttentionOptions::default())?;
/// // each row of weights sums to 1
/// for row in weights.chunks(3) {
///     assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
/// }
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
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
    if !fits_f32(p, mask, dims.nk) {
        return super::reference::attention::attention_unfused_checked(p, q, k, v, mask);
    }
    let sc = scoring(p, mask, None);
    let (nq, nk) = (dims.nq, dims.nk);
    let mut weights = vec![0.0f32; dims.slices() * nq * nk];
    if nk > 0 {
        // blocks of rows of one (b, h): scores by GEMM straight into the weights, then the
        // rules and the softmax in place
        weights.par_chunks_mut(nq * nk).enumerate().for_each(|(bh, head)| {
            let (b, h) = (bh / dims.heads, bh % dims.heads);
            let hk = h / dims.group();
            let sink = p.sinks.map_or(f32::NEG_INFINITY, |s| s[h]);
            head.par_chunks_mut(BQ * nk).enumerate().for_each_init(
                || (Vec::new(), Vec::new()),
                |(qb, ks), (c, dst)| {
                    let (i0, rows) = (c * BQ, dst.len() / nk);
                    let scale = sc.scale as f32;
                    qb.clear();
                    for i in i0..i0 + rows {
                        qb.extend(q.row(b, h, i).iter().map(|x| x.to_f32() * scale));
                    }
                    let kb = tensor_rows(k, (b, hk), (0, nk), ks);
                    gemm(1.0, Mat::rows(qb, rows, dims.d), kb.t(), 0.0, dst, nk);
                    for (r, row) in dst.chunks_exact_mut(nk).enumerate() {
                        apply_rules(row, &sc, (b, h, i0 + r), 0, sc.rm.key_range(b, i0 + r));
                    }
                    crate::vecmath::softmax_rows(dst, nk, sink);
                },
            );
        });
    }
    let w = HostTensor::trusted(&weights[..], p.scores_shape());
    let out = super::weighted_sum::weighted_sum_fast(&w, v, dims.group());
    (to_layout(out, &q.shape(), q.layout()), weights)
}
