//! Kernel time from timestamp queries: while a measurement is active, every compute pass this
//! crate records gets a begin and an end timestamp (`timestamps.rs`), and the measurement sums
//! the pass durations.

use futures::channel::oneshot;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::timestamps::{Session, CAPACITY};

impl Context {
    /// Records work with `f`, submits it, waits, and returns the GPU time of the compute passes
    /// this crate recorded inside `f` (summed, in seconds), from timestamp queries.
    ///
    /// `Ok(None)` if the device lacks `TIMESTAMP_QUERY` (the work still runs). While a measurement
    /// runs, passes that other threads record on this context are timed too.
    pub fn time_gpu(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>) -> Result<Option<f64>> {
        let dev = self.device();
        if !self.info().features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            self.record_and_submit(f)?;
            self.wait()?;
            return Ok(None);
        }
        let query_set = dev.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("wgpu-attention timing"),
            ty: wgpu::QueryType::Timestamp,
            count: CAPACITY,
        });
        *self.inner.timing.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Session { query_set: query_set.clone(), next: 0, overflow: false });
        let mut enc =
            dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("wgpu-attention timed") });
        let recorded = f(&mut enc);
        let session = self.inner.timing.lock().unwrap_or_else(|e| e.into_inner()).take();
        recorded?;
        let Some(session) = session else { return Err(Error::Gpu("timing session lost".into())) };
        if session.overflow {
            return Err(Error::Unsupported(format!("timing more than {} passes in one measurement", CAPACITY / 2)));
        }
        let n = session.next.max(2);
        let bytes = n as u64 * 8;
        let (resolve, readback) = self.scoped(|| {
            let resolve = dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let readback = dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            Ok((resolve, readback))
        })?;
        if session.next == 0 {
            self.scoped(|| {
                self.queue().submit([enc.finish()]);
                Ok(())
            })?;
            self.wait()?;
            return Ok(Some(0.0));
        }
        enc.resolve_query_set(&query_set, 0..session.next, &resolve, 0);
        enc.copy_buffer_to_buffer(&resolve, 0, &readback, 0, bytes);
        self.scoped(|| {
            self.queue().submit([enc.finish()]);
            Ok(())
        })?;
        let (tx, rx) = oneshot::channel();
        readback.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        pollster::block_on(rx)
            .map_err(|e| Error::Readback(e.to_string()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        let view = readback.get_mapped_range(..).map_err(|e| Error::Readback(format!("{e:?}")))?;
        let stamps: Vec<u64> = bytemuck::pod_collect_to_vec(&view[..session.next as usize * 8]);
        drop(view);
        readback.unmap();
        let period_ns = self.queue().get_timestamp_period() as f64;
        let ticks: u64 = stamps.chunks(2).map(|p| p[1].saturating_sub(p[0])).sum();
        Ok(Some(ticks as f64 * period_ns * 1e-9))
    }
}
