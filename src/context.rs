//! Device setup: adapter choice, limits and features, and the shared [`Context`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::caps::Caps;
use crate::error::{Error, Result};
use crate::pipeline_cache::PipelineCache;
use crate::tensor_cores::{TensorCoreState, TensorCores};

/// Optional features this crate uses when the adapter has them, with what their absence costs
/// ([`ContextInfo::missing_features`], [`Context::device_descriptor`]).
pub const USEFUL_FEATURES: [(wgpu::Features, &str); 4] = [
    (wgpu::Features::SHADER_F16, "f16 tensors and caches are refused (Error::F16Unsupported)"),
    (
        wgpu::Features::SUBGROUP,
        "row reductions go through workgroup memory: slower attention, softmax and top-k selection",
    ),
    (wgpu::Features::TIMESTAMP_QUERY, "no kernel times: Context::time_gpu returns None"),
    (
        wgpu::Features::PIPELINE_CACHE,
        "compiled pipelines cannot be kept across runs: Context::pipeline_cache_data returns None",
    ),
];

/// [`USEFUL_FEATURES`] as one set.
const WANTED_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::PIPELINE_CACHE);

/// How [`Context::with_options`] picks and configures a device.
///
/// ```no_run
/// # use wgpu_attention::*;
/// # fn main() -> Result<()> {
/// // the Vulkan adapter whose name contains "llvmpipe", refusing allocations past 80% of its
/// // memory budget
/// let ctx = Context::with_options_blocking(ContextOptions {
///     backends: Some(wgpu::Backends::VULKAN),
///     adapter_name: Some("llvmpipe".into()),
///     memory_budget_percent: Some(80),
///     ..Default::default()
/// })?;
/// println!("{}", ctx.info());
/// # Ok(()) }
/// ```
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
    /// Refuse allocations ([`Error::OutOfMemory`]) once the device's memory use would pass this
    /// percentage of the memory budget its driver reports, instead of risking a driver-level
    /// failure. Honoured on Vulkan (with `VK_EXT_memory_budget`) and DX12; `None` (the default)
    /// leaves the limit to the driver.
    pub memory_budget_percent: Option<u8>,
    /// Tensor cores (cooperative matrices) for the f16 kernels that have such a variant:
    /// [`TensorCores::Auto`] by default.
    pub tensor_cores: TensorCores,
    /// How `Auto` chooses the attention kernels' configuration: [`Tuning::BuiltIn`](crate::Tuning::BuiltIn) (tuned
    /// and built-in tables, then the heuristic) by default; [`Tuning::OnFirstUse`](crate::Tuning::OnFirstUse) times the
    /// candidates the first time a shape class is seen; [`Tuning::Off`](crate::Tuning::Off) the heuristic alone.
    pub tuning: crate::tuning::Tuning,
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
    /// Whether tensor cores are used, and if not, why ([`Context::tensor_cores`]: the same,
    /// after the self-check of their first use).
    pub tensor_cores: TensorCoreState,
}

impl ContextInfo {
    /// The features this crate would use that the device lacks, each with what its absence
    /// costs (empty when nothing is missing). A device made from [`Context::device_descriptor`]
    /// lacks only what its adapter lacks.
    ///
    /// ```no_run
    /// # fn main() -> wgpu_attention::Result<()> {
    /// let ctx = wgpu_attention::Context::new_blocking()?;
    /// for (feature, cost) in ctx.info().missing_features() {
    ///     eprintln!("missing {feature:?}: {cost}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn missing_features(&self) -> Vec<(wgpu::Features, &'static str)> {
        USEFUL_FEATURES.iter().filter(|(f, _)| !self.features.contains(*f)).copied().collect()
    }
}

