//! Shapes, layouts and dtypes shared by the GPU and CPU paths.

use crate::error::{Error, Result};

/// Largest head dimension the attention kernels support.
pub const MAX_HEAD_DIM: usize = 256;

/// Logical shape of a 4-D tensor: `[batch, heads, seq, dim]`.
///
/// The logical shape is the same whatever the memory [`Layout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Batch size.
    pub batch: usize,
    /// Number of heads.
    pub heads: usize,
    /// Sequence length (queries or keys).
    pub seq: usize,
    /// Last dimension (head dim; for score matrices, the key count).
    pub dim: usize,
}

impl Shape {
    /// A shape from `[batch, heads, seq, dim]`.
    pub const fn new(batch: usize, heads: usize, seq: usize, dim: usize) -> Self {
        Shape { batch, heads, seq, dim }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.batch * self.heads * self.seq * self.dim
    }

    /// `[batch, heads, seq, dim]` as an array.
    pub fn dims(&self) -> [usize; 4] {
        [self.batch, self.heads, self.seq, self.dim]
    }

    /// Errors with [`Error::EmptyDimension`] if any dimension is zero.
    pub fn check_nonempty(&self, argument: &'static str) -> Result<()> {
        for (v, dim) in [(self.batch, "batch"), (self.heads, "heads"), (self.seq, "seq"), (self.dim, "dim")] {
            if v == 0 {
                return Err(Error::EmptyDimension { argument, dim });
            }
        }
        Ok(())
    }
}

/// Memory layout of a 4-D tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Layout {
    /// `[batch, heads, seq, dim]`, row-major (the default).
    #[default]
    Bhsd,
    /// `[batch, seq, heads, dim]`, row-major: what projections produce and FlashAttention takes.
    Bshd,
}

impl Layout {
    /// Element strides `(batch, head, seq)` for `shape`; the last dimension has stride 1.
    pub fn strides(&self, shape: &Shape) -> Strides {
        let Shape { heads: h, seq: s, dim: d, .. } = *shape;
        match self {
            Layout::Bhsd => Strides { batch: h * s * d, head: s * d, seq: d },
            Layout::Bshd => Strides { batch: s * h * d, head: d, seq: h * d },
        }
    }
}

/// Element strides of a 4-D tensor (the last dimension is contiguous).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strides {
    /// Elements between consecutive batches.
    pub batch: usize,
    /// Elements between consecutive heads.
    pub head: usize,
    /// Elements between consecutive sequence positions.
    pub seq: usize,
}

/// Storage type of tensor elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 16-bit float (IEEE half); needs `SHADER_F16` on the GPU. Arithmetic stays in f32.
    F16,
}

impl DType {
    /// Bytes per element.
    pub const fn size(&self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }
}

/// Host element types that can be uploaded: `f32` and `half::f16`.
pub trait Element: bytemuck::Pod + Send + Sync + 'static {
    /// The matching [`DType`].
    const DTYPE: DType;
    /// Widen to f32.
    fn to_f32(self) -> f32;
    /// Narrow from f32 (round to nearest).
    fn from_f32(v: f32) -> Self;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Element for half::f16 {
    const DTYPE: DType = DType::F16;
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
}

/// A borrowed host tensor: data plus logical shape and layout. Input to the CPU path and to
/// the one-shot helpers of [`crate::Backend`].
#[derive(Debug, Clone, Copy)]
pub struct HostTensor<'a, T = f32> {
    /// Elements, in `layout` order.
    pub data: &'a [T],
    /// Logical shape.
    pub shape: Shape,
    /// Memory layout of `data`.
    pub layout: Layout,
}

impl<'a, T> HostTensor<'a, T> {
    /// A `[batch, heads, seq, dim]` (BHSD) view of `data`; errors if the length does not match.
    pub fn new(data: &'a [T], shape: Shape) -> Result<Self> {
        Self::with_layout(data, shape, Layout::Bhsd)
    }

    /// A view of `data` in the given layout; errors if the length does not match.
    pub fn with_layout(data: &'a [T], shape: Shape, layout: Layout) -> Result<Self> {
        if data.len() != shape.numel() {
            return Err(Error::LengthMismatch { argument: "data", expected: shape.numel(), got: data.len() });
        }
        Ok(HostTensor { data, shape, layout })
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
}

/// How a mask combines with the scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaskKind {
    /// `true` (non-zero) = the key takes part; `false` = masked out (as PyTorch's boolean `attn_mask`).
    Bool,
    /// Added to the (scaled) scores; `-inf` masks a key out.
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
#[derive(Debug, Clone, Copy)]
pub struct HostMask<'a> {
    /// Mask shape `[mb, mh, nq, nk]`.
    pub shape: [usize; 4],
    /// The values.
    pub values: HostMaskValues<'a>,
}

impl<'a> HostMask<'a> {
    /// A boolean mask (`true` keeps a key).
    pub fn bool(values: &'a [bool], shape: [usize; 4]) -> Result<Self> {
        let m = HostMask { shape, values: HostMaskValues::Bool(values) };
        m.check_len()?;
        Ok(m)
    }

    /// An additive mask.
    pub fn additive(values: &'a [f32], shape: [usize; 4]) -> Result<Self> {
        let m = HostMask { shape, values: HostMaskValues::Additive(values) };
        m.check_len()?;
        check_mask_values(values)?;
        Ok(m)
    }

    fn check_len(&self) -> Result<()> {
        let n: usize = self.shape.iter().product();
        let got = match self.values {
            HostMaskValues::Bool(v) => v.len(),
            HostMaskValues::Additive(v) => v.len(),
        };
        if n != got {
            return Err(Error::LengthMismatch { argument: "mask", expected: n, got });
        }
        Ok(())
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

/// Additive mask values may be finite or `-inf`; NaN and `+inf` are errors.
pub(crate) fn check_mask_values(values: &[f32]) -> Result<()> {
    if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| v.is_nan() || **v == f32::INFINITY) {
        return Err(Error::NonFinite { argument: "mask", index, value });
    }
    Ok(())
}

/// Refuse NaN and +-inf in an input.
pub(crate) fn check_finite<T: Element>(argument: &'static str, values: &[T]) -> Result<()> {
    if let Some((index, value)) = values.iter().enumerate().map(|(i, v)| (i, v.to_f32())).find(|(_, v)| !v.is_finite())
    {
        return Err(Error::NonFinite { argument, index, value });
    }
    Ok(())
}
