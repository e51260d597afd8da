//! The fused rollout: T steps of P × N device envs (policy forward, sampling,
//! env step and auto-reset, the critic on truncated final observations and
//! every rollout write) in one dispatch, instead of ~8 dispatches per step.
//!
//! Two layouts ([`FusedLayout`]), chosen by size:
//! - [`FusedLayout::PerEnv`] (`shaders/rollout_fused.wgsl`): one env per
//!   invocation; the policy's forward functions are generated here for the
//!   network's exact sizes (inner products up to [`UNROLL_LIMIT`] inputs
//!   unrolled, so the compiler keeps activations in registers). Taken for
//!   the linear policy, and on GPUs for networks too big for the lanes
//!   layout's uniform weights with many envs; on llvmpipe its 64-64 kernel
//!   compiles for 8-19 s.
//! - [`FusedLayout::Lanes`] (`shaders/rollout_lanes.wgsl`): the hidden units
//!   of 1-4 envs spread across the [`LANES_WG`] lanes of one workgroup,
//!   activations in workgroup memory, a barrier between layers, each
//!   agent's weights in a uniform block where they fit (a dispatch per
//!   agent, [`UNIFORM_MAX_AGENTS`]). It fills the SIMD batches that few
//!   envs leave empty (29× the layered path at 4 envs on Mesa 25 GL), still
//!   wins at 512 (1.3×), and compiles in 0.4-2 s.
//!
//! [`FusedPolicyStep`] (`shaders/policy_lanes.wgsl`) is one step of the
//! lanes forward and sampling for envs on the host, one dispatch per step.
//!
//! All keep `linear_forward`'s accumulation order (bias, then inputs
//! ascending), so values equal the layered path's to float rounding and the
//! sampled actions are the same.
//!
//! llvmpipe (Mesa 22.3) silently stops an invocation's loop nest after
//! 65,535 iterations; on CPU adapters the rollout is split into dispatches
//! of at most [`CPU_LOOP_BUDGET`] counted iterations each (a dispatch
//! boundary is a fresh invocation).

use std::fmt::Write;

use crate::env::gpu_cartpole::{CartPoleLimits32, CartPolePhysics32};
use crate::env::CartPoleState32;
use crate::error::{Error, Result};
use crate::gpu::buffers::UniformBuffer;
use crate::gpu::kernels::{
    create_pipeline_from_source, grid_1d, ENV_CARTPOLE_WGSL, POLICY_LANES_WGSL, RNG_WGSL,
    ROLLOUT_COMMON_WGSL, ROLLOUT_FUSED_WGSL, ROLLOUT_LANES_WGSL,
};
use crate::gpu::{GpuBuffer, GpuContext, WORKGROUP_SIZE};
use crate::nn::{LayerLayout, MlpSpec};
use crate::ops::categorical::SampleKey;

use super::ActorCriticSpec;

/// Widest hidden layer the fused rollout takes; wider networks use the
/// layered path (their forward is better served by the blocked GEMM kernels).
pub const MAX_FUSED_HIDDEN: usize = 256;
/// Inner products of up to this many inputs are fully unrolled.
pub const UNROLL_LIMIT: usize = 64;
/// Inner products longer than [`UNROLL_LIMIT`] are unrolled by this much.
const CHUNK: usize = 16;
/// Loop iterations one invocation may run on a CPU adapter (llvmpipe 22.3
/// stops at 65,535 without an error; this stays under half of it).
pub const CPU_LOOP_BUDGET: usize = 32_000;
/// Storage buffers the fused kernel binds.
pub const FUSED_STORAGE_BUFFERS: u32 = 10;
/// Invocations of a [`FusedLayout::Lanes`] workgroup (the rollout-lanes
/// probe: 16 was fastest at every env count on llvmpipe).
pub const LANES_WG: usize = 16;
/// Most envs one lanes workgroup runs.
pub const LANES_MAX_ENVS: usize = 8;
/// Most envs per workgroup [`FusedLayout::choose`] takes: llvmpipe's first
/// compile grows with them (Mesa 25 GL, 2 cores, 64-64: 1.7 s at 2, 3.8 s
/// at 4), and from 16 envs on 4 run 1.5× faster than 2.
pub const LANES_AUTO_ENVS: usize = 4;
/// Envs per agent up to which [`FusedLayout::choose`] takes the lanes
/// layout where the weights come from storage (Mesa 25 GL, 64-64: 3× the
/// layered path at 64 envs, a tie at 512). Weights from uniform blocks take
/// it at every size (1.3× the layered path at 512).
pub const LANES_UP_TO_ENVS: usize = 64;
/// Inner products longer than this are looped (in chunks of
/// [`LANES_CHUNK`]) in the lanes kernel; shorter ones are unrolled.
const LANES_UNROLL: usize = 8;
/// Inputs per pass of the lanes kernel's inner-product loops.
const LANES_CHUNK: usize = 2;

/// How the fused rollout lays envs and hidden units on the lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusedLayout {
    /// One env per invocation (`rollout_fused.wgsl`).
    PerEnv,
    /// One env's hidden units across a workgroup's lanes, `envs` envs of
    /// one agent per workgroup sharing each weight load (`rollout_lanes.wgsl`).
    Lanes { envs: usize },
}

impl FusedLayout {
    /// The layout for `envs_per_agent` envs per agent: lanes for a network
    /// with hidden layers where one agent's weights fit a uniform block, or
    /// envs are few; one env per invocation otherwise.
    pub fn choose(ctx: &GpuContext, spec: &ActorCriticSpec, envs_per_agent: usize) -> Self {
        let lanes = envs_per_agent <= LANES_UP_TO_ENVS || lanes_uniform_weights(ctx, spec);
        if spec.hidden.is_empty() || !lanes {
            return FusedLayout::PerEnv;
        }
        lanes_envs(ctx, spec, envs_per_agent)
            .map_or(FusedLayout::PerEnv, |envs| FusedLayout::Lanes { envs })
    }

    /// Its short name: "per-env", or "lanes E=2" with the envs per workgroup.
    pub fn name(&self) -> String {
        match self {
            FusedLayout::PerEnv => "per-env".into(),
            FusedLayout::Lanes { envs } => format!("lanes E={envs}"),
        }
    }

    /// In words, for `train` and the bench.
    pub fn describe(&self) -> String {
        match self {
            FusedLayout::PerEnv => "one env per invocation".into(),
            FusedLayout::Lanes { envs } => {
                format!("hidden units across {LANES_WG} lanes, {envs} envs per workgroup")
            }
        }
    }
}

