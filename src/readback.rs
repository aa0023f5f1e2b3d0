//! Reading tensors back: each through a staging buffer (pooled by size class, see
//! `crate::reuse::Staging`), the copies recorded into one encoder (the caller's, after its own
//! work, or a fresh one) and submitted once, then the mappings awaited.

use futures::channel::oneshot;
use std::time::{Duration, Instant};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::tensor::{padded, Tensor};

/// How long a blocking read polls the device without sleeping before it waits in the driver:
/// short GPU steps finish within it, and a driver's wait can sleep for longer than they take.
const SPIN: Duration = Duration::from_micros(500);

/// One tensor's staging buffer and the byte ranges involved.
struct Staged {
    staging: wgpu::Buffer,
    /// Pool size class (None: an oversize buffer, dropped after use).
    class: Option<u64>,
    /// The copied range of the tensor's buffer (4-byte aligned).
    a0: u64,
    a1: u64,
    /// The tensor's own range.
    start: u64,
    end: u64,
}

async fn stage(ctx: &Context, t: &Tensor) -> Result<Staged> {
    ctx.check_owns("tensor", t.ctx_id)?;
    ctx.check_alive()?;
    if !t.buffer.usage().contains(wgpu::BufferUsages::COPY_SRC) {
        return Err(Error::BufferUsage {
            argument: "tensor",
            needed: "COPY_SRC",
            got: format!("{:?}", t.buffer.usage()),
        });
    }
    let (start, end) = t.byte_range();
    let a0 = start / 4 * 4;
    let a1 = padded(end).min(t.buffer.size());
    let class = crate::reuse::Staging::class(a1 - a0);
    let staging = match class.and_then(|c| ctx.inner.staging.take(c)) {
        Some(b) => b,
        None => {
            ctx.new_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-attention readback"),
                size: class.unwrap_or(a1 - a0),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
            .await?
        }
    };
    Ok(Staged { staging, class, a0, a1, start, end })
}

type Mapped = oneshot::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>;

/// Waits for a mapping: blocking (polls without sleeping for up to [`SPIN`], then waits in the
/// driver) or as a future that polls the device each time it is polled.
async fn mapped(ctx: &Context, mut rx: Mapped, block: bool) -> Result<()> {
    let r = if block {
        let t0 = Instant::now();
        loop {
            let _ = ctx.device().poll(wgpu::PollType::Poll);
            if let Ok(Some(r)) = rx.try_recv() {
                break Ok(r);
            }
            if t0.elapsed() > SPIN {
                ctx.wait()?;
                break rx.await;
            }
            std::thread::yield_now();
        }
    } else {
        Polled { device: ctx.device(), inner: rx }.await
    };
    let r = r.map_err(|e| Error::Readback(e.to_string()))?;
    r.map_err(|e| match ctx.lost_or(&e) {
        lost @ Error::DeviceLost(_) => lost,
        _ => Error::Readback(e.to_string()),
    })
}

/// Reads `tensors` back (their bytes from first to last element): the copies are appended to
/// `encoder` (or a fresh encoder), submitted once, and awaited.
pub(crate) async fn read(
    ctx: &Context,
    encoder: Option<wgpu::CommandEncoder>,
    tensors: &[&Tensor],
    block: bool,
) -> Result<Vec<Vec<u8>>> {
    let mut staged = Vec::with_capacity(tensors.len());
    for t in tensors {
        staged.push(stage(ctx, t).await?);
    }
    let mut enc = match encoder {
        Some(e) => e,
        None => ctx.encoder()?,
    };
    ctx.scoped_async(|| {
        for (t, s) in tensors.iter().zip(&staged) {
            enc.copy_buffer_to_buffer(&t.buffer, s.a0, &s.staging, 0, s.a1 - s.a0);
        }
        ctx.queue().submit([enc.finish()]);
        Ok(())
    })
    .await?;
    let receivers: Vec<Mapped> = staged
        .iter()
        .map(|s| {
            let (tx, rx) = oneshot::channel();
            s.staging.map_async(wgpu::MapMode::Read, ..s.a1 - s.a0, move |r| {
                let _ = tx.send(r);
            });
            rx
        })
        .collect();
    let mut out = Vec::with_capacity(staged.len());
    for (s, rx) in staged.into_iter().zip(receivers) {
        mapped(ctx, rx, block).await?;
        let view = s.staging.get_mapped_range(..s.a1 - s.a0).map_err(|e| Error::Readback(format!("{e:?}")))?;
        let off = (s.start - s.a0) as usize;
        out.push(view[off..off + (s.end - s.start) as usize].to_vec());
        drop(view);
        s.staging.unmap();
        if let Some(c) = s.class {
            ctx.inner.staging.put(c, s.staging);
        }
    }
    Ok(out)
}

