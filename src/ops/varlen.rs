//! Packed variable-length attention on [`Context`]: each sequence of the pack recorded as an
//! attention call of its own over views of the packed tensors (no copy, no padding), all in
//! one encoder.

use crate::context::Context;
use crate::error::Result;
use crate::options::AttentionOptions;
use crate::paged::PagedKvCache;
use crate::pages::BlockTable;
use crate::problem::Operand;
use crate::shape::{DType, Layout, Shape};
use crate::tensor::Tensor;
use crate::varlen::Varlen;

/// Rows `[r0, r0 + n)` of a packed `[1, heads, total, cols]` tensor, as a view (no copy) that
/// keeps what the crate knows of its values.
fn rows(t: &Tensor, r0: usize, n: usize) -> Tensor {
    Tensor { offset: t.offset + (r0 * t.strides.seq) as u64, shape: Shape { seq: n, ..t.shape }, ..t.clone() }
}

/// A packed call's outputs: `out` with `q`'s shape and dtype, `lse` f32 `[1, heads, total_q, 1]`.
pub(super) fn check_packed_outputs(q: &Tensor, out: &Tensor, lse: Option<&Tensor>) -> Result<()> {
    let out_s = out.shape();
    if out_s != q.shape() || out.dtype() != q.dtype() {
        return Err(crate::Error::InvalidArgument {
            argument: "out",
            message: format!(
                "{:?} {:?}, expected q's {:?} {:?}",
                out_s.dims(),
                out.dtype(),
                q.shape().dims(),
                q.dtype()
            ),
        });
    }
    if let Some(l) = lse {
        let want = Shape::new(1, q.shape().heads, q.shape().seq, 1);
        if l.shape() != want || l.dtype() != DType::F32 {
            return Err(crate::Error::InvalidArgument {
                argument: "lse",
                message: format!("{:?} {:?}, expected {:?} F32", l.shape().dims(), l.dtype(), want.dims()),
            });
        }
    }
    Ok(())
}

/// The tensors of one recorded packed call ([`Context::encode_attention_varlen`]).
#[derive(Debug, Clone, Copy)]
pub struct VarlenCall<'a> {
    /// Packed queries `[1, heads, total_q, dim]`.
    pub q: &'a Tensor,
    /// Packed keys `[1, kv_heads, total_k, dim]`.
    pub k: &'a Tensor,
    /// Packed values, as `k`.
    pub v: &'a Tensor,
    /// Each sequence's rows.
    pub varlen: &'a Varlen<'a>,
    /// Output, `q`'s shape and dtype (any layout).
    pub out: &'a Tensor,
    /// Optional log-sum-exp, f32 `[1, heads, total_q, 1]`.
    pub lse: Option<&'a Tensor>,
}

impl Context {
    /// Attention over a pack of variable-length sequences (FlashAttention's
    /// `flash_attn_varlen_func`): `q` is `[1, heads, total_q, dim]` and `k`, `v` are
    /// `[1, kv_heads, total_k, dim]` (any layout; BSHD is FlashAttention's `[total, heads, dim]`),
    /// sequence `b` owning the query rows `varlen.q_range(b)` and the key rows
    /// `varlen.k_range(b)`. Each sequence attends over its own keys only, causal aligned
    /// bottom-right per sequence, with every option of [`AttentionOptions`] but key lengths
    /// (the offsets stand for them) and masks. Output like `q`.
    ///
    /// Each sequence runs as an attention call of its own (its variant and splits chosen from
    /// its own shape, as [`Context::attention`] would for it alone), recorded over views of the
    /// packed tensors into one submission: no work and no memory is spent on padding, and a
    /// sequence's output and log-sum-exp are bitwise the same whatever else is in the pack
    /// (README, "Packed variable-length sequences"). A sequence without keys gives zeros
    /// (`-inf` log-sum-exp, or its sink's), one without queries nothing. The offsets are host
    /// slices; the dispatches are as many as the sequences with queries.
    ///
    /// ```no_run
    /// # use wgpu_attention::*;
    /// # fn main() -> Result<()> {
    /// let ctx = Context::new_blocking()?;
    /// // two prompts of 3 and 5 tokens, 8 heads of dim 64, packed [8, 8, 64]
    /// let s = Shape::new(1, 8, 8, 64);
    /// let qkv = ctx.upload_with_layout(&vec![0.1f32; s.numel()], s, Layout::Bshd)?;
    /// let cu = [0u32, 3, 8];
    /// let opts = AttentionOptions { causal: true, ..Default::default() };
    /// let out = ctx.attention_varlen(&qkv, &qkv, &qkv, &Varlen::new(&cu, &cu)?, &opts)?;
    /// assert_eq!(out.shape(), s);
    /// # Ok(()) }
    /// ```
    pub fn attention_varlen(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        varlen: &Varlen,
        opts: &AttentionOptions,
    ) -> Result<Tensor> {
        pollster::block_on(self.attention_varlen_async(q, k, v, varlen, opts))
    }

