//! CPU twins of `shaders/attention.wgsl` (fused) and of the unfused path
//! (`similarity` → `softmax` → `shaders/weighted_sum.wgsl`).

use rayon::prelude::*;

use super::softmax::softmax_row;
use super::{dot64, to_layout, view, widen, RowMask};
use crate::error::{Error, Result};
use crate::options::{check_key_lengths, check_mask_shape, check_qkv, check_scalar, AttentionOptions, Dims};
use crate::shape::{check_finite, Element, HostMask, HostTensor, Shape};

/// Host-side checks of an attention call (shapes, mask, key lengths, scale, finite inputs).
pub(crate) fn check_all<T: Element>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    mask: Option<&HostMask>,
    opts: &AttentionOptions,
) -> Result<Dims> {
    let dims = check_qkv(&q.shape, &k.shape, &v.shape)?;
    if let Some(m) = mask {
        check_mask_shape(m.shape, dims.batch, dims.heads, dims.nq, dims.nk)?;
    }
    check_key_lengths(opts.key_lengths, dims.batch, dims.nk)?;
    check_scalar("scale", opts.scale_for(dims.d), false)?;
    check_finite("q", q.data)?;
    check_finite("k", k.data)?;
    check_finite("v", v.data)?;
    Ok(dims)
}

/// The masked, scaled scores of query row `(b, h, i)` (`None` = masked out).
fn scores_row(
    q: &HostTensor<f32>,
    k: &HostTensor<f32>,
    rm: &RowMask,
    dims: &Dims,
    scale: f64,
    (b, h, i): (usize, usize, usize),
) -> Vec<Option<f64>> {
    let qr = q.row(b, h, i);
    (0..dims.nk)
        .map(|j| rm.kept(b, h, i, j).map(|add| dot64(qr, k.row(b, h / dims.group(), j)) * scale + add))
        .collect()
}

/// Fused attention semantics: `O = softmax(scale · Q Kᵀ + mask) V`.
///
/// Returns `(output, lse)`: output in `q`'s layout with `q`'s shape; `lse` is the natural
/// log-sum-exp of each query row's kept scores, `[batch, heads, nq]`, `-inf` for a fully
/// masked row (whose output is zeros).
pub fn attention<T: Element>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    mask: Option<&HostMask>,
    opts: &AttentionOptions,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let dims = check_all(q, k, v, mask, opts)?;
    let (qd, kd, vd) = (widen(q.data), widen(k.data), widen(v.data));
    let (q, k, v) = (&view(q, &qd), &view(k, &kd), &view(v, &vd));
    let scale = opts.scale_for(dims.d) as f64;
    let rm = RowMask { mask, causal: opts.causal, key_lengths: opts.key_lengths, nq: dims.nq, nk: dims.nk };
    let mut out = vec![0.0f32; dims.batch * dims.heads * dims.nq * dims.d];
    let mut lse = vec![0.0f32; dims.batch * dims.heads * dims.nq];
    out.par_chunks_mut(dims.d).zip(lse.par_iter_mut()).enumerate().for_each(|(row, (dst, lse))| {
        let i = row % dims.nq;
        let (b, h) = (row / dims.nq / dims.heads, row / dims.nq % dims.heads);
        let scores = scores_row(q, k, &rm, &dims, scale, (b, h, i));
        let mut p = vec![0.0f32; dims.nk];
        *lse = softmax_row(&scores, &mut p) as f32;
        let mut acc = vec![0.0f64; dims.d];
        for (j, &pj) in p.iter().enumerate() {
            if pj != 0.0 {
                let vr = v.row(b, h / dims.group(), j);
                acc.iter_mut().zip(vr).for_each(|(a, x)| *a += pj as f64 * *x as f64);
            }
        }
        dst.iter_mut().zip(&acc).for_each(|(o, a)| *o = *a as f32);
    });
    Ok((to_layout(out, &q.shape, q.layout), lse))
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
    let dims = check_all(q, k, v, mask, opts)?;
    let (qd, kd) = (widen(q.data), widen(k.data));
    let (qw, kw) = (&view(q, &qd), &view(k, &kd));
    let scale = opts.scale_for(dims.d) as f64;
    let rm = RowMask { mask, causal: opts.causal, key_lengths: opts.key_lengths, nq: dims.nq, nk: dims.nk };
    let mut weights = vec![0.0f32; dims.batch * dims.heads * dims.nq * dims.nk];
    weights.par_chunks_mut(dims.nk).enumerate().for_each(|(row, dst)| {
        let i = row % dims.nq;
        let (b, h) = (row / dims.nq / dims.heads, row / dims.nq % dims.heads);
        softmax_row(&scores_row(qw, kw, &rm, &dims, scale, (b, h, i)), dst);
    });
    let wshape = Shape::new(dims.batch, dims.heads, dims.nq, dims.nk);
    let w = HostTensor::new(&weights, wshape)?;
    let mut out = weighted_sum(&w, v)?;
    out = to_layout(out, &q.shape.clone(), q.layout);
    Ok((out, weights))
}

/// `O[b, h, i] = Σ_j P[b, h, i, j] · V[b, h / group, j]`: weights `[batch, heads, nq, nk]`
/// times values `[batch, kv_heads, nk, d]`, returned `[batch, heads, nq, d]` (BHSD).
pub fn weighted_sum<T: Element>(p: &HostTensor<f32>, v: &HostTensor<T>) -> Result<Vec<f32>> {
    p.shape.check_nonempty("weights")?;
    v.shape.check_nonempty("v")?;
    let (ps, vs) = (p.shape, v.shape);
    for (dim, got, expected) in [("batch", vs.batch, ps.batch), ("seq", vs.seq, ps.dim)] {
        if got != expected {
            return Err(Error::ShapeMismatch { argument: "v", other: "weights", dim, got, expected });
        }
    }
    if !ps.heads.is_multiple_of(vs.heads) {
        return Err(Error::HeadsNotDivisible { argument: "v", q_heads: ps.heads, kv_heads: vs.heads });
    }
    let group = ps.heads / vs.heads;
    let vd = widen(v.data);
    let v = &view(v, &vd);
    let mut out = vec![0.0f32; ps.batch * ps.heads * ps.seq * vs.dim];
    out.par_chunks_mut(vs.dim).enumerate().for_each(|(row, dst)| {
        let i = row % ps.seq;
        let (b, h) = (row / ps.seq / ps.heads, row / ps.seq % ps.heads);
        let pr = p.row(b, h, i);
        let mut acc = vec![0.0f64; vs.dim];
        for (j, &pj) in pr.iter().enumerate() {
            let vr = v.row(b, h / group, j);
            acc.iter_mut().zip(vr).for_each(|(a, x)| *a += pj as f64 * *x as f64);
        }
        dst.iter_mut().zip(&acc).for_each(|(o, a)| *o = *a as f32);
    });
    Ok(out)
}
