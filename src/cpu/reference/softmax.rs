//! CPU twin of `shaders/softmax.wgsl`.

use rayon::prelude::*;

use crate::cpu::{to_layout, RowMask};
use crate::error::Result;
use crate::host::{scan, HostMask, HostTensor};
use crate::options::SoftmaxOptions;
use crate::problem::{MaskSpec, Operand, SoftmaxProblem};
use crate::shape::{Element, Shape};

/// The checked problem of a host softmax call, its input scanned once.
pub(crate) fn problem<'a, T: Element>(
    x: &HostTensor<T>,
    mask: Option<&HostMask>,
    opts: &SoftmaxOptions<'a>,
) -> Result<SoftmaxProblem<'a>> {
    let mut p = SoftmaxProblem::new(Operand::host(x), mask.map(MaskSpec::host), opts)?;
    p.x = p.x.scanned(scan("x", x.data())?);
    Ok(p)
}

/// Softmax over the last dimension of `x` (`[batch, heads, rows, cols]`), after dividing by the
/// temperature and adding the mask. Masked columns give 0; a fully masked row gives zeros.
/// Output in `x`'s layout.
pub fn softmax<T: Element>(x: &HostTensor<T>, mask: Option<&HostMask>, opts: &SoftmaxOptions) -> Result<Vec<f32>> {
    let p = problem(x, mask, opts)?;
    Ok(softmax_checked(&p, x, mask))
}

/// [`softmax`] for a checked problem.
pub(crate) fn softmax_checked<T: Element>(p: &SoftmaxProblem, x: &HostTensor<T>, mask: Option<&HostMask>) -> Vec<f32> {
    let s = x.shape();
    let rm = row_mask(p, mask, &s);
    let t = p.temperature as f64;
    let mut out = vec![0.0f32; s.numel()];
    out.par_chunks_mut(s.dim).enumerate().for_each(|(row, dst)| {
        let i = row % s.seq;
        let (b, h) = (row / s.seq / s.heads, row / s.seq % s.heads);
        let src = x.row(b, h, i);
        let vals: Vec<Option<f64>> =
            (0..s.dim).map(|j| rm.kept(b, h, i, j).map(|add| src[j].to_f32() as f64 / t + add)).collect();
        softmax_row(&vals, None, dst);
    });
    to_layout(out, &s, x.layout())
}

/// The masking rules of a softmax call over `s` (rows are queries, columns keys).
pub(crate) fn row_mask<'a>(p: &SoftmaxProblem<'a>, mask: Option<&'a HostMask<'a>>, s: &Shape) -> RowMask<'a> {
    RowMask { mask, causal: p.causal, key_lengths: p.key_lengths, window: None, nq: s.seq, nk: s.dim, seq_lens: None }
}

/// Softmax of one row of optional (kept) scores into `dst`, the denominator also counting
/// `exp(sink)` if given; all-masked gives zeros. Returns the log-sum-exp (`-inf` for a fully
/// masked row without a sink).
pub(crate) fn softmax_row(vals: &[Option<f64>], sink: Option<f64>, dst: &mut [f32]) -> f64 {
    let m = vals.iter().flatten().fold(sink.unwrap_or(f64::NEG_INFINITY), |a, &b| a.max(b));
    if m == f64::NEG_INFINITY {
        dst.iter_mut().for_each(|o| *o = 0.0);
        return f64::NEG_INFINITY;
    }
    let l: f64 = vals.iter().flatten().map(|v| (v - m).exp()).sum::<f64>() + sink.map_or(0.0, |s| (s - m).exp());
    for (o, v) in dst.iter_mut().zip(vals) {
        *o = v.map_or(0.0, |v| ((v - m).exp() / l) as f32);
    }
    m + l.ln()
}