/// Envs per lanes workgroup for `envs_per_agent` envs: two workgroups at
/// least while envs allow (one per core on a CPU adapter), at most
/// [`LANES_AUTO_ENVS`], within workgroup memory (None: not even one fits).
pub fn lanes_envs(
    ctx: &GpuContext,
    spec: &ActorCriticSpec,
    envs_per_agent: usize,
) -> Option<usize> {
    let limit = ctx.limits.max_compute_workgroup_storage_size as usize;
    (1..=envs_per_agent.div_ceil(2).clamp(1, LANES_AUTO_ENVS))
        .rev()
        .find(|&envs| lanes_workgroup_bytes(spec, envs) <= limit)
}

/// Whether the lanes layout can read the weights from uniform blocks (one
/// per agent, a dispatch per agent): where one agent's parameters and its
/// index fit the adapter's uniform binding limit.
pub fn lanes_uniform_weights(ctx: &GpuContext, spec: &ActorCriticSpec) -> bool {
    uniform_block_bytes(spec) <= ctx.limits.max_uniform_buffer_binding_size
}

/// Most agents the lanes rollout gives a dispatch each (uniform weights);
/// more read theirs from storage in one dispatch. A dispatch costs ~50 µs
/// on llvmpipe: at 8 agents × 4 envs the uniform weights still win (4.0×
/// the layered rollout against 3.5×, Mesa 25 GL). The host step, one
/// dispatch per env step, takes uniform weights for one agent only (8
/// dispatches per step made it slower than the layered step).
pub const UNIFORM_MAX_AGENTS: usize = 16;

/// Bytes of one agent's uniform block: its parameters as vec4s, then a vec4
/// holding the agent's index.
fn uniform_block_bytes(spec: &ActorCriticSpec) -> u64 {
    ((spec.param_count().div_ceil(4) + 1) * 16) as u64
}

/// Workgroup memory of a lanes workgroup of `envs` envs: observations, two
/// activation buffers per network (one with a single hidden layer), the
/// outputs and the truncation flags.
pub fn lanes_workgroup_bytes(spec: &ActorCriticSpec, envs: usize) -> usize {
    let widest = spec.hidden.iter().copied().max().unwrap_or(0);
    let buffers = spec.hidden.len().min(2);
    4 * (envs * spec.obs_dim
        + 2 * buffers * envs * widest
        + envs * (spec.num_actions + 1)
        + envs
        + 1)
}

/// Which rollout a device-env run uses (config key `rollout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutPath {
    /// Fused where [`fused_support`] allows it, layered otherwise.
    #[default]
    Auto,
    /// The fused kernel; an error where it is not supported.
    Fused,
    /// Today's per-layer dispatches, one env-step dispatch per step.
    Layered,
}

/// Why the fused rollout cannot run `spec` on `ctx` (None: it can).
pub fn fused_support(ctx: &GpuContext, spec: &ActorCriticSpec, obs_dim: usize) -> Option<String> {
    if spec.obs_dim != obs_dim {
        return Some(format!(
            "the policy reads {} observations, the env gives {obs_dim}",
            spec.obs_dim
        ));
    }
    if let Some(reason) = too_wide(spec) {
        return Some(reason);
    }
    let have = ctx.limits.max_storage_buffers_per_shader_stage;
    if have < FUSED_STORAGE_BUFFERS {
        return Some(format!(
            "the adapter binds {have} storage buffers per stage, the fused kernel {FUSED_STORAGE_BUFFERS}"
        ));
    }
    None
}

/// The widest hidden layer, where it exceeds [`MAX_FUSED_HIDDEN`].
fn too_wide(spec: &ActorCriticSpec) -> Option<String> {
    let wide = spec.hidden.iter().find(|&&h| h > MAX_FUSED_HIDDEN)?;
    Some(format!(
        "hidden layer of {wide} exceeds the fused kernel's {MAX_FUSED_HIDDEN}"
    ))
}

/// Whether [`RolloutPath::Auto`] takes the fused kernel for `spec` and
/// `envs_per_agent` envs per agent on `ctx` (where [`fused_support`]
/// allows it at all): always on GPUs; on CPU adapters for the linear
/// policy, and for a policy with hidden layers where the lanes layout
/// applies. One env per invocation with hidden layers takes llvmpipe 8-22 s
/// to compile on first use (Mesa 22.3 and 25, 2 cores, 64-64) and is
/// slower than the layered path at 512 envs on Mesa 25 (benches/NOTES.md).
pub fn auto_picks_fused(ctx: &GpuContext, spec: &ActorCriticSpec, envs_per_agent: usize) -> bool {
    !ctx.adapter.is_software
        || spec.hidden.is_empty()
        || matches!(
            FusedLayout::choose(ctx, spec, envs_per_agent),
            FusedLayout::Lanes { .. }
        )
}

fn emit_mlp(out: &mut String, name: &str, mlp: &MlpSpec, base: usize, obs_dim: usize) -> usize {
    let layers = mlp.layers(base);
    let returns_array = mlp.out_dim > 1;
    let ret = if returns_array {
        format!("array<f32, {}>", mlp.out_dim)
    } else {
        "f32".to_string()
    };
    let _ = writeln!(
        out,
        "fn {name}(base: u32, x: array<f32, {obs_dim}>) -> {ret} {{\n    let h0 = x;"
    );
    let mut iterations = 0;
    for (l, layer) in layers.iter().enumerate() {
        let (i_dim, o_dim) = (layer.in_dim, layer.out_dim);
        let last = l + 1 == layers.len();
        let (input, output) = (format!("h{l}"), format!("h{}", l + 1));
        let _ = writeln!(out, "    var {output}: array<f32, {o_dim}>;");
        // `dims.pad` is 0: a bound the compiler cannot see keeps it from
        // unrolling the loop over outputs (llvmpipe's JIT time grows with code size).
        let _ = writeln!(out, "    for (var o = 0u; o < {o_dim}u + dims.pad; o++) {{");
        let _ = writeln!(
            out,
            "        let w = base + {}u + o * {i_dim}u;\n        var acc = params[base + {}u + o];",
            layer.w_offset, layer.b_offset
        );
        if i_dim <= UNROLL_LIMIT {
            for i in 0..i_dim {
                let _ = writeln!(out, "        acc += {input}[{i}] * params[w + {i}u];");
            }
            iterations += o_dim;
        } else {
            let chunk = CHUNK;
            let whole = i_dim / chunk * chunk;
            let _ = writeln!(
                out,
                "        for (var i = 0u; i < {whole}u + dims.pad; i += {chunk}u) {{"
            );
            for k in 0..chunk {
                let _ = writeln!(
                    out,
                    "            acc += {input}[i + {k}u] * params[w + i + {k}u];"
                );
            }
            let _ = writeln!(out, "        }}");
            for i in whole..i_dim {
                let _ = writeln!(out, "        acc += {input}[{i}] * params[w + {i}u];");
            }
            iterations += o_dim * (1 + whole / chunk);
        }
        if last {
            let _ = writeln!(out, "        {output}[o] = acc;\n    }}");
        } else {
            let _ = writeln!(out, "        {output}[o] = stable_tanh(acc);\n    }}");
        }
    }
    let result = format!("h{}", layers.len());
    if returns_array {
        let _ = writeln!(out, "    return {result};\n}}");
    } else {
        let _ = writeln!(out, "    return {result}[0];\n}}");
    }
    iterations
}

