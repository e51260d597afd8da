//! The kernel registry: every WGSL entry point this crate dispatches, its
//! source, its explicit bind-group layout, and pipeline creation inside an
//! error scope so a bad shader is an `Err` naming it, never a panic.

use crate::error::{Error, Result};

/// How a kernel sees one binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// A small uniform block of dimensions and scalars.
    Uniform,
    /// A storage buffer the kernel only reads.
    Read,
    /// A storage buffer the kernel writes.
    ReadWrite,
}

/// A shader file under `shaders/`, embedded at compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShaderFile {
    pub name: &'static str,
    pub source: &'static str,
}

macro_rules! shader_files {
    ($($ident:ident => $file:literal $(+ $lib:literal)*),* $(,)?) => {
        $(pub const $ident: ShaderFile = ShaderFile {
            name: $file,
            source: concat!(
                include_str!(concat!("../../shaders/", $file))
                $(, include_str!(concat!("../../shaders/", $lib)))*
            ),
        };)*
        /// Every kernel shader of the crate, each composed with the library
        /// modules it includes (the naga portability test walks these and
        /// checks that no file in `shaders/` is missing from them or from
        /// [`LIBRARY_SHADERS`]).
        pub const ALL_SHADERS: &[ShaderFile] = &[$($ident),*];
    };
}

