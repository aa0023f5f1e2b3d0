//! Compiling pipelines: the pipeline and bind group layout of a [`Kernel`] variant on a context,
//! from its cache (`pipeline_cache.rs`), compiled on first use. Two callers that race for the
//! same variant compile it once; a failed compilation leaves the slot empty for the next call.
//! Compilation goes through the driver's pipeline cache where the device has one, which an
//! application can export and load in a later run.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::context::Context;
use crate::error::Result;
use crate::kernels::{Access, Kernel};
use crate::pipeline_cache::{slot, Layouts};

impl Context {
    async fn layouts(&self, kernel: Kernel) -> Result<Layouts> {
        let ctx = self;
        let s = slot(&self.inner.cache.layouts, kernel.bindings());
        let mut guard = s.lock().await;
        if let Some(l) = &*guard {
            return Ok(l.clone());
        }
        let entries: Vec<_> = kernel
            .bindings()
            .iter()
            .map(|b| wgpu::BindGroupLayoutEntry {
                binding: b.slot,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match b.access {
                        Access::Uniform => wgpu::BufferBindingType::Uniform,
                        Access::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        Access::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let made = ctx
            .scoped_async(|| {
                let dev = ctx.device();
                let bgl = dev.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(kernel.name()),
                    entries: &entries,
                });
                let pl = dev.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some(kernel.name()),
                    bind_group_layouts: &[Some(&bgl)],
                    immediate_size: 0,
                });
                Ok((bgl, pl))
            })
            .await?;
        *guard = Some(made.clone());
        Ok(made)
    }

    /// The bind group layout of `kernel`'s family.
    pub(crate) async fn bind_group_layout(&self, kernel: Kernel) -> Result<wgpu::BindGroupLayout> {
        Ok(self.layouts(kernel).await?.0)
    }

    /// The pipeline of `kernel`, compiling it on first use.
    pub(crate) async fn pipeline(&self, kernel: Kernel) -> Result<Arc<wgpu::ComputePipeline>> {
        let ctx = self;
        let s = slot(&self.inner.cache.pipelines, kernel);
        let mut guard = s.lock().await;
        if let Some(p) = &*guard {
            return Ok(p.clone());
        }
        let (_, layout) = self.layouts(kernel).await?;
        let device = ctx.device();
        let driver_cache = self.driver_cache();
        let pipeline = ctx
            .scoped_async(|| {
                let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(kernel.name()),
                    source: wgpu::ShaderSource::Wgsl(kernel.source().into()),
                });
                Ok(device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(kernel.name()),
                    layout: Some(&layout),
                    module: &module,
                    entry_point: Some(kernel.entry()),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &[],
                        // Every kernel writes its workgroup memory before reading it.
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: driver_cache.as_ref(),
                }))
            })
            .await?;
        self.inner.cache.compiled.fetch_add(1, Ordering::Relaxed);
        let pipeline = Arc::new(pipeline);
        *guard = Some(pipeline.clone());
        Ok(pipeline)
    }

    /// The driver's pipeline cache, created empty on first use where the device has
    /// `PIPELINE_CACHE` (or the one [`Context::load_pipeline_cache`] loaded).
    fn driver_cache(&self) -> Option<wgpu::PipelineCache> {
        if !self.device().features().contains(wgpu::Features::PIPELINE_CACHE) {
            return None;
        }
        let mut slot = self.inner.driver_cache.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            // SAFETY: no initial data is given, which is what the contract of
            // `create_pipeline_cache` is about
            *slot = Some(unsafe {
                self.device().create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                    label: Some("wgpu-attention pipelines"),
                    data: None,
                    fallback: true,
                })
            });
        }
        slot.clone()
    }

    /// The driver's compiled pipelines as bytes, for an application to store (under
    /// [`Context::pipeline_cache_key`]) and give to [`Context::load_pipeline_cache`] in a later
    /// run, so that the pipelines compiled in this one need not be compiled again. `None` where
    /// the device lacks `PIPELINE_CACHE` (it is requested where the adapter has it; on Vulkan) or
    /// nothing was compiled yet.
    ///
    /// ```no_run
    /// # fn main() -> wgpu_attention::Result<()> {
    /// use wgpu_attention::Context;
    /// let ctx = Context::new_blocking()?;
    /// let path = ctx.pipeline_cache_key().map(|key| std::env::temp_dir().join(key));
    /// if let Some(data) = path.as_ref().and_then(|p| std::fs::read(p).ok()) {
    ///     // SAFETY: the file holds what pipeline_cache_data returned for this key
    ///     unsafe { ctx.load_pipeline_cache(&data) };
    /// }
    /// // ... calls that compile pipelines (or Context::prepare_attention) ...
    /// if let (Some(path), Some(data)) = (path, ctx.pipeline_cache_data()) {
    ///     let _ = std::fs::write(path, data);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn pipeline_cache_data(&self) -> Option<Vec<u8>> {
        let slot = self.inner.driver_cache.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().and_then(|c| c.get_data())
    }

    /// A name for the stored cache data of this adapter (wgpu's `pipeline_cache_key`: the data
    /// is valid only for adapters with the same key), or `None` where the backend has no
    /// application-managed pipeline cache.
    pub fn pipeline_cache_key(&self) -> Option<String> {
        wgpu::util::pipeline_cache_key(&self.inner.adapter_info)
    }

    /// Loads data from [`Context::pipeline_cache_data`] of an earlier run: pipelines compiled
    /// from now on go through it (call it before the first operation). Returns whether the
    /// device can take it (`PIPELINE_CACHE`); data from another adapter, driver or wgpu version
    /// is not used (the pipelines then compile as without it).
    ///
    /// # Safety
    ///
    /// As for `wgpu::Device::create_pipeline_cache`: `data` must have been returned by
    /// [`Context::pipeline_cache_data`] (wgpu checks that it matches the adapter, but cannot
    /// prove that bytes read from storage are what was written).
    pub unsafe fn load_pipeline_cache(&self, data: &[u8]) -> bool {
        if !self.device().features().contains(wgpu::Features::PIPELINE_CACHE) {
            return false;
        }
        // SAFETY: the caller's contract, passed on
        let cache = unsafe {
            self.device().create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                label: Some("wgpu-attention pipelines"),
                data: Some(data),
                fallback: true,
            })
        };
        *self.inner.driver_cache.lock().unwrap_or_else(|e| e.into_inner()) = Some(cache);
        true
    }
}
