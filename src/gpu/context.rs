//! Adapter and device selection, and the context every op takes.
//!
//! Selection honors `--backend` / `--adapter` / `--power` (see [`AdapterOptions`])
//! and, when those are not given, the `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and
//! `WGPU_POWER_PREF` variables. A hardware GPU is preferred; a CPU software
//! adapter (llvmpipe on GL, lavapipe on Vulkan, WARP on DX12) is the fallback.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::buffers::Staging;
use crate::gpu::kernels::{Kernel, PipelineKey};

/// Limits every kernel of this crate stays within (see DESIGN.md: at most 8
/// storage buffers, 256 invocations and 16 KiB of workgroup memory).
pub const REQUIRED_STORAGE_BUFFERS_PER_STAGE: u32 = 8;
pub const REQUIRED_INVOCATIONS_PER_WORKGROUP: u32 = 256;
pub const REQUIRED_WORKGROUP_STORAGE_BYTES: u32 = 16384;

/// How the user asked for an adapter. `None` fields fall back to the
/// `WGPU_*` environment variables, then to automatic choice.
#[derive(Clone, Debug, Default)]
pub struct AdapterOptions {
    /// Backend name: `vulkan`, `gl`, `metal`, `dx12` (comma-separated list allowed).
    pub backend: Option<String>,
    /// Case-insensitive substring of the adapter name, e.g. `llvmpipe`, `nvidia`.
    pub adapter: Option<String>,
    /// `high` (default) or `low` power preference.
    pub power: Option<String>,
}

/// A description of one adapter, for listing and logging.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub is_software: bool,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_storage_buffers_per_shader_stage: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_workgroups_per_dimension: u32,
}

impl AdapterSummary {
    fn new(adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let limits = adapter.limits();
        AdapterSummary {
            name: info.name.clone(),
            backend: backend_name(info.backend).to_string(),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            is_software: info.device_type == wgpu::DeviceType::Cpu,
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        }
    }

    /// One line: `name (backend, type, driver)`.
    pub fn describe(&self) -> String {
        let driver = if self.driver_info.is_empty() {
            self.driver.clone()
        } else {
            format!("{} {}", self.driver, self.driver_info)
        };
        format!(
            "{} ({}, {}, {})",
            self.name,
            self.backend,
            self.device_type,
            driver.trim()
        )
    }
}

fn backend_name(backend: wgpu::Backend) -> &'static str {
    match backend {
        wgpu::Backend::Vulkan => "vulkan",
        wgpu::Backend::Metal => "metal",
        wgpu::Backend::Dx12 => "dx12",
        wgpu::Backend::Gl => "gl",
        wgpu::Backend::BrowserWebGpu => "webgpu",
        wgpu::Backend::Noop => "noop",
    }
}

/// Parses a backend list like `vulkan`, `gl`, `vulkan,gl`; errors name the value.
fn parse_backends(value: &str, source: &str) -> Result<wgpu::Backends> {
    let mut backends = wgpu::Backends::empty();
    for part in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        backends |= match part.to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "all" => wgpu::Backends::all(),
            _ => {
                return Err(Error::config(
                    source,
                    value,
                    "expected a comma-separated list of vulkan, gl, metal, dx12",
                ))
            }
        };
    }
    if backends.is_empty() {
        return Err(Error::config(source, value, "no backend named"));
    }
    Ok(backends)
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

struct Selection {
    backends: wgpu::Backends,
    name_filter: Option<String>,
    low_power: bool,
}

