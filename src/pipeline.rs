//! The pipeline cache: one compute pipeline per [`Kernel`] variant, compiled on first use.
//!
//! Lookups take a read lock; a miss inserts a per-variant slot (an async mutex) under a short
//! write lock and compiles holding only that slot, so two callers that race for the same variant
//! compile it once (the second waits for the first, without blocking a thread on the async
//! path), and variants for different keys compile in parallel. A failed compilation leaves the
//! slot empty, so the next call tries again (a failure may be transient, e.g. out of memory).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use futures::lock::Mutex;

use crate::context::Context;
use crate::error::Result;
use crate::kernels::{Access, Binding, Kernel};

type Slot<T> = Arc<Mutex<Option<T>>>;
type Layouts = (wgpu::BindGroupLayout, wgpu::PipelineLayout);

/// Compiled pipelines and bind group layouts, keyed by variant (layouts by their bindings).
#[derive(Default)]
pub(crate) struct PipelineCache {
    pipelines: RwLock<HashMap<Kernel, Slot<Arc<wgpu::ComputePipeline>>>>,
    layouts: RwLock<HashMap<&'static [Binding], Slot<Layouts>>>,
    compiled: AtomicUsize,
}

/// The once-cell of `key`, inserted if absent.
fn slot<K: std::hash::Hash + Eq + Copy, T>(map: &RwLock<HashMap<K, Slot<T>>>, key: K) -> Slot<T> {
    if let Some(s) = map.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return s.clone();
    }
    map.write().unwrap_or_else(|e| e.into_inner()).entry(key).or_default().clone()
}

impl PipelineCache {
    /// How many pipelines this cache has compiled.
    pub fn compiled(&self) -> usize {
        self.compiled.load(Ordering::Relaxed)
    }

    async fn layouts(&self, ctx: &Context, kernel: Kernel) -> Result<Layouts> {
        let s = slot(&self.layouts, kernel.bindings());
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
    pub async fn bind_group_layout(&self, ctx: &Context, kernel: Kernel) -> Result<wgpu::BindGroupLayout> {
        Ok(self.layouts(ctx, kernel).await?.0)
    }

    /// The pipeline of `kernel`, compiling it on first use.
    pub async fn get(&self, ctx: &Context, kernel: Kernel) -> Result<Arc<wgpu::ComputePipeline>> {
        let s = slot(&self.pipelines, kernel);
        let mut guard = s.lock().await;
        if let Some(p) = &*guard {
            return Ok(p.clone());
        }
        let (_, layout) = self.layouts(ctx, kernel).await?;
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
        self.compiled.fetch_add(1, Ordering::Relaxed);
        let pipeline = Arc::new(pipeline);
        *guard = Some(pipeline.clone());
        Ok(pipeline)
    }
}