/// A future that polls `device` without waiting each time it is polled, until `inner` is ready.
struct Polled<'a, F> {
    device: &'a wgpu::Device,
    inner: F,
}

impl<F: std::future::Future + Unpin> std::future::Future for Polled<'_, F> {
    type Output = F::Output;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        // a poll error means a lost device: the map callback then reports the failure
        let _ = self.device.poll(wgpu::PollType::Poll);
        match std::pin::Pin::new(&mut self.inner).poll(cx) {
            std::task::Poll::Ready(v) => std::task::Poll::Ready(v),
            std::task::Poll::Pending => {
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        }
    }
}

impl Context {
    /// Submits `encoder` with the readback of `tensors` appended to it, in one submission, and
    /// returns each tensor's values as [`Tensor::download_blocking`] would: one step of GPU work
    /// and its results for the price of one submit and one wait. Blocks the thread. On an
    /// error (a tensor of another context, or without `COPY_SRC`), nothing is submitted.
    ///
    /// ```no_run
    /// # use wgpu_attention::*;
    /// # fn main() -> Result<()> {
    /// let ctx = Context::new_blocking()?;
    /// let x = ctx.upload(&[1.0f32, 2.0, 3.0, 4.0], Shape::new(1, 1, 1, 4))?;
    /// let out = ctx.zeros(Shape::new(1, 1, 1, 4), Layout::Bhsd, DType::F32)?;
    /// let mut encoder = ctx.device().create_command_encoder(&Default::default());
    /// ctx.encode_softmax(&mut encoder, &x, None, &SoftmaxOptions::default(), &out)?;
    /// let values = ctx.submit_and_download(encoder, &[&out])?.remove(0);
    /// assert!((values.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    /// # Ok(()) }
    /// ```
    pub fn submit_and_download(&self, encoder: wgpu::CommandEncoder, tensors: &[&Tensor]) -> Result<Vec<Vec<f32>>> {
        let bytes = pollster::block_on(read(self, Some(encoder), tensors, true))?;
        Ok(tensors.iter().zip(&bytes).map(|(t, b)| t.decode(b)).collect())
    }

    /// Async twin of [`Context::submit_and_download`] (waits as [`Tensor::download`] does).
    pub async fn submit_and_download_async(
        &self,
        encoder: wgpu::CommandEncoder,
        tensors: &[&Tensor],
    ) -> Result<Vec<Vec<f32>>> {
        let bytes = read(self, Some(encoder), tensors, false).await?;
        Ok(tensors.iter().zip(&bytes).map(|(t, b)| t.decode(b)).collect())
    }
}

impl Tensor {
    /// Reads the tensor back as f32 (f16 is widened), in its [`Tensor::layout`] (a strided view
    /// is gathered into it). Blocks the thread until the GPU is done.
    pub fn download_blocking(&self, ctx: &Context) -> Result<Vec<f32>> {
        let bytes = pollster::block_on(read(ctx, None, &[self], true))?;
        Ok(self.decode(&bytes[0]))
    }

    /// Reads the tensor back as f32, like [`Tensor::download_blocking`], without blocking the
    /// thread: while the copy is in flight the future polls the device without waiting
    /// (`PollType::Poll`) each time it is polled, and asks the executor to poll it again, so it
    /// completes under any executor (it yields rather than sleeps: a task waiting on a long
    /// kernel keeps its executor's thread busy polling).
    pub async fn download(&self, ctx: &Context) -> Result<Vec<f32>> {
        let bytes = read(ctx, None, &[self], false).await?;
        Ok(self.decode(&bytes[0]))
    }
}

