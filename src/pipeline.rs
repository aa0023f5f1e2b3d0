//! Compiling pipelines: the pipeline and bind group layout of a [`Kernel`] variant on a context,
//! from its cache (`pipeline_cache.rs`), compiled on first use. Two callers that race for the
//! same variant compile it once; a failed compilation leaves the slot empty for the next call.

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
                    cache: None,
                }))
            })
            .await?;
        self.inner.cache.compiled.fetch_add(1, Ordering::Relaxed);
        let pipeline = Arc::new(pipeline);
        *guard = Some(pipeline.clone());
        Ok(pipeline)
    }
}