    /// Async twin of [`Context::attention_varlen`].
    pub async fn attention_varlen_async(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        varlen: &Varlen<'_>,
        opts: &AttentionOptions<'_>,
    ) -> Result<Tensor> {
        Ok(self.varlen_checked(q, k, v, varlen, opts, false).await?.0)
    }

    /// Like [`Context::attention_varlen`], also returning the log-sum-exp (f32
    /// `[1, heads, total_q, 1]`).
    pub fn attention_varlen_with_lse(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        varlen: &Varlen,
        opts: &AttentionOptions,
    ) -> Result<(Tensor, Tensor)> {
        pollster::block_on(self.attention_varlen_with_lse_async(q, k, v, varlen, opts))
    }

    /// Async twin of [`Context::attention_varlen_with_lse`].
    pub async fn attention_varlen_with_lse_async(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        varlen: &Varlen<'_>,
        opts: &AttentionOptions<'_>,
    ) -> Result<(Tensor, Tensor)> {
        let (out, lse) = self.varlen_checked(q, k, v, varlen, opts, true).await?;
        Ok((out, lse.ok_or_else(|| crate::Error::Gpu("no log-sum-exp recorded".into()))?))
    }

    /// Records [`Context::attention_varlen`] into `encoder`, writing `call.out` and `call.lse`
    /// if given. Outputs may not share a buffer with the inputs.
    pub fn encode_attention_varlen(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        call: &VarlenCall,
        opts: &AttentionOptions,
    ) -> Result<()> {
        let VarlenCall { q, k, v, varlen, out, lse } = *call;
        self.varlen_check(q, k, v, varlen, opts)?;
        check_packed_outputs(q, out, lse)?;
        let mut outs = vec![("out", out)];
        outs.extend(lse.map(|l| ("lse", l)));
        self.check_outputs(&outs)?;
        pollster::block_on(self.record_varlen(encoder, (q, k, v), varlen, opts, out, lse))
    }

    fn varlen_check(&self, q: &Tensor, k: &Tensor, v: &Tensor, varlen: &Varlen, opts: &AttentionOptions) -> Result<()> {
        crate::problem::varlen::check(&Operand::gpu(q), &Operand::gpu(k), &Operand::gpu(v), varlen, opts)?;
        self.check_tensors(&[("q", q), ("k", k), ("v", v)], None)
    }

    async fn varlen_checked(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        varlen: &Varlen<'_>,
        opts: &AttentionOptions<'_>,
        with_lse: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        self.varlen_check(q, k, v, varlen, opts)?;
        let qs = q.shape();
        let out = self.zeros_async(qs, q.layout(), q.dtype()).await?;
        let lse = match with_lse {
            true => Some(self.zeros_async(Shape::new(1, qs.heads, qs.seq, 1), Layout::Bhsd, DType::F32).await?),
            false => None,
        };
        let mut enc = self.encoder()?;
        self.record_varlen(&mut enc, (q, k, v), varlen, opts, &out, lse.as_ref()).await?;
        self.submit_async(enc).await?;
        Ok((out, lse))
    }

