//! A paged KV cache on [`Context`]: appending new tokens (`crate::kernels::kv_append`) and
//! attention through the block table (`crate::kernels::attention`, paged variants).

use super::{check_aliasing, Region};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::attention_plan::AttentionPlan;
use crate::launch::attention::KvSource;
use crate::launch::kv_append;
use crate::options::AttentionOptions;
use crate::block_table::{resident, PagedTable};
use crate::paged::PagedKvCache;
use crate::problem::{AppendProblem, Operand, PagedProblem};
use crate::shape::{DType, Layout};
use crate::tensor::Tensor;

impl Context {
    /// The block table's two buffers, sequence lengths and entries: a resident table's own, or
    /// host slices uploaded.
    pub(crate) async fn table_buffers(&self, table: &dyn PagedTable) -> Result<(wgpu::Buffer, wgpu::Buffer)> {
        if let Some((lens, entries, id)) = resident(table) {
            self.check_owns("block_table", id)?;
            return Ok((lens.clone(), entries.clone()));
        }
        let t = table.view();
        Ok((
            self.create_init(bytemuck::cast_slice(t.seq_lens()), "seq_lens").await?,
            self.create_init(bytemuck::cast_slice(t.table()), "block_table").await?,
        ))
    }

    pub(crate) fn append_problem<'a>(
        &self,
        cache: &PagedKvCache,
        table: &'a dyn PagedTable,
        k_new: &Tensor,
        v_new: &Tensor,
    ) -> Result<AppendProblem<'a>> {
        let p = AppendProblem::new(Operand::gpu(k_new), Operand::gpu(v_new), cache.geometry, cache.dtype(), table.view())?;
        // scanned values past a quantized pool's scales are refused (unscanned ones saturate)
        for (name, t, kind) in [("k_new", k_new, cache.format.k), ("v_new", v_new, cache.format.v)] {
            if let (Some(m), Some(limit)) = (t.max_abs, crate::kv_dtype::max_storable(kind)) {
                if m >= limit {
                    return Err(Error::InvalidArgument {
                        argument: name,
                        message: format!("holds magnitudes up to {m:e}, past what {kind}'s f16 block scale holds ({limit:e})"),
                    });
                }
            }
        }
        self.check_tensors(&[("k_new", k_new), ("v_new", v_new), ("k_pages", &cache.k), ("v_pages", &cache.v)], None)?;
        let inputs = [Region::tensor("k_new", k_new), Region::tensor("v_new", v_new)];
        check_aliasing(&[Region::tensor("k_pages", &cache.k), Region::tensor("v_pages", &cache.v)], &inputs)?;
        Ok(p)
    }

    /// Appends new tokens to a paged cache: `k_new` and `v_new` (`[batch, kv_heads, n_new,
    /// head_dim]`, the cache's dtype) are written, for each sequence `b` of the block table, at
    /// its last `n_new` positions (`seq_lens[b] - n_new ..`; lengths count the new tokens), into
    /// the pages its table names. Submits, without waiting.
    ///
    /// The table is checked before anything runs: lengths and pages within the cache, and no two
    /// new tokens in one slot ([`Error::InvalidArgument`](crate::Error::InvalidArgument) naming
    /// `block_table`). It is a host [`BlockTable`](crate::BlockTable) (uploaded by the call) or a
    /// [`DeviceBlockTable`](crate::DeviceBlockTable) (bound as it is: no buffer per call).
    ///
    /// ```no_run
    /// # use wgpu_attention::*;
    /// # fn main() -> Result<()> {
    /// let ctx = Context::new_blocking()?;
    /// let g = PageGeometry { num_pages: 64, page_size: 16, kv_heads: 2, head_dim: 64 };
    /// let cache = PagedKvCache::new(&ctx, g, DType::F32)?;
    /// // two sequences: 20 and 3 tokens, the last token of each new in this step
    /// let (lens, table) = ([20u32, 3], [0u32, 1, 2, 3]);
    /// let table = BlockTable::new(&table, 2, &lens)?;
    /// let k_new = ctx.upload(&vec![0.5f32; 2 * 2 * 64], Shape::new(2, 2, 1, 64))?;
    /// ctx.append_kv(&cache, &table, &k_new, &k_new)?;
    /// let q = ctx.upload(&vec![0.1f32; 2 * 8 * 64], Shape::new(2, 8, 1, 64))?;
    /// let out = ctx.paged_attention(&q, &cache, &table, &AttentionOptions::default())?;
    /// # let _ = out; Ok(()) }
    /// ```
    pub fn append_kv(&self, cache: &PagedKvCache, table: &dyn PagedTable, k_new: &Tensor, v_new: &Tensor) -> Result<()> {
        pollster::block_on(self.append_kv_async(cache, table, k_new, v_new))
    }

    /// Async twin of [`Context::append_kv`].
    pub async fn append_kv_async(
        &self,
        cache: &PagedKvCache,
        table: &dyn PagedTable,
        k_new: &Tensor,
        v_new: &Tensor,
    ) -> Result<()> {
        let p = self.append_problem(cache, table, k_new, v_new)?;
        let (lens, entries) = self.table_buffers(table).await?;
        let mut enc = self.encoder()?;
        kv_append::record(self, &mut enc, &p, k_new, v_new, cache, &lens, &entries).await?;
        self.submit_async(enc).await
    }

    /// Records [`Context::append_kv`] into `encoder`.
    pub fn encode_append_kv(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        cache: &PagedKvCache,
        table: &dyn PagedTable,
        k_new: &Tensor,
        v_new: &Tensor,
    ) -> Result<()> {
        pollster::block_on(async {
            let p = self.append_problem(cache, table, k_new, v_new)?;
            let (lens, entries) = self.table_buffers(table).await?;
            kv_append::record(self, encoder, &p, k_new, v_new, cache, &lens, &entries).await
        })
    }

    pub(crate) fn paged_problem<'a>(
        &self,
        q: &Tensor,
        cache: &PagedKvCache,
        table: &'a dyn PagedTable,
        opts: &AttentionOptions<'a>,
    ) -> Result<PagedProblem<'a>> {
        let p = PagedProblem::new(
            Operand::gpu(q),
            cache.geometry,
            cache.dtype(),
            table.view(),
            opts,
        )?;
        self.check_tensors(&[("q", q), ("k_pages", &cache.k), ("v_pages", &cache.v)], None)?;
        Ok(p)
    }

    /// What a paged attention call would run (fused or split-K; the unfused variant does not
    /// read a paged cache). See [`Context::plan_attention`].
    pub fn plan_paged_attention(
        &self,
        q: &Tensor,
        cache: &PagedKvCache,
        table: &dyn PagedTable,
        opts: &AttentionOptions,
        lse: bool,
    ) -> Result<AttentionPlan> {
        let p = self.paged_problem(q, cache, table, opts)?;
        self.check_alive_now()?;
        let whole = self.whole_fits(&[q, &cache.k, &cache.v], None);
        Ok(pollster::block_on(self.resolve_attention(&p.attn, aligned(q, cache), lse, true, whole))?.1)
    }

    /// Attention of `q` (`[batch, heads, nq, head_dim]`) over a paged cache, reading K and V
    /// through the block table (no gather). Sequence `b` has `seq_lens[b]` keys; its queries sit
    /// at its last `nq` positions (`seq_lens[b] - nq + i`: decoding with `nq = 1`, or a prefill
    /// chunk whose K and V were appended first, causal by position with `causal: true`). Every
    /// option of [`AttentionOptions`] applies but key lengths (the table's lengths stand for
    /// them); masks do not apply. Output like `q`.
    pub fn paged_attention(
        &self,
        q: &Tensor,
        cache: &PagedKvCache,
        table: &dyn PagedTable,
        opts: &AttentionOptions,
    ) -> Result<Tensor> {
        pollster::block_on(self.paged_attention_async(q, cache, table, opts))
    }

    /// Async twin of [`Context::paged_attention`].
    pub async fn paged_attention_async(
        &self,
        q: &Tensor,
        cache: &PagedKvCache,
        table: &dyn PagedTable,
        opts: &AttentionOptions<'_>,
    ) -> Result<Tensor> {
        let p = self.paged_problem(q, cache, table, opts)?;
        let out = self.zeros_async(p.attn.out_shape(), p.attn.out_layout(), p.attn.dtype).await?;
        let mut enc = self.encoder()?;
        self.record_paged(&mut enc, &p, table, q, cache, &out, None).await?;
        self.submit_async(enc).await?;
        Ok(out)
    }

    /// Like [`Context::paged_attention`], also returning the log-sum-exp (f32 `[batch, heads, nq, 1]`).
    pub fn paged_attention_with_lse(
        &self,
        q: &Tensor,
        cache: &PagedKvCache,
        table: &dyn PagedTable,
        opts: &AttentionOptions,
    ) -> Result<(Tensor, Tensor)> {
        pollster::block_on(self.paged_attention_with_lse_async(q, cache, table, opts))
    }

    /// Async twin of [`Context::paged_attention_with_lse`].
    pub async fn paged_attention_with_lse_async(
        &self,
        q: &Tensor,
        cache: &PagedKvCache,
        table: &dyn PagedTable,
        opts: &AttentionOptions<'_>,
    ) -> Result<(Tensor, Tensor)> {
        let p = self.paged_problem(q, cache, table, opts)?;
        let out = self.zeros_async(p.attn.out_shape(), p.attn.out_layout(), p.attn.dtype).await?;
        let lse = self.zeros_async(p.attn.lse_shape(), Layout::Bhsd, DType::F32).await?;
        let mut enc = self.encoder()?;
        self.record_paged(&mut enc, &p, table, q, cache, &out, Some(&lse)).await?;
        self.submit_async(enc).await?;
        Ok((out, lse))
    }

    /// Records [`Context::paged_attention`] into `encoder`, writing `call.out` (like `q`, any
    /// layout) and `call.lse` if given. Outputs may not share a buffer with `q` or the cache.
    pub fn encode_paged_attention(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        call: &PagedAttentionCall,
        opts: &AttentionOptions,
    ) -> Result<()> {
        let PagedAttentionCall { q, cache, table, out, lse } = *call;
        let p = self.paged_problem(q, cache, table, opts)?;
        p.attn.check_outputs(&Operand::gpu(out), lse.map(Operand::gpu).as_ref())?;
        let mut outs = vec![("out", out)];
        outs.extend(lse.map(|l| ("lse", l)));
        self.check_outputs(&outs)?;
        pollster::block_on(self.record_paged(encoder, &p, table, q, cache, out, lse))
    }

    pub(crate) async fn record_paged(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        p: &PagedProblem<'_>,
        table: &dyn PagedTable,
        q: &Tensor,
        cache: &PagedKvCache,
        out: &Tensor,
        lse: Option<&Tensor>,
    ) -> Result<()> {
        let mut outputs = vec![Region::tensor("out", out)];
        outputs.extend(lse.map(|l| Region::tensor("lse", l)));
        let inputs = [Region::tensor("q", q), Region::tensor("k_pages", &cache.k), Region::tensor("v_pages", &cache.v)];
        check_aliasing(&outputs, &inputs)?;
        let whole = self.whole_fits(&[q, &cache.k, &cache.v], None);
        let (resolved, _) = self.resolve_attention(&p.attn, aligned(q, cache), lse.is_some(), true, whole).await?;
        let (lens, entries) = self.table_buffers(table).await?;
        let kv = KvSource::Paged { cache, seq_lens: &lens, table: &entries, blocks_per_seq: p.table.blocks_per_seq() };
        crate::launch::attention::record(self, encoder, &p.attn, resolved, q, kv, None, out, lse).await
    }
}

