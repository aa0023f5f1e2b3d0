//! GPU-resident tensors and masks: upload, wrap a caller's buffer, download.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::host::{mask_numel, scan, HostMask, HostMaskValues, MaskKind};
use crate::problem::{check_operand, MaskSpec, Operand};
use crate::shape::{DType, Element, Layout, Shape, Strides};

/// A 4-D tensor in a GPU buffer: logical shape `[batch, heads, seq, dim]`, a [`Layout`], a
/// [`DType`] and an element offset into the buffer.
///
/// Cloning is cheap (the buffer is reference-counted). A tensor can wrap a caller's own buffer
/// with [`Tensor::from_buffer`] (contiguous, in a [`Layout`]) or [`Tensor::from_buffer_strided`]
/// (any element strides for batch, head and sequence, e.g. one third of a fused QKV projection);
/// nothing is copied. A tensor belongs to the [`Context`] that
/// made it (or wrapped its buffer) and can only be used with that context or its clones.
///
/// ```no_run
/// # use wgpu_attention::*;
/// # fn main() -> Result<()> {
/// let ctx = Context::new_blocking()?;
/// let s = Shape::new(1, 2, 4, 8);
/// let t = ctx.upload(&vec![0.5f32; s.numel()], s)?; // f32, BHSD
/// let h = ctx.upload_with_layout(&vec![half::f16::ONE; s.numel()], s, Layout::Bshd)?; // f16, BSHD
/// assert_eq!((t.dtype(), h.layout()), (DType::F32, Layout::Bshd));
/// let back: Vec<f32> = t.download_blocking(&ctx)?; // f16 comes back widened to f32
/// assert_eq!(back, vec![0.5; s.numel()]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Tensor {
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) offset: u64,
    pub(crate) shape: Shape,
    /// The layout of this tensor, or for a strided view the layout of outputs computed from it.
    pub(crate) layout: Layout,
    /// Element strides of batch, head and sequence (the last dimension is contiguous).
    pub(crate) strides: Strides,
    pub(crate) dtype: DType,
    /// The id of the context that made it.
    pub(crate) ctx_id: u64,
    /// Largest magnitude, when this crate scanned the values (uploads).
    pub(crate) max_abs: Option<f32>,
}

/// Usage flags of buffers this crate allocates.
pub(crate) const TENSOR_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

pub(crate) fn padded(bytes: u64) -> u64 {
    bytes.div_ceil(4).max(1) * 4
}

/// A caller's buffer must be bindable as storage.
fn check_storage(buffer: &wgpu::Buffer) -> Result<()> {
    if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
        return Err(Error::BufferUsage { argument: "buffer", needed: "STORAGE", got: format!("{:?}", buffer.usage()) });
    }
    Ok(())
}

/// `offset · elem + len · elem` within `size`, with every product checked.
fn check_fits(argument: &'static str, size: u64, offset: u64, elems: u64, elem: u64) -> Result<()> {
    let overflow = || Error::TooLarge {
        argument,
        message: format!("element offset {offset} plus {elems} elements of {elem} bytes overflow a 64-bit byte offset"),
    };
    let start = offset.checked_mul(elem).ok_or_else(overflow)?;
    let needed = elems.checked_mul(elem).ok_or_else(overflow)?;
    start.checked_add(needed).ok_or_else(overflow)?;
    let have = size.saturating_sub(start);
    if have < needed {
        return Err(Error::BufferTooSmall { argument, needed, got: have });
    }
    Ok(())
}

impl Tensor {
    /// Wraps a buffer of `ctx`'s device (no copy). `offset` is in elements of `dtype`; the
    /// buffer needs `STORAGE` usage (and `COPY_SRC` to be downloaded) and room for `shape` from
    /// `offset`.
    ///
    /// The buffer must have been created on `ctx.device()`; the tensor is then usable with `ctx`
    /// and its clones only ([`Error::ForeignTensor`] elsewhere). Its contents are not scanned:
    /// non-finite values give unspecified but finite results in the rows they touch, and values
    /// whose scores or sums exceed f32's range saturate (README, "Extreme values").
    pub fn from_buffer(
        ctx: &Context,
        buffer: wgpu::Buffer,
        offset: u64,
        shape: Shape,
        layout: Layout,
        dtype: DType,
    ) -> Result<Self> {
        check_operand("buffer", &Operand { shape, layout, dtype, max_abs: None })?;
        check_storage(&buffer)?;
        check_fits("buffer", buffer.size(), offset, shape.numel() as u64, dtype.size())?;
        Ok(Tensor::contiguous(buffer, shape, layout, dtype, ctx.inner.id, None).at(offset))
    }

