//! A packed variable-length attention call, checked (`Context::attention_varlen`,
//! `cpu::attention_varlen`): the packed tensors against the offsets. Each sequence's call is
//! then checked as an attention call of its own.

use super::{check_operand, same_dtype, Operand};
use crate::error::{Error, Result};
use crate::options::AttentionOptions;
use crate::varlen::Varlen;

/// Checks, in this order: `q`, `k`, `v` (non-empty, countable; batch 1, the pack: `[1, heads,
/// total, dim]`); `k` and `v` the same shape and the dtype of `q`, heads dividing `q`'s, the
/// same head dim; the offsets' totals against the tensors' rows; no key lengths (the offsets
/// stand for them).
pub(crate) fn check(q: &Operand, k: &Operand, v: &Operand, varlen: &Varlen, opts: &AttentionOptions) -> Result<()> {
    for (name, t) in [("q", q), ("k", k), ("v", v)] {
        check_operand(name, t)?;
        if t.shape.batch != 1 {
            return Err(Error::InvalidArgument {
                argument: name,
                message: format!(
                    "batch {}: a pack holds every sequence's rows in one [1, heads, total, dim] tensor",
                    t.shape.batch
                ),
            });
        }
    }
    let (qs, ks, vs) = (q.shape, k.shape, v.shape);
    for (dim, got, expected) in [("heads", vs.heads, ks.heads), ("seq", vs.seq, ks.seq), ("dim", vs.dim, ks.dim)] {
        if got != expected {
            return Err(Error::ShapeMismatch { argument: "v", other: "k", dim, got, expected });
        }
    }
    same_dtype("k", k, q.dtype)?;
    same_dtype("v", v, q.dtype)?;
    if ks.dim != qs.dim {
        return Err(Error::ShapeMismatch { argument: "k", other: "q", dim: "dim", got: ks.dim, expected: qs.dim });
    }
    if !qs.heads.is_multiple_of(ks.heads) {
        return Err(Error::HeadsNotDivisible { argument: "k", q_heads: qs.heads, kv_heads: ks.heads });
    }
    for (argument, total, rows, t) in
        [("cu_seqlens_q", varlen.total_q(), qs.seq, "q"), ("cu_seqlens_k", varlen.total_k(), ks.seq, "k")]
    {
        if total != rows {
            return Err(Error::InvalidArgument {
                argument,
                message: format!("the last offset is {total}, and {t} holds {rows} rows"),
            });
        }
    }
    if opts.key_lengths.is_some() {
        return Err(Error::InvalidArgument {
            argument: "key_lengths",
            message: "in a pack the offsets give each sequence's keys".into(),
        });
    }
    Ok(())
}