    /// Records each sequence with queries as an attention call over views of the pack.
    async fn record_varlen(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        varlen: &Varlen<'_>,
        opts: &AttentionOptions<'_>,
        out: &Tensor,
        lse: Option<&Tensor>,
    ) -> Result<()> {
        let no_keys = [0u32];
        // a sequence without keys reads one zero key with a key length of 0 (nothing attended)
        let mut zero_key: Option<Tensor> = None;
        if (0..varlen.batch()).any(|b| varlen.k_range(b).is_empty() && !varlen.q_range(b).is_empty()) {
            let s = Shape::new(1, k.shape().heads, 1, k.shape().dim);
            zero_key = Some(self.zeros_async(s, Layout::Bhsd, k.dtype()).await?);
        }
        // every sequence's call checked before any is recorded
        let mut calls = vec![];
        for b in 0..varlen.batch() {
            let (qr, kr) = (varlen.q_range(b), varlen.k_range(b));
            if qr.is_empty() {
                continue;
            }
            let qb = rows(q, qr.start, qr.len());
            let ob = rows(out, qr.start, qr.len());
            let lb = lse.map(|l| rows(l, qr.start, qr.len()));
            let (kb, vb, o) = match &zero_key {
                Some(z) if kr.is_empty() => {
                    (z.clone(), z.clone(), AttentionOptions { key_lengths: Some(&no_keys), ..*opts })
                }
                _ => (rows(k, kr.start, kr.len()), rows(v, kr.start, kr.len()), *opts),
            };
            let p = self.attention_problem(&qb, &kb, &vb, None, &o)?;
            calls.push((p, qb, kb, vb, ob, lb));
        }
        for (p, qb, kb, vb, ob, lb) in &calls {
            self.record_attention(encoder, p, (qb, kb, vb), None, ob, lb.as_ref()).await?;
        }
        Ok(())
    }
}

impl Context {
    /// Attention over a paged cache with a different number of new queries per sequence:
    /// `q` is a pack `[1, heads, total_q, head_dim]` (any layout), sequence `b` owning rows
    /// `cu_seqlens_q[b]..cu_seqlens_q[b + 1]` (none: it is skipped), its queries at its last
    /// positions as in [`Context::paged_attention`] (a chunk of a prompt appended first, with
    /// `causal: true`, or one decode token). So chunked prefill of some sequences and decode
    /// steps of others run in one call. Output like `q`.
    ///
    /// As [`Context::attention_varlen`], each sequence is recorded as a paged call of its own
    /// (one-sequence tables, uploaded by the call), all in one submission: its result does not
    /// depend on the others. The table is a host [`BlockTable`], checked as for
    /// [`Context::paged_attention`]; the offsets as for a pack (`cu_seqlens_q` named).
    pub fn paged_attention_varlen(
        &self,
        q: &Tensor,
        cache: &PagedKvCache,
        table: &BlockTable,
        cu_seqlens_q: &[u32],
        opts: &AttentionOptions,
    ) -> Result<Tensor> {
        pollster::block_on(self.paged_attention_varlen_async(q, cache, table, cu_seqlens_q, opts))
    }

    /// Like [`Context::paged_attention_varlen`], also returning the log-sum-exp (f32
    /// `[1, heads, total_q, 1]`).
    pub fn paged_attention_varlen_with_lse(
        &self,
        q: &Tensor,
        cache: &PagedKvCache,
        table: &BlockTable,
        cu_seqlens_q: &[u32],
        opts: &AttentionOptions,
    ) -> Result<(Tensor, Tensor)> {
        pollster::block_on(self.paged_attention_varlen_with_lse_async(q, cache, table, cu_seqlens_q, opts))
    }