macro_rules! library_files {
    ($($(#[doc = $doc:literal])* $ident:ident => $file:literal),* $(,)?) => {
        $($(#[doc = $doc])*
        pub const $ident: ShaderFile = ShaderFile {
            name: $file,
            source: include_str!(concat!("../../shaders/", $file)),
        };)*
        /// Every library module and template.
        pub const LIBRARY_SHADERS: &[ShaderFile] = &[$($ident),*];
    };
}

// Library modules (no entry point), included into kernels: WGSL resolves
// module-scope names regardless of order, so a kernel is its own file
// followed by the libraries it uses.
library_files! {
    /// The counter-based hash every device draw goes through.
    RNG_WGSL => "rng.wgsl",
    /// The CartPole device env: the seam every device env implements (see its header).
    ENV_CARTPOLE_WGSL => "env_cartpole.wgsl",
    /// The fused rollout's template (one env per invocation): composed at run
    /// time with rollout_common.wgsl, rng.wgsl, a device env and the policy's
    /// generated forward functions (`ppo::fused`).
    ROLLOUT_FUSED_WGSL => "rollout_fused.wgsl",
    /// The lanes layout's template (one env's hidden units across a workgroup).
    ROLLOUT_LANES_WGSL => "rollout_lanes.wgsl",
    /// What both fused rollout templates share: bindings, sampling, env step writes.
    ROLLOUT_COMMON_WGSL => "rollout_common.wgsl",
    /// One rollout step for host envs in one dispatch (the lanes layout's forward).
    POLICY_LANES_WGSL => "policy_lanes.wgsl",
    /// The fused update's row pass (forward, loss, backward to every layer's
    /// delta; template composed with generated code in `ppo::fused_update`).
    UPDATE_ROWS_WGSL => "update_rows.wgsl",
    /// The PPO loss's per-row terms and logit gradient (ppo_loss.wgsl and
    /// both fused updates).
    PPO_LOSS_TERMS_WGSL => "ppo_loss_terms.wgsl",
    /// One GAE step as an affine map (gae.wgsl, update_linear.wgsl).
    GAE_MAP_WGSL => "gae_map.wgsl",
    /// A batch's explained variance (stats.wgsl, update_linear.wgsl).
    EXPLAINED_VARIANCE_WGSL => "explained_variance.wgsl",
    /// The per-agent reductions' state, workgroup sum and row means (stats.wgsl, optim.wgsl).
    AGENT_LANES_WGSL => "agent_lanes.wgsl",
}

shader_files! {
    LINEAR_FORWARD_WGSL => "linear_forward.wgsl",
    LINEAR_BACKWARD_WGSL => "linear_backward.wgsl",
    CATEGORICAL_WGSL => "categorical.wgsl",
    GAE_WGSL => "gae.wgsl" + "gae_map.wgsl",
    GATHER_WGSL => "gather.wgsl",
    PPO_LOSS_WGSL => "ppo_loss.wgsl" + "ppo_loss_terms.wgsl",
    STATS_WGSL => "stats.wgsl" + "explained_variance.wgsl" + "agent_lanes.wgsl",
    OPTIM_WGSL => "optim.wgsl" + "agent_lanes.wgsl",
    META_WGSL => "meta.wgsl",
    CONTEXT_WGSL => "context.wgsl",
    UPDATE_GRADS_WGSL => "update_grads.wgsl",
    UPDATE_LINEAR_WGSL => "update_linear.wgsl" + "gae_map.wgsl" + "explained_variance.wgsl"
        + "ppo_loss_terms.wgsl",
    CARTPOLE_WGSL => "cartpole.wgsl" + "rng.wgsl" + "env_cartpole.wgsl",
}

/// One dispatchable entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kernel {
    LinearForward,
    LinearForward8x8,
    LinearBackwardData,
    LinearBackwardData8x8,
    LinearBackwardWeights,
    LinearBackwardWeights8x8,
    LinearGradReduce,
    CategoricalSample,
    GaeSequential,
    GaeScan,
    GatherMinibatch,
    PpoLoss,
    AdvNorm,
    AdvMoments,
    RowStatsMean,
    ExplainedVariance,
    GradNorm,
    Adam,
    OptimizerStep,
    ReptileOuter,
    FomamlOuter,
    ContextAccumulate,
    ContextStep,
    ContextApply,
    ContextReset,
    ContextCollect,
    CartPoleStep,
    UpdateGrads,
    UpdateLinear,
}

/// How a kernel's grid is sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One invocation per work item, workgroups of the `WORKGROUP_SIZE`
    /// override constant.
    PerItem,
    /// One workgroup of a fixed size per work item (reductions).
    PerWorkgroup(u32),
}

/// What the registry knows about a kernel.
#[derive(Clone, Copy, Debug)]
pub struct KernelSpec {
    pub shader: ShaderFile,
    pub entry_point: &'static str,
    /// `(binding index, kind)` for each binding the entry point uses, group 0.
    pub bindings: &'static [(u32, Binding)],
    pub shape: Shape,
}

use Binding::{Read, ReadWrite, Uniform};

impl Kernel {
    /// Every kernel, for tests that build each pipeline.
    pub const ALL: &'static [Kernel] = &[
        Kernel::LinearForward,
        Kernel::LinearForward8x8,
        Kernel::LinearBackwardData,
        Kernel::LinearBackwardData8x8,
        Kernel::LinearBackwardWeights,
        Kernel::LinearBackwardWeights8x8,
        Kernel::LinearGradReduce,
        Kernel::CategoricalSample,
        Kernel::GaeSequential,
        Kernel::GaeScan,
        Kernel::GatherMinibatch,
        Kernel::PpoLoss,
        Kernel::AdvNorm,
        Kernel::AdvMoments,
        Kernel::RowStatsMean,
        Kernel::ExplainedVariance,
        Kernel::GradNorm,
        Kernel::Adam,
        Kernel::OptimizerStep,
        Kernel::ReptileOuter,
        Kernel::FomamlOuter,
        Kernel::ContextAccumulate,
        Kernel::ContextStep,
        Kernel::ContextApply,
        Kernel::ContextReset,
        Kernel::ContextCollect,
        Kernel::CartPoleStep,
        Kernel::UpdateGrads,
        Kernel::UpdateLinear,
    ];

    pub fn spec(self) -> KernelSpec {
        let (shader, entry_point, bindings, shape): (_, _, &'static [(u32, Binding)], _) =
            match self {
                Kernel::LinearForward => (
                    LINEAR_FORWARD_WGSL,
                    "linear_forward",
                    &[(0, Uniform), (1, Read), (2, Read), (3, ReadWrite)],
                    Shape::PerItem,
                ),
                Kernel::LinearForward8x8 => (
                    LINEAR_FORWARD_WGSL,
                    "linear_forward_8x8",
                    &[(0, Uniform), (1, Read), (2, Read), (3, ReadWrite)],
                    Shape::PerItem,
                ),
                Kernel::LinearBackwardData => (
                    LINEAR_BACKWARD_WGSL,
                    "linear_backward_data",
                    &[
                        (0, Uniform),
                        (2, Read),
                        (3, Read),
                        (4, Read),
                        (5, ReadWrite),
                    ],
                    Shape::PerItem,
                ),
                Kernel::LinearBackwardData8x8 => (
                    LINEAR_BACKWARD_WGSL,
                    "linear_backward_data_8x8",
                    &[
                        (0, Uniform),
                        (2, Read),
                        (3, Read),
                        (4, Read),
                        (5, ReadWrite),
                    ],
                    Shape::PerItem,
                ),
                Kernel::LinearBackwardWeights => (
                    LINEAR_BACKWARD_WGSL,
                    "linear_backward_weights",
                    &[
                        (0, Uniform),
                        (1, Read),
                        (3, Read),
                        (4, Read),
                        (7, ReadWrite),
                    ],
                    Shape::PerItem,
                ),
                Kernel::LinearBackwardWeights8x8 => (
                    LINEAR_BACKWARD_WGSL,
                    "linear_backward_weights_8x8",
                    &[
                        (0, Uniform),
                        (1, Read),
                        (3, Read),
                        (4, Read),
                        (7, ReadWrite),
                    ],
                    Shape::PerItem,
                ),
                Kernel::LinearGradReduce => (
                    LINEAR_BACKWARD_WGSL,
                    "linear_grad_reduce",
                    &[(0, Uniform), (7, ReadWrite), (6, ReadWrite)],
                    Shape::PerItem,
                ),
                Kernel::CategoricalSample => (
                    CATEGORICAL_WGSL,
                    "categorical_sample",
                    &[
                        (0, Uniform),
                        (1, Read),
                        (2, Read),
                        (3, ReadWrite),
                        (4, ReadWrite),
                    ],
                    Shape::PerItem,
                ),
                Kernel::GaeSequential => (
                    GAE_WGSL,
                    "gae_sequential",
                    &[
                        (0, Uniform),
                        (1, Read),
                        (2, Read),
                        (3, Read),
                        (4, Read),
                        (5, ReadWrite),
                    ],
                    Shape::PerItem,
                ),
                Kernel::GaeScan => (
                    GAE_WGSL,
                    "gae_scan",
                    &[
                        (0, Uniform),
                        (1, Read),
                        (2, Read),
                        (3, Read),
                        (4, Read),
                        (5, ReadWrite),
                    ],
                    Shape::PerWorkgroup(256),
                ),
                Kernel::GatherMinibatch => (
                    GATHER_WGSL,
                    "gather_minibatch",
                    &[
                        (0, Uniform),
                        (1, Read),
                        (2, Read),
                        (3, Read),
                        (4, ReadWrite),
                        (5, ReadWrite),
                    ],
                    Shape::PerItem,
                ),
                Kernel::UpdateGrads => (
                    UPDATE_GRADS_WGSL,
                    "update_grads",
                    &[(0, Uniform), (1, Read), (2, Read), (3, ReadWrite)],
                    Shape::PerItem,
                ),
                Kernel::UpdateLinear => (
                    UPDATE_LINEAR_WGSL,
                    "update_linear",
                    &[
                        (0, Uniform),
                        (1, Read),
                        (2, Read),
                        (3, ReadWrite),
                        (4, ReadWrite),
                        (5, ReadWrite),
                        (6, ReadWrite),
                        (7, ReadWrite),
                        (8, ReadWrite),
                        (9, ReadWrite),
                        (10, Read),
                        (11, Read),
                        (12, Read),
                        (13, Read),
                        (14, ReadWrite),
                    ],
                    Shape::PerWorkgroup(32),
                ),
                Kernel::PpoLoss => (
                    PPO_LOSS_WGSL,
                    "ppo_loss",
                    &[
                        (0, Uniform),
                        (1, Read),
                        (2, Read),
                        (3, Read),
                        (4, ReadWrite),
                        (5, ReadWrite),
                        (6, ReadWrite),
                    ],
                    Shape::PerItem,
                ),
                Kernel::AdvNorm => (
                    STATS_WGSL,
                    "adv_norm",
                    &[(0, Uniform), (6, ReadWrite)],
                    Shape::PerWorkgroup(64),
                ),
                Kernel::AdvMoments => (
                    STATS_WGSL,
                    "adv_moments",
                    &[(0, Uniform), (4, Read), (7, Read), (8, ReadWrite)],
                    Shape::PerWorkgroup(64),
                ),
                Kernel::RowStatsMean => (
                    STATS_WGSL,
                    "row_stats_mean",
                    &[(0, Uniform), (1, Read), (2, ReadWrite), (3, ReadWrite)],
                    Shape::PerWorkgroup(64),
                ),
                Kernel::ExplainedVariance => (
                    STATS_WGSL,
                    "explained_variance",
                    &[(0, Uniform), (4, Read), (5, ReadWrite)],
                    Shape::PerWorkgroup(64),
                ),
                Kernel::GradNorm => (
                    OPTIM_WGSL,
                    "grad_norm",
                    &[(0, Uniform), (1, Read), (2, ReadWrite)],
                    Shape::PerWorkgroup(64),
                ),
                Kernel::Adam => (
                    OPTIM_WGSL,
                    "adam",
                    &[
                        (0, Uniform),
                        (1, Read),
                        (2, ReadWrite),
                        (3, ReadWrite),
                        (4, ReadWrite),
                        (5, ReadWrite),
                    ],
                    Shape::PerItem,
                ),
                Kernel::OptimizerStep => (
                    OPTIM_WGSL,
                    "optimizer_step",
                    &[
                        (0, Uniform),
                        (1, Read),
                        (2, ReadWrite),
                        (3, ReadWrite),
                        (4, ReadWrite),
                        (5, ReadWrite),
                        (6, Read),
                        (7, ReadWrite),
                    ],
                    Shape::PerWorkgroup(64),
                ),
                Kernel::ReptileOuter => (
                    META_WGSL,
                    "reptile_outer",
                    &[(0, Uniform), (2, ReadWrite), (3, ReadWrite)],
                    Shape::PerItem,
                ),
                Kernel::FomamlOuter => (
                    META_WGSL,
                    "fomaml_outer",
                    &[
                        (0, Uniform),
                        (1, Read),
                        (2, ReadWrite),
                        (3, ReadWrite),
                        (4, ReadWrite),
                        (5, ReadWrite),
                    ],
                    Shape::PerItem,
                ),
                Kernel::ContextAccumulate => (
                    CONTEXT_WGSL,
                    "context_accumulate",
                    &[(0, Uniform), (1, Read), (4, ReadWrite), (7, ReadWrite)],
                    Shape::PerItem,
                ),
                Kernel::ContextStep => (
                    CONTEXT_WGSL,
                    "context_step",
                    &[(0, Uniform), (2, Read), (6, ReadWrite), (7, ReadWrite)],
                    Shape::PerItem,
                ),
                Kernel::ContextApply => (
                    CONTEXT_WGSL,
                    "context_apply",
                    &[
                        (0, Uniform),
                        (3, ReadWrite),
                        (4, ReadWrite),
                        (5, ReadWrite),
                        (6, ReadWrite),
                    ],
                    Shape::PerItem,
                ),
                Kernel::ContextReset => (
                    CONTEXT_WGSL,
                    "context_reset",
                    &[
                        (0, Uniform),
                        (3, ReadWrite),
                        (5, ReadWrite),
                        (6, ReadWrite),
                        (7, ReadWrite),
                    ],
                    Shape::PerItem,
                ),
                Kernel::ContextCollect => (
                    CONTEXT_WGSL,
                    "context_collect",
                    &[
                        (0, Uniform),
                        (1, Read),
                        (6, ReadWrite),
                        (8, ReadWrite),
                        (9, ReadWrite),
                    ],
                    Shape::PerItem,
                ),
                Kernel::CartPoleStep => (
                    CARTPOLE_WGSL,
                    "cartpole_step",
                    &[
                        (0, Uniform),
                        (1, Read),
                        (2, Read),
                        (3, ReadWrite),
                        (4, ReadWrite),
                        (5, ReadWrite),
                        (6, ReadWrite),
                        (7, ReadWrite),
                        (8, ReadWrite),
                    ],
                    Shape::PerItem,
                ),
            };
        KernelSpec {
            shader,
            entry_point,
            bindings,
            shape,
        }
    }

    pub fn name(self) -> &'static str {
        self.spec().entry_point
    }
}

