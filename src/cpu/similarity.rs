//! CPU twin of `shaders/similarity.wgsl`.

use rayon::prelude::*;

use crate::error::Result;
use crate::options::{check_qk, Similarity};
use crate::shape::{check_finite, Element, HostTensor};

/// Host-side checks of a similarity call.
pub(crate) fn check_host<T: Element>(q: &HostTensor<T>, k: &HostTensor<T>) -> Result<crate::options::Dims> {
    let dims = check_qk(&q.shape, &k.shape)?;
    check_finite("q", q.data)?;
    check_finite("k", k.data)?;
    Ok(dims)
}

/// Scores `S[b, h, i, j] = metric(q[b, h, i], k[b, h / group, j])`, returned `[batch, heads, nq, nk]`.
///
/// Cosine of a zero vector is 0.
pub fn similarity<T: Element>(q: &HostTensor<T>, k: &HostTensor<T>, metric: Similarity) -> Result<Vec<f32>> {
    let dims = check_host(q, k)?;
    let scale = metric.scale(dims.d) as f64;
    let (cosine, l2) = (matches!(metric, Similarity::Cosine), matches!(metric, Similarity::L2));
    let mut out = vec![0.0f32; dims.batch * dims.heads * dims.nq * dims.nk];
    out.par_chunks_mut(dims.nk).enumerate().for_each(|(row, dst)| {
        let i = row % dims.nq;
        let bh = row / dims.nq;
        let (b, h) = (bh / dims.heads, bh % dims.heads);
        let qr = q.row(b, h, i);
        let qn: f64 = qr.iter().map(|x| (x.to_f32() as f64).powi(2)).sum::<f64>().sqrt();
        for (j, o) in dst.iter_mut().enumerate() {
            let kr = k.row(b, h / dims.group(), j);
            let dot: f64 = qr.iter().zip(kr).map(|(a, b)| a.to_f32() as f64 * b.to_f32() as f64).sum();
            let v = if cosine {
                let kn: f64 = kr.iter().map(|x| (x.to_f32() as f64).powi(2)).sum::<f64>().sqrt();
                if qn == 0.0 || kn == 0.0 {
                    0.0
                } else {
                    dot / (qn * kn)
                }
            } else if l2 {
                -qr.iter().zip(kr).map(|(a, b)| (a.to_f32() as f64 - b.to_f32() as f64).powi(2)).sum::<f64>()
            } else {
                dot
            };
            *o = (v * scale) as f32;
        }
    });
    Ok(out)
}