    /// Wraps a strided view of a buffer of `ctx`'s device (no copy): element `(b, h, s, i)` is at
    /// element index `offset + b·strides.batch + h·strides.head + s·strides.seq + i` of `buffer`
    /// (in elements of `dtype`; the last dimension is contiguous).
    ///
    /// For example a fused QKV projection laid out `[batch, seq, 3, heads, dim]` holds three views
    /// with strides `batch = seq·3·heads·dim`, `head = dim`, `seq = 3·heads·dim` at offsets 0,
    /// `heads·dim` and `2·heads·dim`. Every operation accepts such views as inputs; outputs may be
    /// views too, if no two of their elements share an address. Strides may be 0 (a broadcast
    /// input, e.g. one K/V head shared by every query head). Outputs this crate allocates from a
    /// strided input are contiguous: [`Layout::Bshd`] when its sequence stride exceeds its head
    /// stride, else [`Layout::Bhsd`] (see [`Tensor::layout`]). Vector loads need 4-element aligned
    /// strides and offset; other views run the scalar-load kernels.
    ///
    /// Same checks as [`Tensor::from_buffer`]: the buffer needs `STORAGE` usage and room for the
    /// last element, and the contents are not scanned.
    ///
    /// ```no_run
    /// # use wgpu_attention::*;
    /// # fn main() -> Result<()> {
    /// let ctx = Context::new_blocking()?;
    /// let (b, s, h, d) = (2, 128, 8, 64);
    /// // one buffer [b, s, 3, h, d], as a fused QKV projection writes it
    /// let qkv = ctx.zeros(Shape::new(1, 1, b * s * 3 * h, d), Layout::Bhsd, DType::F32)?;
    /// let strides = Strides { batch: s * 3 * h * d, head: d, seq: 3 * h * d };
    /// let view = |part: u64| {
    ///     Tensor::from_buffer_strided(&ctx, qkv.buffer().clone(), part * (h * d) as u64, Shape::new(b, h, s, d), strides, DType::F32)
    /// };
    /// let (q, k, v) = (view(0)?, view(1)?, view(2)?);
    /// let out = ctx.attention(&q, &k, &v, None, &AttentionOptions::default())?; // [b, s, h, d] (Bshd)
    /// assert_eq!(out.layout(), Layout::Bshd);
    /// # Ok(()) }
    /// ```
    pub fn from_buffer_strided(
        ctx: &Context,
        buffer: wgpu::Buffer,
        offset: u64,
        shape: Shape,
        strides: Strides,
        dtype: DType,
    ) -> Result<Self> {
        let layout = if strides.seq > strides.head { Layout::Bshd } else { Layout::Bhsd };
        check_operand("buffer", &Operand { shape, layout, dtype, max_abs: None })?;
        check_storage(&buffer)?;
        let span = strides.span("strides", &shape)?;
        check_fits("buffer", buffer.size(), offset, span, dtype.size())?;
        Ok(Tensor { buffer, offset, shape, layout, strides, dtype, ctx_id: ctx.inner.id, max_abs: None })
    }

    /// A contiguous tensor at offset 0.
    pub(crate) fn contiguous(
        buffer: wgpu::Buffer,
        shape: Shape,
        layout: Layout,
        dtype: DType,
        ctx_id: u64,
        max_abs: Option<f32>,
    ) -> Self {
        Tensor { buffer, offset: 0, shape, layout, strides: layout.strides(&shape), dtype, ctx_id, max_abs }
    }

    /// The same tensor at element `offset`.
    pub(crate) fn at(self, offset: u64) -> Self {
        Tensor { offset, ..self }
    }

