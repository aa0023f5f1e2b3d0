//! What a device offers that the kernels depend on, as plain numbers: the input of every
//! planning decision (variant, tile, split, chunking), so that planning runs without a device.

/// A device's limits and features, as far as this crate's kernels care.
///
/// [`Context::caps`](crate::Context::caps) gives those of a context; tests and tools can write
/// their own to ask what the planner would do on another device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caps {
    /// `max_storage_buffer_binding_size`: bytes one binding may span.
    pub max_binding: u64,
    /// `max_buffer_size`.
    pub max_buffer: u64,
    /// `max_compute_workgroups_per_dimension`.
    pub max_workgroups_per_dim: u32,
    /// `min_storage_buffer_offset_alignment`.
    pub storage_alignment: u32,
    /// `max_compute_workgroup_storage_size`, bytes.
    pub max_workgroup_storage: u32,
    /// `max_compute_invocations_per_workgroup`.
    pub max_invocations: u32,
    /// `SHADER_F16`: f16 storage.
    pub f16: bool,
    /// `SUBGROUP`: subgroup operations.
    pub subgroups: bool,
    /// The smallest subgroup the adapter may run a compute shader with (0: unknown). The
    /// kernels reduce over 8 consecutive invocations with subgroup operations only where this is
    /// at least 8.
    pub subgroup_min_size: u32,
}

impl Caps {
    /// From a device's limits and enabled features.
    pub fn new(limits: &wgpu::Limits, features: wgpu::Features) -> Self {
        Caps {
            max_binding: limits.max_storage_buffer_binding_size,
            max_buffer: limits.max_buffer_size,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
            storage_alignment: limits.min_storage_buffer_offset_alignment,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            max_invocations: limits.max_compute_invocations_per_workgroup,
            f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            subgroup_min_size: 0,
        }
    }

    /// wgpu's default limits with no optional feature: what every WebGPU-class device offers.
    pub fn baseline() -> Self {
        Caps::new(&wgpu::Limits::default(), wgpu::Features::empty())
    }
}
