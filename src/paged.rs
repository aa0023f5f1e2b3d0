//! A paged KV cache, as serving engines keep it (vLLM's paged attention): K and V stored in
//! pages of `page_size` tokens, `[num_pages, page_size, kv_heads, head_dim]` each, and a block
//! table per sequence saying which pages hold its tokens, in order.
//!
//! [`PagedKvCache`] lives on the GPU; its geometry, block tables and host twin are plain data in
//! `pages.rs`.
//! [`PagedKvCache`] ([`Context::append_kv`], [`Context::paged_attention`]);
//! [`HostKvCache`] is its CPU twin ([`cpu::append_kv`](crate::cpu::append_kv),
//! [`cpu::paged_attention`](crate::cpu::paged_attention)). Both read K and V through the block
//! table: nothing is gathered into a contiguous copy.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::pages::PageGeometry;
use crate::shape::{DType, Layout};
use crate::tensor::Tensor;

/// A paged KV cache on the GPU: two page pools of [`PageGeometry`], K and V, in one dtype.
///
/// Sequences of different lengths share the pools: each one's block table row names its pages.
///
/// ```no_run
/// # use wgpu_attention::*;
/// # fn main() -> Result<()> {
/// let ctx = Context::new_blocking()?;
/// let g = PageGeometry { num_pages: 32, page_size: 16, kv_heads: 2, head_dim: 64 };
/// let cache = PagedKvCache::new(&ctx, g, DType::F16)?;
/// // two prompts of 37 and 5 tokens: sequence 0 in pages 0..3, sequence 1 in page 3
/// let pages = [0u32, 1, 2, 3, 0, 0];
/// let (k0, k1) = (vec![half::f16::from_f32(0.1); 2 * 37 * 64], vec![half::f16::from_f32(0.2); 2 * 5 * 64]);
/// // prompts of different lengths go in one call each (a call appends as many tokens to every
/// // sequence of its table): a one-sequence table per prompt
/// for (row, k) in [(&pages[0..3], &k0), (&pages[3..4], &k1)] {
///     let n = [(k.len() / (2 * 64)) as u32];
///     let table = BlockTable::new(row, row.len(), &n)?;
///     let t = ctx.upload(k, Shape::new(1, 2, n[0] as usize, 64))?;
///     ctx.append_kv(&cache, &table, &t, &t)?;
/// }
/// // then decode both together: one query per sequence over 37 and 5 keys
/// let table = BlockTable::new(&pages, 3, &[37, 5])?;
/// let q = ctx.upload(&vec![half::f16::from_f32(0.3); 2 * 8 * 64], Shape::new(2, 8, 1, 64))?;
/// let out = ctx.paged_attention(&q, &cache, &table, &AttentionOptions::default())?;
/// assert_eq!(out.shape(), Shape::new(2, 8, 1, 64));
/// println!("{} bytes per token", 2 * g.kv_heads * g.head_dim * cache.dtype().size() as usize);
/// # Ok(()) }
/// ```
///
/// Each pool is bound whole, so it must fit one storage binding of the device (128 MiB on some
/// drivers, e.g. lavapipe; several GiB on discrete GPUs). Attention over the cache does not know
/// its values' magnitudes (they may come from the caller's buffers or several appends): where
/// scores or weighted sums of V pass f32's range, they saturate, where attention over uploaded
/// contiguous tensors rescales instead (README, "Extreme values").
#[derive(Debug, Clone)]
pub struct PagedKvCache {
    pub(crate) k: Tensor,
    pub(crate) v: Tensor,
    pub(crate) geometry: PageGeometry,
}

/// Each pool is bound whole by the kernels: it must fit one storage binding of the device.
fn check_binding(ctx: &Context, geometry: &PageGeometry, dtype: DType) -> Result<()> {
    let bytes = (geometry.pool_shape().numel() as u64).saturating_mul(dtype.size());
    let max = ctx.caps().max_binding;
    if bytes > max {
        return Err(Error::TooLarge {
            argument: "geometry",
            message: format!(
                "each pool is {bytes} bytes, and the kernels bind a pool whole: this device binds at most \
                 {max} bytes (max_storage_buffer_binding_size); use fewer pages (several caches) or f16"
            ),
        });
    }
    Ok(())
}

impl PagedKvCache {
    /// A zeroed cache of `geometry` in `dtype` (f16 needs `SHADER_F16`). Each pool must fit one
    /// storage binding of the device (`Err(TooLarge)` naming `geometry` otherwise).
    pub fn new(ctx: &Context, geometry: PageGeometry, dtype: DType) -> Result<Self> {
        geometry.check()?;
        check_binding(ctx, &geometry, dtype)?;
        let k = ctx.zeros(geometry.pool_shape(), Layout::Bhsd, dtype)?;
        let v = ctx.zeros(geometry.pool_shape(), Layout::Bhsd, dtype)?;
        Ok(PagedKvCache { k, v, geometry })
    }

    /// A cache over a caller's two buffers of `ctx`'s device (no copy), each holding a pool of
    /// `geometry` from element `offset` (and fitting one storage binding, as for [`new`](Self::new)).
    ///
    /// The pools' values are not scanned (as for [`Tensor::from_buffer`]): NaN or infinities
    /// there give unspecified but finite results in the rows that read them, and since their
    /// magnitudes are unknown, scores or sums beyond f32's range saturate. Tokens written by
    /// [`Context::append_kv`] from uploaded tensors were scanned at upload.
    pub fn from_buffers(
        ctx: &Context,
        k: wgpu::Buffer,
        v: wgpu::Buffer,
        offset: u64,
        geometry: PageGeometry,
        dtype: DType,
    ) -> Result<Self> {
        geometry.check()?;
        check_binding(ctx, &geometry, dtype)?;
        let s = geometry.pool_shape();
        let k = Tensor::from_buffer(ctx, k, offset, s, Layout::Bhsd, dtype)?;
        let v = Tensor::from_buffer(ctx, v, offset, s, Layout::Bhsd, dtype)?;
        Ok(PagedKvCache { k, v, geometry })
    }

    /// The pools' geometry.
    pub fn geometry(&self) -> PageGeometry {
        self.geometry
    }
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.k.dtype
    }
    /// The K pool, as a tensor `[1, 1, tokens · kv_heads, head_dim]`.
    pub fn k(&self) -> &Tensor {
        &self.k
    }
    /// The V pool, as a tensor `[1, 1, tokens · kv_heads, head_dim]`.
    pub fn v(&self) -> &Tensor {
        &self.v
    }
}