impl AdapterOptions {
    fn resolve(&self) -> Result<Selection> {
        let backends = match (&self.backend, env_nonempty("WGPU_BACKEND")) {
            (Some(b), _) => parse_backends(b, "--backend")?,
            (None, Some(b)) => parse_backends(&b, "WGPU_BACKEND")?,
            (None, None) => wgpu::Backends::all(),
        };
        let name_filter = self
            .adapter
            .clone()
            .or_else(|| env_nonempty("WGPU_ADAPTER_NAME"))
            .map(|s| s.to_lowercase());
        let power = match (&self.power, env_nonempty("WGPU_POWER_PREF")) {
            (Some(p), _) => Some(("--power", p.clone())),
            (None, Some(p)) => Some(("WGPU_POWER_PREF", p)),
            (None, None) => None,
        };
        let low_power = match power {
            None => false,
            Some((source, value)) => match value.to_lowercase().as_str() {
                "low" | "low-power" | "lowpower" => true,
                "high" | "high-performance" | "highperformance" => false,
                _ => return Err(Error::config(source, value, "expected 'low' or 'high'")),
            },
        };
        Ok(Selection {
            backends,
            name_filter,
            low_power,
        })
    }
}

/// Ranks adapters: lower is better. Hardware before software; with a low
/// power preference integrated before discrete. Among hardware adapters,
/// native backends before GL (wgpu's GL compute path is the most
/// restricted); among CPU adapters GL first: Mesa's llvmpipe through GL ran
/// our training 1.1-1.3x faster than lavapipe (Vulkan) with Mesa 25, and
/// Debian 12's lavapipe 22.3 took ~850 us per submit against GL's ~30 us.
fn adapter_rank(info: &wgpu::AdapterInfo, low_power: bool) -> (u8, u8) {
    let type_rank = match (info.device_type, low_power) {
        (wgpu::DeviceType::DiscreteGpu, false) => 0,
        (wgpu::DeviceType::IntegratedGpu, false) => 1,
        (wgpu::DeviceType::IntegratedGpu, true) => 0,
        (wgpu::DeviceType::DiscreteGpu, true) => 1,
        (wgpu::DeviceType::VirtualGpu, _) => 2,
        (wgpu::DeviceType::Other, _) => 3,
        (wgpu::DeviceType::Cpu, _) => 4,
    };
    let software = info.device_type == wgpu::DeviceType::Cpu;
    let backend_rank = match (info.backend, software) {
        (wgpu::Backend::Gl, true) => 0,
        (wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12, _) => 1,
        (wgpu::Backend::Gl, false) => 2,
        _ => 3,
    };
    (type_rank, backend_rank)
}

fn new_instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle();
    descriptor.backends = backends;
    wgpu::Instance::new(descriptor)
}

/// Every adapter visible for the selection's backends, each with a flag
/// marking the one [`GpuContext::new`] would choose.
pub fn list_adapters(options: &AdapterOptions) -> Result<Vec<(AdapterSummary, bool)>> {
    let selection = options.resolve()?;
    let instance = new_instance(selection.backends);
    let adapters = pollster::block_on(instance.enumerate_adapters(selection.backends));
    let chosen = choose(&adapters, &selection).ok();
    Ok(adapters
        .iter()
        .enumerate()
        .map(|(i, a)| (AdapterSummary::new(a), Some(i) == chosen))
        .collect())
}

fn no_adapter_hint() -> String {
    "On Linux, install a software adapter: `apt-get install mesa-vulkan-drivers` \
     (lavapipe, Vulkan) or `libegl-mesa0 libgl1-mesa-dri` (llvmpipe, GL); \
     `ppo-wgpu adapters` lists what is visible. WGPU_BACKEND=gl or \
     WGPU_BACKEND=vulkan picks a backend."
        .to_string()
}

