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
use crate::kv_dtype::KvDType;
use crate::pages::{KvFormat, PageGeometry};
use crate::shape::{DType, Layout, Shape};
use crate::tensor::Tensor;

/// A paged KV cache on the GPU: two page pools of [`PageGeometry`], K and V, in the cache's
/// dtype or quantized ([`with_format`](Self::with_format): q8_0, q4_0, fp8 e4m3).
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
/// println!("{} bytes per token", cache.bytes_per_token());
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
    /// The dtype of the queries and new tokens (and of plain pools).
    pub(crate) dtype: DType,
    pub(crate) format: KvFormat,
}

/// Bytes of one pool of `t` over `geometry` in `dtype` (plain) or words (quantized).
fn pool_bytes(geometry: &PageGeometry, t: KvDType, dtype: DType) -> u64 {
    match geometry.pool_words(t) {
        Some(words) => words as u64 * 4,
        None => (geometry.pool_shape().numel() as u64).saturating_mul(dtype.size()),
    }
}

/// Each pool is bound whole by the kernels: it must fit one storage binding of the device.
fn check_binding(ctx: &Context, geometry: &PageGeometry, t: KvDType, dtype: DType) -> Result<()> {
    let bytes = pool_bytes(geometry, t, dtype);
    let max = ctx.caps().max_binding;
    if bytes > max {
        return Err(Error::TooLarge {
            argument: "geometry",
            message: format!(
                "each pool is {bytes} bytes, and the kernels bind a pool whole: this device binds at most \
                 {max} bytes (max_storage_buffer_binding_size); use fewer pages (several caches), f16 or a quantized type"
            ),
        });
    }
    Ok(())
}

impl PagedKvCache {
    /// A zeroed cache of `geometry` in `dtype` (f16 needs `SHADER_F16`). Each pool must fit one
    /// storage binding of the device (`Err(TooLarge)` naming `geometry` otherwise).
    pub fn new(ctx: &Context, geometry: PageGeometry, dtype: DType) -> Result<Self> {
        Self::with_format(ctx, geometry, dtype, &KvFormat::uniform(dtype.into()))
    }

    /// A zeroed cache of `geometry` whose pools have the types of `format` (K and V
    /// independently: `dtype`, q8_0, q4_0 or fp8 e4m3), for queries and new tokens in `dtype`.
    /// Quantized pools are written by [`Context::append_kv`], which quantizes on the GPU
    /// (the same bits as [`cpu::append_kv`](crate::cpu::append_kv)), and read in place by the
    /// attention kernels, dequantized in registers (the tensor-core kernel reads plain pools
    /// only: over quantized pools `Auto` runs SIMT). Layouts and formats: [`KvDType`].
    ///
    /// Checked: the format against `dtype` and the head dim (multiples of 32 for q8_0 and q4_0,
    /// of 4 for fp8), fp8 scales, and each pool within one storage binding.
    ///
    /// ```no_run
    /// # use wgpu_attention::*;
    /// # fn main() -> Result<()> {
    /// let ctx = Context::new_blocking()?;
    /// let g = PageGeometry { num_pages: 256, page_size: 16, kv_heads: 8, head_dim: 128 };
    /// let cache = PagedKvCache::with_format(&ctx, g, DType::F16, &KvFormat::uniform(KvDType::Q8_0))?;
    /// assert_eq!(cache.bytes_per_token(), 2 * 8 * 136); // 8.5 bits per value
    /// # Ok(()) }
    /// ```
    pub fn with_format(ctx: &Context, geometry: PageGeometry, dtype: DType, format: &KvFormat) -> Result<Self> {
        geometry.check()?;
        let scales = format.check(&geometry, dtype)?;
        if dtype == DType::F16 && !ctx.supports_f16() {
            return Err(Error::F16Unsupported { argument: "dtype" });
        }
        let mut pools = vec![];
        for (t, s) in [(format.k, &scales[0]), (format.v, &scales[1])] {
            check_binding(ctx, &geometry, t, dtype)?;
            pools.push(match geometry.pool_words(t) {
                None => ctx.zeros(geometry.pool_shape(), Layout::Bhsd, dtype)?,
                Some(words) => {
                    let mut w = vec![0u32; words];
                    let first = geometry.quant_layout(t).scales;
                    for (h, s) in s.iter().enumerate() {
                        w[first + h] = s.to_bits();
                    }
                    let buffer = pollster::block_on(ctx.create_init(bytemuck::cast_slice(&w), "geometry"))?;
                    Tensor::from_buffer(ctx, buffer, 0, Shape::new(1, 1, 1, words), Layout::Bhsd, DType::F32)?
                }
            });
        }
        let v = pools.pop().ok_or_else(|| Error::Unsupported("no V pool".into()))?;
        let k = pools.pop().ok_or_else(|| Error::Unsupported("no K pool".into()))?;
        let format = KvFormat { k_scales: None, v_scales: None, ..format.clone() }.with_fp8_scales(
            (format.k == KvDType::Fp8E4m3).then(|| scales[0].clone()),
            (format.v == KvDType::Fp8E4m3).then(|| scales[1].clone()),
        );
        Ok(PagedKvCache { k, v, geometry, dtype, format })
    }

    /// A cache over a caller's two buffers of `ctx`'s device (no copy), each holding a pool of
    /// `geometry` from element `offset` (and fitting one storage binding, as for [`new`](Self::new)).
    /// Plain pools only (a quantized cache is made by [`with_format`](Self::with_format)).
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
        check_binding(ctx, &geometry, dtype.into(), dtype)?;
        let s = geometry.pool_shape();
        let k = Tensor::from_buffer(ctx, k, offset, s, Layout::Bhsd, dtype)?;
        let v = Tensor::from_buffer(ctx, v, offset, s, Layout::Bhsd, dtype)?;
        Ok(PagedKvCache { k, v, geometry, dtype, format: KvFormat::uniform(dtype.into()) })
    }

    /// The pools' geometry.
    pub fn geometry(&self) -> PageGeometry {
        self.geometry
    }
    /// The dtype of the queries and new tokens (and of a plain pool's values).
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The pools' types (and fp8 scales).
    pub fn format(&self) -> &KvFormat {
        &self.format
    }
    /// Bytes of K and V per token, all key/value heads (fp8's per-head scales not counted).
    pub fn bytes_per_token(&self) -> usize {
        let g = &self.geometry;
        let row = |t: KvDType| match t.plain() {
            Some(d) => d.size() as usize * g.head_dim,
            None => t.bytes_per_row(g.head_dim),
        };
        g.kv_heads * (row(self.format.k) + row(self.format.v))
    }
    /// The K pool, as a tensor `[1, 1, tokens · kv_heads, head_dim]`; a quantized pool as its
    /// 32-bit words (values, then scales: [`KvDType`]) in an f32 tensor `[1, 1, 1, words]`
    /// (download it and reinterpret the bits, e.g. with `bytemuck::cast_slice::<f32, u32>`).
    pub fn k(&self) -> &Tensor {
        &self.k
    }
    /// The V pool, as [`k`](Self::k).
    pub fn v(&self) -> &Tensor {
        &self.v
    }
}