/// The fused rollout's WGSL for `spec` with the CartPole device env, and the
/// loop iterations one rollout step counts against [`CPU_LOOP_BUDGET`].
pub fn fused_rollout_source(spec: &ActorCriticSpec) -> (String, usize) {
    let mut generated = String::from(
        "// generated by ppo::fused for this policy's sizes: its forward functions.\n",
    );
    let _ = writeln!(generated, "const NUM_ACTIONS: u32 = {}u;", spec.num_actions);
    let actor = emit_mlp(
        &mut generated,
        "actor_forward",
        &spec.actor(),
        0,
        spec.obs_dim,
    );
    let critic = emit_mlp(
        &mut generated,
        "critic_forward",
        &spec.critic(),
        spec.critic_base(),
        spec.obs_dim,
    );
    let source = [
        ROLLOUT_FUSED_WGSL.source,
        ROLLOUT_COMMON_WGSL.source,
        RNG_WGSL.source,
        ENV_CARTPOLE_WGSL.source,
        &generated,
    ]
    .join("\n");
    // Per step: both forwards, the critic again on a truncation, the
    // sampler's three loops over the actions, the observation copy.
    let per_step = actor + 2 * critic + 3 * spec.num_actions + spec.obs_dim + 2;
    (source, per_step)
}

/// Emits, for every weight row `rows[u]` (a WGSL expression: the row's
/// first parameter) and every env `e` (its input at `input[bases[e]..]`),
/// `accs[u][e] += input[bases[e] + i] * pw(rows[u] + i)` (the weight) for i
/// ascending (`linear_forward`'s order). Each input is loaded once for all
/// rows and each weight once for all envs: unrolled up to [`LANES_UNROLL`]
/// inputs, else a loop in chunks of [`LANES_CHUNK`] (its bound hidden from
/// the compiler) and an unrolled rest. Returns the loop iterations counted.
fn emit_block_dot(
    out: &mut String,
    indent: &str,
    input: &str,
    bases: &[String],
    rows: &[String],
    accs: &[Vec<String>],
    i_dim: usize,
) -> usize {
    // One chunk of `width` inputs starting at `i` (a WGSL expression).
    let chunk = |out: &mut String, indent: &str, i: &str, width: usize| {
        for (e, base) in bases.iter().enumerate() {
            for k in 0..width {
                let _ = writeln!(out, "{indent}let x{e}_{k} = {input}[{base} + {i} + {k}u];");
            }
        }
        for (u, (row, row_accs)) in rows.iter().zip(accs).enumerate() {
            for k in 0..width {
                let _ = writeln!(out, "{indent}let w{u}_{k} = pw({row} + {i} + {k}u);");
            }
            for (e, acc) in row_accs.iter().enumerate() {
                for k in 0..width {
                    let _ = writeln!(out, "{indent}{acc} += x{e}_{k} * w{u}_{k};");
                }
            }
        }
    };
    let block = |out: &mut String, i: &str, width: usize| {
        let _ = writeln!(out, "{indent}{{");
        chunk(out, &format!("{indent}    "), i, width);
        let _ = writeln!(out, "{indent}}}");
    };
    if i_dim <= LANES_UNROLL {
        block(out, "0u", i_dim);
        return 0;
    }
    let whole = i_dim / LANES_CHUNK * LANES_CHUNK;
    let _ = writeln!(
        out,
        "{indent}for (var i = 0u; i < {whole}u + dims.pad; i += {LANES_CHUNK}u) {{"
    );
    chunk(out, &format!("{indent}    "), "i", LANES_CHUNK);
    let _ = writeln!(out, "{indent}}}");
    if whole < i_dim {
        block(out, &format!("{whole}u"), i_dim - whole);
    }
    whole / LANES_CHUNK + 1
}

/// One hidden layer of one network for `envs` envs: lane `lid` computes
/// units lid, lid + LANES_WG, ... of `output` [envs][out] from `input`
/// [envs][in] (lanes past the layer's width compute a clamped unit and
/// write nothing). With `scratch` (an offset), each unit is also written at
/// `scratch[srow{e} + offset + unit]` where `slive{e}` (the fused update's
/// rows). Returns the loop iterations one lane counts.
pub(crate) fn emit_lanes_layer(
    out: &mut String,
    layer: &LayerLayout,
    (input, output): (&str, &str),
    envs: usize,
    scratch: Option<usize>,
) -> usize {
    let (i_dim, o_dim) = (layer.in_dim, layer.out_dim);
    let units = o_dim.div_ceil(LANES_WG);
    let bases: Vec<String> = (0..envs).map(|e| format!("{}u", e * i_dim)).collect();
    let _ = writeln!(out, "    {{");
    for u in 0..units {
        let unit = format!("lid + {}u", u * LANES_WG);
        if (u + 1) * LANES_WG > o_dim {
            let _ = writeln!(out, "        let o{u} = min({unit}, {}u);", o_dim - 1);
        } else {
            let _ = writeln!(out, "        let o{u} = {unit};");
        }
        let _ = writeln!(
            out,
            "        let row{u} = base + {}u + o{u} * {i_dim}u;\n        let bias{u} = pw(base + {}u + o{u});",
            layer.w_offset, layer.b_offset
        );
        for e in 0..envs {
            let _ = writeln!(out, "        var acc{u}_{e} = bias{u};");
        }
    }
    let rows: Vec<String> = (0..units).map(|u| format!("row{u}")).collect();
    let accs: Vec<Vec<String>> = (0..units)
        .map(|u| (0..envs).map(|e| format!("acc{u}_{e}")).collect())
        .collect();
    let iterations = emit_block_dot(out, "        ", input, &bases, &rows, &accs, i_dim);
    for u in 0..units {
        let partial = (u + 1) * LANES_WG > o_dim;
        let indent = if partial {
            let _ = writeln!(out, "        if (lid + {}u < {o_dim}u) {{", u * LANES_WG);
            "            "
        } else {
            "        "
        };
        for e in 0..envs {
            match scratch {
                None => {
                    let _ = writeln!(
                        out,
                        "{indent}{output}[{}u + o{u}] = stable_tanh(acc{u}_{e});",
                        e * o_dim
                    );
                }
                Some(offset) => {
                    let _ = writeln!(
                        out,
                        "{indent}{{\n{indent}    let v = stable_tanh(acc{u}_{e});\n\
                         {indent}    {output}[{}u + o{u}] = v;\n\
                         {indent}    if (slive{e}) {{\n{indent}        scratch[srow{e} + {offset}u + o{u}] = v;\n\
                         {indent}    }}\n{indent}}}",
                        e * o_dim
                    );
                }
            }
        }
        if partial {
            let _ = writeln!(out, "        }}");
        }
    }
    let _ = writeln!(out, "    }}");
    iterations
}

