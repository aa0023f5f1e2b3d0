//! What the CPU path's operations share: f64 dot products, f16 widening, row masks, the score
//! transform of a row, and the output layout.

use std::borrow::Cow;

use super::gemm::Mat;

use crate::host::{HostMask, HostTensor};
use crate::options::Window;
use crate::shape::{DType, Element, Layout, Shape};

/// `Σ a·b` in f64 with four independent accumulators, so that the loop vectorises (a single
/// running sum is a sequential chain); the rounding stays that of f64.
#[inline]
pub(crate) fn dot64(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] as f64 * y[l] as f64;
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| *x as f64 * *y as f64).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `Σ (a - b)²` in f64, vectorisable like [`dot64`].
#[inline]
pub(crate) fn dist2_64(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            let d = x[l] as f64 - y[l] as f64;
            acc[l] += d * d;
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// A tensor's elements as f32: borrowed when they are f32, widened once otherwise (f16), so
/// inner loops never convert per element.
pub(crate) fn widen<T: Element>(data: &[T]) -> Cow<'_, [f32]> {
    match T::DTYPE {
        DType::F32 => Cow::Borrowed(bytemuck::cast_slice(data)),
        DType::F16 => Cow::Owned(data.iter().map(|x| x.to_f32()).collect()),
    }
}

/// A view of the same shape and layout over widened data.
pub(crate) fn view<'a, T>(t: &HostTensor<'_, T>, data: &'a [f32]) -> HostTensor<'a, f32> {
    t.with_data(data)
}

/// Which scores of one `(b, h)` row survive masking; shared by softmax and attention.
#[derive(Clone, Copy)]
pub(crate) struct RowMask<'a> {
    pub mask: Option<&'a HostMask<'a>>,
    pub causal: bool,
    pub key_lengths: Option<&'a [u32]>,
    pub window: Option<Window>,
    pub nq: usize,
    pub nk: usize,
    /// Over a paged cache: each sequence's length (then `nk` is unused).
    pub seq_lens: Option<&'a [u32]>,
}

impl RowMask<'_> {
    /// Keys of batch `b`: the tensor's `nk`, or the sequence's length over a paged cache.
    #[inline]
    pub fn kv_len(&self, b: usize) -> usize {
        self.seq_lens.map_or(self.nk, |s| s[b] as usize)
    }

    /// The position of query `i` of batch `b` (bottom-right aligned).
    #[inline]
    pub fn position(&self, b: usize, i: usize) -> i64 {
        i as i64 + self.kv_len(b) as i64 - self.nq as i64
    }

    /// The keys `[start, limit)` that query `i` of batch `b` can keep: its window, the causal
    /// diagonal and the lengths bound them (masks decide within), as the kernels' `key_start`
    /// and `key_limit`. Keys outside are never kept by [`kept`](Self::kept).
    pub fn key_range(&self, b: usize, i: usize) -> (usize, usize) {
        let mut len = self.kv_len(b);
        if let Some(kl) = self.key_lengths {
            len = len.min(kl[b] as usize);
        }
        let (len, p) = (len as i64, self.position(b, i));
        let big = |x: usize| x.min(i64::MAX as usize) as i64;
        let (mut lo, mut hi) = (0i64, len);
        if self.causal {
            hi = hi.min(p.saturating_add(1));
        }
        if let Some(w) = self.window {
            lo = p.saturating_sub(big(w.left));
            if let Some(r) = w.right {
                hi = hi.min(p.saturating_add(big(r)).saturating_add(1));
            }
        }
        let lo = lo.clamp(0, len);
        (lo as usize, hi.clamp(lo, len) as usize)
    }

    /// `Some(additive)` if score `(b, h, i, j)` is kept, `None` if masked.
    #[inline]
    pub fn kept(&self, b: usize, h: usize, i: usize, j: usize) -> Option<f64> {
        if j >= self.kv_len(b) {
            return None;
        }
        if let Some(kl) = self.key_lengths {
            if j >= kl[b] as usize {
                return None;
            }
        }
        let (p, jj) = (self.position(b, i), j as i64);
        if self.causal && jj > p {
            return None;
        }
        if let Some(w) = self.window {
            if jj < p.saturating_sub(w.left.min(i64::MAX as usize) as i64)
                || w.right.is_some_and(|r| jj > p.saturating_add(r.min(i64::MAX as usize) as i64))
            {
                return None;
            }
        }
        match self.mask {
            Some(m) => {
                let (keep, add) = m.at(b, h, i, j);
                keep.then_some(add as f64)
            }
            None => Some(0.0),
        }
    }
}

/// How a dot product becomes a kept score (or `None`): the scale, the soft-cap, ALiBi, then the
/// masking rules of [`RowMask`] (the order of `AttentionOptions`).
#[derive(Clone, Copy)]
pub(crate) struct Scoring<'a> {
    pub rm: RowMask<'a>,
    pub scale: f64,
    pub softcap: Option<f64>,
    pub alibi_slopes: Option<&'a [f32]>,
}

