//! Fast CPU similarity (the CPU counterpart of `shaders/similarity.wgsl`): per (batch, head)
//! and block of query rows, one GEMM against the keys, then the metric's normalisation.

use rayon::prelude::*;

use super::{tensor_rows, F32_SAFE};
use super::gemm::{gemm, Mat};
use crate::error::Result;
use crate::host::HostTensor;
use crate::options::Similarity;
use crate::problem::SimilarityProblem;
use crate::shape::Element;

pub(crate) use super::reference::similarity::problem;

/// Query rows per task.
const BQ: usize = 256;

/// Scores `S[b, h, i, j] = metric(q[b, h, i], k[b, h / group, j])` on the fast CPU path,
/// returned `[batch, heads, nq, nk]`; the semantics of [`Context::similarity`](crate::Context::similarity)
/// (cosine of a zero vector is 0; L2 is `-|q - k|²`, computed as `-(|q|² + |k|² - 2 q·k)`
/// clamped to at most 0). Calls whose products could pass 1e30 run on the f64
/// [`reference`](super::reference::similarity()), which saturates at ±`f32::MAX`.
///
/// ```
/// use wgpu_attention::{cpu, HostTensor, Shape, Similarity};
/// let q = [1.0f32, 0.0, 0.0, 2.0]; // two queries of dim 2
/// let k = [3.0f32, 0.0, 0.0, 5.0, 1.0, 1.0]; // three keys
/// let (q, k) = (HostTensor::new(&q, Shape::new(1, 1, 2, 2))?, HostTensor::new(&k, Shape::new(1, 1, 3, 2))?);
/// let cos = cpu::similarity(&q, &k, Similarity::Cosine)?; // [1, 1, 2, 3]
/// assert_eq!(&cos[..2], &[1.0, 0.0]);
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
pub fn similarity<T: Element>(q: &HostTensor<T>, k: &HostTensor<T>, metric: Similarity) -> Result<Vec<f32>> {
    let p = problem(q, k, metric)?;
    Ok(similarity_checked(&p, q, k))
}

/// Squared norm of a row, in f64 (so that a zero vector is exactly zero).
fn norm2(row: &[f32]) -> f64 {
    super::dot64(row, row)
}

/// [`similarity`] for a checked problem.
pub(crate) fn similarity_checked<T: Element>(p: &SimilarityProblem, q: &HostTensor<T>, k: &HostTensor<T>) -> Vec<f32> {
    let dims = p.dims;
    let (mq, mk) = (p.q.max_abs.map_or(f64::INFINITY, |m| m as f64), p.k.max_abs.map_or(f64::INFINITY, |m| m as f64));
    let bound = match p.metric {
        Similarity::L2 => dims.d as f64 * (mq + mk) * (mq + mk),
        _ => dims.d as f64 * mq * mk * (p.scale.abs() as f64).max(1.0),
    };
    if bound > F32_SAFE {
        return super::reference::similarity::similarity_checked(p, q, k);
    }
    let (nq, nk, d) = (dims.nq, dims.nk, dims.d);
    let mut out = vec![0.0f32; dims.slices() * nq * nk];
    if out.is_empty() {
        return out;
    }
    let scale = p.scale;
    out.par_chunks_mut(nq * nk).enumerate().for_each(|(bh, head)| {
        let (b, h) = (bh / dims.heads, bh % dims.heads);
        let hk = h / dims.group();
        head.par_chunks_mut(BQ * nk).enumerate().for_each_init(
            || (Vec::new(), Vec::new()),
            |(qb, ks), (c, dst)| {
                let (i0, rows) = (c * BQ, dst.len() / nk);
                qb.clear();
                for i in i0..i0 + rows {
                    qb.extend(q.row(b, h, i).iter().map(|x| x.to_f32()));
                }
                let kb = tensor_rows(k, (b, hk), (0, nk), ks);
                if let Similarity::Dot | Similarity::ScaledDot(_) = p.metric {
                    // the scale rides on the product
                    gemm(scale, Mat::rows(qb, rows, d), kb.t(), 0.0, dst, nk);
                    return;
                }
                gemm(1.0, Mat::rows(qb, rows, d), kb.t(), 0.0, dst, nk);
                let knorm: Vec<f64> = (0..nk).map(|j| norm2(&kb.data[j * kb.rs..j * kb.rs + d])).collect();
                for (r, row) in dst.chunks_exact_mut(nk).enumerate() {
                    let qn = norm2(&qb[r * d..(r + 1) * d]);
                    match p.metric {
                        Similarity::Dot | Similarity::ScaledDot(_) => {}
                        Similarity::Cosine => row.iter_mut().zip(&knorm).for_each(|(x, &kn)| {
                            let den = (qn * kn).sqrt();
                            *x = if den == 0.0 { 0.0 } else { (*x as f64 / den) as f32 * scale };
                        }),
                        Similarity::L2 => row.iter_mut().zip(&knorm).for_each(|(x, &kn)| {
                            *x = ((2.0 * *x as f64 - qn - kn).min(0.0) * scale as f64) as f32;
                        }),
                    }
                }
            },
        );
    });
    out
}