    /// The view of rows `[s0, s0 + len)` of every (batch, head), with the same strides.
    pub(crate) fn rows(&self, s0: usize, len: usize) -> Self {
        let shape = Shape { seq: len, ..self.shape };
        Tensor { offset: self.offset + (s0 * self.strides.seq) as u64, shape, ..self.clone() }
    }

    /// Whether the elements are exactly those of [`Tensor::layout`] from the offset.
    pub fn is_contiguous(&self) -> bool {
        let s = self.shape;
        let mut need = self.layout.strides(&s);
        let mut got = self.strides;
        // strides of dimensions of size 1 do not matter
        for (n, a, b) in [
            (s.batch, &mut need.batch, &mut got.batch),
            (s.heads, &mut need.head, &mut got.head),
            (s.seq, &mut need.seq, &mut got.seq),
        ] {
            if n <= 1 {
                (*a, *b) = (0, 0);
            }
        }
        need == got
    }

    /// Whether vector (4-element) loads can address every row: offset and strides are
    /// multiples of 4 elements.
    pub(crate) fn vec4_aligned(&self) -> bool {
        let st = self.strides;
        [self.offset, st.batch as u64, st.head as u64, st.seq as u64].iter().all(|x| x.is_multiple_of(4))
    }

    /// Whether no two elements share an address (required of outputs).
    pub(crate) fn is_injective(&self) -> bool {
        self.strides.injective(&self.shape)
    }

    /// The underlying buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
    /// Offset of element 0, in elements.
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// Logical shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }
    /// Element strides of batch, head and sequence.
    pub fn strides(&self) -> Strides {
        self.strides
    }
    /// Memory layout; for a view made with [`Tensor::from_buffer_strided`], the layout of the
    /// outputs this crate allocates from it (and of [`Tensor::download`]'s result).
    pub fn layout(&self) -> Layout {
        self.layout
    }
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The byte range `[start, end)` of the buffer from this tensor's first element to past its
    /// last (for a strided view, it also covers the gaps).
    pub(crate) fn byte_range(&self) -> (u64, u64) {
        let es = self.dtype.size();
        let start = self.offset * es;
        // the span was checked when the tensor was made (it fits the buffer)
        let span = self.strides.span("tensor", &self.shape).unwrap_or(self.shape.numel() as u64);
        (start, start + span * es)
    }

    /// Decodes the bytes from the first element's address to past the last into the elements,
    /// in [`Tensor::layout`] order.
    pub(crate) fn decode(&self, bytes: &[u8]) -> Vec<f32> {
        let all: Vec<f32> = match self.dtype {
            DType::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(bytes),
            DType::F16 => {
                bytemuck::pod_collect_to_vec::<u8, half::f16>(bytes).into_iter().map(|x| x.to_f32()).collect()
            }
        };
        if self.is_contiguous() {
            return all;
        }
        let Shape { batch, heads, seq, dim } = self.shape;
        let st = self.strides;
        let mut out = Vec::with_capacity(self.shape.numel());
        let row = |b: usize, h: usize, s: usize| &all[b * st.batch + h * st.head + s * st.seq..][..dim];
        for b in 0..batch {
            match self.layout {
                Layout::Bhsd => (0..heads).for_each(|h| (0..seq).for_each(|s| out.extend_from_slice(row(b, h, s)))),
                Layout::Bshd => (0..seq).for_each(|s| (0..heads).for_each(|h| out.extend_from_slice(row(b, h, s)))),
            }
        }
        out
    }
}