/// The output rows of every env into `heads` [envs][A + 1], one (env, row)
/// per lane: rows 0..A the actor's logits (skipped where `final_pass`),
/// row A the critic's value. Returns the loop iterations one lane counts.
pub(crate) fn emit_lanes_heads(
    out: &mut String,
    actor: (&LayerLayout, &str),
    critic: (&LayerLayout, &str),
    envs: usize,
) -> usize {
    let actions = actor.0.out_dim;
    let per_env = actions + 1;
    let tasks = envs * per_env;
    let row = |out: &mut String, indent: &str, (layer, input): (&LayerLayout, &str), k: &str| {
        let i_dim = layer.in_dim;
        let _ = writeln!(
            out,
            "{indent}let w = base + {}u + {k} * {i_dim}u;\n{indent}acc = pw(base + {}u + {k});",
            layer.w_offset, layer.b_offset
        );
        emit_block_dot(
            out,
            indent,
            input,
            &[format!("he * {i_dim}u")],
            &["w".to_string()],
            &[vec!["acc".to_string()]],
            i_dim,
        )
    };
    let mut iterations = 0;
    for m in 0..tasks.div_ceil(LANES_WG) {
        let _ = writeln!(
            out,
            "    {{\n        let q = lid + {}u;\n        if (q < {tasks}u) {{\n            \
             let he = q / {per_env}u;\n            let k = q % {per_env}u;\n            var acc = 0.0;\n            \
             if (k < {actions}u) {{\n                if (!final_pass) {{",
            m * LANES_WG
        );
        iterations += row(out, "                    ", actor, "k");
        let _ = writeln!(out, "                }}\n            }} else {{");
        iterations += row(out, "                ", critic, "0u");
        let _ = writeln!(
            out,
            "            }}\n            heads[q] = acc;\n        }}\n    }}"
        );
    }
    iterations
}

/// Where a lane of a lanes workgroup sits (both lanes templates): its env
/// slot, the env's row (clamped for lanes past N), whether that env is
/// live, and its agent's weight offset; after the generated lanes_agent,
/// lanes_block and weight_base.
const LANES_ROW_WGSL: &str = "
struct LanesRow {
    e: u32,
    r: u32,
    live: bool,
    base: u32,
}

fn lanes_row(lid: u32, g: u32) -> LanesRow {
    let agent = lanes_agent(g);
    let e = min(lid, LANES_E - 1u);
    let n = lanes_block(g) * LANES_E + e;
    let live = lid < LANES_E && n < dims.envs_per_agent;
    let r = agent * dims.envs_per_agent + min(n, dims.envs_per_agent - 1u);
    return LanesRow(e, r, live, weight_base(agent));
}
";

/// The lanes layout's WGSL for `spec` with `envs` envs per workgroup and the
/// CartPole device env, its weights read from `params` or (with
/// `uniform_weights`) from a uniform copy per agent, and the loop iterations one
/// rollout step counts against [`CPU_LOOP_BUDGET`].
pub fn lanes_rollout_source(
    spec: &ActorCriticSpec,
    envs: usize,
    uniform_weights: bool,
) -> (String, usize) {
    lanes_source(ROLLOUT_LANES_WGSL.source, spec, envs, uniform_weights)
}

/// The WGSL of one rollout step for host envs (`policy_lanes.wgsl`) with
/// the lanes layout's forward for `spec` and `envs` envs per workgroup.
pub fn lanes_policy_source(spec: &ActorCriticSpec, envs: usize, uniform_weights: bool) -> String {
    lanes_source(POLICY_LANES_WGSL.source, spec, envs, uniform_weights).0
}

