//! Shapes, layouts and dtypes shared by the GPU and CPU paths.

pub use crate::dtype::{DType, Element};
use crate::error::{Error, Result};

/// Largest head dimension the attention kernels support.
pub const MAX_HEAD_DIM: usize = 256;

/// Logical shape of a 4-D tensor: `[batch, heads, seq, dim]`.
///
/// The logical shape is the same whatever the memory [`Layout`].
///
/// ```
/// use wgpu_attention::{Layout, Shape};
/// let s = Shape::new(2, 8, 128, 64); // batch, heads, seq, dim
/// assert_eq!(s.numel(), 2 * 8 * 128 * 64);
/// // element strides of the two layouts: heads outermost, or sequence outermost
/// assert_eq!(Layout::Bhsd.strides(&s).seq, 64);
/// assert_eq!(Layout::Bshd.strides(&s).seq, 8 * 64);
/// ```
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

    /// Number of elements, saturating at `usize::MAX` (a shape that large can never be
    /// allocated; the operations refuse it with [`Error::TooLarge`], see [`Shape::checked_numel`]).
    pub fn numel(&self) -> usize {
        self.checked_numel_opt().unwrap_or(usize::MAX)
    }

    /// Number of elements, or [`Error::TooLarge`] naming `argument` if it overflows `usize`.
    pub fn checked_numel(&self, argument: &'static str) -> Result<usize> {
        self.checked_numel_opt().ok_or_else(|| Error::TooLarge {
            argument,
            message: format!("shape {:?} has more elements than usize can count", self.dims()),
        })
    }

    fn checked_numel_opt(&self) -> Option<usize> {
        self.batch.checked_mul(self.heads)?.checked_mul(self.seq)?.checked_mul(self.dim)
    }

    /// `[batch, heads, seq, dim]` as an array.
    pub fn dims(&self) -> [usize; 4] {
        [self.batch, self.heads, self.seq, self.dim]
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
    /// Saturating: for a shape whose element count fits `usize` (every shape the operations
    /// accept) the strides are exact.
    pub fn strides(&self, shape: &Shape) -> Strides {
        let Shape { heads: h, seq: s, dim: d, .. } = *shape;
        let (hd, sd) = (h.saturating_mul(d), s.saturating_mul(d));
        match self {
            Layout::Bhsd => Strides { batch: h.saturating_mul(sd), head: sd, seq: d },
            Layout::Bshd => Strides { batch: s.saturating_mul(hd), head: d, seq: hd },
        }
    }
}

/// Element strides of a 4-D tensor (the last dimension is contiguous): what
/// [`Layout::strides`] gives, and what [`Tensor::from_buffer_strided`](crate::Tensor::from_buffer_strided)
/// takes to view a caller's buffer without a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strides {
    /// Elements between consecutive batches.
    pub batch: usize,
    /// Elements between consecutive heads.
    pub head: usize,
    /// Elements between consecutive sequence positions.
    pub seq: usize,
}

impl Strides {
    /// Elements from the first element of `shape` to past its last (0 for an empty shape);
    /// `Err(TooLarge)` naming `argument` if that overflows.
    pub(crate) fn span(&self, argument: &'static str, shape: &Shape) -> crate::Result<u64> {
        let Shape { batch, heads, seq, dim } = *shape;
        if batch == 0 || heads == 0 || seq == 0 || dim == 0 {
            return Ok(0);
        }
        let overflow = || crate::Error::TooLarge {
            argument,
            message: format!("strides {self:?} over shape {:?} address past 2^64 elements", shape.dims()),
        };
        let mut span = dim as u64;
        for (n, s) in [(batch, self.batch), (heads, self.head), (seq, self.seq)] {
            let step = ((n - 1) as u64).checked_mul(s as u64).ok_or_else(overflow)?;
            span = span.checked_add(step).ok_or_else(overflow)?;
        }
        Ok(span)
    }

    /// Whether no two elements of `shape` share an address (sufficient test: ordered by stride,
    /// each dimension's stride passes the extent of the smaller ones).
    pub(crate) fn injective(&self, shape: &Shape) -> bool {
        let mut dims: Vec<(u128, u128)> =
            [(shape.batch, self.batch), (shape.heads, self.head), (shape.seq, self.seq), (shape.dim, 1)]
                .into_iter()
                .filter(|&(n, _)| n > 1)
                .map(|(n, s)| (n as u128, s as u128))
                .collect();
        dims.sort_by_key(|&(_, s)| s);
        let mut extent: u128 = 1;
        for (n, s) in dims {
            if s < extent {
                return false;
            }
            extent += s * (n - 1);
        }
        true
    }
}

