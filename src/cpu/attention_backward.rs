//! Fast CPU backward pass of fused attention, in the FlashAttention-2 shape: the weights are
//! recomputed block by block from Q, K and the forward's log-sum-exp (no `nq × nk` matrix),
//! the products through the GEMM. Two passes, so that every output block has one owner and no
//! sum depends on thread timing (the results are the same run to run):
//! - over (batch, key/value head, block of keys): `dV += Pᵀ dO` and `dK += dXᵀ Q`, walking the
//!   blocks of query rows of every query head of the group;
//! - over (batch, query head, block of query rows): `dQ += dX K`, walking the blocks of keys.
//!
//! Where there are at least as many (batch, key/value head) groups as threads, one pass per
//! group does the same blocks in the same order instead (each block's weights computed once, the
//! same bits). Rows without soft-cap, ALiBi or mask take a vectorised exponential
//! (`vecmath::backward_row`).
//!
//! `D = rowsum(dO ∘ O)` is computed once per row first. The formulas are those of
//! [`crate::cpu::reference::attention_backward`]; calls whose scores, biases or sums could leave
//! f32's range run on it (as the forward does).

use rayon::prelude::*;

use super::attention::fits_f32;
use super::backward_inputs::backward_problem;
pub use super::backward_inputs::{AttentionGrads, BackwardInputs};
use super::gemm::{gemm, Mat};
use super::reference::attention::scoring;
use super::{dot64, tensor_rows, Scoring};
use crate::error::Result;
use crate::options::AttentionOptions;
use crate::problem::AttentionProblem;
use crate::shape::Element;
use crate::vecmath::backward_row;

/// Query rows per block.
const BQ: usize = 128;
/// Keys per block.
const BK: usize = 256;

/// The backward pass of [`crate::cpu::attention`]: the gradients of a loss with respect to `q`,
/// `k`, `v` (and the sink logits) given the gradient `d_o` of its output. Every forward option
/// differentiates: causal, key lengths, masks (no gradient for the mask), windows, soft-capping
/// (through the tanh), ALiBi (no gradient for the slopes), sinks, GQA/MQA (dk and dv summed over
/// each group), the scale. Rows with nothing kept (`lse` = -inf) and rows beyond f32's range
/// (`lse` = +inf) give zero gradients. f32 and f16 inputs, f32 arithmetic with f64 row sums.
///
/// ```
/// use wgpu_attention::{cpu, AttentionOptions, HostTensor, Shape};
/// # fn main() -> wgpu_attention::Result<()> {
/// let s = Shape::new(1, 2, 5, 8);
/// let x: Vec<f32> = (0..s.numel()).map(|i| (i as f32 * 0.37).sin()).collect();
/// let t = HostTensor::new(&x, s)?;
/// let opts = AttentionOptions { causal: true, ..Default::default() };
/// // forward with the log-sum-exp, then backward with dL/dO = 1 everywhere
/// let (o, lse) = cpu::attention(&t, &t, &t, None, &opts)?;
/// let ones = vec![1.0f32; s.numel()];
/// let (o, d_o) = (HostTensor::new(&o, s)?, HostTensor::new(&ones, s)?);
/// let call = cpu::BackwardInputs { q: &t, k: &t, v: &t, mask: None, o: &o, lse: &lse, d_o: &d_o };
/// let g = cpu::attention_backward(&call, &opts)?;
/// assert_eq!((g.dq.len(), g.dk.len(), g.dv.len()), (s.numel(), s.numel(), s.numel()));
/// # Ok(()) }
/// ```
pub fn attention_backward<T: Element>(call: &BackwardInputs<T>, opts: &AttentionOptions) -> Result<AttentionGrads> {
    let p = backward_problem(call, opts)?;
    if !fits_f32(&p, call.mask, p.dims.nk) {
        return Ok(super::reference::attention_backward::backward_checked(&p, call));
    }
    Ok(backward_fast(&p, call))
}

/// What both passes share: the inputs, the scoring rules, each row's log-sum-exp and D.
struct Ctx<'a, T> {
    p: &'a AttentionProblem<'a>,
    call: &'a BackwardInputs<'a, T>,
    sc: Scoring<'a>,
    /// `rowsum(dO ∘ O)`, BHSD rows.
    dsum: Vec<f32>,
}

/// A block's weights `P` and score gradients `dX` (row-major `[i1 - i0, j1 - j0]`), in buffers
/// a task reuses from block to block (a block's are 128 KiB each: allocated afresh, every one
/// would be mapped and its pages faulted in again).
#[derive(Default)]
struct Block {
    p: Vec<f32>,
    dx: Vec<f32>,
}

