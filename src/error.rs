//! The crate's single error type.

use thiserror::Error;

/// Everything that can go wrong in this crate.
///
/// Shape and argument errors are detected on the host, before any GPU work is recorded;
/// each names the argument at fault and the numbers involved.
#[derive(Debug, Error, Clone, PartialEq)]
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
    #[error("`{argument}`: element {index} is {value} (only finite values are accepted here)")]
    NonFinite { argument: &'static str, index: usize, value: f32 },
    /// An invalid scalar option (scale, temperature, ...).
    #[error("`{argument}`: {message}")]
    InvalidArgument { argument: &'static str, message: String },
    /// A tensor's dtype is not the one this operation needs.
    #[error("`{argument}`: dtype {got:?}, expected {expected:?}")]
    DTypeMismatch { argument: &'static str, got: crate::DType, expected: crate::DType },
    /// f16 storage requested on an adapter without `SHADER_F16`.
    #[error("`{argument}`: f16 needs the SHADER_F16 feature, which this device does not have")]
    F16Unsupported { argument: &'static str },
    /// A caller-provided buffer is smaller than its shape needs, or lacks a usage flag.
    #[error("`{argument}`: buffer holds {got} bytes from its offset, needs {needed}")]
    BufferTooSmall { argument: &'static str, needed: u64, got: u64 },
    /// A caller-provided buffer lacks a needed usage flag.
    #[error("`{argument}`: buffer usage {got} lacks {needed}")]
    BufferUsage { argument: &'static str, needed: &'static str, got: String },
    /// A tensor too large for this device.
    #[error("`{argument}`: {message}")]
    TooLarge { argument: &'static str, message: String },
    /// The device cannot run this kernel variant (limits too low).
    #[error("unsupported on this device: {0}")]
    Unsupported(String),
    /// wgpu reported a validation, out-of-memory or internal error.
    #[error("GPU error: {0}")]
    Gpu(String),
    /// Reading a buffer back failed.
    #[error("reading back from the GPU failed: {0}")]
    Readback(String),
}

/// Shorthand for `Result<T, wgpu_attention::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
