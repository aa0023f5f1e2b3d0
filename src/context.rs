//! Device setup: adapter choice, limits and features, and the shared [`Context`].

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::pipeline::PipelineCache;

/// Optional features this crate uses when the adapter has them.
const WANTED_FEATURES: wgpu::Features =
    wgpu::Features::SHADER_F16.union(wgpu::Features::SUBGROUP).union(wgpu::Features::TIMESTAMP_QUERY);

/// How [`Context::with_options`] picks and configures a device.
#[derive(Debug, Clone, Default)]
pub struct ContextOptions {
    /// Backends to consider; `None` means `WGPU_BACKEND` if set, else all.
    pub backends: Option<wgpu::Backends>,
    /// Case-insensitive substring of the adapter name; `None` means `WGPU_ADAPTER_NAME` if set.
    pub adapter_name: Option<String>,
    /// Limits to request instead of the adapter's own (each must be within the adapter's).
    /// Lowering them is how the tests exercise the split paths on a small software device.
    pub limits: Option<wgpu::Limits>,
    /// Features to leave out even when the adapter has them (e.g. `SHADER_F16` to test the error path).
    pub disable_features: wgpu::Features,
}

/// What a [`Context`] runs on.
#[derive(Debug, Clone)]
pub struct ContextInfo {
    /// Adapter name, e.g. "NVIDIA H100 80GB HBM3" or "llvmpipe (LLVM 19.1.7, 256 bits)".
    pub adapter: String,
    /// Backend (Vulkan, Metal, Dx12, Gl).
    pub backend: wgpu::Backend,
    /// Discrete, integrated, virtual, CPU or other.
    pub device_type: wgpu::DeviceType,
    /// Driver name and version, as reported.
    pub driver: String,
    /// Features enabled on the device.
    pub features: wgpu::Features,
    /// `max_storage_buffer_binding_size` in force.
    pub max_binding: u64,
    /// `max_compute_workgroup_storage_size` in force.
    pub max_workgroup_storage: u32,
}

impl std::fmt::Display for ContextInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut feats = vec![];
        for (flag, name) in [
            (wgpu::Features::SHADER_F16, "SHADER_F16"),
            (wgpu::Features::SUBGROUP, "SUBGROUP"),
            (wgpu::Features::TIMESTAMP_QUERY, "TIMESTAMP_QUERY"),
        ] {
            if self.features.contains(flag) {
                feats.push(name);
            }
        }
        write!(
            f,
            "{} ({:?}, {:?}, driver {}); features [{}]; max binding {} MiB; workgroup storage {} KiB",
            self.adapter,
            self.backend,
            self.device_type,
            if self.driver.is_empty() { "?" } else { &self.driver },
            feats.join(", "),
            self.max_binding >> 20,
            self.max_workgroup_storage >> 10
        )
    }
}

pub(crate) struct Inner {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: ContextInfo,
    pub limits: wgpu::Limits,
    pub cache: PipelineCache,
    /// Bound in place of an absent read-only argument (mask, key lengths).
    pub placeholder_read: wgpu::Buffer,
    /// Bound in place of an absent output (lse).
    pub placeholder_write: wgpu::Buffer,
    /// The active kernel-time measurement, if any.
    pub timing: std::sync::Mutex<Option<crate::timing::Session>>,
}

/// A GPU device and queue with this crate's compiled pipelines.
///
/// Cheap to clone (an `Arc`), `Send + Sync`: share one across threads. Pipelines are compiled
/// on first use and cached per kernel variant.
///
/// ```no_run
/// # fn main() -> wgpu_attention::Result<()> {
/// let ctx = wgpu_attention::Context::new_blocking()?;
/// println!("{}", ctx.info());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Context {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("info", &self.inner.info).finish()
    }
}

/// Rank of an adapter: lower is better (device type first, then backend).
fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let ty = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let be = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal => 0,
        wgpu::Backend::Dx12 => 1,
        wgpu::Backend::Gl => 3,
        _ => 2,
    };
    (ty, be)
}

fn instance(backends: Option<wgpu::Backends>) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    if let Some(b) = backends {
        desc.backends = b;
    }
    wgpu::Instance::new(desc)
}

/// Lists the adapters wgpu sees (honouring `WGPU_BACKEND`), best first.
pub async fn list_adapters() -> Vec<wgpu::AdapterInfo> {
    let mut infos: Vec<_> =
        instance(None).enumerate_adapters(wgpu::Backends::all()).await.iter().map(|a| a.get_info()).collect();
    infos.sort_by_key(rank);
    infos
}

impl Context {
    /// Picks the best adapter (discrete > integrated > virtual > CPU; Vulkan/Metal > DX12 > GL on
    /// the same device), honouring `WGPU_BACKEND` and `WGPU_ADAPTER_NAME`, and opens a device with
    /// the adapter's own limits and the optional features it has (SHADER_F16, SUBGROUP,
    /// TIMESTAMP_QUERY).
    pub async fn new() -> Result<Self> {
        Self::with_options(ContextOptions::default()).await
    }