    /// Async twin of [`Context::paged_attention_varlen`].
    pub async fn paged_attention_varlen_async(
        &self,
        q: &Tensor,
        cache: &PagedKvCache,
        table: &BlockTable<'_>,
        cu_seqlens_q: &[u32],
        opts: &AttentionOptions<'_>,
    ) -> Result<Tensor> {
        Ok(self.ragged_checked(q, cache, table, cu_seqlens_q, opts, false).await?.0)
    }

    /// Async twin of [`Context::paged_attention_varlen_with_lse`].
    pub async fn paged_attention_varlen_with_lse_async(
        &self,
        q: &Tensor,
        cache: &PagedKvCache,
        table: &BlockTable<'_>,
        cu_seqlens_q: &[u32],
        opts: &AttentionOptions<'_>,
    ) -> Result<(Tensor, Tensor)> {
        let (out, lse) = self.ragged_checked(q, cache, table, cu_seqlens_q, opts, true).await?;
        Ok((out, lse.ok_or_else(|| crate::Error::Gpu("no log-sum-exp recorded".into()))?))
    }

    async fn ragged_checked(
        &self,
        q: &Tensor,
        cache: &PagedKvCache,
        table: &BlockTable<'_>,
        cu_seqlens_q: &[u32],
        opts: &AttentionOptions<'_>,
        with_lse: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        crate::problem::varlen::check_ragged("cu_seqlens_q", &Operand::gpu(q), "q", table.batch(), cu_seqlens_q)?;
        self.check_tensors(&[("q", q)], None)?;
        let qs = q.shape();
        let out = self.zeros_async(qs, q.layout(), q.dtype()).await?;
        let lse = match with_lse {
            true => Some(self.zeros_async(Shape::new(1, qs.heads, qs.seq, 1), Layout::Bhsd, DType::F32).await?),
            false => None,
        };
        let mut enc = self.encoder()?;
        self.record_ragged(&mut enc, q, cache, table, cu_seqlens_q, opts, &out, lse.as_ref()).await?;
        self.submit_async(enc).await?;
        Ok((out, lse))
    }