/// Whether vector loads apply: 4-aligned element offsets of `q` and the plain pools (rows of the
/// pools then start on multiples of 4 when the head dim is one; a quantized pool is read a word
/// of 4 values at a time whatever the loads).
fn aligned(q: &Tensor, cache: &PagedKvCache) -> bool {
    q.vec4_aligned()
        && [(&cache.k, cache.format.k), (&cache.v, cache.format.v)]
            .iter()
            .all(|(t, kind)| kind.is_quantized() || t.vec4_aligned())
}

/// The tensors of one recorded paged attention call ([`Context::encode_paged_attention`]).
#[derive(Debug, Clone, Copy)]
pub struct PagedAttentionCall<'a> {
    /// Queries `[batch, heads, nq, head_dim]`.
    pub q: &'a Tensor,
    /// The page pools.
    pub cache: &'a PagedKvCache,
    /// Which pages each sequence reads, and its length: a host [`BlockTable`](crate::BlockTable)
    /// or a resident [`DeviceBlockTable`](crate::DeviceBlockTable).
    pub table: &'a dyn PagedTable,
    /// Output, `q`'s shape and dtype.
    pub out: &'a Tensor,
    /// Optional log-sum-exp output, f32 `[batch, heads, nq, 1]`.
    pub lse: Option<&'a Tensor>,
}