/// Picks the best adapter; returns its index, or an error listing what exists.
fn choose(adapters: &[wgpu::Adapter], selection: &Selection) -> Result<usize> {
    let candidates: Vec<usize> = (0..adapters.len())
        .filter(|&i| match &selection.name_filter {
            Some(filter) => adapters[i].get_info().name.to_lowercase().contains(filter),
            None => true,
        })
        .collect();
    let best = candidates
        .iter()
        .copied()
        .min_by_key(|&i| adapter_rank(&adapters[i].get_info(), selection.low_power));
    match best {
        Some(i) => Ok(i),
        None => {
            let mut filter = match &selection.name_filter {
                Some(f) => format!(" matching '{f}'"),
                None => String::new(),
            };
            if selection.backends != wgpu::Backends::all() {
                filter.push_str(&format!(" on backends {:?}", selection.backends));
            }
            let hint = if adapters.is_empty() {
                no_adapter_hint()
            } else {
                let names: Vec<String> = adapters
                    .iter()
                    .map(|a| format!("  - {}", AdapterSummary::new(a).describe()))
                    .collect();
                format!("Adapters present:\n{}", names.join("\n"))
            };
            Err(Error::NoAdapter { filter, hint })
        }
    }
}

/// The device, queue and pipeline cache shared by every op.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pub limits: wgpu::Limits,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    layouts: Mutex<HashMap<Kernel, Arc<wgpu::BindGroupLayout>>>,
    staging: Staging,
    submissions: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.adapter.describe())
            .finish()
    }
}

/// Checks that the adapter gives at least `needed` of a limit.
fn require(adapter: &AdapterSummary, what: &str, needed: u64, available: u64) -> Result<()> {
    if available < needed {
        return Err(Error::AdapterLimit {
            adapter: adapter.describe(),
            what: what.to_string(),
            needed,
            available,
        });
    }
    Ok(())
}

impl GpuContext {
    /// Submits `commands` to the queue, counting the submission
    /// ([`GpuContext::submissions`]). Every submission of the crate goes
    /// through here or [`GpuContext::submit`].
    pub fn submit_commands(&self, commands: wgpu::CommandBuffer) -> wgpu::SubmissionIndex {
        self.submissions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.queue.submit([commands])
    }

