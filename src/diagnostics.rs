//! What a context holds, for finding what grows in a long run: the crate's caches, and wgpu's
//! live objects and memory (with this crate's `counters` feature, which turns on wgpu's) and its
//! allocator's report where the backend gives one. `attn-bench --diag` prints it after every
//! case; the soak test checks that none of it grows with calls.

use crate::context::Context;

/// A snapshot of what a context holds ([`Context::diagnostics`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Diagnostics {
    /// Kernel pipelines compiled (one per variant; bounded by the variants).
    pub compiled_pipelines: usize,
    /// Uniform blocks kept for reuse (at most 256).
    pub uniform_buffers: usize,
    /// Idle download staging buffers (at most 4 per size class) and their bytes.
    pub staging_buffers: (usize, u64),
    /// Split attention's scratch buffers (one per size class) and their bytes.
    pub scratch_buffers: (usize, u64),
    /// Tuned shape classes ([`Context::tuning_table`]).
    pub tuned_classes: usize,
    /// wgpu's counts of live objects and memory, with the `counters` feature; `None` without.
    pub wgpu: Option<WgpuCounters>,
    /// The memory allocator's totals, where the backend reports them (Vulkan, DX12, Metal).
    pub allocator: Option<AllocatorTotals>,
}

/// wgpu's live objects on the device (`wgpu::Device::get_internal_counters`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WgpuCounters {
    /// Live buffers (the caller's included).
    pub buffers: isize,
    /// Live bind groups.
    pub bind_groups: isize,
    /// Live bind group layouts.
    pub bind_group_layouts: isize,
    /// Live compute pipelines.
    pub compute_pipelines: isize,
    /// Live pipeline layouts.
    pub pipeline_layouts: isize,
    /// Live shader modules.
    pub shader_modules: isize,
    /// Live command encoders (including those of submitted work not yet retired).
    pub command_encoders: isize,
    /// Live query sets.
    pub query_sets: isize,
    /// Live fences.
    pub fences: isize,
    /// Bytes of device memory held by buffers.
    pub buffer_memory: isize,
    /// Device memory allocations.
    pub memory_allocations: isize,
}

/// The allocator's totals (`wgpu::Device::generate_allocator_report`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AllocatorTotals {
    /// Bytes handed out.
    pub allocated_bytes: u64,
    /// Bytes of the blocks reserved from the driver.
    pub reserved_bytes: u64,
    /// Blocks reserved.
    pub blocks: usize,
}

impl Context {
    /// What this context holds now (see [`Diagnostics`]). Polls the device first, so that
    /// objects whose work is done and that were dropped are no longer counted.
    ///
    /// ```no_run
    /// # fn main() -> wgpu_attention::Result<()> {
    /// let ctx = wgpu_attention::Context::new_blocking()?;
    /// let d = ctx.diagnostics();
    /// println!("{} pipelines, {:?} wgpu objects", d.compiled_pipelines, d.wgpu);
    /// # Ok(()) }
    /// ```
    pub fn diagnostics(&self) -> Diagnostics {
        let _ = self.device().poll(wgpu::PollType::wait_indefinitely());
        let wgpu = cfg!(feature = "counters").then(|| {
            let c = self.device().get_internal_counters().hal;
            WgpuCounters {
                buffers: c.buffers.read(),
                bind_groups: c.bind_groups.read(),
                bind_group_layouts: c.bind_group_layouts.read(),
                compute_pipelines: c.compute_pipelines.read(),
                pipeline_layouts: c.pipeline_layouts.read(),
                shader_modules: c.shader_modules.read(),
                command_encoders: c.command_encoders.read(),
                query_sets: c.query_sets.read(),
                fences: c.fences.read(),
                buffer_memory: c.buffer_memory.read(),
                memory_allocations: c.memory_allocations.read(),
            }
        });
        let allocator = self.device().generate_allocator_report().map(|r| AllocatorTotals {
            allocated_bytes: r.total_allocated_bytes,
            reserved_bytes: r.total_reserved_bytes,
            blocks: r.blocks.len(),
        });
        Diagnostics {
            compiled_pipelines: self.compiled_pipelines(),
            uniform_buffers: self.inner.uniforms.len(),
            staging_buffers: self.inner.staging.held(),
            scratch_buffers: self.inner.scratch.held(),
            tuned_classes: self.tuning_table().len(),
            wgpu,
            allocator,
        }
    }
}