impl std::fmt::Display for ContextInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut feats = vec![];
        for (flag, name) in [
            (wgpu::Features::SHADER_F16, "SHADER_F16"),
            (wgpu::Features::SUBGROUP, "SUBGROUP"),
            (wgpu::Features::TIMESTAMP_QUERY, "TIMESTAMP_QUERY"),
            (wgpu::Features::PIPELINE_CACHE, "PIPELINE_CACHE"),
        ] {
            if self.features.contains(flag) {
                feats.push(name);
            }
        }
        write!(
            f,
            "{} ({:?}, {:?}, driver {}); features [{}]; max binding {} MiB; workgroup storage {} KiB; tensor cores {}",
            self.adapter,
            self.backend,
            self.device_type,
            if self.driver.is_empty() { "?" } else { &self.driver },
            feats.join(", "),
            self.max_binding >> 20,
            self.max_workgroup_storage >> 10,
            self.tensor_cores
        )
    }
}

/// The tensor-core attention self-check's outcome per kernel class (`AttentionMmaKernel::class`).
pub(crate) type AttentionClasses =
    std::collections::BTreeMap<(u32, u32, u32, u32, bool), std::result::Result<(), String>>;

pub(crate) struct Inner {
    /// Identifies this context (and its clones): tensors and masks carry it, and a call refuses
    /// those of another context.
    pub id: u64,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: ContextInfo,
    /// Whether tensor cores are in use (changed once, by a failed self-check).
    pub tensor_cores: std::sync::Mutex<TensorCoreState>,
    /// Whether the self-check of the tensor-core path has run (held while it runs).
    pub tensor_cores_checked: futures::lock::Mutex<bool>,
    /// The attention self-check's outcome per head-dim class and rows per workgroup (held while
    /// one runs); a class that failed runs SIMT on this context.
    pub attention_classes: futures::lock::Mutex<AttentionClasses>,
    /// How `Auto` chooses configurations ([`Context::set_tuning`]).
    pub tuning: Mutex<crate::tuning::Tuning>,
    /// The tuned choices: measured on this context (`Tuning::OnFirstUse`) or imported.
    pub tuned: Mutex<crate::tuning::TuningTable>,
    /// Held while a shape class is being tuned (one at a time).
    pub tuning_run: futures::lock::Mutex<()>,
    /// The built-in table for this adapter, if there is one.
    pub built_in: Option<crate::tuning::TuningTable>,
    pub limits: wgpu::Limits,
    pub caps: Caps,
    pub cache: PipelineCache,
    /// Why the device was lost, once it was.
    pub lost: Arc<Mutex<Option<String>>>,
    /// Bound in place of an absent read-only argument (mask, key lengths).
    pub placeholder_read: wgpu::Buffer,
    /// Bound in place of an absent output (lse).
    pub placeholder_write: wgpu::Buffer,
    /// A second one, where a kernel has two absent outputs (writable bindings do not share).
    pub placeholder_counts: wgpu::Buffer,
    /// The adapter's description (the key of the driver's pipeline cache).
    pub adapter_info: wgpu::AdapterInfo,
    /// The driver's pipeline cache that pipelines compile through, once created or loaded
    /// (`pipeline.rs`).
    pub driver_cache: std::sync::Mutex<Option<wgpu::PipelineCache>>,
    /// The active kernel-time measurement, if any.
    pub timing: std::sync::Mutex<Option<crate::timestamps::Session>>,
    /// Uniform blocks of past dispatches, by content.
    pub uniforms: crate::reuse::Uniforms,
    /// Idle download staging buffers.
    pub staging: crate::reuse::Staging,
    /// Shared scratch for split attention's partials.
    pub scratch: crate::reuse::Scratch,
}

