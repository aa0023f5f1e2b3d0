//! GPU-resident tensors and masks: upload, wrap a caller's buffer, download.

use futures::channel::oneshot;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::host::{mask_numel, scan, HostMask, HostMaskValues, MaskKind};
use crate::problem::{check_operand, Operand};
use crate::shape::{DType, Element, Layout, Shape};

/// A 4-D tensor in a GPU buffer: logical shape `[batch, heads, seq, dim]`, a [`Layout`], a
/// [`DType`] and an element offset into the buffer.
///
/// Cloning is cheap (the buffer is reference-counted). A tensor can wrap a caller's own buffer
/// with [`Tensor::from_buffer`]; nothing is copied. A tensor belongs to the [`Context`] that
/// made it (or wrapped its buffer) and can only be used with that context or its clones.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) offset: u64,
    pub(crate) shape: Shape,
    pub(crate) layout: Layout,
    pub(crate) dtype: DType,
    /// The id of the context that made it.
    pub(crate) ctx_id: u64,
    /// Largest magnitude, when this crate scanned the values (uploads).
    pub(crate) max_abs: Option<f32>,
}

/// Usage flags of buffers this crate allocates.
pub(crate) const TENSOR_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

fn padded(bytes: u64) -> u64 {
    bytes.div_ceil(4).max(1) * 4
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
        if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::BufferUsage {
                argument: "buffer",
                needed: "STORAGE",
                got: format!("{:?}", buffer.usage()),
            });
        }
        check_fits("buffer", buffer.size(), offset, shape.numel() as u64, dtype.size())?;
        Ok(Tensor { buffer, offset, shape, layout, dtype, ctx_id: ctx.inner.id, max_abs: None })
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
    /// Memory layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The byte range `[start, end)` of the buffer that holds this tensor's elements.
    pub(crate) fn byte_range(&self) -> (u64, u64) {
        let es = self.dtype.size();
        let start = self.offset * es;
        (start, start + self.shape.numel() as u64 * es)
    }

    /// Reads the tensor back as f32 (f16 is widened), in its own layout. Blocks until done.
    pub fn download_blocking(&self, ctx: &Context) -> Result<Vec<f32>> {
        let bytes = pollster::block_on(self.read_bytes(ctx, true))?;
        Ok(self.decode(&bytes))
    }

    /// Reads the tensor back as f32 without blocking the thread. The future resolves once the
    /// device has been polled (by your own `device.poll` loop, or [`Context::wait`]).
    pub async fn download(&self, ctx: &Context) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(ctx, false).await?;
        Ok(self.decode(&bytes))
    }

    fn decode(&self, bytes: &[u8]) -> Vec<f32> {
        match self.dtype {
            DType::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(bytes),
            DType::F16 => {
                bytemuck::pod_collect_to_vec::<u8, half::f16>(bytes).into_iter().map(|x| x.to_f32()).collect()
            }
        }
    }

    async fn read_bytes(&self, ctx: &Context, block: bool) -> Result<Vec<u8>> {
        ctx.check_owns("tensor", self.ctx_id)?;
        ctx.check_alive()?;
        if !self.buffer.usage().contains(wgpu::BufferUsages::COPY_SRC) {
            return Err(Error::BufferUsage {
                argument: "tensor",
                needed: "COPY_SRC",
                got: format!("{:?}", self.buffer.usage()),
            });
        }
        let (start, end) = self.byte_range();
        let a0 = start / 4 * 4;
        let a1 = padded(end).min(self.buffer.size());
        let staging = ctx.scoped(|| {
            let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-attention readback"),
                size: a1 - a0,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(&self.buffer, a0, &staging, 0, a1 - a0);
            ctx.queue().submit([enc.finish()]);
            Ok(staging)
        })?;
        let (tx, rx) = oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        if block {
            ctx.wait()?;
        }
        let mapped = rx.await.map_err(|e| Error::Readback(e.to_string()))?;
        if let Err(e) = mapped {
            return Err(match ctx.lost_or(&e) {
                lost @ Error::DeviceLost(_) => lost,
                _ => Error::Readback(e.to_string()),
            });
        }
        let view = staging.get_mapped_range(..).map_err(|e| Error::Readback(format!("{e:?}")))?;
        let off = (start - a0) as usize;
        let out = view[off..off + (end - start) as usize].to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }
}

