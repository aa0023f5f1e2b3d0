//! Packed variable-length sequences ([`Varlen`]): the cumulative offsets of each sequence's
//! queries and keys in tensors that hold every sequence's rows back to back, without padding,
//! as FlashAttention's `flash_attn_varlen_func` takes them (`cu_seqlens_q`, `cu_seqlens_k`).
//! Plain data and its checks; the calls are `Context::attention_varlen` and
//! `cpu::attention_varlen`.

use std::ops::Range;

use crate::error::{Error, Result};

/// The offsets of a pack of sequences: sequence `b`'s queries are rows
/// `cu_seqlens_q[b] .. cu_seqlens_q[b + 1]` of the packed queries, its keys and values rows
/// `cu_seqlens_k[b] .. cu_seqlens_k[b + 1]` of the packed keys and values. Each has
/// `batch + 1` entries, starts at 0 and never decreases (a sequence may be empty).
///
/// ```
/// use wgpu_attention::{Error, Varlen};
/// // three sequences: 3, 0 and 5 queries over 10, 4 and 5 keys
/// let (cu_q, cu_k) = ([0u32, 3, 3, 8], [0u32, 10, 14, 19]);
/// let v = Varlen::new(&cu_q, &cu_k)?;
/// assert_eq!((v.batch(), v.total_q(), v.total_k()), (3, 8, 19));
/// assert_eq!(v.k_range(1), 10..14);
/// // offsets that decrease are refused, naming the argument and the entry
/// let e = Varlen::new(&[0, 3, 2], &[0, 1, 2]).unwrap_err();
/// assert!(matches!(e, Error::InvalidArgument { argument: "cu_seqlens_q", .. }));
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Varlen<'a> {
    cu_seqlens_q: &'a [u32],
    cu_seqlens_k: &'a [u32],
}

/// Checks one offsets array: at least 2 entries, the first 0, never decreasing.
pub(crate) fn check_offsets(argument: &'static str, cu: &[u32]) -> Result<()> {
    if cu.len() < 2 {
        return Err(Error::InvalidArgument {
            argument,
            message: format!("{} entries: a pack of `batch` sequences has batch + 1 offsets, at least 2", cu.len()),
        });
    }
    if cu[0] != 0 {
        return Err(Error::InvalidArgument { argument, message: format!("starts at {}, not 0", cu[0]) });
    }
    if let Some(i) = cu.windows(2).position(|w| w[1] < w[0]) {
        return Err(Error::InvalidArgument {
            argument,
            message: format!(
                "entry {} ({}) is less than entry {i} ({}): offsets never decrease",
                i + 1,
                cu[i + 1],
                cu[i]
            ),
        });
    }
    Ok(())
}

impl<'a> Varlen<'a> {
    /// The offsets of a pack, checked: as many entries in both (`batch + 1`, at least 2), each
    /// starting at 0 and never decreasing (`Err(InvalidArgument)` or `Err(LengthMismatch)`
    /// naming `cu_seqlens_q` or `cu_seqlens_k`). The totals are checked against the tensors by
    /// the calls.
    pub fn new(cu_seqlens_q: &'a [u32], cu_seqlens_k: &'a [u32]) -> Result<Self> {
        check_offsets("cu_seqlens_q", cu_seqlens_q)?;
        check_offsets("cu_seqlens_k", cu_seqlens_k)?;
        if cu_seqlens_k.len() != cu_seqlens_q.len() {
            return Err(Error::LengthMismatch {
                argument: "cu_seqlens_k",
                expected: cu_seqlens_q.len(),
                got: cu_seqlens_k.len(),
            });
        }
        Ok(Varlen { cu_seqlens_q, cu_seqlens_k })
    }

    /// Sequences in the pack.
    pub fn batch(&self) -> usize {
        self.cu_seqlens_q.len() - 1
    }
    /// Query rows of sequence `b` in the packed queries (and the packed output).
    pub fn q_range(&self, b: usize) -> Range<usize> {
        self.cu_seqlens_q[b] as usize..self.cu_seqlens_q[b + 1] as usize
    }
    /// Key and value rows of sequence `b` in the packed keys and values.
    pub fn k_range(&self, b: usize) -> Range<usize> {
        self.cu_seqlens_k[b] as usize..self.cu_seqlens_k[b + 1] as usize
    }
    /// Query rows of the pack.
    pub fn total_q(&self) -> usize {
        self.cu_seqlens_q[self.batch()] as usize
    }
    /// Key rows of the pack.
    pub fn total_k(&self) -> usize {
        self.cu_seqlens_k[self.batch()] as usize
    }
    /// The query offsets.
    pub fn cu_seqlens_q(&self) -> &'a [u32] {
        self.cu_seqlens_q
    }
    /// The key offsets.
    pub fn cu_seqlens_k(&self) -> &'a [u32] {
        self.cu_seqlens_k
    }
}