fn lanes_source(
    template: &str,
    spec: &ActorCriticSpec,
    envs: usize,
    uniform_weights: bool,
) -> (String, usize) {
    let d = spec.obs_dim;
    let actions = spec.num_actions;
    let widest = spec.hidden.iter().copied().max().unwrap_or(0);
    let mut g = String::from(
        "// generated by ppo::fused for this policy's sizes and envs per workgroup.\n",
    );
    if uniform_weights {
        // One agent's parameters copied into a uniform block (binding 11,
        // a dynamic offset per agent, one dispatch per agent), its index in
        // the block's last vec4: llvmpipe gathers uniform loads without a
        // per-lane loop.
        let k4 = spec.param_count().div_ceil(4);
        let _ = writeln!(
            g,
            "@group(0) @binding(11) var<uniform> wts: array<vec4<f32>, {}>;\n\
             fn pw(i: u32) -> f32 {{\n    return wts[i >> 2u][i & 3u];\n}}\n\
             fn lanes_agent(g: u32) -> u32 {{\n    return bitcast<u32>(wts[{k4}].x);\n}}\n\
             fn lanes_block(g: u32) -> u32 {{\n    return g;\n}}\n\
             fn weight_base(agent: u32) -> u32 {{\n    return 0u;\n}}",
            k4 + 1
        );
    } else {
        let _ = writeln!(
            g,
            "fn pw(i: u32) -> f32 {{\n    return params[i];\n}}\n\
             fn lanes_agent(g: u32) -> u32 {{\n    return g / dims.blocks_per_agent;\n}}\n\
             fn lanes_block(g: u32) -> u32 {{\n    return g % dims.blocks_per_agent;\n}}\n\
             fn weight_base(agent: u32) -> u32 {{\n    return agent * dims.param_stride;\n}}"
        );
    }
    let _ = writeln!(g, "const NUM_ACTIONS: u32 = {actions}u;");
    let _ = writeln!(g, "const POLICY_OBS: u32 = {d}u;");
    let _ = writeln!(g, "const LANES_WG: u32 = {LANES_WG}u;");
    let _ = writeln!(g, "const LANES_E: u32 = {envs}u;");
    let _ = writeln!(g, "var<workgroup> xs: array<f32, {}>;", envs * d);
    for buffer in 0..spec.hidden.len().min(2) {
        for net in ["a", "c"] {
            let _ = writeln!(
                g,
                "var<workgroup> act_{net}{buffer}: array<f32, {}>;",
                envs * widest
            );
        }
    }
    let _ = writeln!(
        g,
        "var<workgroup> heads: array<f32, {}>;",
        envs * (actions + 1)
    );
    let _ = writeln!(g, "var<workgroup> lane_truncated: array<u32, {envs}>;");
    let _ = writeln!(g, "var<workgroup> any_truncated: u32;");

    g.push_str(LANES_ROW_WGSL);
    let actor = spec.actor().layers(0);
    let critic = spec.critic().layers(spec.critic_base());
    let hidden = spec.hidden.len();
    let input = |net: &str, l: usize| -> String {
        if l == 0 {
            "xs".to_string()
        } else {
            format!("act_{net}{}", (l - 1) % 2)
        }
    };
    let _ = writeln!(
        g,
        "fn lanes_forward(lid: u32, base: u32, final_pass: bool) {{"
    );
    let mut forward = 0;
    for l in 0..hidden {
        let _ = writeln!(g, "    if (!final_pass) {{");
        forward += emit_lanes_layer(
            &mut g,
            &actor[l],
            (&input("a", l), &format!("act_a{}", l % 2)),
            envs,
            None,
        );
        let _ = writeln!(g, "    }}");
        forward += emit_lanes_layer(
            &mut g,
            &critic[l],
            (&input("c", l), &format!("act_c{}", l % 2)),
            envs,
            None,
        );
        let _ = writeln!(g, "    workgroupBarrier();");
    }
    forward += emit_lanes_heads(
        &mut g,
        (&actor[hidden], &input("a", hidden)),
        (&critic[hidden], &input("c", hidden)),
        envs,
    );
    let _ = writeln!(g, "    workgroupBarrier();\n}}");

    let source = [
        template,
        ROLLOUT_COMMON_WGSL.source,
        RNG_WGSL.source,
        ENV_CARTPOLE_WGSL.source,
        &g,
    ]
    .join("\n");
    // Per step: the forward twice (the second for final observations,
    // counted every step), the sampler's loops and the logits copy, the
    // truncation OR, the observation copies.
    let per_step = 2 * forward + 4 * actions + envs + 4 * d + 6;
    (source, per_step)
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct FusedDims {
    rows: u32,
    envs_per_agent: u32,
    param_stride: u32,
    t_begin: u32,
    t_end: u32,
    greedy: u32,
    sample_seed_lo: u32,
    sample_seed_hi: u32,
    iteration: u32,
    max_episode_steps: u32,
    env_seed_lo: u32,
    env_seed_hi: u32,
    x_threshold: f32,
    theta_threshold: f32,
    reset_bound: f32,
    pad: u32,
    blocks_per_agent: u32,
    total_groups: u32,
    pad1: u32,
    pad2: u32,
}

/// The buffers one fused rollout reads and writes (all [T][rows].. tensors
/// are the rollout's own).
pub struct FusedBuffers<'a> {
    pub params: &'a GpuBuffer<f32>,
    pub physics: &'a GpuBuffer<CartPolePhysics32>,
    pub states: &'a GpuBuffer<CartPoleState32>,
    pub cur_obs: &'a GpuBuffer<f32>,
    pub obs: &'a GpuBuffer<f32>,
    pub records: &'a GpuBuffer<f32>,
    pub rewards: &'a GpuBuffer<f32>,
    pub flags: &'a GpuBuffer<u32>,
    pub final_values: &'a GpuBuffer<f32>,
    pub episodes: &'a GpuBuffer<f32>,
}

impl FusedBuffers<'_> {
    fn identity(&self) -> [wgpu::Buffer; 10] {
        [
            self.params.buffer.clone(),
            self.physics.buffer.clone(),
            self.states.buffer.clone(),
            self.cur_obs.buffer.clone(),
            self.obs.buffer.clone(),
            self.records.buffer.clone(),
            self.rewards.buffer.clone(),
            self.flags.buffer.clone(),
            self.final_values.buffer.clone(),
            self.episodes.buffer.clone(),
        ]
    }
}

/// The compiled fused rollout of one policy shape, bound to one set of buffers.
#[derive(Debug)]
pub struct FusedRollout {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    /// (steps, uniform, bind group) per dispatch.
    chunks: Vec<(
        std::ops::Range<usize>,
        UniformBuffer<FusedDims>,
        wgpu::BindGroup,
    )>,
    bound: Option<[wgpu::Buffer; 10]>,
    /// Each agent's parameters as a uniform block, copied in before each
    /// rollout (the lanes layout where they fit the adapter's uniform
    /// limit); then each dispatch runs once per agent.
    weights: Option<UniformWeights>,
    grid: (u32, u32),
    layout_kind: FusedLayout,
    blocks_per_agent: usize,
    total_groups: usize,
    rows: usize,
    envs_per_agent: usize,
    param_stride: usize,
    steps_per_dispatch: usize,
    num_steps: usize,
}