    /// Records [`Context::paged_attention_varlen`] into `encoder`, writing `out` (like `q`) and
    /// `lse` (f32 `[1, heads, total_q, 1]`) if given. Everything is checked before anything is
    /// recorded.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_paged_attention_varlen(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        q: &Tensor,
        cache: &PagedKvCache,
        table: &BlockTable,
        cu_seqlens_q: &[u32],
        opts: &AttentionOptions,
        out: &Tensor,
        lse: Option<&Tensor>,
    ) -> Result<()> {
        crate::problem::varlen::check_ragged("cu_seqlens_q", &Operand::gpu(q), "q", table.batch(), cu_seqlens_q)?;
        check_packed_outputs(q, out, lse)?;
        let mut outs = vec![("out", out)];
        outs.extend(lse.map(|l| ("lse", l)));
        self.check_outputs(&outs)?;
        pollster::block_on(self.record_ragged(encoder, q, cache, table, cu_seqlens_q, opts, out, lse))
    }

    /// Checks every sequence's paged call, then records them (so a bad sequence records
    /// nothing).
    #[allow(clippy::too_many_arguments)]
    async fn record_ragged(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        q: &Tensor,
        cache: &PagedKvCache,
        table: &BlockTable<'_>,
        cu_seqlens_q: &[u32],
        opts: &AttentionOptions<'_>,
        out: &Tensor,
        lse: Option<&Tensor>,
    ) -> Result<()> {
        self.check_tensors(&[("q", q)], None)?;
        let seqs: Vec<(usize, usize, [u32; 1])> = (0..table.batch())
            .map(|b| (cu_seqlens_q[b] as usize, cu_seqlens_q[b + 1] as usize, [table.seq_lens()[b]]))
            .collect();
        let mut calls = vec![];
        for (b, (r0, r1, lens)) in seqs.iter().enumerate() {
            if r0 == r1 {
                continue;
            }
            let one = table.sequence(b, lens);
            let (qb, ob) = (rows(q, *r0, r1 - r0), rows(out, *r0, r1 - r0));
            let lb = lse.map(|l| rows(l, *r0, r1 - r0));
            calls.push((one, qb, ob, lb));
        }
        let mut problems = vec![];
        for (one, qb, _, _) in &calls {
            problems.push(self.paged_problem(qb, cache, one, opts)?);
        }
        for (p, (one, qb, ob, lb)) in problems.iter().zip(&calls) {
            self.record_paged(encoder, p, one, qb, cache, ob, lb.as_ref()).await?;
        }
        Ok(())
    }

    /// Appends a different number of new tokens per sequence: `k_new` and `v_new` are packs
    /// `[1, kv_heads, total_new, head_dim]` (the cache's dtype), sequence `b` owning rows
    /// `cu_seqlens_new[b]..cu_seqlens_new[b + 1]`, written at its last positions (its length
    /// in the table counts them), quantized where the pools are. Checked before anything runs:
    /// the offsets, the table, and that no two sequences write one slot. Submits, without
    /// waiting.
    pub fn append_kv_varlen(
        &self,
        cache: &PagedKvCache,
        table: &BlockTable,
        k_new: &Tensor,
        v_new: &Tensor,
        cu_seqlens_new: &[u32],
    ) -> Result<()> {
        pollster::block_on(self.append_kv_varlen_async(cache, table, k_new, v_new, cu_seqlens_new))
    }

    /// Async twin of [`Context::append_kv_varlen`].
    pub async fn append_kv_varlen_async(
        &self,
        cache: &PagedKvCache,
        table: &BlockTable<'_>,
        k_new: &Tensor,
        v_new: &Tensor,
        cu_seqlens_new: &[u32],
    ) -> Result<()> {
        let mut enc = self.encoder()?;
        self.record_ragged_append(&mut enc, cache, table, k_new, v_new, cu_seqlens_new).await?;
        self.submit_async(enc).await
    }

    /// Records [`Context::append_kv_varlen`] into `encoder` (everything checked before anything
    /// is recorded).
    pub fn encode_append_kv_varlen(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        cache: &PagedKvCache,
        table: &BlockTable,
        k_new: &Tensor,
        v_new: &Tensor,
        cu_seqlens_new: &[u32],
    ) -> Result<()> {
        pollster::block_on(self.record_ragged_append(encoder, cache, table, k_new, v_new, cu_seqlens_new))
    }

    /// Checks the offsets, the table and every sequence's append, then records them (so a bad
    /// call records nothing).
    async fn record_ragged_append(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        cache: &PagedKvCache,
        table: &BlockTable<'_>,
        k_new: &Tensor,
        v_new: &Tensor,
        cu_seqlens_new: &[u32],
    ) -> Result<()> {
        crate::problem::varlen::check_ragged_append(
            &Operand::gpu(k_new),
            &Operand::gpu(v_new),
            &cache.geometry,
            table,
            cu_seqlens_new,
        )?;
        let seqs: Vec<(usize, usize, [u32; 1])> = (0..table.batch())
            .map(|b| (cu_seqlens_new[b] as usize, cu_seqlens_new[b + 1] as usize, [table.seq_lens()[b]]))
            .collect();
        let mut calls = vec![];
        for (b, (r0, r1, lens)) in seqs.iter().enumerate() {
            if r0 == r1 {
                continue;
            }
            let one = table.sequence(b, lens);
            calls.push((one, rows(k_new, *r0, r1 - r0), rows(v_new, *r0, r1 - r0)));
        }
        let mut problems = vec![];
        for (one, kb, vb) in &calls {
            problems.push(self.append_problem(cache, one, kb, vb)?);
        }
        for (p, (one, kb, vb)) in problems.iter().zip(&calls) {
            let (l, t) = self.table_buffers(one).await?;
            crate::launch::kv_append::record(self, encoder, p, kb, vb, cache, &l, &t).await?;
        }
        Ok(())
    }
}
