//! A packed variable-length attention call, checked (`Context::attention_varlen`,
//! `cpu::attention_varlen`): the packed tensors against the offsets. Each sequence's call is
//! then checked as an attention call of its own.

use super::{check_operand, same_dtype, Operand};
use crate::error::{Error, Result};
use crate::options::AttentionOptions;
use crate::pages::{BlockTable, PageGeometry};
use crate::varlen::Varlen;

/// A packed tensor: non-empty, countable, batch 1 (`[1, heads, total, dim]`).
fn check_pack(name: &'static str, t: &Operand) -> Result<()> {
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
    Ok(())
}

/// Checks, in this order: `q`, `k`, `v` (non-empty, countable; batch 1, the pack: `[1, heads,
/// total, dim]`); `k` and `v` the same shape and the dtype of `q`, heads dividing `q`'s, the
/// same head dim; the offsets' totals against the tensors' rows; no key lengths (the offsets
/// stand for them).
pub(crate) fn check(q: &Operand, k: &Operand, v: &Operand, varlen: &Varlen, opts: &AttentionOptions) -> Result<()> {
    check_packs(q, k, v)?;
    let (qs, ks) = (q.shape, k.shape);
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
    check_no_key_lengths(opts)
}

/// A pack's options: no key lengths (the offsets give each sequence's keys).
pub(crate) fn check_no_key_lengths(opts: &AttentionOptions) -> Result<()> {
    if opts.key_lengths.is_some() {
        return Err(Error::InvalidArgument {
            argument: "key_lengths",
            message: "in a pack the offsets give each sequence's keys".into(),
        });
    }
    Ok(())
}

/// The packed tensors of a call, as [`check`] describes, without the offsets.
pub(crate) fn check_packs(q: &Operand, k: &Operand, v: &Operand) -> Result<()> {
    for (name, t) in [("q", q), ("k", k), ("v", v)] {
        check_pack(name, t)?;
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
    Ok(())
}

/// Checks the offsets of a ragged call over a paged cache (`argument`: `cu_seqlens_q` or
/// `cu_seqlens_new`): as many sequences as the table, from 0, never decreasing, the last equal
/// to the packed tensor's rows; the tensor a pack (batch 1).
pub(crate) fn check_ragged(
    argument: &'static str,
    t: &Operand,
    tensor: &'static str,
    batch: usize,
    cu: &[u32],
) -> Result<()> {
    check_pack(tensor, t)?;
    crate::varlen::check_offsets(argument, cu)?;
    if cu.len() != batch + 1 {
        return Err(Error::LengthMismatch { argument, expected: batch + 1, got: cu.len() });
    }
    let total = cu[batch] as usize;
    if total != t.shape.seq {
        return Err(Error::InvalidArgument {
            argument,
            message: format!("the last offset is {total}, and {tensor} holds {} rows", t.shape.seq),
        });
    }
    Ok(())
}

/// The checks of a ragged append shared with the GPU: the packs and offsets, and no two
/// sequences writing one slot of the pool.
pub(crate) fn check_ragged_append(
    k: &Operand,
    v: &Operand,
    g: &PageGeometry,
    table: &BlockTable,
    cu: &[u32],
) -> Result<()> {
    check_ragged("cu_seqlens_new", k, "k_new", table.batch(), cu)?;
    check_ragged("cu_seqlens_new", v, "v_new", table.batch(), cu)?;
    table.check(g)?;
    let mut slots = std::collections::HashMap::new();
    for b in 0..table.batch() {
        let n = (cu[b + 1] - cu[b]) as usize;
        let len = table.seq_lens()[b] as usize;
        if n > len {
            return Err(Error::InvalidArgument {
                argument: "block_table",
                message: format!("sequence {b} has length {len}, fewer than its {n} new tokens (lengths count them)"),
            });
        }
        for j in len - n..len {
            if let Some(other) = slots.insert(table.token(g, b, j), b) {
                return Err(Error::InvalidArgument {
                    argument: "block_table",
                    message: format!(
                        "sequences {other} and {b} would both write token {} of the pool (pages shared by sequences are read-only)",
                        table.token(g, b, j)
                    ),
                });
            }
        }
    }
    Ok(())
}