impl FusedRollout {
    /// Compiles the kernel for `spec` in `layout` and `rows = P × N` envs
    /// with rollouts of `num_steps` steps (checked with [`fused_support`]
    /// first).
    pub fn new(
        ctx: &GpuContext,
        spec: &ActorCriticSpec,
        num_agents: usize,
        envs_per_agent: usize,
        num_steps: usize,
        layout_kind: FusedLayout,
    ) -> Result<Self> {
        if let Some(reason) = fused_support(ctx, spec, spec.obs_dim) {
            return Err(Error::config("rollout", "fused", reason));
        }
        let rows = num_agents * envs_per_agent;
        let max_groups = ctx.limits.max_compute_workgroups_per_dimension;
        let uniform_weights = matches!(layout_kind, FusedLayout::Lanes { .. })
            && num_agents <= UNIFORM_MAX_AGENTS
            && lanes_uniform_weights(ctx, spec);
        let (source, per_step, entry_point, constants, blocks_per_agent, grid) = match layout_kind {
            FusedLayout::PerEnv => {
                let (source, per_step) = fused_rollout_source(spec);
                let grid = grid_1d(rows as u64, WORKGROUP_SIZE, max_groups);
                let constants = vec![("WORKGROUP_SIZE", WORKGROUP_SIZE)];
                (source, per_step, "rollout_fused", constants, 0, grid)
            }
            FusedLayout::Lanes { envs } => {
                let limit = ctx.limits.max_compute_workgroup_storage_size as usize;
                let bytes = lanes_workgroup_bytes(spec, envs);
                if envs == 0 || envs > LANES_MAX_ENVS || bytes > limit {
                    return Err(Error::config(
                        "fused layout",
                        format!("lanes with {envs} envs per workgroup"),
                        format!(
                            "1 to {LANES_MAX_ENVS} envs whose activations ({bytes} bytes) fit \
                             the adapter's {limit} bytes of workgroup memory"
                        ),
                    ));
                }
                let (source, per_step) = lanes_rollout_source(spec, envs, uniform_weights);
                let blocks = envs_per_agent.div_ceil(envs);
                // With uniform weights, one dispatch per agent.
                let groups = if uniform_weights {
                    blocks
                } else {
                    num_agents * blocks
                };
                let grid = grid_1d(groups as u64, 1, max_groups);
                (source, per_step, "rollout_lanes", Vec::new(), blocks, grid)
            }
        };
        let steps_per_dispatch = if ctx.adapter.is_software {
            (CPU_LOOP_BUDGET / per_step).max(1)
        } else {
            num_steps
        };
        let mut entries = vec![layout_entry(0, wgpu::BufferBindingType::Uniform)];
        entries.extend(
            (1..=10)
                .map(|b| layout_entry(b, wgpu::BufferBindingType::Storage { read_only: b <= 2 })),
        );
        let weights = uniform_weights.then(|| {
            entries.push(UniformWeights::layout_entry());
            UniformWeights::new(ctx, spec, num_agents)
        });
        let layout = ctx
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("rollout_fused"),
                entries: &entries,
            });
        let pipeline = create_pipeline_from_source(
            &ctx.device,
            &format!("{entry_point}.wgsl (generated)"),
            &source,
            entry_point,
            &constants,
            &layout,
        )?;
        Ok(FusedRollout {
            pipeline,
            layout,
            chunks: Vec::new(),
            bound: None,
            weights,
            grid,
            layout_kind,
            blocks_per_agent,
            total_groups: if uniform_weights {
                blocks_per_agent
            } else {
                num_agents * blocks_per_agent
            },
            rows,
            envs_per_agent,
            param_stride: spec.param_count(),
            steps_per_dispatch,
            num_steps,
        })
    }

    /// The layout this kernel runs.
    pub fn layout(&self) -> FusedLayout {
        self.layout_kind
    }

    /// Whether the kernel reads the weights from a uniform copy.
    pub fn uniform_weights(&self) -> bool {
        self.weights.is_some()
    }

    /// Records the copy of the agents' parameters into their uniform blocks
    /// (before the rollout's compute pass; nothing without them).
    pub fn record_weight_copy(&self, encoder: &mut wgpu::CommandEncoder, params: &GpuBuffer<f32>) {
        if let Some(weights) = &self.weights {
            weights.record_copy(encoder, params);
        }
    }

    /// Rollout steps one dispatch runs.
    pub fn steps_per_dispatch(&self) -> usize {
        self.steps_per_dispatch
    }

    /// Dispatches one rollout records.
    pub fn dispatch_count(&self) -> usize {
        self.chunk_count() * self.weights.as_ref().map_or(1, |w| w.agents)
    }

    fn chunk_count(&self) -> usize {
        self.num_steps.div_ceil(self.steps_per_dispatch)
    }

    /// Binds the kernel to `buffers` (does nothing when already bound to
    /// them) and writes the sampling key and the env's limits.
    pub fn prepare(
        &mut self,
        ctx: &GpuContext,
        buffers: &FusedBuffers<'_>,
        limits: &CartPoleLimits32,
        key: SampleKey,
    ) {
        let identity = buffers.identity();
        let dims = |steps: &std::ops::Range<usize>| FusedDims {
            rows: self.rows as u32,
            envs_per_agent: self.envs_per_agent as u32,
            param_stride: self.param_stride as u32,
            t_begin: steps.start as u32,
            t_end: steps.end as u32,
            greedy: 0,
            sample_seed_lo: key.seed as u32,
            sample_seed_hi: (key.seed >> 32) as u32,
            iteration: key.iteration,
            max_episode_steps: limits.max_episode_steps,
            env_seed_lo: limits.seed as u32,
            env_seed_hi: (limits.seed >> 32) as u32,
            x_threshold: limits.x_threshold,
            theta_threshold: limits.theta_threshold,
            reset_bound: limits.reset_bound,
            pad: 0,
            blocks_per_agent: self.blocks_per_agent as u32,
            total_groups: self.total_groups as u32,
            pad1: 0,
            pad2: 0,
        };
        if self.bound.as_ref() != Some(&identity) {
            let resources = [
                buffers.params.binding(),
                buffers.physics.binding(),
                buffers.states.binding(),
                buffers.cur_obs.binding(),
                buffers.obs.binding(),
                buffers.records.binding(),
                buffers.rewards.binding(),
                buffers.flags.binding(),
                buffers.final_values.binding(),
                buffers.episodes.binding(),
            ];
            self.chunks = (0..self.chunk_count())
                .map(|c| {
                    let steps = c * self.steps_per_dispatch
                        ..((c + 1) * self.steps_per_dispatch).min(self.num_steps);
                    let uniform = UniformBuffer::new(ctx, "rollout_fused dims", &dims(&steps));
                    let mut entries = vec![wgpu::BindGroupEntry {
                        binding: 0,
                        resource: uniform.binding(),
                    }];
                    entries.extend(resources.iter().enumerate().map(|(i, r)| {
                        wgpu::BindGroupEntry {
                            binding: i as u32 + 1,
                            resource: r.clone(),
                        }
                    }));
                    if let Some(weights) = &self.weights {
                        entries.push(weights.binding());
                    }
                    let group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some("rollout_fused"),
                        layout: &self.layout,
                        entries: &entries,
                    });
                    (steps, uniform, group)
                })
                .collect();
            self.bound = Some(identity);
        } else {
            for (steps, uniform, _) in &self.chunks {
                uniform.write(ctx, &dims(steps));
            }
        }
    }

    /// Records the rollout's dispatches (after [`FusedRollout::prepare`]).
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        for (_, _, group) in &self.chunks {
            match &self.weights {
                Some(weights) => weights.dispatch_each(pass, group, self.grid),
                None => {
                    pass.set_bind_group(0, group, &[]);
                    pass.dispatch_workgroups(self.grid.0, self.grid.1, 1);
                }
            }
        }
    }
}

