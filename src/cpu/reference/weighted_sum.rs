//! CPU twin of `shaders/weighted_sum.wgsl`.

use rayon::prelude::*;

use crate::cpu::{view, widen};
use crate::error::Result;
use crate::host::{scan, HostTensor};
use crate::problem::{saturate, Operand, WeightedSumProblem};
use crate::shape::Element;

/// `O[b, h, i] = Σ_j P[b, h, i, j] · V[b, h / group, j]`: weights `[batch, heads, nq, nk]`
/// times values `[batch, kv_heads, nk, d]`, returned `[batch, heads, nq, d]` in `v`'s layout
/// (as the GPU's). Outputs beyond the range of `v`'s type saturate at its largest value
/// (`f32::MAX`, or 65504 for f16), as on the GPU.
pub fn weighted_sum<T: Element>(p: &HostTensor<f32>, v: &HostTensor<T>) -> Result<Vec<f32>> {
    let prob = problem(p, v)?;
    Ok(crate::cpu::to_layout(weighted_sum_checked(p, v, prob.group), &prob.out_shape(), v.layout()))
}

/// The checked problem of a host weighted sum, its inputs scanned once.
pub(crate) fn problem<T: Element>(p: &HostTensor<f32>, v: &HostTensor<T>) -> Result<WeightedSumProblem> {
    let prob = WeightedSumProblem::new(Operand::host(p), Operand::host(v))?;
    Ok(prob.with_magnitudes(scan("weights", p.data())?, scan("v", v.data())?))
}

/// [`weighted_sum`] for checked arguments, returned BHSD.
pub(crate) fn weighted_sum_checked<T: Element>(p: &HostTensor<f32>, v: &HostTensor<T>, group: usize) -> Vec<f32> {
    let (ps, vs) = (p.shape(), v.shape());
    let vd = widen(v.data());
    let v = &view(v, &vd);
    let mut out = vec![0.0f32; ps.batch * ps.heads * ps.seq * vs.dim];
    out.par_chunks_mut(vs.dim).enumerate().for_each(|(row, dst)| {
        let i = row % ps.seq;
        let (b, h) = (row / ps.seq / ps.heads, row / ps.seq % ps.heads);
        let pr = p.row(b, h, i);
        let mut acc = vec![0.0f64; vs.dim];
        for (j, &pj) in pr.iter().enumerate() {
            if pj != 0.0 {
                let vr = v.row(b, h / group, j);
                acc.iter_mut().zip(vr).for_each(|(a, x)| *a += pj as f64 * *x as f64);
            }
        }
        // the GPU stores the output in v's type: it saturates at that type's largest value
        dst.iter_mut().zip(&acc).for_each(|(o, a)| *o = saturate(*a).clamp(-T::MAX, T::MAX));
    });
    out
}