impl<T: Element> Ctx<'_, T> {
    /// The keys any of rows `[i0, i1)` of batch `b` can keep.
    fn key_span(&self, b: usize, (i0, i1): (usize, usize)) -> (usize, usize) {
        (i0..i1).map(|i| self.sc.rm.key_range(b, i)).fold((usize::MAX, 0), |(lo, hi), (s, l)| {
            if s < l {
                (lo.min(s), hi.max(l))
            } else {
                (lo, hi)
            }
        })
    }

    /// `P` and `dX` of query head `h`, rows `[i0, i1)`, keys `[j0, j1)` of batch `b`, into `bl`.
    fn block(&self, b: usize, h: usize, (i0, i1): (usize, usize), (j0, j1): (usize, usize), bl: &mut Block) {
        let dims = &self.p.dims;
        let hk = h / dims.group();
        let (m, n) = (i1 - i0, j1 - j0);
        let (mut s1, mut s2, mut s3, mut s4) = (vec![], vec![], vec![], vec![]);
        let q = tensor_rows(self.call.q, (b, h), (i0, i1), &mut s1);
        let k = tensor_rows(self.call.k, (b, hk), (j0, j1), &mut s2);
        let d_o = tensor_rows(self.call.d_o, (b, h), (i0, i1), &mut s3);
        let v = tensor_rows(self.call.v, (b, hk), (j0, j1), &mut s4);
        // (gemm does not read its output when beta is 0: the old contents do not matter)
        bl.p.resize(m * n, 0.0);
        bl.dx.resize(m * n, 0.0);
        let (s, dp) = (&mut bl.p[..m * n], &mut bl.dx[..m * n]);
        gemm(1.0, q, k.t(), 0.0, s, n);
        gemm(1.0, d_o, v.t(), 0.0, dp, n);
        // without soft-cap, ALiBi or mask, a row's kept keys are one range with score
        // `scale · dot`: one vectorised pass over it
        let plain = self.sc.softcap.is_none() && self.sc.alibi_slopes.is_none() && self.sc.rm.mask.is_none();
        for r in 0..m {
            let i = i0 + r;
            let row = (b * dims.heads + h) * dims.nq + i;
            let lse = self.call.lse[row];
            let di = self.dsum[row];
            if plain {
                let (srow, drow) = (&mut s[r * n..(r + 1) * n], &mut dp[r * n..(r + 1) * n]);
                let (start, limit) = self.sc.rm.key_range(b, i);
                let a = start.saturating_sub(j0).min(n);
                let z = limit.saturating_sub(j0).clamp(a, n);
                if lse.is_finite() {
                    backward_row(&mut srow[a..z], &mut drow[a..z], self.sc.scale as f32, lse, di);
                } else {
                    srow[a..z].fill(0.0);
                    drow[a..z].fill(0.0);
                }
                for row in [srow, drow] {
                    row[..a].fill(0.0);
                    row[z..].fill(0.0);
                }
                continue;
            }
            for c in 0..n {
                let e = r * n + c;
                let kept = if lse.is_finite() { self.sc.score_slope(b, h, i, j0 + c, || s[e] as f64) } else { None };
                match kept {
                    Some((z, slope)) => {
                        let w = (z as f32 - lse).exp();
                        s[e] = w;
                        dp[e] = w * (dp[e] - di) * slope as f32;
                    }
                    None => {
                        s[e] = 0.0;
                        dp[e] = 0.0;
                    }
                }
            }
        }
    }
}

/// dQ, dK and dV, BHSD.
type Grads = (Vec<f32>, Vec<f32>, Vec<f32>);

/// The slices one after another, a copy per slice (the element-by-element iterator this
/// replaced took 8% of a 4 x 512² d 64 backward's time here).
fn concat<'a>(parts: impl Iterator<Item = &'a [f32]> + Clone) -> Vec<f32> {
    let mut out = Vec::with_capacity(parts.clone().map(<[f32]>::len).sum());
    parts.for_each(|p| out.extend_from_slice(p));
    out
}

/// Row blocks `[start, end)` of `n` in steps of `step`.
fn blocks(n: usize, step: usize) -> impl Iterator<Item = (usize, usize)> + Clone {
    (0..n.div_ceil(step)).map(move |x| (x * step, ((x + 1) * step).min(n)))
}