/// Cache key: kernel, entry point and the override constants' values.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    kernel: Kernel,
    entry_point: &'static str,
    constants: Vec<(&'static str, u32)>,
}

impl PipelineKey {
    pub fn new(
        kernel: Kernel,
        entry_point: &'static str,
        constants: &[(&'static str, u32)],
    ) -> Self {
        let mut constants = constants.to_vec();
        constants.sort();
        PipelineKey {
            kernel,
            entry_point,
            constants,
        }
    }
}

pub(crate) fn create_bind_group_layout(
    device: &wgpu::Device,
    kernel: Kernel,
) -> wgpu::BindGroupLayout {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = kernel
        .spec()
        .bindings
        .iter()
        .map(|&(binding, kind)| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match kind {
                    Binding::Uniform => wgpu::BufferBindingType::Uniform,
                    Binding::Read => wgpu::BufferBindingType::Storage { read_only: true },
                    Binding::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(kernel.name()),
        entries: &entries,
    })
}

pub(crate) fn create_pipeline(
    device: &wgpu::Device,
    kernel: Kernel,
    entry_point: &'static str,
    constants: &[(&'static str, u32)],
    layout: &wgpu::BindGroupLayout,
) -> Result<wgpu::ComputePipeline> {
    let spec = kernel.spec();
    create_pipeline_from_source(
        device,
        spec.shader.name,
        spec.shader.source,
        entry_point,
        constants,
        layout,
    )
}

/// Compiles `source` and builds a compute pipeline for `entry_point` inside a
/// validation error scope: any shader or pipeline error comes back as
/// [`Error::Shader`] naming `shader_name`.
pub fn create_pipeline_from_source(
    device: &wgpu::Device,
    shader_name: &str,
    source: &str,
    entry_point: &str,
    constants: &[(&str, u32)],
    layout: &wgpu::BindGroupLayout,
) -> Result<wgpu::ComputePipeline> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(shader_name),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(shader_name),
        bind_group_layouts: &[Some(layout)],
        immediate_size: 0,
    });
    let constants_f64: Vec<(&str, f64)> = constants.iter().map(|&(k, v)| (k, v as f64)).collect();
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry_point),
        layout: Some(&pipeline_layout),
        module: &module,
        entry_point: Some(entry_point),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &constants_f64,
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    });
    if let Some(error) = pollster::block_on(scope.pop()) {
        return Err(Error::Shader {
            shader: shader_name.to_string(),
            entry_point: entry_point.to_string(),
            reason: error.to_string(),
        });
    }
    Ok(pipeline)
}

/// Workgroup grid for `invocations` threads in 1-D workgroups of `workgroup_size`,
/// folded into two dimensions when it exceeds `max_per_dimension`. Kernels
/// compute their linear index as `gid.x + gid.y * num_workgroups.x * size`.
pub fn grid_1d(invocations: u64, workgroup_size: u32, max_per_dimension: u32) -> (u32, u32) {
    let groups = invocations.div_ceil(workgroup_size as u64).max(1);
    if groups <= max_per_dimension as u64 {
        (groups as u32, 1)
    } else {
        let y = groups.div_ceil(max_per_dimension as u64);
        (groups.div_ceil(y) as u32, y as u32)
    }
}