/// A mask on the GPU, shape `[mb, mh, nq, nk]` row-major (`mb` 1 or batch, `mh` 1 or heads),
/// one 32-bit word per element: `u32` 0/1 for [`MaskKind::Bool`] (1 keeps the key), `f32` for
/// [`MaskKind::Additive`] (`-inf` masks the key; every other value is added).
///
/// ```no_run
/// # use wgpu_attention::*;
/// # fn main() -> Result<()> {
/// let ctx = Context::new_blocking()?;
/// // one boolean mask for every batch entry and head: query i sees keys 0..=i+1
/// let (nq, nk) = (4, 6);
/// let keep: Vec<bool> = (0..nq * nk).map(|x| x % nk <= x / nk + 1).collect();
/// let mask = ctx.upload_mask(&HostMask::bool(&keep, [1, 1, nq, nk])?)?;
/// let q = ctx.upload(&vec![0.1f32; 2 * 3 * nq * 8], Shape::new(2, 3, nq, 8))?;
/// let kv = ctx.upload(&vec![0.2f32; 2 * 3 * nk * 8], Shape::new(2, 3, nk, 8))?;
/// let out = ctx.attention(&q, &kv, &kv, Some(&mask), &AttentionOptions::default())?;
/// # let _ = out; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Mask {
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) shape: [usize; 4],
    pub(crate) kind: MaskKind,
    pub(crate) ctx_id: u64,
}

impl Mask {
    /// Wraps a buffer of `ctx`'s device holding a mask in the format above (no copy). Additive
    /// values are not scanned: NaN or `+inf` there give unspecified (finite) results.
    pub fn from_buffer(ctx: &Context, buffer: wgpu::Buffer, shape: [usize; 4], kind: MaskKind) -> Result<Self> {
        if shape.contains(&0) {
            return Err(Error::EmptyDimension { argument: "mask", dim: "shape" });
        }
        if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::BufferUsage {
                argument: "mask",
                needed: "STORAGE",
                got: format!("{:?}", buffer.usage()),
            });
        }
        check_fits("mask", buffer.size(), 0, mask_numel(shape)? as u64, 4)?;
        Ok(Mask { buffer, shape, kind, ctx_id: ctx.inner.id })
    }
    /// Mask shape `[mb, mh, nq, nk]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }
    /// Boolean or additive.
    pub fn kind(&self) -> MaskKind {
        self.kind
    }
}

impl Operand {
    /// A GPU tensor as the validation layer sees it (its magnitude if this crate uploaded it).
    pub(crate) fn gpu(t: &Tensor) -> Self {
        Operand { shape: t.shape, layout: t.layout, dtype: t.dtype, max_abs: t.max_abs }
    }
}

impl MaskSpec {
    /// A GPU mask as the validation layer sees it.
    pub(crate) fn gpu(m: &Mask) -> Self {
        MaskSpec { shape: m.shape, kind: m.kind }
    }
}

impl Context {
    /// Uploads a BHSD tensor. Refuses NaN and infinities (`Err(NonFinite)`).
    pub fn upload<T: Element>(&self, data: &[T], shape: Shape) -> Result<Tensor> {
        self.upload_with_layout(data, shape, Layout::Bhsd)
    }

    /// Uploads a tensor stored in `layout` (e.g. [`Layout::Bshd`] straight from a projection).
    /// Refuses NaN and infinities (`Err(NonFinite)`).
    pub fn upload_with_layout<T: Element>(&self, data: &[T], shape: Shape, layout: Layout) -> Result<Tensor> {
        pollster::block_on(self.upload_with_layout_async(data, shape, layout))
    }

    /// Async twin of [`Context::upload`].
    pub async fn upload_async<T: Element>(&self, data: &[T], shape: Shape) -> Result<Tensor> {
        self.upload_with_layout_async(data, shape, Layout::Bhsd).await
    }

    /// Async twin of [`Context::upload_with_layout`]: the allocation's error scopes are awaited,
    /// not blocked on.
    pub async fn upload_with_layout_async<T: Element>(
        &self,
        data: &[T],
        shape: Shape,
        layout: Layout,
    ) -> Result<Tensor> {
        check_operand("data", &Operand { shape, layout, dtype: T::DTYPE, max_abs: None })?;
        if data.len() != shape.numel() {
            return Err(Error::LengthMismatch { argument: "data", expected: shape.numel(), got: data.len() });
        }
        if T::DTYPE == DType::F16 && !self.supports_f16() {
            return Err(Error::F16Unsupported { argument: "data" });
        }
        let max_abs = scan("data", data)?;
        self.upload_scanned(data, shape, layout, Some(max_abs)).await
    }

