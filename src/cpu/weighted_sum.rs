//! Fast CPU weighted sum (the CPU counterpart of `shaders/weighted_sum.wgsl`): per (batch,
//! head) and block of rows, one GEMM of the weights against V.

use rayon::prelude::*;

use super::{tensor_rows, F32_SAFE};
use super::gemm::{gemm, Mat};
use crate::error::Result;
use crate::host::HostTensor;
use crate::problem::WeightedSumProblem;
use crate::shape::Element;

pub(crate) use super::reference::weighted_sum::problem;

/// Rows of the output per task.
const BQ: usize = 64;

/// `O[b, h, i] = Σ_j P[b, h, i, j] · V[b, h / group, j]` on the fast CPU path: weights
/// `[batch, heads, nq, nk]` times values `[batch, kv_heads, nk, d]`, returned
/// `[batch, heads, nq, d]` in `v`'s layout. Outputs beyond the range of `v`'s type saturate at
/// its largest value (as on the GPU); calls whose sums could pass 1e30 run on the f64
/// [`reference`](super::reference::weighted_sum()).
///
/// ```
/// use wgpu_attention::{cpu, HostTensor, Shape};
/// let w = [0.25f32, 0.75]; // one query's weights over 2 keys
/// let v = [4.0f32, 0.0, 0.0, 8.0]; // 2 values of dim 2
/// let out = cpu::weighted_sum(&HostTensor::new(&w, Shape::new(1, 1, 1, 2))?, &HostTensor::new(&v, Shape::new(1, 1, 2, 2))?)?;
/// assert_eq!(out, vec![1.0, 6.0]);
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
pub fn weighted_sum<T: Element>(p: &HostTensor<f32>, v: &HostTensor<T>) -> Result<Vec<f32>> {
    let prob = problem(p, v)?;
    Ok(super::to_layout(weighted_sum_checked(&prob, p, v), &prob.out_shape(), v.layout()))
}

/// [`weighted_sum`] for a checked problem, returned BHSD.
pub(crate) fn weighted_sum_checked<T: Element>(
    prob: &WeightedSumProblem,
    p: &HostTensor<f32>,
    v: &HostTensor<T>,
) -> Vec<f32> {
    let mag = |m: Option<f32>| m.map_or(f64::INFINITY, |m| m as f64);
    if p.shape().dim as f64 * mag(prob.weights.max_abs) * mag(prob.v.max_abs) > F32_SAFE {
        return super::reference::weighted_sum::weighted_sum_checked(p, v, prob.group);
    }
    weighted_sum_fast(p, v, prob.group)
}

/// The weighted sum of checked arguments whose sums fit f32, returned BHSD.
pub(crate) fn weighted_sum_fast<T: Element>(p: &HostTensor<f32>, v: &HostTensor<T>, group: usize) -> Vec<f32> {
    let (ps, vs) = (p.shape(), v.shape());
    let (nq, nk, d) = (ps.seq, ps.dim, vs.dim);
    let mut out = vec![0.0f32; ps.batch * ps.heads * nq * d];
    if out.is_empty() || nk == 0 {
        return out;
    }
    let pstride = p.layout().strides(&ps).seq;
    let pall = p.data();
    out.par_chunks_mut(nq * d).enumerate().for_each(|(bh, head)| {
        let (b, h) = (bh / ps.heads, bh % ps.heads);
        head.par_chunks_mut(BQ * d).enumerate().for_each_init(Vec::new, |scratch, (c, dst)| {
            let (i0, rows) = (c * BQ, dst.len() / d);
            let w = Mat::strided(&pall[p.row_offset(b, h, i0)..], rows, nk, pstride);
            let vb = tensor_rows(v, (b, h / group), (0, nk), scratch);
            gemm(1.0, w, vb, 0.0, dst, d);
            // the GPU stores the output in v's type: it saturates at that type's largest value
            if T::MAX < f32::MAX {
                dst.iter_mut().for_each(|x| *x = x.clamp(-T::MAX, T::MAX));
            }
        });
    });
    out
}
