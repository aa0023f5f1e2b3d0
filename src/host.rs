//! Host-side inputs: tensors and masks borrowed from slices, validated on construction, and the
//! one scan of their values (finite check and magnitude) that the operations run.

use crate::error::{Error, Result};
use crate::shape::{DType, Element, Layout, Shape};

/// A borrowed host tensor: data plus logical shape and layout. Input to the CPU path and to
/// the one-shot helpers of [`crate::Backend`].
///
/// The only ways in are [`HostTensor::new`] and [`HostTensor::with_layout`], which check that
/// the data holds exactly the shape's elements, so every `HostTensor` is consistent.
///
/// ```
/// use wgpu_attention::{Error, HostTensor, Layout, Shape};
/// let data = vec![0.5f32; 2 * 4 * 3];
/// // [batch 1, heads 2, seq 4, dim 3], heads outermost
/// let t = HostTensor::new(&data, Shape::new(1, 2, 4, 3))?;
/// assert_eq!(t.shape().numel(), data.len());
/// // the same data read as [batch, seq, heads, dim]
/// let bshd = HostTensor::with_layout(&data, Shape::new(1, 2, 4, 3), Layout::Bshd)?;
/// assert_eq!(bshd.layout(), Layout::Bshd);
/// // a length that does not match the shape names the argument
/// let e = HostTensor::new(&data[..5], Shape::new(1, 2, 4, 3)).unwrap_err();
/// assert!(matches!(e, Error::LengthMismatch { argument: "data", expected: 24, got: 5 }));
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HostTensor<'a, T = f32> {
    data: &'a [T],
    shape: Shape,
    layout: Layout,
}

impl<'a, T> HostTensor<'a, T> {
    /// A `[batch, heads, seq, dim]` (BHSD) view of `data`; errors if the length does not match.
    pub fn new(data: &'a [T], shape: Shape) -> Result<Self> {
        Self::with_layout(data, shape, Layout::Bhsd)
    }

    /// A view of `data` in the given layout; errors if the length does not match (or the
    /// shape's element count overflows `usize`).
    pub fn with_layout(data: &'a [T], shape: Shape, layout: Layout) -> Result<Self> {
        let n = shape.checked_numel("data")?;
        if data.len() != n {
            return Err(Error::LengthMismatch { argument: "data", expected: n, got: data.len() });
        }
        Ok(HostTensor { data, shape, layout })
    }

    /// The elements, in [`HostTensor::layout`] order.
    pub fn data(&self) -> &'a [T] {
        self.data
    }
    /// The logical shape `[batch, heads, seq, dim]`.
    pub fn shape(&self) -> Shape {
        self.shape
    }
    /// The memory layout of the data.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Element index of `(b, h, s, 0)`.
    #[inline]
    pub(crate) fn row_offset(&self, b: usize, h: usize, s: usize) -> usize {
        let st = self.layout.strides(&self.shape);
        b * st.batch + h * st.head + s * st.seq
    }

    /// The row `(b, h, s, ..)` as a slice of `dim` elements.
    #[inline]
    pub(crate) fn row(&self, b: usize, h: usize, s: usize) -> &'a [T] {
        let o = self.row_offset(b, h, s);
        &self.data[o..o + self.shape.dim]
    }

    /// A view whose length the crate itself guarantees (its own buffers).
    pub(crate) fn trusted(data: &'a [T], shape: Shape) -> Self {
        debug_assert_eq!(data.len(), shape.numel());
        HostTensor { data, shape, layout: Layout::Bhsd }
    }

    /// The same view over other data of the same length (widened f16, for instance).
    pub(crate) fn with_data<'b, U>(&self, data: &'b [U]) -> HostTensor<'b, U> {
        debug_assert_eq!(data.len(), self.data.len());
        HostTensor { data, shape: self.shape, layout: self.layout }
    }
}

impl<T: Element> HostTensor<'_, T> {
    /// The element type.
    pub fn dtype(&self) -> DType {
        T::DTYPE
    }
}

/// How a mask combines with the scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaskKind {
    /// `true` (non-zero) = the key takes part; `false` = masked out (as PyTorch's boolean `attn_mask`).
    Bool,
    /// Added to the (scaled) scores; `-inf` masks a key out. Every finite value is added as it
    /// is (even -3e38): only `-inf` drops a key.
    Additive,
}

/// Mask values on the host.
#[derive(Debug, Clone, Copy)]
pub enum HostMaskValues<'a> {
    /// Boolean mask: `true` keeps the key.
    Bool(&'a [bool]),
    /// Additive mask, added to the scaled scores (may hold `-inf`; NaN and `+inf` are refused).
    Additive(&'a [f32]),
}

/// A mask of shape `[mb, mh, nq, nk]` broadcast over batch (`mb` = 1 or batch) and heads
/// (`mh` = 1 or heads), row-major.
///
/// The only ways in are [`HostMask::bool`] and [`HostMask::additive`], which check the length
/// against the shape and (for additive masks) refuse NaN and `+inf`, so every `HostMask` is
/// valid wherever its shape fits:
///
/// ```compile_fail
/// # use wgpu_attention::*;
/// let keep = [true];
/// // the fields are private: a mask shorter than its shape cannot be written down
/// let mask = HostMask { shape: [1, 1, 2, 2], values: HostMaskValues::Bool(&keep) };
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HostMask<'a> {
    shape: [usize; 4],
    values: HostMaskValues<'a>,
}