/// A GPU device and queue with this crate's compiled pipelines.
///
/// Cheap to clone (an `Arc`), `Send + Sync`: share one across threads. Pipelines are compiled
/// on first use and cached per kernel variant.
///
/// Tensors and masks belong to the context that made them (and its clones): passing one to
/// another context is refused with [`Error::ForeignTensor`]. Wrap a device once and clone the
/// context. When the device is lost, every call returns [`Error::DeviceLost`] (see
/// [`Context::from_device`] for devices the crate did not create); a new context can be made.
///
/// Every argument error of an `encode_*` call is returned by that call, before anything is
/// recorded. What it cannot see arises after it returns, and wgpu reports it at the caller's
/// `finish()` or `submit()`: a buffer destroyed (or mapped) by the caller before submission, an
/// encoder that already holds an error or an open pass, or the device being lost after recording.
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
    /// The bind groups of this handle's calls, where the caller asked for them to be kept
    /// ([`Context::with_binding_cache`]).
    pub(crate) bindings: Option<Arc<crate::reuse::BindGroups>>,
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

fn instance(backends: Option<wgpu::Backends>, memory_budget_percent: Option<u8>) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    if let Some(b) = backends {
        desc.backends = b;
    }
    desc.memory_budget_thresholds.for_resource_creation = memory_budget_percent;
    wgpu::Instance::new(desc)
}

