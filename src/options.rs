//! Operation options and the shape checks shared by the GPU and CPU paths.
//!
//! Every public operation validates its arguments here, before any GPU work is recorded.

use crate::error::{Error, Result};
use crate::shape::{Shape, MAX_HEAD_DIM};

/// How a query is compared with a key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Similarity {
    /// `q · k`.
    Dot,
    /// `scale · (q · k)`; `None` means `1/sqrt(dim)`.
    ScaledDot(Option<f32>),
    /// `(q · k) / (|q| |k|)`, norms computed in the kernel; a zero vector on either side gives 0.
    Cosine,
    /// `-|q - k|²`, the negated squared Euclidean distance (larger is closer), computed as
    /// `-(|q|² + |k|² - 2 q·k)` clamped to at most 0.
    L2,
}

impl Similarity {
    /// The factor applied to the raw dot product (cosine applies it after normalising).
    pub(crate) fn scale(&self, dim: usize) -> f32 {
        match self {
            Similarity::Dot | Similarity::Cosine | Similarity::L2 => 1.0,
            Similarity::ScaledDot(Some(s)) => *s,
            Similarity::ScaledDot(None) => 1.0 / (dim as f32).sqrt(),
        }
    }
}

/// Options of [`softmax`](crate::Context::softmax).
///
/// The softmax runs over the last dimension of a `[batch, heads, rows, cols]` tensor:
/// `y = softmax(x / temperature + additive_mask)` over the kept columns; masked columns get 0;
/// a row with every column masked gives all zeros.
#[derive(Debug, Clone, Copy)]
pub struct SoftmaxOptions<'a> {
    /// Divides the inputs before exponentiation; must be finite and > 0. Default 1.
    pub temperature: f32,
    /// Causal masking: row `i` keeps columns `j <= i + cols - rows` (bottom-right aligned).
    pub causal: bool,
    /// Per-batch count of valid columns (`len == batch`, each `<= cols`); columns at or past it are masked.
    pub key_lengths: Option<&'a [u32]>,
}

impl Default for SoftmaxOptions<'_> {
    fn default() -> Self {
        SoftmaxOptions { temperature: 1.0, causal: false, key_lengths: None }
    }
}

/// Options of fused and unfused attention.
///
/// `O = softmax(scale · Q Kᵀ + mask) V`, per (batch, head); key/value head `h / (heads / kv_heads)`
/// serves query head `h` (GQA/MQA).
#[derive(Debug, Clone, Copy, Default)]
pub struct AttentionOptions<'a> {
    /// Score scale; `None` means `1/sqrt(head_dim)`. Must be finite.
    pub scale: Option<f32>,
    /// Causal masking, aligned bottom-right as in FlashAttention: query `i` sees keys
    /// `j <= i + nk - nq` (`nk`, `nq` the tensors' sequence lengths). With `nq == nk` this is the
    /// usual lower triangle; with `nq > nk` the first `nq - nk` queries see no key and give zeros.
    pub causal: bool,
    /// Per-batch number of valid keys (padding): keys at or past `key_lengths[b]` are masked.
    /// `len == batch`, each `<= nk`; 0 masks every key (the rows give zeros).
    pub key_lengths: Option<&'a [u32]>,
}

impl AttentionOptions<'_> {
    /// The effective scale for head dim `d`.
    pub(crate) fn scale_for(&self, d: usize) -> f32 {
        self.scale.unwrap_or(1.0 / (d as f32).sqrt())
    }
}

/// Dimensions of a checked query/key(/value) problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dims {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub nq: usize,
    pub nk: usize,
    pub d: usize,
}

impl Dims {
    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
}

/// Checks Q against K for similarity (and attention): batch and dim match, heads divisible.
pub(crate) fn check_qk(q: &Shape, k: &Shape) -> Result<Dims> {
    q.check_nonempty("q")?;
    k.check_nonempty("k")?;
    if k.batch != q.batch {
        return Err(Error::ShapeMismatch { argument: "k", other: "q", dim: "batch", got: k.batch, expected: q.batch });
    }
    if k.dim != q.dim {
        return Err(Error::ShapeMismatch { argument: "k", other: "q", dim: "dim", got: k.dim, expected: q.dim });
    }
    if !q.heads.is_multiple_of(k.heads) {
        return Err(Error::HeadsNotDivisible { argument: "k", q_heads: q.heads, kv_heads: k.heads });
    }
    Ok(Dims { batch: q.batch, heads: q.heads, kv_heads: k.heads, nq: q.seq, nk: k.seq, d: q.dim })
}

/// Checks Q, K, V for attention.
pub(crate) fn check_qkv(q: &Shape, k: &Shape, v: &Shape) -> Result<Dims> {
    let dims = check_qk(q, k)?;
    v.check_nonempty("v")?;
    for (dim, got, expected) in [("batch", v.batch, k.batch), ("heads", v.heads, k.heads), ("seq", v.seq, k.seq)] {
        if got != expected {
            return Err(Error::ShapeMismatch { argument: "v", other: "k", dim, got, expected });
        }
    }
    if v.dim != q.dim {
        return Err(Error::ShapeMismatch { argument: "v", other: "q", dim: "dim", got: v.dim, expected: q.dim });
    }
    if dims.d > MAX_HEAD_DIM {
        return Err(Error::UnsupportedHeadDim { argument: "q", got: dims.d, max: MAX_HEAD_DIM });
    }
    Ok(dims)
}

/// Checks a mask shape `[mb, mh, nq, nk]` against scores `[batch, heads, nq, nk]`.
pub(crate) fn check_mask_shape(m: [usize; 4], batch: usize, heads: usize, nq: usize, nk: usize) -> Result<()> {
    let ok = (m[0] == 1 || m[0] == batch) && (m[1] == 1 || m[1] == heads) && m[2] == nq && m[3] == nk;
    if !ok {
        return Err(Error::MaskShape { got: m, batch, heads, nq, nk });
    }
    Ok(())
}

/// Checks per-batch key lengths.
pub(crate) fn check_key_lengths(kl: Option<&[u32]>, batch: usize, nk: usize) -> Result<()> {
    if let Some(kl) = kl {
        if kl.len() != batch {
            return Err(Error::KeyLengths(format!("{} entries, expected one per batch ({batch})", kl.len())));
        }
        if let Some((b, &l)) = kl.iter().enumerate().find(|(_, &l)| l as usize > nk) {
            return Err(Error::KeyLengths(format!("entry {b} is {l}, more than the {nk} keys")));
        }
    }
    Ok(())
}

/// Checks a scalar option is finite (and, if `positive`, > 0).
pub(crate) fn check_scalar(argument: &'static str, v: f32, positive: bool) -> Result<()> {
    if !v.is_finite() || (positive && v <= 0.0) {
        let need = if positive { "finite and > 0" } else { "finite" };
        return Err(Error::InvalidArgument { argument, message: format!("{v} is not {need}") });
    }
    Ok(())
}