impl<'a> HostMask<'a> {
    /// A boolean mask (`true` keeps a key).
    pub fn bool(values: &'a [bool], shape: [usize; 4]) -> Result<Self> {
        let m = HostMask { shape, values: HostMaskValues::Bool(values) };
        m.check_len()?;
        Ok(m)
    }

    /// An additive mask: finite values are added to the scaled scores, `-inf` drops a key;
    /// NaN and `+inf` are refused ([`Error::NonFinite`]).
    pub fn additive(values: &'a [f32], shape: [usize; 4]) -> Result<Self> {
        let m = HostMask { shape, values: HostMaskValues::Additive(values) };
        m.check_len()?;
        check_mask_values(values)?;
        Ok(m)
    }

    fn check_len(&self) -> Result<()> {
        if self.shape.contains(&0) {
            return Err(Error::EmptyDimension { argument: "mask", dim: "shape" });
        }
        let n = mask_numel(self.shape)?;
        let got = match self.values {
            HostMaskValues::Bool(v) => v.len(),
            HostMaskValues::Additive(v) => v.len(),
        };
        if n != got {
            return Err(Error::LengthMismatch { argument: "mask", expected: n, got });
        }
        Ok(())
    }

    /// The mask's shape `[mb, mh, nq, nk]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    /// The values.
    pub fn values(&self) -> HostMaskValues<'a> {
        self.values
    }

    /// The kind of this mask.
    pub fn kind(&self) -> MaskKind {
        match self.values {
            HostMaskValues::Bool(_) => MaskKind::Bool,
            HostMaskValues::Additive(_) => MaskKind::Additive,
        }
    }

    /// `(keep, additive)` for score `(b, h, i, j)`.
    #[inline]
    pub(crate) fn at(&self, b: usize, h: usize, i: usize, j: usize) -> (bool, f32) {
        let [mb, mh, nq, nk] = self.shape;
        let idx = (((if mb == 1 { 0 } else { b }) * mh + if mh == 1 { 0 } else { h }) * nq + i) * nk + j;
        match self.values {
            HostMaskValues::Bool(v) => (v[idx], 0.0),
            HostMaskValues::Additive(v) => {
                let a = v[idx];
                (a != f32::NEG_INFINITY, a)
            }
        }
    }
}

/// Elements of a mask shape, or [`Error::TooLarge`].
pub(crate) fn mask_numel(shape: [usize; 4]) -> Result<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| Error::TooLarge {
        argument: "mask",
        message: format!("shape {shape:?} has more elements than usize can count"),
    })
}

/// Additive mask values may be finite or `-inf`; NaN and `+inf` are errors.
pub(crate) fn check_mask_values(values: &[f32]) -> Result<()> {
    if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| v.is_nan() || **v == f32::INFINITY) {
        return Err(Error::NonFinite { argument: "mask", index, value });
    }
    Ok(())
}

/// The one pass over an input's values: refuses NaN and ±inf ([`Error::NonFinite`], naming
/// `argument` and the first bad index) and returns the largest magnitude, which the operations
/// use to keep f32 arithmetic in range.
pub(crate) fn scan<T: Element>(argument: &'static str, values: &[T]) -> Result<f32> {
    use rayon::prelude::*;
    // the largest magnitude as the bits of |x| (for non-negative floats the bit patterns order
    // as the values do, and integer maxima vectorise); NaN and infinities are exactly the
    // patterns from 0x7f80_0000 up, and are located afterwards
    const CHUNK: usize = 1 << 16;
    let chunk_max = |c: &[T]| -> f32 {
        let mut m = 0u32;
        if T::DTYPE == crate::shape::DType::F32 {
            crate::vecmath::max_abs_bits(bytemuck::cast_slice(c), &mut m);
        } else {
            m = c.iter().fold(0, |a, v| a.max(v.to_f32().to_bits() & 0x7fff_ffff));
        }
        if m >= 0x7f80_0000 {
            f32::INFINITY
        } else {
            f32::from_bits(m)
        }
    };
    let max = if values.len() > 4 * CHUNK {
        values.par_chunks(CHUNK).map(chunk_max).reduce(|| 0.0, f32::max)
    } else {
        values.chunks(CHUNK).map(chunk_max).fold(0.0, f32::max)
    };
    if max < f32::INFINITY {
        return Ok(max);
    }
    match values.iter().enumerate().find(|(_, v)| !v.to_f32().is_finite()) {
        Some((index, v)) => Err(Error::NonFinite { argument, index, value: v.to_f32() }),
        None => Ok(max),
    }
}