    /// Queue submissions made through [`GpuContext::submit_commands`] so far.
    pub fn submissions(&self) -> u64 {
        self.submissions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Picks an adapter (see module docs) and opens a device on it.
    pub fn new(options: &AdapterOptions) -> Result<Self> {
        let selection = options.resolve()?;
        let instance = new_instance(selection.backends);
        let mut adapters = pollster::block_on(instance.enumerate_adapters(selection.backends));
        let index = choose(&adapters, &selection)?;
        let adapter = adapters.swap_remove(index);
        Self::from_adapter(adapter)
    }

    /// Opens a device on a given adapter, requesting the limits the kernels need.
    pub fn from_adapter(adapter: wgpu::Adapter) -> Result<Self> {
        let summary = AdapterSummary::new(&adapter);
        let available = adapter.limits();
        require(
            &summary,
            "max_storage_buffers_per_shader_stage",
            REQUIRED_STORAGE_BUFFERS_PER_STAGE as u64,
            available.max_storage_buffers_per_shader_stage as u64,
        )?;
        require(
            &summary,
            "max_compute_invocations_per_workgroup",
            REQUIRED_INVOCATIONS_PER_WORKGROUP as u64,
            available.max_compute_invocations_per_workgroup as u64,
        )?;
        require(
            &summary,
            "max_compute_workgroup_size_x",
            REQUIRED_INVOCATIONS_PER_WORKGROUP as u64,
            available.max_compute_workgroup_size_x as u64,
        )?;
        require(
            &summary,
            "max_compute_workgroup_storage_size",
            REQUIRED_WORKGROUP_STORAGE_BYTES as u64,
            available.max_compute_workgroup_storage_size as u64,
        )?;
        // Start from the portable downlevel set, then take the adapter's full
        // buffer sizes and grid so large populations fit where the adapter allows.
        let mut limits = wgpu::Limits::downlevel_defaults();
        // What the layered kernels need, or up to 16 where the adapter has
        // them: the fused rollout binds 10 (`ppo::fused`), and falls back
        // to the layered path below that.
        limits.max_storage_buffers_per_shader_stage = available
            .max_storage_buffers_per_shader_stage
            .clamp(REQUIRED_STORAGE_BUFFERS_PER_STAGE, 16);
        limits.max_compute_invocations_per_workgroup = REQUIRED_INVOCATIONS_PER_WORKGROUP;
        limits.max_compute_workgroup_size_x = REQUIRED_INVOCATIONS_PER_WORKGROUP;
        limits.max_compute_workgroup_storage_size = REQUIRED_WORKGROUP_STORAGE_BYTES;
        limits.max_storage_buffer_binding_size = available.max_storage_buffer_binding_size;
        // Up to 64 KiB of uniforms where the adapter allows: the lanes
        // rollout reads one agent's weights from a uniform block (`ppo::fused`).
        limits.max_uniform_buffer_binding_size = available
            .max_uniform_buffer_binding_size
            .clamp(limits.max_uniform_buffer_binding_size, 65536);
        limits.max_buffer_size = available.max_buffer_size;
        limits.max_compute_workgroups_per_dimension =
            available.max_compute_workgroups_per_dimension;
        let descriptor = wgpu::DeviceDescriptor {
            label: Some("ppo-wgpu"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) =
            pollster::block_on(adapter.request_device(&descriptor)).map_err(|e| Error::Device {
                adapter: summary.describe(),
                reason: e.to_string(),
            })?;
        // Errors we do not capture in a scope are reported, not turned into panics;
        // every op validates its inputs before recording, so this is a last resort.
        device.on_uncaptured_error(Arc::new(|e| {
            eprintln!("ppo-wgpu: uncaptured wgpu error: {e}");
        }));
        Ok(GpuContext {
            device,
            queue,
            adapter: summary,
            limits,
            pipelines: Mutex::new(HashMap::new()),
            layouts: Mutex::new(HashMap::new()),
            staging: Staging::new(),
            submissions: Default::default(),
        })
    }

    /// The compute pipeline for a kernel with the given override constants,
    /// created on first use and cached afterwards.
    pub fn pipeline(
        &self,
        kernel: Kernel,
        entry_point: &'static str,
        constants: &[(&'static str, u32)],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = PipelineKey::new(kernel, entry_point, constants);
        if let Some(found) = self.pipelines.lock().expect("pipeline cache").get(&key) {
            return Ok(found.clone());
        }
        let layout = self.bind_group_layout(kernel);
        let pipeline = Arc::new(crate::gpu::kernels::create_pipeline(
            &self.device,
            kernel,
            entry_point,
            constants,
            &layout,
        )?);
        self.pipelines
            .lock()
            .expect("pipeline cache")
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// The explicit bind-group layout of a kernel (one per kernel, shared by its entry points).
    pub fn bind_group_layout(&self, kernel: Kernel) -> Arc<wgpu::BindGroupLayout> {
        let mut layouts = self.layouts.lock().expect("layout cache");
        layouts
            .entry(kernel)
            .or_insert_with(|| {
                Arc::new(crate::gpu::kernels::create_bind_group_layout(
                    &self.device,
                    kernel,
                ))
            })
            .clone()
    }

    /// Number of pipelines in the cache (for tests and diagnostics).
    pub fn cached_pipeline_count(&self) -> usize {
        self.pipelines.lock().expect("pipeline cache").len()
    }

    /// Submits one command buffer recorded by `record` and returns without waiting.
    pub fn submit(&self, label: &str, record: impl FnOnce(&mut wgpu::CommandEncoder)) {
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        record(&mut encoder);
        self.submit_commands(encoder.finish());
    }

    /// Blocks until all submitted work has finished.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Gpu {
                op: "device poll".into(),
                reason: e.to_string(),
            })
    }

    pub(crate) fn staging(&self) -> &Staging {
        &self.staging
    }

    /// The largest storage binding, in bytes, this device allows.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size
    }
}
