//! The crate's single error type.

use thiserror::Error;

/// Everything that can go wrong in this crate.
///
/// Shape and argument errors are detected on the host, before any GPU work is recorded; each
/// names the argument at fault and the numbers involved. The same invalid call gets the same
/// error on the GPU path, the CPU path and [`crate::Backend`]: they share one validation layer.
///
/// ```
/// use wgpu_attention::{cpu, AttentionOptions, Error, HostTensor, Shape};
/// let q = vec![0.0f32; 3 * 8];
/// let k = vec![0.0f32; 2 * 8];
/// let (q, k) = (HostTensor::new(&q, Shape::new(1, 3, 1, 8))?, HostTensor::new(&k, Shape::new(1, 2, 1, 8))?);
/// // 3 query heads cannot share 2 key/value heads: the error names the argument and the numbers
/// match cpu::attention(&q, &k, &k, None, &AttentionOptions::default()) {
///     Err(Error::HeadsNotDivisible { argument, q_heads, kv_heads }) => {
///         assert_eq!((argument, q_heads, kv_heads), ("k", 3, 2));
///     }
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Error, Clone)]
#[non_exhaustive]
// Field names (`argument`, `got`, `expected`, ...) are self-describing; variants carry the docs.
#[allow(missing_docs)]
pub enum Error {
    /// No GPU adapter matched the request (or none exists on this machine).
    #[error("no GPU adapter found: {0}")]
    NoAdapter(String),
    /// The adapter refused to create a device.
    #[error("requesting a device failed: {0}")]
    RequestDevice(String),
    /// A dimension is zero.
    #[error("`{argument}`: dimension `{dim}` is 0; every dimension must be at least 1")]
    EmptyDimension { argument: &'static str, dim: &'static str },
    /// A host slice has the wrong number of elements for its shape.
    #[error("`{argument}`: expected {expected} elements for its shape, got {got}")]
    LengthMismatch { argument: &'static str, expected: usize, got: usize },
    /// Two tensors disagree on a dimension they must share.
    #[error("`{argument}`: {dim} is {got}, expected {expected} (to match `{other}`)")]
    ShapeMismatch { argument: &'static str, other: &'static str, dim: &'static str, got: usize, expected: usize },
    /// Query heads must be a multiple of key/value heads (GQA/MQA).
    #[error("`{argument}`: query heads ({q_heads}) must be a multiple of key/value heads ({kv_heads})")]
    HeadsNotDivisible { argument: &'static str, q_heads: usize, kv_heads: usize },
    /// Head dimension outside the supported range.
    #[error("`{argument}`: head dim {got} is not supported (1..={max})")]
    UnsupportedHeadDim { argument: &'static str, got: usize, max: usize },
    /// A mask whose shape cannot broadcast to the scores.
    #[error("`mask`: shape {got:?} cannot broadcast to scores [{batch}, {heads}, {nq}, {nk}] (batch and heads must be 1 or equal)")]
    MaskShape { got: [usize; 4], batch: usize, heads: usize, nq: usize, nk: usize },
    /// Per-batch key lengths: wrong count or a length over the key sequence.
    #[error("`key_lengths`: {0}")]
    KeyLengths(String),
    /// A non-finite value where only finite values are accepted.
    #[error("`{argument}`: element {index} is {value}; NaN and infinities are refused (an additive mask may hold -inf, which drops a key, but not +inf)")]
    NonFinite { argument: &'static str, index: usize, value: f32 },
    /// An invalid scalar option (scale, temperature, k, ...).
    #[error("`{argument}`: {message}")]
    InvalidArgument { argument: &'static str, message: String },
    /// A tensor's dtype is not the one this operation needs.
    #[error("`{argument}`: dtype {got:?}, expected {expected:?}")]
    DTypeMismatch { argument: &'static str, got: crate::dtype::DType, expected: crate::dtype::DType },
    /// f16 storage requested on an adapter without `SHADER_F16`.
    #[error("`{argument}`: f16 needs the SHADER_F16 feature, which this device does not have")]
    F16Unsupported { argument: &'static str },
    /// A caller-provided buffer is smaller than its shape needs.
    #[error("`{argument}`: buffer holds {got} bytes from its offset, needs {needed}")]
    BufferTooSmall { argument: &'static str, needed: u64, got: u64 },
    /// A caller-provided buffer lacks a needed usage flag.
    #[error("`{argument}`: buffer usage {got} lacks {needed}")]
    BufferUsage { argument: &'static str, needed: &'static str, got: String },
    /// A size too large for this device or for the address arithmetic (an element count or a
    /// byte offset that would overflow).
    #[error("`{argument}`: {message}")]
    TooLarge { argument: &'static str, message: String },
    /// An output shares a buffer with an input of the same call, or overlaps another output.
    /// (wgpu cannot bind one buffer read-only and read-write in the same dispatch, so even
    /// disjoint ranges of one buffer cannot serve as input and output of one call.)
    #[error("`{argument}` shares memory with `{other}`: an output may not share a buffer with the call's inputs, nor overlap another output")]
    Aliasing { argument: &'static str, other: &'static str },
    /// A tensor or mask made by another [`crate::Context`] (another device, or another wgpu
    /// instance), which this context's device cannot use.
    #[error("`{argument}` belongs to another Context: tensors, masks and resident block tables can only be used with the Context that made them, or its clones; each Context::new or from_device call makes a new Context, even for a wgpu device already wrapped once (share one Context instead: it is cheap to clone)")]
    ForeignTensor { argument: &'static str },
    /// The device cannot run this kernel variant (limits, features or alignment).
    #[error("unsupported on this device: {0}")]
    Unsupported(String),
    /// The device could not satisfy an allocation. The context stays usable: free memory (drop
    /// tensors) and try again.
    #[error("out of GPU memory: {0}")]
    OutOfMemory(String),
    /// The device was lost (destroyed, driver reset, unplugged). Every later call on this
    /// context fails with this error; make a new [`crate::Context`].
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    /// wgpu reported a validation or internal error.
    #[error("GPU error: {0}")]
    Gpu(String),
    /// Reading a buffer back failed.
    #[error("reading back from the GPU failed: {0}")]
    Readback(String),
}

impl PartialEq for Error {
    /// Field by field, except that a [`Error::NonFinite`] value compares by its bits, so that an
    /// error carrying a NaN equals itself.
    fn eq(&self, other: &Self) -> bool {
        use Error::*;
        match (self, other) {
            (NoAdapter(a), NoAdapter(b))
            | (RequestDevice(a), RequestDevice(b))
            | (KeyLengths(a), KeyLengths(b))
            | (Unsupported(a), Unsupported(b))
            | (OutOfMemory(a), OutOfMemory(b))
            | (DeviceLost(a), DeviceLost(b))
            | (Gpu(a), Gpu(b))
            | (Readback(a), Readback(b)) => a == b,
            (EmptyDimension { argument: a, dim: d }, EmptyDimension { argument: b, dim: e }) => (a, d) == (b, e),
            (
                LengthMismatch { argument: a, expected: x, got: g },
                LengthMismatch { argument: b, expected: y, got: h },
            ) => (a, x, g) == (b, y, h),
            (
                ShapeMismatch { argument: a, other: o, dim: d, got: g, expected: x },
                ShapeMismatch { argument: b, other: p, dim: e, got: h, expected: y },
            ) => (a, o, d, g, x) == (b, p, e, h, y),
            (
                HeadsNotDivisible { argument: a, q_heads: q, kv_heads: k },
                HeadsNotDivisible { argument: b, q_heads: r, kv_heads: l },
            ) => (a, q, k) == (b, r, l),
            (
                UnsupportedHeadDim { argument: a, got: g, max: m },
                UnsupportedHeadDim { argument: b, got: h, max: n },
            ) => (a, g, m) == (b, h, n),
            (
                MaskShape { got: g, batch: b1, heads: h1, nq: q1, nk: k1 },
                MaskShape { got: g2, batch: b2, heads: h2, nq: q2, nk: k2 },
            ) => (g, b1, h1, q1, k1) == (g2, b2, h2, q2, k2),
            (NonFinite { argument: a, index: i, value: v }, NonFinite { argument: b, index: j, value: w }) => {
                (a, i, v.to_bits()) == (b, j, w.to_bits())
            }
            (InvalidArgument { argument: a, message: m }, InvalidArgument { argument: b, message: n })
            | (TooLarge { argument: a, message: m }, TooLarge { argument: b, message: n }) => (a, m) == (b, n),
            (
                DTypeMismatch { argument: a, got: g, expected: x },
                DTypeMismatch { argument: b, got: h, expected: y },
            ) => (a, g, x) == (b, h, y),
            (F16Unsupported { argument: a }, F16Unsupported { argument: b })
            | (ForeignTensor { argument: a }, ForeignTensor { argument: b }) => a == b,
            (BufferTooSmall { argument: a, needed: n, got: g }, BufferTooSmall { argument: b, needed: m, got: h }) => {
                (a, n, g) == (b, m, h)
            }
            (BufferUsage { argument: a, needed: n, got: g }, BufferUsage { argument: b, needed: m, got: h }) => {
                (a, n, g) == (b, m, h)
            }
            (Aliasing { argument: a, other: o }, Aliasing { argument: b, other: p }) => (a, o) == (b, p),
            _ => false,
        }
    }
}

impl Error {
    /// The crate error for an error wgpu reported through an error scope.
    pub(crate) fn from_wgpu(e: wgpu::Error) -> Self {
        match e {
            wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory(e.to_string()),
            other => Error::Gpu(other.to_string()),
        }
    }
}

/// Shorthand for `Result<T, wgpu_attention::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_with_nan_equals_itself() {
        let e = Error::NonFinite { argument: "q", index: 3, value: f32::NAN };
        assert_eq!(e, e.clone());
        assert_ne!(e, Error::NonFinite { argument: "k", index: 3, value: f32::NAN });
        assert_ne!(e, Error::NonFinite { argument: "q", index: 3, value: f32::INFINITY });
        assert_ne!(Error::Gpu("a".into()), Error::Readback("a".into()));
    }

    #[test]
    fn wgpu_out_of_memory_maps_to_out_of_memory() {
        let e = wgpu::Error::OutOfMemory { source: Box::new(std::io::Error::other("heap exhausted")) };
        assert!(matches!(Error::from_wgpu(e), Error::OutOfMemory(_)));
        let e = wgpu::Error::Validation { source: Box::new(std::io::Error::other("x")), description: "bad".into() };
        assert!(matches!(Error::from_wgpu(e), Error::Gpu(ref m) if m.contains("bad") || !m.is_empty()));
    }
}
