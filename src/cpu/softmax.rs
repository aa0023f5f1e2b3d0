//! Fast CPU softmax (the CPU counterpart of `shaders/softmax.wgsl`): each row read once into
//! its output, masked, exponentiated once per element, normalised, in f32.

use rayon::prelude::*;

use super::attention::{apply_rules, mask_fits};
use super::F32_SAFE;
use crate::vecmath::{div_into, softmax_rows};
use super::{to_layout, Scoring};
use crate::error::Result;
use crate::host::{scan, HostMask, HostTensor};
use crate::options::SoftmaxOptions;
use crate::problem::{MaskSpec, Operand, SoftmaxProblem};
use crate::shape::{DType, Element};

pub(crate) use super::reference::softmax::problem;

/// Rows per task.
const ROWS: usize = 64;

/// Softmax over the last dimension of `x` (`[batch, heads, rows, cols]`) on the fast CPU path,
/// after dividing by the temperature and adding the mask; the semantics of
/// [`Context::softmax`](crate::Context::softmax). Masked columns give 0; a fully masked row
/// gives zeros. Output in `x`'s layout. Calls whose scaled values could pass 1e30 run on the
/// f64 [`reference`](super::reference::softmax()).
///
/// The input is checked for NaN and infinities in the same pass that reads it for the softmax
/// (the error, [`Error::NonFinite`](crate::Error::NonFinite) with the first bad index, is the
/// reference's).
///
/// ```
/// use wgpu_attention::{cpu, HostTensor, Shape, SoftmaxOptions};
/// let x = [0.0f32, 0.0, 1000.0, 1000.0]; // one row of 4 scores
/// let p = cpu::softmax(&HostTensor::new(&x, Shape::new(1, 1, 1, 4))?, None, &SoftmaxOptions::default())?;
/// assert_eq!(p, vec![0.0, 0.0, 0.5, 0.5]); // no overflow: the row maximum is subtracted first
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
pub fn softmax<T: Element>(x: &HostTensor<T>, mask: Option<&HostMask>, opts: &SoftmaxOptions) -> Result<Vec<f32>> {
    let p = SoftmaxProblem::new(Operand::host(x), mask.map(MaskSpec::host), opts)?;
    softmax_unscanned(p, x, mask)
}

/// [`softmax`] for a problem whose input has not been scanned yet: the fast pass scans it.
pub(crate) fn softmax_unscanned<T: Element>(
    mut p: SoftmaxProblem,
    x: &HostTensor<T>,
    mask: Option<&HostMask>,
) -> Result<Vec<f32>> {
    if !mask_fits(mask) {
        p.x = p.x.scanned(scan("x", x.data())?);
        return Ok(super::reference::softmax::softmax_checked(&p, x, mask));
    }
    let (out, bits) = softmax_fast(&p, x, mask);
    if bits >= 0x7f80_0000 {
        // NaN or an infinity: the scan names the first one
        scan("x", x.data())?;
    }
    let mx = f32::from_bits(bits.min(0x7f7f_ffff));
    if mx as f64 / p.temperature as f64 > F32_SAFE {
        p.x = p.x.scanned(mx);
        return Ok(super::reference::softmax::softmax_checked(&p, x, mask));
    }
    Ok(out)
}

/// [`softmax`] for a checked problem whose input was scanned.
pub(crate) fn softmax_checked<T: Element>(p: &SoftmaxProblem, x: &HostTensor<T>, mask: Option<&HostMask>) -> Vec<f32> {
    let mx = p.x.max_abs.map_or(f64::INFINITY, |m| m as f64);
    if mx / p.temperature as f64 > F32_SAFE || !mask_fits(mask) {
        return super::reference::softmax::softmax_checked(p, x, mask);
    }
    softmax_fast(p, x, mask).0
}

/// The f32 softmax, and the bits of the largest input magnitude it read (see
/// [`max_abs_bits`](crate::vecmath::max_abs_bits): from `0x7f80_0000` up, a NaN or infinity
/// was among them and the output is meaningless).
fn softmax_fast<T: Element>(p: &SoftmaxProblem, x: &HostTensor<T>, mask: Option<&HostMask>) -> (Vec<f32>, u32) {
    let s = x.shape();
    let t = p.temperature;
    let rm = super::reference::softmax::row_mask(p, mask, &s);
    let sc = Scoring { rm, scale: 1.0, softcap: None, alibi_slopes: None };
    let mut out = vec![0.0f32; s.numel()];
    if out.is_empty() {
        return (out, 0);
    }
    let bits = out
        .par_chunks_mut(ROWS * s.dim)
        .enumerate()
        .map(|(c, dst)| {
            let mut bits = 0u32;
            for (r, row) in dst.chunks_exact_mut(s.dim).enumerate() {
                let g = c * ROWS + r;
                let (i, b, h) = (g % s.seq, g / s.seq / s.heads, g / s.seq % s.heads);
                let src = x.row(b, h, i);
                if T::DTYPE == DType::F32 {
                    div_into(row, bytemuck::cast_slice(src), t, &mut bits);
                } else {
                    for (o, v) in row.iter_mut().zip(src) {
                        let v = v.to_f32();
                        bits = bits.max(v.to_bits() & 0x7fff_ffff);
                        *o = v / t;
                    }
                }
                apply_rules(row, &sc, (b, h, i), 0, rm.key_range(b, i));
            }
            softmax_rows(dst, s.dim, f32::NEG_INFINITY);
            bits
        })
        .reduce(|| 0, u32::max);
    (to_layout(out, &s, x.layout()), bits)
}
