//! CPU twin of `shaders/softmax.wgsl`.

use rayon::prelude::*;

use super::{to_layout, RowMask};
use crate::error::Result;
use crate::options::{check_key_lengths, check_mask_shape, check_scalar, SoftmaxOptions};
use crate::shape::{check_finite, Element, HostMask, HostTensor};

/// Host-side checks of a softmax call.
pub(crate) fn check_host<T: Element>(x: &HostTensor<T>, mask: Option<&HostMask>, opts: &SoftmaxOptions) -> Result<()> {
    let s = x.shape;
    s.check_nonempty("x")?;
    check_finite("x", x.data)?;
    check_scalar("temperature", opts.temperature, true)?;
    if let Some(m) = mask {
        check_mask_shape(m.shape, s.batch, s.heads, s.seq, s.dim)?;
    }
    check_key_lengths(opts.key_lengths, s.batch, s.dim)
}

/// Softmax over the last dimension of `x` (`[batch, heads, rows, cols]`), after dividing by the
/// temperature and adding the mask. Masked columns give 0; a fully masked row gives zeros.
/// Output in `x`'s layout.
pub fn softmax<T: Element>(x: &HostTensor<T>, mask: Option<&HostMask>, opts: &SoftmaxOptions) -> Result<Vec<f32>> {
    check_host(x, mask, opts)?;
    let s = x.shape;
    let rm = RowMask { mask, causal: opts.causal, key_lengths: opts.key_lengths, nq: s.seq, nk: s.dim };
    let inv_t = 1.0 / opts.temperature as f64;
    let mut out = vec![0.0f32; s.numel()];
    out.par_chunks_mut(s.dim).enumerate().for_each(|(row, dst)| {
        let i = row % s.seq;
        let (b, h) = (row / s.seq / s.heads, row / s.seq % s.heads);
        let src = x.row(b, h, i);
        let vals: Vec<Option<f64>> =
            (0..s.dim).map(|j| rm.kept(b, h, i, j).map(|add| src[j].to_f32() as f64 * inv_t + add)).collect();
        softmax_row(&vals, dst);
    });
    Ok(to_layout(out, &s, x.layout))
}

/// Softmax of one row of optional (kept) scores into `dst`; all-masked gives zeros.
/// Returns the log-sum-exp (`-inf` for a fully masked row).
pub(crate) fn softmax_row(vals: &[Option<f64>], dst: &mut [f32]) -> f64 {
    let m = vals.iter().flatten().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    if m == f64::NEG_INFINITY {
        dst.iter_mut().for_each(|o| *o = 0.0);
        return f64::NEG_INFINITY;
    }
    let l: f64 = vals.iter().flatten().map(|v| (v - m).exp()).sum();
    for (o, v) in dst.iter_mut().zip(vals) {
        *o = v.map_or(0.0, |v| ((v - m).exp() / l) as f32);
    }
    m + l.ln()
}