impl Scoring<'_> {
    /// The score of `(b, h, i, j)` from the dot product `dot`, `None` if the key is dropped.
    #[inline]
    pub fn score(&self, b: usize, h: usize, i: usize, j: usize, dot: impl FnOnce() -> f64) -> Option<f64> {
        let add = self.rm.kept(b, h, i, j)?;
        let mut s = dot() * self.scale;
        if let Some(cap) = self.softcap {
            s = cap * (s / cap).tanh();
        }
        if let Some(slopes) = self.alibi_slopes {
            s -= slopes[h] as f64 * (self.rm.position(b, i) - j as i64).unsigned_abs() as f64;
        }
        Some(s + add)
    }

    /// [`score`](Self::score) and its derivative with respect to the dot product (the scale,
    /// times the soft-cap's `1 - tanh²`; ALiBi and masks add constants): the backward pass's
    /// chain rule.
    #[inline]
    pub fn score_slope(&self, b: usize, h: usize, i: usize, j: usize, dot: impl FnOnce() -> f64) -> Option<(f64, f64)> {
        let add = self.rm.kept(b, h, i, j)?;
        let mut s = dot() * self.scale;
        let mut slope = self.scale;
        if let Some(cap) = self.softcap {
            let t = (s / cap).tanh();
            s = cap * t;
            slope *= 1.0 - t * t;
        }
        if let Some(slopes) = self.alibi_slopes {
            s -= slopes[h] as f64 * (self.rm.position(b, i) - j as i64).unsigned_abs() as f64;
        }
        Some((s + add, slope))
    }
}

/// Reorders a BHSD-ordered buffer into `layout`.
pub(crate) fn to_layout(bhsd: Vec<f32>, shape: &Shape, layout: Layout) -> Vec<f32> {
    match layout {
        Layout::Bhsd => bhsd,
        Layout::Bshd => {
            let Shape { batch, heads, seq, dim } = *shape;
            let mut out = vec![0.0; bhsd.len()];
            for b in 0..batch {
                for h in 0..heads {
                    for s in 0..seq {
                        let src = ((b * heads + h) * seq + s) * dim;
                        let dst = ((b * seq + s) * heads + h) * dim;
                        out[dst..dst + dim].copy_from_slice(&bhsd[src..src + dim]);
                    }
                }
            }
            out
        }
    }
}

/// Largest magnitude the f32 path lets a score, a bias or a sum reach (f32 overflows at 3.4e38;
/// the margin covers the additions that follow).
pub(crate) const F32_SAFE: f64 = 1e30;

/// Rows `[j0, j1)` of `(b, h)` of a host tensor: borrowed if f32, widened into `scratch` if not.
pub(crate) fn tensor_rows<'s, T: Element>(
    t: &'s HostTensor<'_, T>,
    (b, h): (usize, usize),
    (j0, j1): (usize, usize),
    scratch: &'s mut Vec<f32>,
) -> Mat<'s> {
    let (d, stride) = (t.shape().dim, t.layout().strides(&t.shape()).seq);
    let n = j1 - j0;
    if T::DTYPE == DType::F32 {
        let all: &[f32] = bytemuck::cast_slice(t.data());
        if n == 0 {
            return Mat::strided(&all[..0], 0, d, stride);
        }
        return Mat::strided(&all[t.row_offset(b, h, j0)..], n, d, stride);
    }
    scratch.clear();
    for j in j0..j1 {
        scratch.extend(t.row(b, h, j).iter().map(|x| x.to_f32()));
    }
    Mat::rows(scratch, n, d)
}


#[cfg(test)]
mod tests {
    use super::*;

    /// `key_range` bounds exactly the keys `kept` keeps (without a mask), for every query of
    /// every combination of causal, key lengths, windows and paged lengths.
    #[test]
    fn key_range_is_exactly_the_kept_keys() {
        let windows = [
            None,
            Some(Window { left: 0, right: None }),
            Some(Window { left: 3, right: Some(0) }),
            Some(Window { left: 1, right: Some(2) }),
            Some(Window { left: usize::MAX, right: Some(usize::MAX) }),
        ];
        let lens = [0u32, 5, 9];
        for (nq, nk) in [(1, 9), (4, 9), (9, 9), (12, 5)] {
            for causal in [false, true] {
                for key_lengths in [None, Some(&lens[..])] {
                    for seq_lens in [None, Some(&lens[..])] {
                        for window in windows {
                            let rm = RowMask { mask: None, causal, key_lengths, window, nq, nk, seq_lens };
                            for b in 0..3 {
                                for i in 0..nq {
                                    let (lo, hi) = rm.key_range(b, i);
                                    let kept: Vec<usize> =
                                        (0..nk.max(9)).filter(|&j| rm.kept(b, 0, i, j).is_some()).collect();
                                    assert_eq!(
                                        kept,
                                        (lo..hi).collect::<Vec<_>>(),
                                        "{window:?} causal {causal} b {b} i {i}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
