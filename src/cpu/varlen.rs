//! Packed variable-length attention on the CPU (the CPU twin of `Context::attention_varlen`):
//! each sequence of the pack attends over its own keys, as a call of its own, on the fast path
//! or on the f64 reference.

use std::borrow::Cow;

use crate::error::Result;
use crate::host::HostTensor;
use crate::options::AttentionOptions;
use crate::pages::{BlockTable, HostKvCache};
use crate::problem::Operand;
use crate::shape::{Element, Layout, Shape};
use crate::varlen::Varlen;

/// Rows `[r0, r1)` of a packed `[1, heads, total, dim]` tensor as a contiguous BSHD slice
/// (borrowed when the tensor is BSHD, gathered head by head from BHSD).
fn rows<'t, T: Element>(t: &HostTensor<'t, T>, r0: usize, r1: usize) -> Cow<'t, [T]> {
    let s = t.shape();
    match t.layout() {
        Layout::Bshd => Cow::Borrowed(&t.data()[r0 * s.heads * s.dim..r1 * s.heads * s.dim]),
        Layout::Bhsd => {
            let mut v = Vec::with_capacity((r1 - r0) * s.heads * s.dim);
            for r in r0..r1 {
                for h in 0..s.heads {
                    v.extend_from_slice(t.row(0, h, r));
                }
            }
            Cow::Owned(v)
        }
    }
}

/// Runs `one` on every sequence of the pack (its queries and keys as BSHD views, batch 1) and
/// writes the results into the packed output (`q`'s shape and layout) and log-sum-exp
/// (`[heads, total_q]`). A sequence without keys gives zeros and the log-sum-exp of its sinks
/// alone (`-inf` without), one without queries nothing.
fn each_sequence<T: Element>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    varlen: &Varlen,
    opts: &AttentionOptions,
    one: impl Fn(&HostTensor<T>, &HostTensor<T>, &HostTensor<T>, &AttentionOptions) -> Result<(Vec<f32>, Vec<f32>)>,
) -> Result<(Vec<f32>, Vec<f32>)> {
    crate::problem::varlen::check(&Operand::host(q), &Operand::host(k), &Operand::host(v), varlen, opts)?;
    let (qs, ks) = (q.shape(), k.shape());
    let (h, d, total) = (qs.heads, qs.dim, qs.seq);
    let mut out = vec![0.0f32; qs.numel()];
    let mut lse = vec![f32::NEG_INFINITY; h * total];
    let ost = q.layout().strides(&qs);
    for b in 0..varlen.batch() {
        let (qr, kr) = (varlen.q_range(b), varlen.k_range(b));
        if qr.is_empty() {
            continue;
        }
        let (nq, nk) = (qr.len(), kr.len());
        let (o, l) = if nk == 0 {
            // no keys: a key length of 0 over one zero key gives the documented result
            let zero_k = vec![T::from_f32(0.0); ks.heads * d];
            let one_key = HostTensor::with_layout(&zero_k, Shape::new(1, ks.heads, 1, d), Layout::Bshd)?;
            let qd = rows(q, qr.start, qr.end);
            let qb = HostTensor::with_layout(&qd, Shape::new(1, h, nq, d), Layout::Bshd)?;
            let lens = [0u32];
            one(&qb, &one_key, &one_key, &AttentionOptions { key_lengths: Some(&lens), ..*opts })?
        } else {
            let (qd, kd, vd) = (rows(q, qr.start, qr.end), rows(k, kr.start, kr.end), rows(v, kr.start, kr.end));
            let qb = HostTensor::with_layout(&qd, Shape::new(1, h, nq, d), Layout::Bshd)?;
            let kb = HostTensor::with_layout(&kd, Shape::new(1, ks.heads, nk, d), Layout::Bshd)?;
            let vb = HostTensor::with_layout(&vd, Shape::new(1, ks.heads, nk, d), Layout::Bshd)?;
            one(&qb, &kb, &vb, opts)?
        };
        // o is BSHD [nq, h, d]; l is [h, nq]
        for i in 0..nq {
            for hh in 0..h {
                let at = hh * ost.head + (qr.start + i) * ost.seq;
                out[at..at + d].copy_from_slice(&o[(i * h + hh) * d..][..d]);
                lse[hh * total + qr.start + i] = l[hh * nq + i];
            }
        }
    }
    Ok((out, lse))
}

/// Attention over a pack of variable-length sequences on the fast CPU path: the CPU twin of
/// [`Context::attention_varlen`](crate::Context::attention_varlen).
///
/// `q` is `[1, heads, total_q, dim]`, `k` and `v` `[1, kv_heads, total_k, dim]` (any layout;
/// BSHD is FlashAttention's `[total, heads, dim]`), sequence `b` owning the rows `varlen` gives
/// it. Each sequence attends over its own keys only, with every option of
/// [`AttentionOptions`] but key lengths and masks, causal aligned bottom-right per sequence.
/// Returns `(output, lse)`: output in `q`'s shape and layout; lse `[heads, total_q]`. A
/// sequence without keys gives zeros and `-inf` (its sink's log-sum-exp with sinks).
///
/// Each sequence is computed alone, so its result does not depend on the rest of the pack.
///
/// ```
/// use wgpu_attention::{cpu, AttentionOptions, HostTensor, Layout, Shape, Varlen};
/// // two sequences of 2 and 3 tokens, self-attention, 1 head of dim 4, packed [5, 1, 4]
/// let x: Vec<f32> = (0..5 * 4).map(|i| (i as f32 * 0.3).sin()).collect();
/// let t = HostTensor::with_layout(&x, Shape::new(1, 1, 5, 4), Layout::Bshd)?;
/// let cu = [0u32, 2, 5];
/// let opts = AttentionOptions { causal: true, ..Default::default() };
/// let (out, lse) = cpu::attention_varlen(&t, &t, &t, &Varlen::new(&cu, &cu)?, &opts)?;
/// // token 2 is the first of the second sequence: it sees only itself
/// assert!(out[2 * 4..3 * 4].iter().zip(&x[2 * 4..3 * 4]).all(|(a, b)| (a - b).abs() < 1e-6));
/// assert_eq!(lse.len(), 5);
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
pub fn attention_varlen<T: Element>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    varlen: &Varlen,
    opts: &AttentionOptions,
) -> Result<(Vec<f32>, Vec<f32>)> {
    each_sequence(q, k, v, varlen, opts, |q, k, v, o| super::attention(q, k, v, None, o))
}

