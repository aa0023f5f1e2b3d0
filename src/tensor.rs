//! GPU-resident tensors and masks: upload, wrap a caller's buffer, download.

use futures::channel::oneshot;
use wgpu::util::DeviceExt;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::shape::{
    check_finite, check_mask_values, DType, Element, HostMask, HostMaskValues, Layout, MaskKind, Shape,
};

/// A 4-D tensor in a GPU buffer: logical shape `[batch, heads, seq, dim]`, a [`Layout`], a
/// [`DType`] and an element offset into the buffer.
///
/// Cloning is cheap (the buffer is reference-counted). A tensor can wrap a caller's own buffer
/// with [`Tensor::from_buffer`]; nothing is copied.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) offset: u64,
    pub(crate) shape: Shape,
    pub(crate) layout: Layout,
    pub(crate) dtype: DType,
}

/// Usage flags of buffers this crate allocates.
pub(crate) const TENSOR_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

fn padded(bytes: u64) -> u64 {
    bytes.div_ceil(4).max(1) * 4
}

impl Tensor {
    /// Wraps a caller's buffer (no copy). `offset` is in elements of `dtype`; the buffer needs
    /// `STORAGE` usage (and `COPY_SRC` to be downloaded) and room for `shape` from `offset`.
    ///
    /// The contents are not checked: non-finite values give unspecified (but bounded, non-crashing)
    /// results in the rows they touch.
    pub fn from_buffer(buffer: wgpu::Buffer, offset: u64, shape: Shape, layout: Layout, dtype: DType) -> Result<Self> {
        shape.check_nonempty("buffer")?;
        if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::BufferUsage {
                argument: "buffer",
                needed: "STORAGE",
                got: format!("{:?}", buffer.usage()),
            });
        }
        let needed = shape.numel() as u64 * dtype.size();
        let have = buffer.size().saturating_sub(offset * dtype.size());
        if have < needed {
            return Err(Error::BufferTooSmall { argument: "buffer", needed, got: have });
        }
        Ok(Tensor { buffer, offset, shape, layout, dtype })
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
        if !self.buffer.usage().contains(wgpu::BufferUsages::COPY_SRC) {
            return Err(Error::BufferUsage {
                argument: "tensor",
                needed: "COPY_SRC",
                got: format!("{:?}", self.buffer.usage()),
            });
        }
        let es = self.dtype.size();
        let start = self.offset * es;
        let len = self.shape.numel() as u64 * es;
        let a0 = start / 4 * 4;
        let a1 = padded(start + len).min(self.buffer.size());
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
        rx.await.map_err(|e| Error::Readback(e.to_string()))?.map_err(|e| Error::Readback(e.to_string()))?;
        let view = staging.get_mapped_range(..).map_err(|e| Error::Readback(format!("{e:?}")))?;
        let off = (start - a0) as usize;
        let out = view[off..off + len as usize].to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }
}

/// A mask on the GPU, shape `[mb, mh, nq, nk]` row-major (`mb` 1 or batch, `mh` 1 or heads),
/// one 32-bit word per element: `u32` 0/1 for [`MaskKind::Bool`] (1 keeps the key), `f32` for
/// [`MaskKind::Additive`] (`-inf` masks the key).
#[derive(Debug, Clone)]
pub struct Mask {
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) shape: [usize; 4],
    pub(crate) kind: MaskKind,
}

impl Mask {
    /// Wraps a caller's buffer holding a mask in the format above (no copy).
    pub fn from_buffer(buffer: wgpu::Buffer, shape: [usize; 4], kind: MaskKind) -> Result<Self> {
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
        let needed = shape.iter().product::<usize>() as u64 * 4;
        if buffer.size() < needed {
            return Err(Error::BufferTooSmall { argument: "mask", needed, got: buffer.size() });
        }
        Ok(Mask { buffer, shape, kind })
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
    pub fn upload_with_layout<T: Element>(&self, data: &[T], shape: Shape, layout: Layout) -> Result<Tensor> {
        shape.check_nonempty("data")?;
        if data.len() != shape.numel() {
            return Err(Error::LengthMismatch { argument: "data", expected: shape.numel(), got: data.len() });
        }
        if T::DTYPE == DType::F16 && !self.supports_f16() {
            return Err(Error::F16Unsupported { argument: "data" });
        }
        check_finite("data", data)?;
        let buffer = self.create_init(bytemuck::cast_slice(data), "tensor")?;
        Ok(Tensor { buffer, offset: 0, shape, layout, dtype: T::DTYPE })
    }

    /// A zero-filled tensor (e.g. an output for the `encode_*` calls).
    pub fn zeros(&self, shape: Shape, layout: Layout, dtype: DType) -> Result<Tensor> {
        shape.check_nonempty("shape")?;
        if dtype == DType::F16 && !self.supports_f16() {
            return Err(Error::F16Unsupported { argument: "dtype" });
        }
        let size = padded(shape.numel() as u64 * dtype.size());
        self.check_buffer_size("shape", size)?;
        let buffer = self.scoped(|| {
            Ok(self.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-attention tensor"),
                size,
                usage: TENSOR_USAGE,
                mapped_at_creation: false,
            }))
        })?;
        Ok(Tensor { buffer, offset: 0, shape, layout, dtype })
    }

    /// Uploads a host mask (booleans become 0/1 words).
    pub fn upload_mask(&self, mask: &HostMask) -> Result<Mask> {
        let words: Vec<u32> = match mask.values {
            HostMaskValues::Bool(v) => v.iter().map(|&b| b as u32).collect(),
            HostMaskValues::Additive(v) => {
                check_mask_values(v)?;
                v.iter().map(|x| x.to_bits()).collect()
            }
        };
        if mask.shape.contains(&0) {
            return Err(Error::EmptyDimension { argument: "mask", dim: "shape" });
        }
        let buffer = self.create_init(bytemuck::cast_slice(&words), "mask")?;
        Ok(Mask { buffer, shape: mask.shape, kind: mask.kind() })
    }

    pub(crate) fn check_buffer_size(&self, argument: &'static str, bytes: u64) -> Result<()> {
        let max = self.limits().max_buffer_size;
        if bytes > max {
            return Err(Error::TooLarge {
                argument,
                message: format!("{bytes} bytes exceed the device's max_buffer_size {max}"),
            });
        }
        Ok(())
    }

    pub(crate) fn create_init(&self, bytes: &[u8], argument: &'static str) -> Result<wgpu::Buffer> {
        let mut owned;
        let mut contents = bytes;
        if !bytes.len().is_multiple_of(4) || bytes.is_empty() {
            owned = bytes.to_vec();
            owned.resize(padded(bytes.len() as u64) as usize, 0);
            contents = &owned;
        }
        self.check_buffer_size(argument, contents.len() as u64)?;
        self.scoped(|| {
            Ok(self.device().create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("wgpu-attention tensor"),
                contents,
                usage: TENSOR_USAGE,
            }))
        })
    }
}
