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