pub(crate) fn layout_entry(
    binding: u32,
    ty: wgpu::BufferBindingType,
) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// Every agent's parameters as its own uniform block for the lanes kernels:
/// agent p's floats at p × `stride` bytes, then a vec4 holding p; bound with
/// a dynamic offset, one dispatch per agent.
#[derive(Debug)]
struct UniformWeights {
    buffer: wgpu::Buffer,
    stride: u64,
    block: u64,
    param_bytes: u64,
    agents: usize,
}

impl UniformWeights {
    fn new(ctx: &GpuContext, spec: &ActorCriticSpec, agents: usize) -> Self {
        let block = uniform_block_bytes(spec);
        let align = ctx.limits.min_uniform_buffer_offset_alignment as u64;
        let stride = block.next_multiple_of(align);
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("lanes weights"),
            size: stride * agents as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        for p in 0..agents {
            ctx.queue.write_buffer(
                &buffer,
                p as u64 * stride + block - 16,
                bytemuck::cast_slice(&[p as u32, 0, 0, 0]),
            );
        }
        UniformWeights {
            buffer,
            stride,
            block,
            param_bytes: (spec.param_count() * 4) as u64,
            agents,
        }
    }

    /// Records the copy of every agent's parameters into its block.
    fn record_copy(&self, encoder: &mut wgpu::CommandEncoder, params: &GpuBuffer<f32>) {
        for p in 0..self.agents as u64 {
            encoder.copy_buffer_to_buffer(
                &params.buffer,
                p * self.param_bytes,
                &self.buffer,
                p * self.stride,
                self.param_bytes,
            );
        }
    }

    fn layout_entry() -> wgpu::BindGroupLayoutEntry {
        wgpu::BindGroupLayoutEntry {
            binding: 11,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: None,
            },
            count: None,
        }
    }

    fn binding(&self) -> wgpu::BindGroupEntry<'_> {
        wgpu::BindGroupEntry {
            binding: 11,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.buffer,
                offset: 0,
                size: std::num::NonZeroU64::new(self.block),
            }),
        }
    }

    /// Sets `group` once per agent and dispatches `grid` for each.
    fn dispatch_each(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        grid: (u32, u32),
    ) {
        for p in 0..self.agents as u64 {
            pass.set_bind_group(0, group, &[(p * self.stride) as u32]);
            pass.dispatch_workgroups(grid.0, grid.1, 1);
        }
    }
}

/// Why the one-dispatch host step ([`FusedPolicyStep`]) cannot run `spec`
/// on `ctx` (None: it can).
pub fn policy_step_support(ctx: &GpuContext, spec: &ActorCriticSpec) -> Option<String> {
    if let Some(reason) = too_wide(spec) {
        return Some(reason);
    }
    let limit = ctx.limits.max_compute_workgroup_storage_size;
    lanes_envs(ctx, spec, 1).is_none().then(|| {
        format!(
            "one env's activations ({} bytes) exceed the adapter's {limit} bytes of workgroup memory",
            lanes_workgroup_bytes(spec, 1)
        )
    })
}

/// The buffers one host-env rollout step reads and writes.
pub struct PolicyBuffers<'a> {
    pub params: &'a GpuBuffer<f32>,
    pub cur_obs: &'a GpuBuffer<f32>,
    pub obs: &'a GpuBuffer<f32>,
    pub records: &'a GpuBuffer<f32>,
    pub actions: &'a GpuBuffer<u32>,
}

/// One rollout step for envs on the host in one dispatch
/// (`policy_lanes.wgsl`): the actor and critic forward in the lanes layout,
/// sampling, the records and the actions, instead of a dispatch per layer
/// and one for the sampler.
#[derive(Debug)]
pub struct FusedPolicyStep {
    pipeline: wgpu::ComputePipeline,
    group: wgpu::BindGroup,
    dims: UniformBuffer<FusedDims>,
    weights: Option<UniformWeights>,
    grid: (u32, u32),
    base: FusedDims,
}