/// Lists the adapters wgpu sees (honouring `WGPU_BACKEND`), best first.
pub async fn list_adapters() -> Vec<wgpu::AdapterInfo> {
    let mut infos: Vec<_> =
        instance(None, None).enumerate_adapters(wgpu::Backends::all()).await.iter().map(|a| a.get_info()).collect();
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
        let inst = instance(opts.backends, opts.memory_budget_percent);
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
        let mut features = adapter.features() & WANTED_FEATURES & !opts.disable_features;
        let limits = opts.limits.clone().unwrap_or_else(|| adapter.limits());
        let ai = adapter.get_info();
        let support = crate::tensor_cores::support(
            adapter.features() & !opts.disable_features,
            &adapter.cooperative_matrix_properties(),
            ai.subgroup_min_size,
            ai.subgroup_max_size,
        );
        let mut tensor_cores = match (opts.tensor_cores, support) {
            (TensorCores::Off, _) => TensorCoreState::Inactive("off (ContextOptions::tensor_cores)".into()),
            (TensorCores::Emulated, _) => TensorCoreState::Emulated,
            (TensorCores::Auto | TensorCores::Required, Ok(subgroup_size)) => {
                features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
                TensorCoreState::Active { subgroup_size }
            }
            (TensorCores::Required, Err(why)) => {
                return Err(Error::Unsupported(format!("tensor cores were required: {why}")))
            }
            (TensorCores::Auto, Err(why)) => TensorCoreState::Inactive(why),
        };
        let experimental = if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            // SAFETY: wgpu asks callers of experimental features to accept that they may be
            // unsound; the tensor-core path is checked against the SIMT kernels on first use
            // and switched off on a mismatch (see crate::tensor_cores)
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let request = |features: wgpu::Features, experimental| {
            adapter.request_device(&wgpu::DeviceDescriptor {
                label: Some("wgpu-attention"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: experimental,
                ..Default::default()
            })
        };
        let (device, queue) = match request(features, experimental).await {
            Ok(dq) => dq,
            // a device with cooperative matrices refused (an experimental feature): without
            // them, unless they were required
            Err(e) if experimental.is_enabled() && opts.tensor_cores == TensorCores::Auto => {
                let without = features - wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
                let dq = request(without, wgpu::ExperimentalFeatures::disabled())
                    .await
                    .map_err(|e| Error::RequestDevice(e.to_string()))?;
                tensor_cores =
                    TensorCoreState::Inactive(format!("the device with cooperative matrices was refused: {e}"));
                dq
            }
            Err(e) => return Err(Error::RequestDevice(e.to_string())),
        };
        let ctx = Self::build(device, queue, &ai, tensor_cores);
        *ctx.inner.tuning.lock().unwrap_or_else(|e| e.into_inner()) = opts.tuning;
        // the crate owns this device: it can watch for its loss
        let lost = ctx.inner.lost.clone();
        ctx.inner.device.set_device_lost_callback(move |reason, message| {
            *lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{reason:?}: {message}"));
        });
        Ok(ctx)
    }

    /// What to ask an adapter for, for a device that suits this crate: the adapter's own limits
    /// (wgpu's defaults would cap storage bindings at 128 MiB and workgroup memory at 16 KiB)
    /// and the features of [`USEFUL_FEATURES`] that the adapter has. Add your application's own
    /// features and limits to it.
    ///
    /// Tensor cores also need `EXPERIMENTAL_COOPERATIVE_MATRIX`, an experimental feature opted
    /// into with `wgpu::ExperimentalFeatures`: that is for you to decide;
    /// [`Context::from_device_with_adapter`] then uses them.
    ///
    /// ```no_run
    /// use wgpu_attention::{wgpu, Context, Error};
    /// # fn main() -> wgpu_attention::Result<()> {
    /// pollster::block_on(async {
    ///     let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    ///     let adapter = instance
    ///         .request_adapter(&wgpu::RequestAdapterOptions {
    ///             power_preference: wgpu::PowerPreference::HighPerformance,
    ///             ..Default::default()
    ///         })
    ///         .await
    ///         .map_err(|e| Error::NoAdapter(e.to_string()))?;
    ///     let mut desc = Context::device_descriptor(&adapter);
    ///     desc.label = Some("my app");
    ///     let (device, queue) =
    ///         adapter.request_device(&desc).await.map_err(|e| Error::RequestDevice(e.to_string()))?;
    ///     // the application keeps using device and queue; the crate records into its encoders
    ///     let ctx = Context::from_device_with_adapter(device, queue, &adapter);
    ///     for (feature, cost) in ctx.info().missing_features() {
    ///         eprintln!("without {feature:?}: {cost}");
    ///     }
    ///     Ok(())
    /// })
    /// # }
    /// ```
    pub fn device_descriptor(adapter: &wgpu::Adapter) -> wgpu::DeviceDescriptor<'static> {
        wgpu::DeviceDescriptor {
            label: Some("wgpu-attention"),
            required_features: adapter.features() & WANTED_FEATURES,
            required_limits: adapter.limits(),
            ..Default::default()
        }
    }

    /// Wraps a caller's existing device and queue (no second device is created).
    ///
    /// The crate uses whatever features and limits that device was created with: f16 needs
    /// `SHADER_F16`; large head dims need enough workgroup storage (16 KiB suffices up to 128).
    /// [`Context::device_descriptor`] says what to request (with a complete example), and
    /// [`ContextInfo::missing_features`] what a device lacks and what that costs.
    ///
    /// The device-lost callback is yours: the crate does not replace it, so it learns of a lost
    /// device only when an allocation or a readback fails (then every later call returns
    /// [`Error::DeviceLost`]). Call [`Context::mark_device_lost`] from your callback to make every
    /// call fail at once.
    ///
    /// Tensor cores stay off here (the adapter's cooperative-matrix configurations are not
    /// known from a device): use [`Context::from_device_with_adapter`] for them.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let info = device.adapter_info();
        let tc = Self::foreign_tensor_cores(&device);
        Self::build(device, queue, &info, tc)
    }

    /// Like [`Context::from_device`], with the adapter's info given explicitly.
    pub fn from_device_with_info(device: wgpu::Device, queue: wgpu::Queue, info: &wgpu::AdapterInfo) -> Self {
        let tc = Self::foreign_tensor_cores(&device);
        Self::build(device, queue, info, tc)
    }

    /// Like [`Context::from_device`], with the adapter the device came from: tensor cores are
    /// used where the device was created with `EXPERIMENTAL_COOPERATIVE_MATRIX` and the adapter
    /// offers what the kernels need ([`TensorCores::Auto`]).
    pub fn from_device_with_adapter(device: wgpu::Device, queue: wgpu::Queue, adapter: &wgpu::Adapter) -> Self {
        let ai = adapter.get_info();
        let tc = match crate::tensor_cores::support(
            device.features(),
            &adapter.cooperative_matrix_properties(),
            ai.subgroup_min_size,
            ai.subgroup_max_size,
        ) {
            Ok(subgroup_size) => TensorCoreState::Active { subgroup_size },
            Err(why) if !device.features().contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) => {
                TensorCoreState::Inactive(format!(
                    "the device was created without EXPERIMENTAL_COOPERATIVE_MATRIX ({why})"
                ))
            }
            Err(why) => TensorCoreState::Inactive(why),
        };
        Self::build(device, queue, &ai, tc)
    }

    /// The tensor-core state of a caller's device whose adapter is unknown.
    fn foreign_tensor_cores(device: &wgpu::Device) -> TensorCoreState {
        TensorCoreState::Inactive(if device.features().contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            "the adapter's cooperative-matrix configurations are unknown (Context::from_device_with_adapter knows them)"
                .into()
        } else {
            "the device was created without EXPERIMENTAL_COOPERATIVE_MATRIX".into()
        })
    }

    fn build(device: wgpu::Device, queue: wgpu::Queue, ai: &wgpu::AdapterInfo, tensor_cores: TensorCoreState) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let (adapter, backend, device_type) = (ai.name.clone(), ai.backend, ai.device_type);
        let driver = format!("{} {}", ai.driver, ai.driver_info).trim().to_string();
        let limits = device.limits();
        let info = ContextInfo {
            adapter,
            backend,
            device_type,
            driver,
            features: device.features(),
            max_binding: limits.max_storage_buffer_binding_size,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            tensor_cores: tensor_cores.clone(),
        };
        let caps = Caps { subgroup_min_size: ai.subgroup_min_size, ..Caps::new(&limits, device.features()) };
        let cache = PipelineCache::default();
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
        let placeholder_counts = placeholder("wgpu-attention placeholder (counts)");
        Context {
            bindings: None,
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                device,
                queue,
                info,
                tensor_cores: std::sync::Mutex::new(tensor_cores),
                tensor_cores_checked: Default::default(),
                attention_classes: Default::default(),
                tuning: Default::default(),
                tuned: Mutex::new(crate::tuning::TuningTable::new(&crate::tuning::adapter_key(ai))),
                tuning_run: Default::default(),
                built_in: crate::tuning::built_in(&crate::tuning::adapter_key(ai)),
                limits,
                caps,
                cache,
                lost: Default::default(),
                placeholder_read,
                placeholder_write,
                placeholder_counts,
                adapter_info: ai.clone(),
                driver_cache: Default::default(),
                timing: Default::default(),
                uniforms: Default::default(),
                staging: Default::default(),
                scratch: Default::default(),
            }),
        }
    }

    /// Adapter, backend, driver and features in use.
    pub fn info(&self) -> ContextInfo {
        ContextInfo { tensor_cores: self.tensor_cores(), ..self.inner.info.clone() }
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

    /// The limits and features the kernels plan against.
    pub fn caps(&self) -> &Caps {
        &self.inner.caps
    }

    /// Whether f16 storage is available (`SHADER_F16`).
    pub fn supports_f16(&self) -> bool {
        self.inner.caps.f16
    }

    /// Whether this context uses tensor cores now: as `info().tensor_cores` reports, after the
    /// self-check where it has run.
    pub fn tensor_cores(&self) -> TensorCoreState {
        self.inner.tensor_cores.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many kernel pipelines this context has compiled so far (each variant compiles once).
    pub fn compiled_pipelines(&self) -> usize {
        self.inner.cache.compiled()
    }

    /// Marks the device as lost: every later call returns [`Error::DeviceLost`] with `reason`.
    /// For devices wrapped with [`Context::from_device`], call it from your device-lost callback.
    pub fn mark_device_lost(&self, reason: impl Into<String>) {
        let mut lost = self.inner.lost.lock().unwrap_or_else(|e| e.into_inner());
        lost.get_or_insert_with(|| reason.into());
    }

    /// Like [`Context::check_alive`], after letting wgpu deliver a pending device-lost callback
    /// (a non-blocking poll): for calls that would otherwise not notice, such as allocations.
    pub(crate) fn check_alive_now(&self) -> Result<()> {
        self.check_alive()?;
        let _ = self.inner.device.poll(wgpu::PollType::Poll);
        self.check_alive()
    }

    /// `Err(DeviceLost)` once the device was lost.
    pub(crate) fn check_alive(&self) -> Result<()> {
        match &*self.inner.lost.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(why) => Err(Error::DeviceLost(why.clone())),
            None => Ok(()),
        }
    }

    /// This context's id (its tensors, masks and resident tables carry it).
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    /// Whether `id` is this context's (tensors, masks and resident tables carry the id of the
    /// context that made them), else `Err(ForeignTensor)` naming `argument`.
    pub(crate) fn check_owns(&self, argument: &'static str, id: u64) -> Result<()> {
        if id != self.inner.id {
            return Err(Error::ForeignTensor { argument });
        }
        Ok(())
    }

    /// A handle on this context whose calls keep the bind groups they create, so that a call
    /// repeated on the same buffers with the same shapes and options (a decode step over a
    /// resident KV cache, say) binds them again instead of creating them: the last per-call
    /// object a dispatch would otherwise make (uniform blocks are always reused). Tensors, masks
    /// and pipelines are shared with `self` and its other handles.
    ///
    /// The kept bind groups hold the buffers they bind (at most 1024 bind groups, the oldest
    /// dropped first): drop the handle, and every clone of it, to release them.
    ///
    /// ```no_run
    /// # use wgpu_attention::*;
    /// # fn main() -> Result<()> {
    /// let ctx = Context::new_blocking()?;
    /// let step = ctx.with_binding_cache();
    /// let x = ctx.upload(&[0.5f32; 64], Shape::new(1, 1, 4, 16))?;
    /// let out = ctx.zeros(Shape::new(1, 1, 4, 16), Layout::Bhsd, DType::F32)?;
    /// for _ in 0..3 {
    ///     let mut encoder = step.device().create_command_encoder(&Default::default());
    ///     step.encode_attention(&mut encoder, &AttentionCall::new(&x, &x, &x, &out), &AttentionOptions::default())?;
    ///     step.queue().submit([encoder.finish()]);
    /// }
    /// assert!(step.cached_bind_groups() >= 1);
    /// # Ok(()) }
    /// ```
    pub fn with_binding_cache(&self) -> Context {
        Context { inner: self.inner.clone(), bindings: Some(Arc::new(Default::default())) }
    }

    /// Bind groups this handle keeps ([`Context::with_binding_cache`]; 0 for a handle without
    /// a cache).
    pub fn cached_bind_groups(&self) -> usize {
        self.bindings.as_ref().map_or(0, |b| b.len())
    }

    /// Blocks until all submitted work has finished.
    pub fn wait(&self) -> Result<()> {
        self.check_alive()?;
        self.inner.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(e.to_string()))?;
        self.check_alive()
    }

    /// A fresh command encoder (after checking that the device is alive).
    pub(crate) fn encoder(&self) -> Result<wgpu::CommandEncoder> {
        self.check_alive()?;
        Ok(self.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("wgpu-attention") }))
    }

    /// Finishes and submits `enc`; wgpu errors of the submission become `Err`.
    pub(crate) async fn submit_async(&self, enc: wgpu::CommandEncoder) -> Result<()> {
        self.scoped_async(|| {
            self.queue().submit([enc.finish()]);
            Ok(())
        })
        .await
    }

    /// A buffer holding `bytes` (padded to 4 bytes, at least 4), with `usage`. Unlike
    /// `DeviceExt::create_buffer_init`, a failure (out of memory, lost device) is an `Err`.
    pub(crate) async fn buffer_with(
        &self,
        bytes: &[u8],
        usage: wgpu::BufferUsages,
        label: &str,
    ) -> Result<wgpu::Buffer> {
        let size = (bytes.len() as u64).div_ceil(4).max(1) * 4;
        let buffer = self
            .new_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage, mapped_at_creation: true })
            .await?;
        {
            let mut view = buffer.slice(..).get_mapped_range_mut().map_err(|e| self.lost_or(e))?;
            view.slice(..bytes.len()).copy_from_slice(bytes);
        }
        buffer.unmap();
        Ok(buffer)
    }

    /// A new buffer, failures as `Err` (out of memory, lost device). wgpu returns the memory of
    /// dropped buffers only when the device is polled, so an out-of-memory failure polls the
    /// device once (without waiting) and tries again: memory a caller just freed is usable at
    /// once.
    pub(crate) async fn new_buffer(&self, desc: &wgpu::BufferDescriptor<'_>) -> Result<wgpu::Buffer> {
        match self.scoped_async(|| Ok(self.device().create_buffer(desc))).await {
            Err(Error::OutOfMemory(_)) => {
                let _ = self.device().poll(wgpu::PollType::Poll);
                self.scoped_async(|| Ok(self.device().create_buffer(desc))).await
            }
            other => other,
        }
    }

    /// The error for a buffer wgpu reported invalid without a scoped error: on a lost device,
    /// wgpu swallows the errors and leaves invalid objects, so this is how a device the crate
    /// does not watch reveals its loss. Marks the context lost in that case.
    pub(crate) fn lost_or(&self, e: impl std::fmt::Debug) -> Error {
        if let Err(lost) = self.check_alive() {
            return lost;
        }
        let probe = self.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu-attention probe"),
            size: 4,
            usage: wgpu::BufferUsages::MAP_WRITE,
            mapped_at_creation: true,
        });
        let alive = probe.slice(..).get_mapped_range_mut().is_ok();
        if !alive {
            self.mark_device_lost("the device stopped creating valid buffers (lost)");
            if let Err(lost) = self.check_alive() {
                return lost;
            }
        }
        Error::Gpu(format!("{e:?}"))
    }

    /// Records work with `f` into a fresh encoder and submits it, without waiting. wgpu
    /// validation errors of the submission come back as `Err(Error::Gpu)`.
    pub fn record_and_submit(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>) -> Result<()> {
        let mut enc = self.encoder()?;
        f(&mut enc)?;
        pollster::block_on(self.submit_async(enc))
    }

    /// Runs `f` inside validation, out-of-memory and internal error scopes; wgpu errors become
    /// `Err` ([`Error::OutOfMemory`] for allocations the device cannot satisfy).
    ///
    /// wgpu's error scopes belong to the thread that pushed them, so `f` runs and the scopes are
    /// popped before the first `.await`; only the popped scopes' results are awaited (on native
    /// backends they are ready at once, on WebGPU they resolve with the browser's promise).
    pub(crate) async fn scoped_async<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check_alive()?;
        let (out, (v, o, i)) = {
            let dev = &self.inner.device;
            let internal = dev.push_error_scope(wgpu::ErrorFilter::Internal);
            let oom = dev.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let val = dev.push_error_scope(wgpu::ErrorFilter::Validation);
            let out = f();
            (out, (val.pop(), oom.pop(), internal.pop()))
        };
        let (v, o, i) = futures::join!(v, o, i);
        if let Some(e) = o.or(v).or(i) {
            return Err(Error::from_wgpu(e));
        }
        self.check_alive()?;
        out
    }

    /// Blocking twin of [`Context::scoped_async`], for the `encode_*` calls (which record into a
    /// caller's encoder and have no async form): on native backends the popped scopes are ready
    /// at once, so nothing waits.
    pub(crate) fn scoped<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        pollster::block_on(self.scoped_async(f))
    }
}