    /// Uploads data that was already checked (shape and values): no second scan.
    pub(crate) async fn upload_scanned<T: Element>(
        &self,
        data: &[T],
        shape: Shape,
        layout: Layout,
        max_abs: Option<f32>,
    ) -> Result<Tensor> {
        if T::DTYPE == DType::F16 && !self.supports_f16() {
            return Err(Error::F16Unsupported { argument: "data" });
        }
        let buffer = self.create_init(bytemuck::cast_slice(data), "data").await?;
        Ok(Tensor::contiguous(buffer, shape, layout, T::DTYPE, self.inner.id, max_abs))
    }

    /// A zero-filled tensor (e.g. an output for the `encode_*` calls).
    pub fn zeros(&self, shape: Shape, layout: Layout, dtype: DType) -> Result<Tensor> {
        pollster::block_on(self.zeros_async(shape, layout, dtype))
    }

    /// Async twin of [`Context::zeros`].
    pub async fn zeros_async(&self, shape: Shape, layout: Layout, dtype: DType) -> Result<Tensor> {
        check_operand("shape", &Operand { shape, layout, dtype, max_abs: None })?;
        if dtype == DType::F16 && !self.supports_f16() {
            return Err(Error::F16Unsupported { argument: "dtype" });
        }
        let size = padded(shape.numel() as u64 * dtype.size());
        self.check_buffer_size("shape", size)?;
        self.check_alive_now()?;
        let buffer = self
            .new_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-attention tensor"),
                size,
                usage: TENSOR_USAGE,
                mapped_at_creation: false,
            })
            .await?;
        Ok(Tensor::contiguous(buffer, shape, layout, dtype, self.inner.id, None))
    }

    /// An f32 scratch tensor for partial results that the caller writes in full before reading:
    /// a view of the context's shared scratch buffer of its size class (up to 16 MiB; see
    /// `crate::reuse::Scratch`), else a new tensor.
    pub(crate) async fn scratch_f32(&self, shape: Shape) -> Result<Tensor> {
        let Some(class) = crate::reuse::Staging::class(shape.numel() as u64 * 4) else {
            return self.zeros_async(shape, Layout::Bhsd, DType::F32).await;
        };
        let buffer = match self.inner.scratch.get(class) {
            Some(b) => b,
            None => {
                let b = self
                    .new_buffer(&wgpu::BufferDescriptor {
                        label: Some("wgpu-attention scratch"),
                        size: class,
                        usage: TENSOR_USAGE,
                        mapped_at_creation: false,
                    })
                    .await?;
                self.inner.scratch.insert(class, &b);
                b
            }
        };
        Ok(Tensor::contiguous(buffer, shape, Layout::Bhsd, DType::F32, self.inner.id, None))
    }

    /// Uploads a host mask (booleans become 0/1 words). The mask was validated when it was made.
    pub fn upload_mask(&self, mask: &HostMask) -> Result<Mask> {
        pollster::block_on(self.upload_mask_async(mask))
    }

    /// Async twin of [`Context::upload_mask`].
    pub async fn upload_mask_async(&self, mask: &HostMask<'_>) -> Result<Mask> {
        let words: Vec<u32> = match mask.values() {
            HostMaskValues::Bool(v) => v.iter().map(|&b| b as u32).collect(),
            HostMaskValues::Additive(v) => v.iter().map(|x| x.to_bits()).collect(),
        };
        let buffer = self.create_init(bytemuck::cast_slice(&words), "mask").await?;
        Ok(Mask { buffer, shape: mask.shape(), kind: mask.kind(), ctx_id: self.inner.id })
    }

    pub(crate) fn check_buffer_size(&self, argument: &'static str, bytes: u64) -> Result<()> {
        let max = self.caps().max_buffer;
        if bytes > max {
            return Err(Error::TooLarge {
                argument,
                message: format!("{bytes} bytes exceed the device's max_buffer_size {max}"),
            });
        }
        Ok(())
    }

    /// A storage buffer holding `bytes` (padded to 4).
    pub(crate) async fn create_init(&self, bytes: &[u8], argument: &'static str) -> Result<wgpu::Buffer> {
        self.check_buffer_size(argument, padded(bytes.len() as u64))?;
        self.buffer_with(bytes, TENSOR_USAGE, "wgpu-attention tensor").await
    }
}
