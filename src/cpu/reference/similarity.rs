//! CPU twin of `shaders/similarity.wgsl`.

use rayon::prelude::*;

use crate::cpu::{dist2_64, dot64, view, widen};
use crate::error::Result;
use crate::host::{scan, HostTensor};
use crate::options::Similarity;
use crate::problem::{saturate, Operand, SimilarityProblem};
use crate::shape::Element;

/// The checked problem of a host similarity call, its inputs scanned once.
pub(crate) fn problem<T: Element>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    metric: Similarity,
) -> Result<SimilarityProblem> {
    let p = SimilarityProblem::new(Operand::host(q), Operand::host(k), metric)?;
    Ok(p.with_magnitudes(scan("q", q.data())?, scan("k", k.data())?))
}

/// Scores `S[b, h, i, j] = metric(q[b, h, i], k[b, h / group, j])`, returned `[batch, heads, nq, nk]`.
///
/// Cosine of a zero vector is 0. Scores beyond f32's range saturate at ±`f32::MAX`, as on the GPU.
pub fn similarity<T: Element>(q: &HostTensor<T>, k: &HostTensor<T>, metric: Similarity) -> Result<Vec<f32>> {
    let p = problem(q, k, metric)?;
    Ok(similarity_checked(&p, q, k))
}

/// [`similarity`] for a checked problem.
pub(crate) fn similarity_checked<T: Element>(p: &SimilarityProblem, q: &HostTensor<T>, k: &HostTensor<T>) -> Vec<f32> {
    let dims = p.dims;
    let metric = p.metric;
    let scale = p.scale as f64;
    let (cosine, l2) = (matches!(metric, Similarity::Cosine), matches!(metric, Similarity::L2));
    let (qd, kd) = (widen(q.data()), widen(k.data()));
    let (q, k) = (&view(q, &qd), &view(k, &kd));
    // key norms once per key row (cosine)
    let knorm: Vec<f64> = if cosine {
        (0..dims.batch * dims.kv_heads * dims.nk)
            .map(|r| {
                let (bh, j) = (r / dims.nk, r % dims.nk);
                let kr = k.row(bh / dims.kv_heads, bh % dims.kv_heads, j);
                dot64(kr, kr).sqrt()
            })
            .collect()
    } else {
        vec![]
    };
    let mut out = vec![0.0f32; dims.batch * dims.heads * dims.nq * dims.nk];
    out.par_chunks_mut(dims.nk).enumerate().for_each(|(row, dst)| {
        let i = row % dims.nq;
        let bh = row / dims.nq;
        let (b, h) = (bh / dims.heads, bh % dims.heads);
        let hk = h / dims.group();
        let qr = q.row(b, h, i);
        let qn = if cosine { dot64(qr, qr).sqrt() } else { 0.0 };
        for (j, o) in dst.iter_mut().enumerate() {
            let kr = k.row(b, hk, j);
            let v = if cosine {
                let kn = knorm[(b * dims.kv_heads + hk) * dims.nk + j];
                if qn == 0.0 || kn == 0.0 {
                    0.0
                } else {
                    dot64(qr, kr) / (qn * kn)
                }
            } else if l2 {
                -dist2_64(qr, kr)
            } else {
                dot64(qr, kr)
            };
            *o = saturate(v * scale);
        }
    });
    out
}