/// A mask on the GPU, shape `[mb, mh, nq, nk]` row-major (`mb` 1 or batch, `mh` 1 or heads),
/// one 32-bit word per element: `u32` 0/1 for [`MaskKind::Bool`] (1 keeps the key), `f32` for
/// [`MaskKind::Additive`] (`-inf` masks the key; every other value is added).
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

impl Context {
    /// Uploads a BHSD tensor. Refuses NaN and infinities (`Err(NonFinite)`).
    pub fn upload<T: Element>(&self, data: &[T], shape: Shape) -> Result<Tensor> {
        self.upload_with_layout(data, shape, Layout::Bhsd)
    }

    /// Uploads a tensor stored in `layout` (e.g. [`Layout::Bshd`] straight from a projection).
    /// Refuses NaN and infinities (`Err(NonFinite)`).
    pub fn upload_with_layout<T: Element>(&self, data: &[T], shape: Shape, layout: Layout) -> Result<Tensor> {
        check_operand("data", &Operand { shape, layout, dtype: T::DTYPE, max_abs: None })?;
        if data.len() != shape.numel() {
            return Err(Error::LengthMismatch { argument: "data", expected: shape.numel(), got: data.len() });
        }
        if T::DTYPE == DType::F16 && !self.supports_f16() {
            return Err(Error::F16Unsupported { argument: "data" });
        }
        let max_abs = scan("data", data)?;
        self.upload_scanned(data, shape, layout, Some(max_abs))
    }

    /// Uploads data that was already checked (shape and values): no second scan.
    pub(crate) fn upload_scanned<T: Element>(
        &self,
        data: &[T],
        shape: Shape,
        layout: Layout,
        max_abs: Option<f32>,
    ) -> Result<Tensor> {
        if T::DTYPE == DType::F16 && !self.supports_f16() {
            return Err(Error::F16Unsupported { argument: "data" });
        }
        let buffer = self.create_init(bytemuck::cast_slice(data), "data")?;
        Ok(Tensor { buffer, offset: 0, shape, layout, dtype: T::DTYPE, ctx_id: self.inner.id, max_abs })
    }

    /// A zero-filled tensor (e.g. an output for the `encode_*` calls).
    pub fn zeros(&self, shape: Shape, layout: Layout, dtype: DType) -> Result<Tensor> {
        check_operand("shape", &Operand { shape, layout, dtype, max_abs: None })?;
        if dtype == DType::F16 && !self.supports_f16() {
            return Err(Error::F16Unsupported { argument: "dtype" });
        }
        let size = padded(shape.numel() as u64 * dtype.size());
        self.check_buffer_size("shape", size)?;
        self.check_alive_now()?;
        let buffer = self.scoped(|| {
            Ok(self.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-attention tensor"),
                size,
                usage: TENSOR_USAGE,
                mapped_at_creation: false,
            }))
        })?;
        Ok(Tensor { buffer, offset: 0, shape, layout, dtype, ctx_id: self.inner.id, max_abs: None })
    }

    /// Uploads a host mask (booleans become 0/1 words). The mask was validated when it was made.
    pub fn upload_mask(&self, mask: &HostMask) -> Result<Mask> {
        let words: Vec<u32> = match mask.values() {
            HostMaskValues::Bool(v) => v.iter().map(|&b| b as u32).collect(),
            HostMaskValues::Additive(v) => v.iter().map(|x| x.to_bits()).collect(),
        };
        let buffer = self.create_init(bytemuck::cast_slice(&words), "mask")?;
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
    pub(crate) fn create_init(&self, bytes: &[u8], argument: &'static str) -> Result<wgpu::Buffer> {
        self.check_buffer_size(argument, padded(bytes.len() as u64))?;
        self.buffer_with(bytes, TENSOR_USAGE, "wgpu-attention tensor")
    }
}