impl FusedPolicyStep {
    /// Compiles the step for `spec` and `num_agents` × `envs_per_agent`
    /// envs and binds it to `buffers`.
    pub fn new(
        ctx: &GpuContext,
        spec: &ActorCriticSpec,
        num_agents: usize,
        envs_per_agent: usize,
        buffers: &PolicyBuffers<'_>,
    ) -> Result<Self> {
        let envs = match policy_step_support(ctx, spec) {
            Some(reason) => return Err(Error::config("rollout", "fused", reason)),
            None => lanes_envs(ctx, spec, envs_per_agent).expect("checked by policy_step_support"),
        };
        let uniform_weights = num_agents == 1 && lanes_uniform_weights(ctx, spec);
        let source = lanes_policy_source(spec, envs, uniform_weights);
        use wgpu::BufferBindingType::{Storage, Uniform};
        let mut entries = vec![
            layout_entry(0, Uniform),
            layout_entry(1, Storage { read_only: true }),
            layout_entry(4, Storage { read_only: false }),
            layout_entry(5, Storage { read_only: false }),
            layout_entry(6, Storage { read_only: false }),
            layout_entry(12, Storage { read_only: false }),
        ];
        if uniform_weights {
            entries.push(UniformWeights::layout_entry());
        }
        let layout = ctx
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("policy_lanes"),
                entries: &entries,
            });
        let pipeline = create_pipeline_from_source(
            &ctx.device,
            "policy_lanes.wgsl (generated)",
            &source,
            "policy_lanes",
            &[],
            &layout,
        )?;
        let blocks = envs_per_agent.div_ceil(envs);
        // With uniform weights, one dispatch per agent.
        let groups = if uniform_weights {
            blocks
        } else {
            num_agents * blocks
        };
        let base = FusedDims {
            rows: (num_agents * envs_per_agent) as u32,
            envs_per_agent: envs_per_agent as u32,
            param_stride: spec.param_count() as u32,
            blocks_per_agent: blocks as u32,
            total_groups: groups as u32,
            ..bytemuck::Zeroable::zeroed()
        };
        let dims = UniformBuffer::new(ctx, "policy_lanes dims", &base);
        let weights = uniform_weights.then(|| UniformWeights::new(ctx, spec, num_agents));
        let resources = [
            (0, dims.binding()),
            (1, buffers.params.binding()),
            (4, buffers.cur_obs.binding()),
            (5, buffers.obs.binding()),
            (6, buffers.records.binding()),
            (12, buffers.actions.binding()),
        ];
        let mut entries: Vec<wgpu::BindGroupEntry> = resources
            .into_iter()
            .map(|(binding, resource)| wgpu::BindGroupEntry { binding, resource })
            .collect();
        if let Some(weights) = &weights {
            entries.push(weights.binding());
        }
        let group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("policy_lanes"),
            layout: &layout,
            entries: &entries,
        });
        let grid = grid_1d(
            groups as u64,
            1,
            ctx.limits.max_compute_workgroups_per_dimension,
        );
        Ok(FusedPolicyStep {
            pipeline,
            group,
            dims,
            weights,
            grid,
            base,
        })
    }

    /// Sets the step and its sampling key (before the step's submission).
    pub fn prepare(&self, ctx: &GpuContext, step: usize, key: SampleKey) {
        let dims = FusedDims {
            t_begin: step as u32,
            t_end: step as u32 + 1,
            sample_seed_lo: key.seed as u32,
            sample_seed_hi: (key.seed >> 32) as u32,
            iteration: key.iteration,
            ..self.base
        };
        self.dims.write(ctx, &dims);
    }

    /// Records the weight copy (where uniform) and the step's dispatch.
    pub fn record(&self, encoder: &mut wgpu::CommandEncoder, params: &GpuBuffer<f32>) {
        if let Some(weights) = &self.weights {
            weights.record_copy(encoder, params);
        }
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&self.pipeline);
        match &self.weights {
            Some(weights) => weights.dispatch_each(&mut pass, &self.group, self.grid),
            None => {
                pass.set_bind_group(0, &self.group, &[]);
                pass.dispatch_workgroups(self.grid.0, self.grid.1, 1);
            }
        }
    }
}

/// Everything a rollout writes, from [`fused_rollout_cpu`]: obs
/// [T][rows][obs_dim], records [T][rows][RECORD] (log-prob, value and action
/// set), rewards / flags / final values [T][rows] (final values NaN where no
/// truncation bootstraps), episodes [T][rows][2]; and the smallest distance
/// of a drawn uniform from a CDF boundary (below float rounding the f32
/// kernel may legitimately draw the other action).
#[derive(Clone, Debug)]
pub struct RolloutCpu {
    pub obs: Vec<f32>,
    pub records: Vec<f32>,
    pub rewards: Vec<f32>,
    pub flags: Vec<u32>,
    pub final_values: Vec<f32>,
    pub episodes: Vec<f32>,
    pub min_margin: f64,
}

/// CPU reference of the fused rollout: per step the f64 forward of every
/// row's actor and critic on its f32 parameters, the categorical draw with
/// the kernel's key, and the f32 env step [`cartpole_step_cpu`]
/// (`states` is stepped in place).
///
/// [`cartpole_step_cpu`]: crate::env::gpu_cartpole::cartpole_step_cpu
#[allow(clippy::too_many_arguments)]
pub fn fused_rollout_cpu(
    spec: &ActorCriticSpec,
    envs_per_agent: usize,
    num_steps: usize,
    params: &[f32],
    physics: &[CartPolePhysics32],
    limits: &CartPoleLimits32,
    states: &mut [CartPoleState32],
    key: SampleKey,
) -> RolloutCpu {
    use crate::env::gpu_cartpole::cartpole_step_cpu;
    use crate::nn::mlp_forward_cpu;
    use crate::ops::categorical::categorical_sample_cpu;
    use crate::ops::{record, RECORD};

    let rows = states.len();
    let num_agents = rows / envs_per_agent;
    let (actor_at, critic_at) = spec.placements(num_agents, envs_per_agent);
    let params64: Vec<f64> = params.iter().map(|&v| v as f64).collect();
    let critic = |x: &[f64]| -> Vec<f64> {
        mlp_forward_cpu(&spec.critic(), critic_at, x, &params64)
            .pop()
            .expect("an MLP has layers")
    };
    let mut out = RolloutCpu {
        obs: Vec::with_capacity(num_steps * rows * spec.obs_dim),
        records: vec![0.0; num_steps * rows * RECORD],
        rewards: Vec::with_capacity(num_steps * rows),
        flags: Vec::with_capacity(num_steps * rows),
        final_values: vec![f32::NAN; num_steps * rows],
        episodes: Vec::with_capacity(num_steps * rows * 2),
        min_margin: f64::INFINITY,
    };
    for t in 0..num_steps {
        let obs: Vec<f32> = states.iter().flat_map(|s| s.observation()).collect();
        let x: Vec<f64> = obs.iter().map(|&v| v as f64).collect();
        let logits = mlp_forward_cpu(&spec.actor(), actor_at, &x, &params64)
            .pop()
            .expect("an MLP has layers");
        let values = critic(&x);
        let key = SampleKey {
            step: t as u32,
            ..key
        };
        let sampled = categorical_sample_cpu(&logits, spec.num_actions, Some(key));
        let actions: Vec<u32> = sampled.iter().map(|s| s.action).collect();
        for (r, s) in sampled.iter().enumerate() {
            let rec = (t * rows + r) * RECORD;
            out.records[rec + record::LOGPROB] = s.logprob as f32;
            out.records[rec + record::VALUE] = values[r] as f32;
            out.records[rec + record::ACTION] = s.action as f32;
            out.min_margin = out.min_margin.min(s.margin);
        }
        let step = cartpole_step_cpu(limits, physics, states, &actions);
        let final_x: Vec<f64> = step.final_obs.iter().map(|&v| v as f64).collect();
        let final_values = critic(&final_x);
        for (r, &f) in step.flags.iter().enumerate() {
            if f == crate::ops::gae::TRUNCATED {
                out.final_values[t * rows + r] = final_values[r] as f32;
            }
        }
        out.obs.extend(obs);
        out.rewards.extend(step.rewards);
        out.flags.extend(step.flags);
        out.episodes.extend(step.episodes);
    }
    out
}