    /// Blocking twin of [`Context::new`].
    pub fn new_blocking() -> Result<Self> {
        pollster::block_on(Self::new())
    }

    /// Blocking twin of [`Context::with_options`].
    pub fn with_options_blocking(opts: ContextOptions) -> Result<Self> {
        pollster::block_on(Self::with_options(opts))
    }

    /// Like [`Context::new`], with explicit choices.
    pub async fn with_options(opts: ContextOptions) -> Result<Self> {
        let inst = instance(opts.backends);
        let name = opts.adapter_name.clone().or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok());
        let mut adapters = inst.enumerate_adapters(wgpu::Backends::all()).await;
        let seen: Vec<String> =
            adapters.iter().map(|a| format!("{} ({:?})", a.get_info().name, a.get_info().backend)).collect();
        if let Some(n) = &name {
            let n = n.to_lowercase();
            adapters.retain(|a| a.get_info().name.to_lowercase().contains(&n));
        }
        adapters.sort_by_key(|a| rank(&a.get_info()));
        let adapter = adapters.into_iter().next().ok_or_else(|| {
            Error::NoAdapter(match &name {
                Some(n) => format!("none named like {n:?} among [{}]", seen.join(", ")),
                None => "wgpu found no adapter (is a Vulkan, Metal or DX12 driver installed?)".into(),
            })
        })?;
        let features = adapter.features() & WANTED_FEATURES & !opts.disable_features;
        let limits = opts.limits.clone().unwrap_or_else(|| adapter.limits());
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgpu-attention"),
                required_features: features,
                required_limits: limits,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::RequestDevice(e.to_string()))?;
        let ai = adapter.get_info();
        let driver = format!("{} {}", ai.driver, ai.driver_info).trim().to_string();
        Ok(Self::build(device, queue, ai.name, ai.backend, ai.device_type, driver))
    }

    /// Wraps a caller's existing device and queue (no second device is created).
    ///
    /// The crate uses whatever features and limits that device was created with: f16 needs
    /// `SHADER_F16`; large head dims need enough workgroup storage (16 KiB suffices up to 128).
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        Self::build(
            device,
            queue,
            "caller's device".into(),
            wgpu::Backend::Noop,
            wgpu::DeviceType::Other,
            String::new(),
        )
    }

    /// Like [`Context::from_device`], also recording the adapter's info for [`Context::info`].
    pub fn from_device_with_info(device: wgpu::Device, queue: wgpu::Queue, info: &wgpu::AdapterInfo) -> Self {
        let driver = format!("{} {}", info.driver, info.driver_info).trim().to_string();
        Self::build(device, queue, info.name.clone(), info.backend, info.device_type, driver)
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        adapter: String,
        backend: wgpu::Backend,
        device_type: wgpu::DeviceType,
        driver: String,
    ) -> Self {
        let limits = device.limits();
        let info = ContextInfo {
            adapter,
            backend,
            device_type,
            driver,
            features: device.features(),
            max_binding: limits.max_storage_buffer_binding_size,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
        };
        let cache = PipelineCache::new(&device);
        let placeholder = |label| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let placeholder_read = placeholder("wgpu-attention placeholder (read)");
        let placeholder_write = placeholder("wgpu-attention placeholder (write)");
        Context {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                limits,
                cache,
                placeholder_read,
                placeholder_write,
                timing: Default::default(),
            }),
        }
    }

    /// Adapter, backend, driver and features in use.
    pub fn info(&self) -> &ContextInfo {
        &self.inner.info
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// Limits in force on the device.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// Whether f16 storage is available (`SHADER_F16`).
    pub fn supports_f16(&self) -> bool {
        self.inner.info.features.contains(wgpu::Features::SHADER_F16)
    }

    /// Blocks until all submitted work has finished.
    pub fn wait(&self) -> Result<()> {
        self.inner.device.poll(wgpu::PollType::wait_indefinitely()).map(|_| ()).map_err(|e| Error::Gpu(e.to_string()))
    }

    /// Records with `f` into a fresh encoder and submits it (errors become `Err`).
    pub(crate) fn submit(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>) -> Result<()> {
        let mut enc =
            self.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("wgpu-attention") });
        f(&mut enc)?;
        self.scoped(|| {
            self.queue().submit([enc.finish()]);
            Ok(())
        })
    }

    /// Records work with `f` into a fresh encoder and submits it, without waiting. wgpu
    /// validation errors of the submission come back as `Err(Error::Gpu)`.
    pub fn record_and_submit(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>) -> Result<()> {
        self.submit(f)
    }

    /// Runs `f` inside a validation and an out-of-memory error scope; wgpu errors become `Err`.
    pub(crate) fn scoped<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let dev = &self.inner.device;
        let oom = dev.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(val.pop());
        let o = pollster::block_on(oom.pop());
        if let Some(e) = v.or(o) {
            return Err(Error::Gpu(e.to_string()));
        }
        out
    }
}