/// [`attention_varlen`] on the f64 reference (the twin of [`cpu::reference::attention`](crate::cpu::reference::attention)).
pub fn reference_attention_varlen<T: Element>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    varlen: &Varlen,
    opts: &AttentionOptions,
) -> Result<(Vec<f32>, Vec<f32>)> {
    each_sequence(q, k, v, varlen, opts, |q, k, v, o| super::reference::attention(q, k, v, None, o))
}

/// Attention over a paged cache with a different number of new queries per sequence, on the
/// fast CPU path: the CPU twin of [`Context::paged_attention_varlen`](crate::Context::paged_attention_varlen).
/// `q` is a pack `[1, heads, total_q, dim]`, sequence `b` owning rows
/// `cu_seqlens_q[b]..cu_seqlens_q[b + 1]`, its queries at its last positions (as
/// [`paged_attention`](super::paged_attention)'s). Returns `(output, lse)`: output like `q`; lse
/// `[heads, total_q]`.
pub fn paged_attention_varlen<T: Element>(
    q: &HostTensor<T>,
    cache: &HostKvCache<T>,
    table: &BlockTable,
    cu_seqlens_q: &[u32],
    opts: &AttentionOptions,
) -> Result<(Vec<f32>, Vec<f32>)> {
    crate::problem::varlen::check_ragged("cu_seqlens_q", &Operand::host(q), "q", table.batch(), cu_seqlens_q)?;
    let qs = q.shape();
    let (h, d, total) = (qs.heads, qs.dim, qs.seq);
    let mut out = vec![0.0f32; qs.numel()];
    let mut lse = vec![f32::NEG_INFINITY; h * total];
    let ost = q.layout().strides(&qs);
    for b in 0..table.batch() {
        let (r0, r1) = (cu_seqlens_q[b] as usize, cu_seqlens_q[b + 1] as usize);
        if r0 == r1 {
            continue;
        }
        let lens = [table.seq_lens()[b]];
        let one = table.sequence(b, &lens);
        let qd = rows(q, r0, r1);
        let qb = HostTensor::with_layout(&qd, Shape::new(1, h, r1 - r0, d), Layout::Bshd)?;
        let (o, l) = super::paged_attention(&qb, cache, &one, opts)?;
        // o is BSHD [nq, h, d]; l is [h, nq]
        let nq = r1 - r0;
        for i in 0..nq {
            for hh in 0..h {
                let at = hh * ost.head + (r0 + i) * ost.seq;
                out[at..at + d].copy_from_slice(&o[(i * h + hh) * d..][..d]);
                lse[hh * total + r0 + i] = l[hh * nq + i];
            }
        }
    }
    Ok((out, lse))
}

/// Appends a different number of new tokens per sequence to a host cache: the CPU twin of
/// [`Context::append_kv_varlen`](crate::Context::append_kv_varlen). `k_new` and `v_new` are packs
/// `[1, kv_heads, total_new, dim]`, sequence `b` owning rows
/// `cu_seqlens_new[b]..cu_seqlens_new[b + 1]`, written at its last positions (its length in
/// the table counts them). Checked as [`append_kv`](super::append_kv) is, per sequence, and no
/// two sequences may write one slot.
pub fn append_kv_varlen<T: Element>(
    cache: &mut HostKvCache<T>,
    table: &BlockTable,
    k_new: &HostTensor<T>,
    v_new: &HostTensor<T>,
    cu_seqlens_new: &[u32],
) -> Result<()> {
    crate::problem::varlen::check_ragged_append(
        &Operand::host(k_new),
        &Operand::host(v_new),
        &cache.geometry(),
        table,
        cu_seqlens_new,
    )?;
    let ks = k_new.shape();
    for b in 0..table.batch() {
        let (r0, r1) = (cu_seqlens_new[b] as usize, cu_seqlens_new[b + 1] as usize);
        if r0 == r1 {
            continue;
        }
        let lens = [table.seq_lens()[b]];
        let one = table.sequence(b, &lens);
        let (kd, vd) = (rows(k_new, r0, r1), rows(v_new, r0, r1));
        let s = Shape::new(1, ks.heads, r1 - r0, ks.dim);
        super::append_kv(
            cache,
            &one,
            &HostTensor::with_layout(&kd, s, Layout::Bshd)?,
            &HostTensor::with_layout(&vd, s, Layout::Bshd)?,
        )?;
    }
    Ok(())
}