fn backward_fast<T: Element>(p: &AttentionProblem, call: &BackwardInputs<T>) -> AttentionGrads {
    let dims = p.dims;
    let (d, nq, nk) = (dims.d, dims.nq, dims.nk);
    let rows = dims.slices() * nq;
    let dsum: Vec<f32> = (0..rows)
        .into_par_iter()
        .map(|row| {
            let (b, h, i) = (row / nq / dims.heads, row / nq % dims.heads, row % nq);
            let (mut a, mut c) = (vec![], vec![]);
            let o = tensor_rows(call.o, (b, h), (i, i + 1), &mut a);
            let d_o = tensor_rows(call.d_o, (b, h), (i, i + 1), &mut c);
            dot64(&o.data[..d], &d_o.data[..d]) as f32
        })
        .collect();
    let cx = Ctx { p, call, sc: scoring(p, call.mask, None), dsum };
    // (both give the same bits: the choice is the parallelism's)
    let (dq, dk, dv) =
        if dims.batch * dims.kv_heads >= rayon::current_num_threads() { one_pass(&cx) } else { two_passes(&cx) };
    // the sinks' gradients: per head, over its rows in order (f64)
    let d_sinks = p.sinks.map(|sinks| {
        (0..dims.heads)
            .map(|h| {
                let mut acc = 0.0f64;
                for b in 0..dims.batch {
                    for i in 0..nq {
                        let row = (b * dims.heads + h) * nq + i;
                        let lse = call.lse[row] as f64;
                        if lse.is_finite() {
                            acc -= (sinks[h] as f64 - lse).exp() * cx.dsum[row] as f64;
                        }
                    }
                }
                acc as f32
            })
            .collect()
    });
    AttentionGrads::from_bhsd(call, nk, (dq, dk, dv), d_sinks)
}

/// dQ, dK, dV (BHSD) in two passes: over (batch, key/value head, block of keys) for dK and dV,
/// then over (batch, query head, block of query rows) for dQ, each block's weights recomputed
/// in both; parallel over blocks, for problems of few heads.
fn two_passes<T: Element>(cx: &Ctx<T>) -> Grads {
    let (call, dims) = (cx.call, cx.p.dims);
    let (d, g, nq, nk) = (dims.d, dims.group(), dims.nq, dims.nk);
    let kv_tasks: Vec<(usize, usize, (usize, usize))> = (0..dims.batch * dims.kv_heads)
        .flat_map(|t| blocks(nk, BK).map(move |kb| (t / dims.kv_heads, t % dims.kv_heads, kb)))
        .collect();
    let kv_parts: Vec<(Vec<f32>, Vec<f32>)> = kv_tasks
        .par_iter()
        .map(|&(b, hk, (j0, j1))| {
            let n = j1 - j0;
            let (mut dk, mut dv) = (vec![0.0f32; n * d], vec![0.0f32; n * d]);
            let (mut s1, mut s2, mut bl) = (vec![], vec![], Block::default());
            for h in hk * g..(hk + 1) * g {
                for (i0, i1) in blocks(nq, BQ) {
                    let (lo, hi) = cx.key_span(b, (i0, i1));
                    if lo >= j1 || hi <= j0 {
                        continue;
                    }
                    let m = i1 - i0;
                    cx.block(b, h, (i0, i1), (j0, j1), &mut bl);
                    let d_o = tensor_rows(call.d_o, (b, h), (i0, i1), &mut s1);
                    let q = tensor_rows(call.q, (b, h), (i0, i1), &mut s2);
                    gemm(1.0, Mat::rows(&bl.p[..m * n], m, n).t(), d_o, 1.0, &mut dv, d);
                    gemm(1.0, Mat::rows(&bl.dx[..m * n], m, n).t(), q, 1.0, &mut dk, d);
                }
            }
            (dk, dv)
        })
        .collect();
    // pass 2: dQ, per (batch, query head, block of query rows)
    let q_tasks: Vec<(usize, usize, (usize, usize))> =
        (0..dims.slices()).flat_map(|t| blocks(nq, BQ).map(move |qb| (t / dims.heads, t % dims.heads, qb))).collect();
    let q_parts: Vec<Vec<f32>> = q_tasks
        .par_iter()
        .map(|&(b, h, (i0, i1))| {
            let m = i1 - i0;
            let mut dq = vec![0.0f32; m * d];
            let (lo, hi) = cx.key_span(b, (i0, i1));
            let (mut s1, mut bl) = (vec![], Block::default());
            for (j0, j1) in blocks(nk, BK) {
                if lo >= j1 || hi <= j0 {
                    continue;
                }
                cx.block(b, h, (i0, i1), (j0, j1), &mut bl);
                let k = tensor_rows(call.k, (b, h / g), (j0, j1), &mut s1);
                gemm(1.0, Mat::rows(&bl.dx[..m * (j1 - j0)], m, j1 - j0), k, 1.0, &mut dq, d);
            }
            dq
        })
        .collect();
    let dq: Vec<f32> = q_parts.concat();
    let dk = concat(kv_parts.iter().map(|x| &x.0[..]));
    let dv = concat(kv_parts.iter().map(|x| &x.1[..]));
    (dq, dk, dv)
}

