//! CPU twins of `shaders/attention.wgsl` (fused; split-K merged by `attention_merge`) and of
//! the unfused path (`similarity` → `softmax` → `weighted_sum`).

use rayon::prelude::*;

use super::attention_merge::{attention_merge, AttentionPartial};
use super::softmax::softmax_row;
use super::{dot64, to_layout, view, widen, RowMask};
use crate::error::Result;
use crate::host::{scan, HostMask, HostTensor};
use crate::options::AttentionOptions;
use crate::problem::{AttentionProblem, Dims, MaskSpec, Operand};
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

/// The partial result of query row `(b, h, i)` over keys `[j0, j1)`.
#[allow(clippy::too_many_arguments)]
fn partial(
    q: &HostTensor<f32>,
    k: &HostTensor<f32>,
    v: &HostTensor<f32>,
    rm: &RowMask,
    dims: &Dims,
    scale: f64,
    (b, h, i): (usize, usize, usize),
    (j0, j1): (usize, usize),
) -> AttentionPartial {
    let qr = q.row(b, h, i);
    let hk = h / dims.group();
    let scores: Vec<(usize, f64)> =
        (j0..j1).filter_map(|j| rm.kept(b, h, i, j).map(|add| (j, dot64(qr, k.row(b, hk, j)) * scale + add))).collect();
    let max = scores.iter().fold(f64::NEG_INFINITY, |a, s| a.max(s.1));
    let mut p = AttentionPartial::empty(dims.d);
    if max == f64::NEG_INFINITY {
        return p;
    }
    p.max = max;
    for (j, s) in scores {
        let w = (s - max).exp();
        p.sum += w;
        p.acc.iter_mut().zip(v.row(b, hk, j)).for_each(|(a, x)| *a += w * *x as f64);
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
    let (q, k, v) = (&view(q, &qd), &view(k, &kd), &view(v, &vd));
    let scale = p.scale as f64;
    let rm = RowMask { mask, causal: p.causal, key_lengths: p.key_lengths, nq: dims.nq, nk: dims.nk };
    let rows = dims.slices() * dims.nq;
    let range = key_range(rows, dims.nk);
    let nranges = dims.nk.div_ceil(range).max(1);
    // every (row, key range) in parallel, then each row's ranges merged
    let parts: Vec<AttentionPartial> = (0..rows * nranges)
        .into_par_iter()
        .map(|t| {
            let (row, r) = (t / nranges, t % nranges);
            let i = row % dims.nq;
            let (b, h) = (row / dims.nq / dims.heads, row / dims.nq % dims.heads);
            partial(q, k, v, &rm, &dims, scale, (b, h, i), (r * range, ((r + 1) * range).min(dims.nk)))
        })
        .collect();
    let mut out = vec![0.0f32; rows * dims.d];
    let mut lse = vec![0.0f32; rows];
    out.par_chunks_mut(dims.d.max(1)).zip(lse.par_iter_mut()).enumerate().for_each(|(row, (dst, l))| {
        let (o, m) = attention_merge(&parts[row * nranges..(row + 1) * nranges]);
        dst.copy_from_slice(&o);
        *l = m;
    });
    (to_layout(out, &q.shape(), q.layout()), lse)
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
    let scale = p.scale as f64;
    let rm = RowMask { mask, causal: p.causal, key_lengths: p.key_lengths, nq: dims.nq, nk: dims.nk };
    let mut weights = vec![0.0f32; dims.slices() * dims.nq * dims.nk];
    weights.par_chunks_mut(dims.nk).enumerate().for_each(|(row, dst)| {
        let i = row % dims.nq;
        let (b, h) = (row / dims.nq / dims.heads, row / dims.nq % dims.heads);
        let qr = qw.row(b, h, i);
        let hk = h / dims.group();
        let scores: Vec<Option<f64>> =
            (0..dims.nk).map(|j| rm.kept(b, h, i, j).map(|add| dot64(qr, kw.row(b, hk, j)) * scale + add)).collect();
        softmax_row(&scores, dst);
    });
    let w = HostTensor::trusted(&weights[..], p.scores_shape());
    let out = super::weighted_sum::weighted_sum_checked(&w, v, dims.group());
    (to_layout(out, &q.shape(), q.layout()), weights)
}