/// The same blocks and sums as [`two_passes`] (so the same bits), in one pass per (batch,
/// key/value head): each block's weights computed once and used for dV, dK and dQ. Parallel over
/// the heads' groups, for problems with at least as many as there are threads.
fn one_pass<T: Element>(cx: &Ctx<T>) -> Grads {
    let (call, dims) = (cx.call, cx.p.dims);
    let (d, g, nq, nk) = (dims.d, dims.group(), dims.nq, dims.nk);
    let parts: Vec<Grads> = (0..dims.batch * dims.kv_heads)
        .into_par_iter()
        .map(|t| {
            let (b, hk) = (t / dims.kv_heads, t % dims.kv_heads);
            let (mut dq, mut dk, mut dv) = (vec![0.0f32; g * nq * d], vec![0.0f32; nk * d], vec![0.0f32; nk * d]);
            let (mut s1, mut s2, mut s3, mut bl) = (vec![], vec![], vec![], Block::default());
            for h in hk * g..(hk + 1) * g {
                for (i0, i1) in blocks(nq, BQ) {
                    let (lo, hi) = cx.key_span(b, (i0, i1));
                    let m = i1 - i0;
                    let dq_blk = &mut dq[((h - hk * g) * nq + i0) * d..((h - hk * g) * nq + i1) * d];
                    for (j0, j1) in blocks(nk, BK) {
                        if lo >= j1 || hi <= j0 {
                            continue;
                        }
                        let n = j1 - j0;
                        cx.block(b, h, (i0, i1), (j0, j1), &mut bl);
                        let d_o = tensor_rows(call.d_o, (b, h), (i0, i1), &mut s1);
                        let q = tensor_rows(call.q, (b, h), (i0, i1), &mut s2);
                        let k = tensor_rows(call.k, (b, hk), (j0, j1), &mut s3);
                        gemm(1.0, Mat::rows(&bl.p, m, n).t(), d_o, 1.0, &mut dv[j0 * d..j1 * d], d);
                        gemm(1.0, Mat::rows(&bl.dx, m, n).t(), q, 1.0, &mut dk[j0 * d..j1 * d], d);
                        gemm(1.0, Mat::rows(&bl.dx, m, n), k, 1.0, dq_blk, d);
                    }
                }
            }
            (dq, dk, dv)
        })
        .collect();
    (
        concat(parts.iter().map(|x| &x.0[..])),
        concat(parts.iter().map(|x| &x.1[..])),
        concat(parts.iter().map(|x| &x.2[..])),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostTensor;
    use crate::shape::Shape;

    #[test]
    fn one_pass_and_two_passes_give_the_same_bits() {
        // GQA, causal, blocks of both sizes crossed, ragged ends
        let (qs, ks) = (Shape::new(2, 4, 70, 24), Shape::new(2, 2, 150, 24));
        let gen = |n: usize, seed: u32| {
            (0..n)
                .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0 - 1.0)
                .collect::<Vec<_>>()
        };
        let (q, k, v, d_o) = (gen(qs.numel(), 1), gen(ks.numel(), 2), gen(ks.numel(), 3), gen(qs.numel(), 4));
        let (q, k, v) =
            (HostTensor::new(&q, qs).unwrap(), HostTensor::new(&k, ks).unwrap(), HostTensor::new(&v, ks).unwrap());
        let opts = AttentionOptions { causal: true, ..Default::default() };
        let (o, lse) = crate::cpu::attention(&q, &k, &v, None, &opts).unwrap();
        let (o, d_o) = (HostTensor::new(&o, qs).unwrap(), HostTensor::new(&d_o, qs).unwrap());
        let call = BackwardInputs { q: &q, k: &k, v: &v, mask: None, o: &o, lse: &lse, d_o: &d_o };
        let p = backward_problem(&call, &opts).unwrap();
        let dsum = (0..qs.batch * qs.heads * qs.seq)
            .map(|row| dot64(&o.data()[row * 24..][..24], &d_o.data()[row * 24..][..24]) as f32)
            .collect();
        let cx = Ctx { p: &p, call: &call, sc: scoring(&p, None, None), dsum };
        assert!(one_pass(&cx) == two_passes(&cx));
    }
}
