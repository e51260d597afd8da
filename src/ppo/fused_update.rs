//! The fused update.
//!
//! For the linear network (no hidden layers) `update_linear`
//! (`shaders/update_linear.wgsl`) runs every minibatch step of the update
//! (gather, advantage normalization, forward, loss, gradients, clip, Adam,
//! statistics, target-KL stops) in one dispatch, one workgroup per agent:
//! the work is tiny and dispatches were all of its cost (4 dispatches per
//! update against 195; 0.9 ms against 8.8 ms on Mesa 25 llvmpipe GL).
//!
//! For networks with hidden layers each minibatch step's forward, PPO loss
//! and backward of both networks take two dispatches instead of one per
//! layer and pass (~20 for a 64-64 actor-critic), then today's clip + Adam:
//!
//! - `update_rows` (`shaders/update_rows.wgsl`, completed here per network):
//!   the lanes layout of the fused rollout ([`super::fused`]): a workgroup of
//!   [`LANES_WG`] lanes runs E minibatch rows of one agent, every lane owning
//!   hidden units `lane + 16k` of every layer, activations and deltas in
//!   workgroup memory. It runs the forward, `ppo_loss.wgsl`'s loss and
//!   statistics, and the backward to every layer's delta, and stores the
//!   rows' inputs, activations and deltas in a scratch buffer.
//! - `update_grads` (`shaders/update_grads.wgsl`): every parameter's
//!   gradient as a fixed-order sum over the agent's rows, one 8 × 8 block
//!   of a layer per invocation (no atomics: runs stay bitwise repeatable).
//!
//! The gather, advantage normalization, clip + Adam and the statistics keep
//! their kernels. The probes behind the design (`shared/probes/fused-update*`)
//! found the lanes layout within 1.4× of the fastest row-parallel layout at
//! 128 rows while compiling in ~2.5 s instead of ~18 s on llvmpipe.

use std::fmt::Write;

use crate::error::{Error, Result};
use crate::gpu::kernels::{
    create_pipeline_from_source, grid_1d, Kernel, PPO_LOSS_TERMS_WGSL, UPDATE_ROWS_WGSL,
};
use crate::gpu::{Dispatch, GpuBuffer, GpuContext, UniformBuffer};
use crate::nn::LayerLayout;
use crate::ops::fits_u32;
use crate::ops::gather::BatchShape;
use crate::ops::optim::{AgentState, ADAM_BETA1, ADAM_BETA2};
use crate::ops::ppo_loss::ROW_STATS;
use crate::ops::stats::{self, AdvMomentsBuffers};

use super::fused::CPU_LOOP_BUDGET;
use super::fused::{emit_lanes_heads, emit_lanes_layer, layout_entry, LANES_WG, MAX_FUSED_HIDDEN};
use super::row_pass::{row_pass_iterations, row_pass_source, ROW_PASS_ROWS, ROW_PASS_WG};
use super::{ActorCriticSpec, UpdateSettings};

/// Which minibatch step the update runs (config key `update`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdatePath {
    /// The fused update where it is supported: always for the linear
    /// network (10× the layered update on llvmpipe), and with hidden
    /// layers for one agent whose weights the row pass reads from a uniform
    /// block ([`update_uniform_weights`]), or for populations whose
    /// `row_pass` is `rows`; the layered update elsewhere. Side by side
    /// (`cargo bench --bench ppo`, `PPO_BENCH_UPDATE`, Mesa 25 GL, 64-64):
    /// one agent, 4 envs 1.2-2.4× the layered update, 32 envs 1.13-1.6×;
    /// 8 agents × 4 envs, lanes 389 ms against 491-496 (layered), rows 351-399
    /// (1.23-1.41×), 64 × 4 rows 2452 against 3770 (1.54×). Populations
    /// keep the layered update by default: their rows kernel reads the
    /// weights from storage and its first compile takes ~70 s on llvmpipe
    /// (no shader cache) against ~1 s for the layered kernels.
    #[default]
    Auto,
    /// The fused update: one dispatch for the linear network, else two per
    /// minibatch step; an error where [`fused_update_support`] refuses it.
    Fused,
    /// A dispatch per layer and pass.
    Layered,
}

/// How the fused row step's row pass spreads a minibatch (config key
/// `row_pass`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowPass {
    /// `rows` where the row pass reads the weights from a uniform block
    /// (one agent, [`update_uniform_weights`]), else `lanes`. Side by side
    /// (`ppo-wgpu bench --presets cleanrl --agents 1 --env-devices gpu`,
    /// Mesa 25 llvmpipe GL, 2 cores): CleanRL's update 14-15 ms in rows
    /// against 22-23 ms in lanes; the first compile (no shader cache)
    /// ~1.5 s longer. For populations, rows is 1.2-1.5× the layered update
    /// once compiled, but compiles for ~70 s the first time (see
    /// [`UpdatePath::Auto`]), so it is taken only when asked for.
    #[default]
    Auto,
    /// A workgroup of [`LANES_WG`] lanes per [`UPDATE_LANES_ROWS`] rows,
    /// every lane owning some units of every layer.
    Lanes,
    /// An invocation per [`ROW_PASS_ROWS`] rows, alone
    /// ([`super::row_pass`]).
    Rows,
}

/// Whether the row pass takes the rows layout for `choice`; an error naming
/// `row_pass` where `rows` was asked for and cannot run `spec`.
pub fn row_pass_by_rows(
    ctx: &GpuContext,
    spec: &ActorCriticSpec,
    num_agents: usize,
    choice: RowPass,
) -> Result<bool> {
    let iterations = row_pass_iterations(spec);
    let fits = !ctx.adapter.is_software || iterations <= MAX_FUSED_MINIBATCH;
    match choice {
        RowPass::Lanes => Ok(false),
        RowPass::Auto => Ok(fits && update_uniform_weights(ctx, spec, num_agents)),
        RowPass::Rows if fits => Ok(true),
        RowPass::Rows => Err(Error::config(
            "row_pass",
            "rows",
            format!(
                "one invocation would take {iterations} loop iterations, over llvmpipe's cap of {MAX_FUSED_MINIBATCH}; use row_pass = \"lanes\""
            ),
        )),
    }
}

/// Minibatch rows per workgroup where they fit workgroup memory. On Mesa
/// 25 llvmpipe GL (2 cores, 64-64, CleanRL's update) 1 / 2 / 4 rows took
/// 55 / 30 / 32 ms per update and 2.1 / 3.3 / 6.9 s to compile on first use.
pub const UPDATE_LANES_ROWS: usize = 2;

/// Most minibatch rows per agent: `update_grads` loops over them in one
/// invocation, and llvmpipe (Mesa 22.3) silently stops an invocation's
/// loops after 65,535 iterations.
pub const MAX_FUSED_MINIBATCH: usize = 65_000;

/// Where each row's tensors sit in the scratch buffer [rows][stride].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScratchLayout {
    /// The observations (the first layer's input).
    pub obs: usize,
    /// Per network (actor, critic): each hidden layer's output.
    pub act: [Vec<usize>; 2],
    /// Per network: each layer's delta dz (hidden layers, then the output).
    pub dz: [Vec<usize>; 2],
    pub stride: usize,
}

impl ScratchLayout {
    pub fn new(spec: &ActorCriticSpec) -> Self {
        let mut at = spec.obs_dim;
        let mut act: [Vec<usize>; 2] = Default::default();
        let mut dz: [Vec<usize>; 2] = Default::default();
        for (net, outputs) in [spec.num_actions, 1].into_iter().enumerate() {
            for &width in &spec.hidden {
                act[net].push(at);
                dz[net].push(at + width);
                at += 2 * width;
            }
            dz[net].push(at);
            at += outputs;
        }
        ScratchLayout {
            obs: 0,
            act,
            dz,
            stride: at,
        }
    }
}

/// `update_grads`' job table: one 8-output × 8-column block of one layer
/// (columns include the bias) per entry, [act_offset, in_dim, dz_offset,
/// out_dim, w_offset, b_offset, o0, i0].
pub fn update_jobs(spec: &ActorCriticSpec) -> Vec<[u32; 8]> {
    let scratch = ScratchLayout::new(spec);
    let nets = [
        spec.actor().layers(0),
        spec.critic().layers(spec.critic_base()),
    ];
    let mut jobs = Vec::new();
    for (net, layers) in nets.iter().enumerate() {
        for (l, layer) in layers.iter().enumerate() {
            let act = if l == 0 {
                scratch.obs
            } else {
                scratch.act[net][l - 1]
            };
            for o0 in (0..layer.out_dim).step_by(8) {
                for i0 in (0..=layer.in_dim).step_by(8) {
                    jobs.push(
                        [
                            act,
                            layer.in_dim,
                            scratch.dz[net][l],
                            layer.out_dim,
                            layer.w_offset,
                            layer.b_offset,
                            o0,
                            i0,
                        ]
                        .map(|v| v as u32),
                    );
                }
            }
        }
    }
    jobs
}

/// Workgroup memory `update_rows` takes for `spec` with `rows` rows per workgroup.
pub fn update_workgroup_bytes(spec: &ActorCriticSpec, rows: usize) -> usize {
    let hidden: usize = spec.hidden.iter().sum();
    4 * rows * (spec.obs_dim + 2 * 2 * hidden + 2 * (spec.num_actions + 1))
}

/// Rows per `update_rows` workgroup on `ctx`: [`UPDATE_LANES_ROWS`], fewer
/// where the activations do not fit workgroup memory (None: not even one).
pub fn update_lanes_rows(ctx: &GpuContext, spec: &ActorCriticSpec) -> Option<usize> {
    let limit = ctx.limits.max_compute_workgroup_storage_size as usize;
    [UPDATE_LANES_ROWS, 1]
        .into_iter()
        .find(|&rows| update_workgroup_bytes(spec, rows) <= limit)
}

/// Why the fused step cannot run `spec` with `minibatch_size` rows per
/// agent on `ctx` (None: it can).
pub fn fused_update_support(
    ctx: &GpuContext,
    spec: &ActorCriticSpec,
    num_agents: usize,
    minibatch_size: usize,
) -> Option<String> {
    if let Some(wide) = spec.hidden.iter().find(|&&h| h > MAX_FUSED_HIDDEN) {
        return Some(format!(
            "hidden layer of {wide} exceeds the fused update's {MAX_FUSED_HIDDEN}"
        ));
    }
    if minibatch_size > MAX_FUSED_MINIBATCH {
        return Some(format!(
            "minibatch of {minibatch_size} rows per agent exceeds the fused update's {MAX_FUSED_MINIBATCH}"
        ));
    }
    let scratch = (num_agents * minibatch_size * ScratchLayout::new(spec).stride * 4) as u64;
    let limit = ctx.max_binding_bytes().min(ctx.limits.max_buffer_size);
    if scratch > limit {
        return Some(format!(
            "its scratch of {scratch} bytes for {num_agents} agents × {minibatch_size} rows exceeds the adapter's {limit}"
        ));
    }
    if update_lanes_rows(ctx, spec).is_none() {
        return Some(format!(
            "one row's activations ({} bytes) exceed the adapter's {} bytes of workgroup memory",
            update_workgroup_bytes(spec, 1),
            ctx.limits.max_compute_workgroup_storage_size
        ));
    }
    None
}

/// One hidden layer's delta for `envs` rows: lane `lid` computes units
/// lid, lid + LANES_WG, ... as (Σ_o dnext[e][o] · W_next[o][unit]) ·
/// (1 - act²), outputs o ascending (`linear_backward_data`'s order), into
/// `dout` [envs][width] (where a lower layer reads it) and the live rows'
/// scratch at offset `scratch`. `dnext` rows are `stride` apart from
/// `offset`.
fn emit_lanes_delta(
    out: &mut String,
    next: &LayerLayout,
    (dnext, stride, offset): (&str, usize, usize),
    (act, dout): (&str, Option<&str>),
    scratch: usize,
    envs: usize,
) {
    let width = next.in_dim;
    let units = width.div_ceil(LANES_WG);
    let _ = writeln!(out, "    {{");
    for j in 0..units {
        let unit = format!("lid + {}u", j * LANES_WG);
        if (j + 1) * LANES_WG > width {
            let _ = writeln!(out, "        let u{j} = min({unit}, {}u);", width - 1);
        } else {
            let _ = writeln!(out, "        let u{j} = {unit};");
        }
        for e in 0..envs {
            let _ = writeln!(out, "        var g{j}_{e} = 0.0;");
        }
    }
    let body = |out: &mut String, indent: &str, o: &str| {
        for e in 0..envs {
            let _ = writeln!(
                out,
                "{indent}let z{e} = {dnext}[{}u + {o}];",
                e * stride + offset
            );
        }
        for j in 0..units {
            let _ = writeln!(
                out,
                "{indent}let w{j} = pw(base + {}u + {o} * {}u + u{j});",
                next.w_offset, next.in_dim
            );
            for e in 0..envs {
                let _ = writeln!(out, "{indent}g{j}_{e} += z{e} * w{j};");
            }
        }
    };
    if next.out_dim <= 8 {
        for o in 0..next.out_dim {
            let _ = writeln!(out, "        {{");
            body(out, "            ", &format!("{o}u"));
            let _ = writeln!(out, "        }}");
        }
    } else {
        let _ = writeln!(
            out,
            "        for (var o = 0u; o < {}u + dims.pad; o++) {{",
            next.out_dim
        );
        body(out, "            ", "o");
        let _ = writeln!(out, "        }}");
    }
    for j in 0..units {
        let partial = (j + 1) * LANES_WG > width;
        let indent = if partial {
            let _ = writeln!(out, "        if (lid + {}u < {width}u) {{", j * LANES_WG);
            "            "
        } else {
            "        "
        };
        for e in 0..envs {
            let at = format!("{}u + u{j}", e * width);
            let _ = writeln!(
                out,
                "{indent}{{\n{indent}    let y = {act}[{at}];\n{indent}    let d = g{j}_{e} * (1.0 - y * y);"
            );
            if let Some(dout) = dout {
                let _ = writeln!(out, "{indent}    {dout}[{at}] = d;");
            }
            let _ = writeln!(
                out,
                "{indent}    if (slive{e}) {{\n{indent}        scratch[srow{e} + {scratch}u + u{j}] = d;\n{indent}    }}\n{indent}}}"
            );
        }
        if partial {
            let _ = writeln!(out, "        }}");
        }
    }
    let _ = writeln!(out, "    }}");
}

/// Whether `update_rows` reads the weights of `num_agents` agents from a
/// uniform block: one agent whose parameters fit the adapter's uniform
/// binding (llvmpipe gathers uniform loads without a per-lane loop).
pub fn update_uniform_weights(ctx: &GpuContext, spec: &ActorCriticSpec, num_agents: usize) -> bool {
    let bytes = (spec.param_count().div_ceil(4) * 16) as u64;
    num_agents == 1 && bytes <= ctx.limits.max_uniform_buffer_binding_size
}

/// One hidden layer's delta in either layout's backward: the layer above
/// (`next`), its delta `dnext` (rows `stride` apart from `offset`), the
/// layer's activations `act`, where its delta goes (`dout`, None for the
/// first layer, whose delta only update_grads reads) and its scratch
/// offset.
pub(crate) struct DeltaJob {
    pub layer: usize,
    pub critic: bool,
    pub next: LayerLayout,
    pub dnext: String,
    pub stride: usize,
    pub offset: usize,
    pub act: String,
    pub dout: Option<String>,
    pub scratch: usize,
}

/// Every hidden layer's delta, top layer first, actor then critic.
pub(crate) fn delta_jobs(spec: &ActorCriticSpec) -> Vec<DeltaJob> {
    let (hidden, actions) = (spec.hidden.len(), spec.num_actions);
    let scratch = ScratchLayout::new(spec);
    let actor = spec.actor().layers(0);
    let critic = spec.critic().layers(spec.critic_base());
    let mut jobs = Vec::new();
    for l in (0..hidden).rev() {
        for (n, net, layers, offset) in [(0, "a", &actor, 0), (1, "c", &critic, actions)] {
            let (dnext, stride, offset) = if l + 1 == hidden {
                ("dheads".to_string(), actions + 1, offset)
            } else {
                (format!("d_{net}{}", l + 1), spec.hidden[l + 1], 0)
            };
            jobs.push(DeltaJob {
                layer: l,
                critic: n == 1,
                next: layers[l + 1],
                dnext,
                stride,
                offset,
                act: format!("act_{net}{l}"),
                dout: (l > 0).then(|| format!("d_{net}{l}")),
                scratch: scratch.dz[n][l],
            });
        }
    }
    jobs
}

/// The start of either layout's generated `update_rows` (after a header
/// naming `generator`): the weights' binding and `pw`, the network's
/// constants, the layout's lanes per workgroup `wg` (its name and value)
/// and `rows` as LANES_E.
pub(crate) fn row_pass_preamble(
    spec: &ActorCriticSpec,
    generator: &str,
    wg: (&str, usize),
    rows: usize,
    uniform_weights: bool,
) -> String {
    let scratch = ScratchLayout::new(spec);
    let hidden = spec.hidden.len();
    let mut g = format!("// generated by {generator}.\n");
    if uniform_weights {
        let _ = writeln!(
            g,
            "@group(0) @binding(1) var<uniform> params: array<vec4<f32>, {}>;\n\
             fn pw(i: u32) -> f32 {{\n    return params[i >> 2u][i & 3u];\n}}",
            spec.param_count().div_ceil(4)
        );
    } else {
        let _ = writeln!(
            g,
            "@group(0) @binding(1) var<storage, read> params: array<f32>;\n\
             fn pw(i: u32) -> f32 {{\n    return params[i];\n}}"
        );
    }
    let _ = writeln!(
        g,
        "const NUM_ACTIONS: u32 = {}u;\nconst POLICY_OBS: u32 = {}u;\n\
         const {}: u32 = {}u;\nconst LANES_E: u32 = {rows}u;\n\
         const STRIDE: u32 = {}u;\nconst DZ_ACTOR: u32 = {}u;\nconst DZ_CRITIC: u32 = {}u;",
        spec.num_actions,
        spec.obs_dim,
        wg.0,
        wg.1,
        scratch.stride,
        scratch.dz[0][hidden],
        scratch.dz[1][hidden]
    );
    g
}

/// `update_rows`' WGSL for `spec` with `envs` minibatch rows per workgroup,
/// the weights read from storage or (`uniform_weights`) a uniform block.
pub fn update_rows_source(spec: &ActorCriticSpec, envs: usize, uniform_weights: bool) -> String {
    let d = spec.obs_dim;
    let actions = spec.num_actions;
    let scratch = ScratchLayout::new(spec);
    let hidden = spec.hidden.len();
    let mut g = row_pass_preamble(
        spec,
        "ppo::fused_update for this network's sizes and rows per workgroup",
        ("LANES_WG", LANES_WG),
        envs,
        uniform_weights,
    );
    let _ = writeln!(g, "var<workgroup> xs: array<f32, {}>;", envs * d);
    for net in ["a", "c"] {
        for (l, &width) in spec.hidden.iter().enumerate() {
            let _ = writeln!(
                g,
                "var<workgroup> act_{net}{l}: array<f32, {}>;",
                envs * width
            );
            if l > 0 {
                let _ = writeln!(
                    g,
                    "var<workgroup> d_{net}{l}: array<f32, {}>;",
                    envs * width
                );
            }
        }
    }
    let heads_len = envs * (actions + 1);
    let _ = writeln!(
        g,
        "var<workgroup> heads: array<f32, {heads_len}>;\nvar<workgroup> dheads: array<f32, {heads_len}>;"
    );

    // Each row slot's scratch row (clamped) and whether it is in the minibatch.
    let mut prelude = String::new();
    for e in 0..envs {
        let _ = writeln!(
            prelude,
            "    let slive{e} = m0 + {e}u < dims.minibatch_size;\n    \
             let srow{e} = (first + min(m0 + {e}u, dims.minibatch_size - 1u)) * STRIDE;"
        );
    }
    // The rows' observations (clamped to the minibatch) into xs and scratch.
    let _ = writeln!(
        g,
        "fn lanes_load(lid: u32, agent: u32, first: u32, m0: u32) {{\n    \
         for (var q = lid; q < {}u + dims.pad; q += LANES_WG) {{\n        \
         let m = m0 + q / {d}u;\n        \
         let x = obs[source_row(agent, min(m, dims.minibatch_size - 1u)) * {d}u + q % {d}u];\n        \
         xs[q] = x;\n        \
         if (m < dims.minibatch_size) {{\n            \
         scratch[(first + m) * STRIDE + {}u + q % {d}u] = x;\n        }}\n    }}\n}}",
        envs * d,
        scratch.obs
    );

    let actor = spec.actor().layers(0);
    let critic = spec.critic().layers(spec.critic_base());
    let input = |net: &str, l: usize| -> String {
        if l == 0 {
            "xs".to_string()
        } else {
            format!("act_{net}{}", l - 1)
        }
    };
    let _ = writeln!(
        g,
        "fn lanes_forward(lid: u32, base: u32, first: u32, m0: u32) {{\n    let final_pass = false;\n{prelude}"
    );
    for l in 0..hidden {
        for (n, net, layers) in [(0, "a", &actor), (1, "c", &critic)] {
            emit_lanes_layer(
                &mut g,
                &layers[l],
                (&input(net, l), &format!("act_{net}{l}")),
                envs,
                Some(scratch.act[n][l]),
            );
        }
        let _ = writeln!(g, "    workgroupBarrier();");
    }
    emit_lanes_heads(
        &mut g,
        (&actor[hidden], &input("a", hidden)),
        (&critic[hidden], &input("c", hidden)),
        envs,
    );
    let _ = writeln!(g, "    workgroupBarrier();\n}}");

    let _ = writeln!(
        g,
        "fn lanes_backward(lid: u32, base: u32, first: u32, m0: u32) {{\n{prelude}"
    );
    for job in delta_jobs(spec) {
        emit_lanes_delta(
            &mut g,
            &job.next,
            (&job.dnext, job.stride, job.offset),
            (&job.act, job.dout.as_deref()),
            job.scratch,
            envs,
        );
        if job.critic && job.layer > 0 {
            let _ = writeln!(g, "    workgroupBarrier();");
        }
    }
    let _ = writeln!(g, "}}");
    [
        UPDATE_ROWS_WGSL.source,
        PPO_LOSS_TERMS_WGSL.source,
        &g,
        LANES_ENTRY_WGSL,
    ]
    .join("\n")
}

/// The lanes layout's entry point (after the generated lanes_load,
/// lanes_forward and lanes_backward).
const LANES_ENTRY_WGSL: &str = "@compute @workgroup_size(LANES_WG)
fn update_rows(@builtin(local_invocation_index) lid: u32,
               @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) groups: vec3<u32>) {
    let g = wid.x + wid.y * groups.x;
    if (g >= dims.total_groups) {
        return;
    }
    let agent = g / dims.blocks_per_agent;
    // The block's first row of the agent's minibatch, and its rows' start.
    let m0 = (g % dims.blocks_per_agent) * LANES_E;
    let first = agent * dims.minibatch_size;
    let base = agent * dims.param_stride;
    lanes_load(lid, agent, first, m0);
    workgroupBarrier();
    lanes_forward(lid, base, first, m0);
    if (lid < LANES_E) {
        let m = m0 + lid;
        if (m < dims.minibatch_size) {
            row_loss(lid, agent, m);
        } else {
            for (var k = 0u; k <= NUM_ACTIONS; k++) {
                dheads[lid * (NUM_ACTIONS + 1u) + k] = 0.0;
            }
        }
    }
    workgroupBarrier();
    lanes_backward(lid, base, first, m0);
}
";

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct RowsDims {
    rows: u32,
    minibatch_size: u32,
    param_stride: u32,
    blocks_per_agent: u32,
    total_groups: u32,
    clip_vloss: u32,
    clip_coef: f32,
    ent_coef: f32,
    vf_coef: f32,
    pad: u32,
    num_agents: u32,
    envs_per_agent: u32,
    batch_per_agent: u32,
    perm_base: u32,
    adv_base: u32,
    pad1: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct GradsDims {
    minibatch_size: u32,
    jobs: u32,
    num_agents: u32,
    param_stride: u32,
    stride: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

/// The buffers the fused step reads and writes (the layered update's own).
pub struct FusedUpdateBuffers<'a> {
    pub params: &'a GpuBuffer<f32>,
    /// The rollout's observations [T][P][N][obs_dim] and records
    /// [T][P][N][RECORD] (advantages written by GAE), read through `perm`.
    pub obs: &'a GpuBuffer<f32>,
    pub records: &'a GpuBuffer<f32>,
    /// [epochs][P][B].
    pub perm: &'a GpuBuffer<u32>,
    pub row_stats: &'a GpuBuffer<f32>,
    pub grads: &'a GpuBuffer<f32>,
}

/// The compiled fused minibatch step of one network shape and minibatch,
/// bound to one set of buffers: the minibatch read through the permutation
/// and normalized as it is read, the row pass, the gradients (the
/// optimizer step follows, `ops::optim::optimizer_step`).
#[derive(Debug)]
pub struct FusedUpdate {
    pipeline: wgpu::ComputePipeline,
    /// One per epoch × minibatch (its own uniform dims).
    bind_groups: Vec<wgpu::BindGroup>,
    _dims: Vec<UniformBuffer<RowsDims>>,
    grid: (u32, u32),
    grads: Dispatch,
    /// Every minibatch's advantage mean and scale, once per update (None
    /// without advantage normalization: `adv_stats` holds 0 and 1).
    adv_moments: Option<Dispatch>,
    _scratch: GpuBuffer<f32>,
    _jobs: GpuBuffer<u32>,
    _adv_stats: GpuBuffer<f32>,
}

impl FusedUpdate {
    /// Compiles the step for `spec` and `settings`' agents, minibatches and
    /// epochs; an error naming the config key `update` where
    /// [`fused_update_support`] refuses it.
    pub fn new(
        ctx: &GpuContext,
        spec: &ActorCriticSpec,
        settings: &UpdateSettings,
        row_pass: RowPass,
        buffers: &FusedUpdateBuffers<'_>,
    ) -> Result<Self> {
        let num_agents = settings.num_agents;
        let minibatch_size = settings.minibatch_size();
        if let Some(reason) = fused_update_support(ctx, spec, num_agents, minibatch_size) {
            return Err(Error::config("update", "fused", reason));
        }
        let uniform_weights = update_uniform_weights(ctx, spec, num_agents);
        let by_rows = row_pass_by_rows(ctx, spec, num_agents, row_pass)?;
        let rows_per_group = if by_rows {
            ROW_PASS_ROWS
        } else {
            update_lanes_rows(ctx, spec).unwrap_or(1)
        };
        let rows = num_agents * minibatch_size;
        let scratch_layout = ScratchLayout::new(spec);
        let scratch =
            GpuBuffer::<f32>::zeros(ctx, "fused update scratch", rows * scratch_layout.stride)?;
        let job_table = update_jobs(spec);
        let flat: Vec<u32> = job_table.iter().flatten().copied().collect();
        let jobs = GpuBuffer::from_slice(ctx, "fused update jobs", &flat)?;

        let shape = BatchShape {
            num_agents,
            num_steps: settings.num_steps,
            envs_per_agent: settings.envs_per_agent,
            obs_dim: spec.obs_dim,
            minibatch_size,
            epochs: settings.update_epochs,
        };
        let minibatches = settings.num_minibatches;
        let entries = settings.update_epochs * minibatches;
        let batch = settings.batch_per_agent();
        let (adv_stats, adv_moments) = if settings.norm_adv {
            let adv_stats = GpuBuffer::<f32>::zeros(ctx, "adv_stats", entries * num_agents * 2)?;
            let dispatch = stats::adv_moments(
                ctx,
                &shape,
                minibatches,
                &AdvMomentsBuffers {
                    perm: buffers.perm,
                    records: buffers.records,
                    adv_stats: &adv_stats,
                },
            )?;
            (adv_stats, Some(dispatch))
        } else {
            let identity: Vec<f32> = [0.0, 1.0].repeat(entries * num_agents);
            (GpuBuffer::from_slice(ctx, "adv_stats", &identity)?, None)
        };

        // Workgroups per agent: of rows_per_group rows (lanes), or of
        // ROW_PASS_WG invocations of rows_per_group rows each (rows: an
        // agent per workgroup, so its weights' addresses are the same in
        // every lane).
        let blocks_per_agent = if by_rows {
            minibatch_size.div_ceil(rows_per_group * ROW_PASS_WG)
        } else {
            minibatch_size.div_ceil(rows_per_group)
        };
        let total_groups = num_agents * blocks_per_agent;
        let base_dims = RowsDims {
            rows: fits_u32("update_rows", "rows", rows)?,
            minibatch_size: minibatch_size as u32,
            param_stride: spec.param_count() as u32,
            blocks_per_agent: blocks_per_agent as u32,
            total_groups: total_groups as u32,
            clip_vloss: settings.coefs.clip_vloss as u32,
            clip_coef: settings.coefs.clip_coef as f32,
            ent_coef: settings.coefs.ent_coef as f32,
            vf_coef: settings.coefs.vf_coef as f32,
            num_agents: num_agents as u32,
            envs_per_agent: fits_u32("update_rows", "envs_per_agent", settings.envs_per_agent)?,
            batch_per_agent: fits_u32("update_rows", "batch_per_agent", batch)?,
            ..Default::default()
        };
        fits_u32(
            "update_rows",
            "perm",
            settings.update_epochs * num_agents * batch,
        )?;
        let mut entries_layout = vec![layout_entry(0, wgpu::BufferBindingType::Uniform)];
        entries_layout.extend((1..=7).map(|b| {
            let ty = if b == 1 && uniform_weights {
                wgpu::BufferBindingType::Uniform
            } else {
                let read_only = matches!(b, 1..=3 | 6 | 7);
                wgpu::BufferBindingType::Storage { read_only }
            };
            layout_entry(b, ty)
        }));
        let layout = ctx
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("update_rows"),
                entries: &entries_layout,
            });
        let source = if by_rows {
            row_pass_source(spec, rows_per_group, uniform_weights)
        } else {
            update_rows_source(spec, rows_per_group, uniform_weights)
        };
        let pipeline = create_pipeline_from_source(
            &ctx.device,
            "update_rows.wgsl (generated)",
            &source,
            "update_rows",
            &[],
            &layout,
        )?;
        let mut dims = Vec::with_capacity(entries);
        let mut bind_groups = Vec::with_capacity(entries);
        for entry in 0..entries {
            let (epoch, minibatch) = (entry / minibatches, entry % minibatches);
            let uniform = UniformBuffer::new(
                ctx,
                "update_rows dims",
                &RowsDims {
                    perm_base: (epoch * num_agents * batch + minibatch * minibatch_size) as u32,
                    adv_base: (entry * num_agents) as u32,
                    ..base_dims
                },
            );
            let resources = [
                uniform.binding(),
                buffers.params.binding(),
                buffers.obs.binding(),
                buffers.records.binding(),
                scratch.binding(),
                buffers.row_stats.binding(),
                buffers.perm.binding(),
                adv_stats.binding(),
            ];
            let bind_entries: Vec<wgpu::BindGroupEntry> = resources
                .into_iter()
                .enumerate()
                .map(|(i, resource)| wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource,
                })
                .collect();
            bind_groups.push(ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("update_rows"),
                layout: &layout,
                entries: &bind_entries,
            }));
            dims.push(uniform);
        }
        let grid = grid_1d(
            total_groups as u64,
            1,
            ctx.limits.max_compute_workgroups_per_dimension,
        );
        let grads = Dispatch::with_uniform(
            ctx,
            Kernel::UpdateGrads,
            &GradsDims {
                minibatch_size: minibatch_size as u32,
                jobs: job_table.len() as u32,
                num_agents: num_agents as u32,
                param_stride: spec.param_count() as u32,
                stride: scratch_layout.stride as u32,
                ..Default::default()
            },
            &[jobs.binding(), scratch.binding(), buffers.grads.binding()],
            (num_agents * job_table.len()) as u64,
        )?;
        Ok(FusedUpdate {
            pipeline,
            bind_groups,
            _dims: dims,
            grid,
            grads,
            adv_moments,
            _scratch: scratch,
            _jobs: jobs,
            _adv_stats: adv_stats,
        })
    }

    /// Dispatches one minibatch step records (the row pass and the gradients).
    pub fn dispatch_count(&self) -> usize {
        2
    }

    /// Dispatches [`FusedUpdate::record_prologue`] records.
    pub fn prologue_dispatch_count(&self) -> usize {
        usize::from(self.adv_moments.is_some())
    }

    /// Records what runs once per update, after GAE and before the first
    /// step: every minibatch's advantage mean and scale.
    pub fn record_prologue(&self, pass: &mut wgpu::ComputePass<'_>) {
        if let Some(d) = &self.adv_moments {
            d.record(pass);
        }
    }

    /// Records step `entry` (epoch × minibatches + minibatch): the row pass,
    /// then the gradients (before the optimizer step).
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, entry: usize) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_groups[entry], &[]);
        pass.dispatch_workgroups(self.grid.0, self.grid.1, 1);
        self.grads.record(pass);
    }
}

/// `update_linear`'s workgroup size, and its limits (`shaders/update_linear.wgsl`).
const LINEAR_LANES: usize = 32;
const LINEAR_MAX_OBS: usize = 16;
const LINEAR_MAX_ACTIONS: usize = 16;
const LINEAR_MAX_COLS: usize = 64;
const LINEAR_STORAGE_BUFFERS: u32 = 14;

/// Loop iterations one lane of `update_linear` counts in its prologue
/// (bootstrap, GAE, explained variance).
fn linear_prologue_iterations(spec: &ActorCriticSpec, settings: &UpdateSettings) -> usize {
    let envs = settings.envs_per_agent.div_ceil(LINEAR_LANES);
    let batch = settings.batch_per_agent().div_ceil(LINEAR_LANES);
    envs * (settings.num_steps + spec.obs_dim) + 2 * batch + 4 * LINEAR_LANES + 8
}

/// Loop iterations one lane of `update_linear` counts per minibatch step.
fn linear_step_iterations(spec: &ActorCriticSpec, minibatch_size: usize, norm_adv: bool) -> usize {
    let (d, a) = (spec.obs_dim, spec.num_actions);
    let cols = spec.param_count() + ROW_STATS;
    let rows = minibatch_size.div_ceil(LINEAR_LANES);
    let norm = if norm_adv {
        2 * rows + 2 * LINEAR_LANES
    } else {
        0
    };
    let per_row = 3 * d + 2 * a * (d + 1) + 4 * a + 10;
    norm + cols + rows * per_row + cols.div_ceil(LINEAR_LANES) * LINEAR_LANES + 2 * cols + 16
}

/// Why the one-dispatch update of the linear network cannot run `spec`
/// (None: it can); `step_budget`: the loop iterations one dispatch may count
/// (None: no cap).
pub fn linear_update_support(
    ctx: &GpuContext,
    spec: &ActorCriticSpec,
    minibatch_size: usize,
    norm_adv: bool,
) -> Option<String> {
    if !spec.hidden.is_empty() {
        return Some("the one-dispatch update takes the linear network only".into());
    }
    if spec.obs_dim > LINEAR_MAX_OBS || spec.num_actions > LINEAR_MAX_ACTIONS {
        return Some(format!(
            "{} observations and {} actions exceed the fused linear update's {LINEAR_MAX_OBS} and {LINEAR_MAX_ACTIONS}",
            spec.obs_dim, spec.num_actions
        ));
    }
    let cols = spec.param_count() + ROW_STATS;
    if cols > LINEAR_MAX_COLS {
        return Some(format!(
            "{} parameters exceed the fused linear update's {}",
            spec.param_count(),
            LINEAR_MAX_COLS - ROW_STATS
        ));
    }
    let have = ctx.limits.max_storage_buffers_per_shader_stage;
    if have < LINEAR_STORAGE_BUFFERS {
        return Some(format!(
            "the adapter binds {have} storage buffers per stage, the fused linear update {LINEAR_STORAGE_BUFFERS}"
        ));
    }
    let per_step = linear_step_iterations(spec, minibatch_size, norm_adv);
    if ctx.adapter.is_software && per_step > MAX_FUSED_MINIBATCH {
        return Some(format!(
            "a minibatch of {minibatch_size} rows takes {per_step} loop iterations per lane, over llvmpipe's cap of {MAX_FUSED_MINIBATCH}"
        ));
    }
    None
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct LinearDims {
    num_steps: u32,
    prologue: u32,
    gamma: f32,
    lambda: f32,
    num_agents: u32,
    envs_per_agent: u32,
    minibatch_size: u32,
    batch_per_agent: u32,
    minibatches: u32,
    index_begin: u32,
    index_end: u32,
    clip_vloss: u32,
    norm_adv: u32,
    check_kl: u32,
    clip_coef: f32,
    ent_coef: f32,
    vf_coef: f32,
    target_kl: f32,
    max_grad_norm: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
}

/// The buffers the one-dispatch linear update reads and writes (the
/// engine's own).
pub struct LinearUpdateBuffers<'a> {
    pub rewards: &'a GpuBuffer<f32>,
    pub flags: &'a GpuBuffer<u32>,
    pub final_values: &'a GpuBuffer<f32>,
    pub cur_obs: &'a GpuBuffer<f32>,
    pub explained_var: &'a GpuBuffer<f32>,
    pub perm: &'a GpuBuffer<u32>,
    pub obs: &'a GpuBuffer<f32>,
    pub records: &'a GpuBuffer<f32>,
    pub params: &'a GpuBuffer<f32>,
    pub adam_m: &'a GpuBuffer<f32>,
    pub adam_v: &'a GpuBuffer<f32>,
    pub agent_state: &'a GpuBuffer<AgentState>,
    pub history: &'a GpuBuffer<f32>,
    pub grads: &'a GpuBuffer<f32>,
}

/// Every minibatch step of the linear network's update in one dispatch
/// (`shaders/update_linear.wgsl`, one workgroup per agent), or a few where
/// llvmpipe's loop cap asks for it.
#[derive(Debug)]
pub struct LinearUpdate {
    chunks: Vec<Dispatch>,
    prologue: bool,
}

impl LinearUpdate {
    /// Builds the dispatches for `spec` (checked with
    /// [`linear_update_support`]) and the update's sizes.
    pub fn new(
        ctx: &GpuContext,
        spec: &ActorCriticSpec,
        settings: &UpdateSettings,
        buffers: &LinearUpdateBuffers<'_>,
    ) -> Result<Self> {
        let m = settings.minibatch_size();
        if let Some(reason) = linear_update_support(ctx, spec, m, settings.norm_adv) {
            return Err(Error::config("update", "fused", reason));
        }
        let steps = settings.update_epochs * settings.num_minibatches;
        let per_step = linear_step_iterations(spec, m, settings.norm_adv);
        let prologue_iterations = linear_prologue_iterations(spec, settings);
        // The first dispatch also runs the bootstrap, GAE and explained
        // variance where llvmpipe's loop cap leaves room for them.
        let (prologue, first, per_dispatch) = if ctx.adapter.is_software {
            let per_dispatch = (CPU_LOOP_BUDGET / per_step).max(1);
            match CPU_LOOP_BUDGET.checked_sub(prologue_iterations) {
                Some(room) if room >= per_step => (true, room / per_step, per_dispatch),
                _ => (false, per_dispatch, per_dispatch),
            }
        } else {
            (true, steps, steps)
        };
        let mut bounds = vec![0, first.min(steps)];
        while bounds[bounds.len() - 1] < steps {
            let last = bounds[bounds.len() - 1];
            bounds.push((last + per_dispatch).min(steps));
        }
        let actor = &spec.actor().layers(0)[0];
        let critic = &spec.critic().layers(spec.critic_base())[0];
        let dims = |begin: usize, end: usize| LinearDims {
            num_steps: settings.num_steps as u32,
            prologue: (prologue && begin == 0) as u32,
            gamma: settings.gamma as f32,
            lambda: settings.gae_lambda as f32,
            num_agents: settings.num_agents as u32,
            envs_per_agent: settings.envs_per_agent as u32,
            minibatch_size: m as u32,
            batch_per_agent: settings.batch_per_agent() as u32,
            minibatches: settings.num_minibatches as u32,
            index_begin: begin as u32,
            index_end: end as u32,
            clip_vloss: settings.coefs.clip_vloss as u32,
            norm_adv: settings.norm_adv as u32,
            check_kl: settings.target_kl.is_some() as u32,
            clip_coef: settings.coefs.clip_coef as f32,
            ent_coef: settings.coefs.ent_coef as f32,
            vf_coef: settings.coefs.vf_coef as f32,
            target_kl: settings.target_kl.unwrap_or(0.0) as f32,
            max_grad_norm: settings.max_grad_norm as f32,
            beta1: ADAM_BETA1 as f32,
            beta2: ADAM_BETA2 as f32,
            eps: settings.adam_eps as f32,
            one_minus_beta1: (1.0 - ADAM_BETA1) as f32,
            one_minus_beta2: (1.0 - ADAM_BETA2) as f32,
        };
        let overrides = [
            ("OBS_DIM", spec.obs_dim as u32),
            ("NUM_ACTIONS", spec.num_actions as u32),
            ("PARAMS", spec.param_count() as u32),
            ("ACTOR_W", actor.w_offset as u32),
            ("ACTOR_B", actor.b_offset as u32),
            ("CRITIC_W", critic.w_offset as u32),
            ("CRITIC_B", critic.b_offset as u32),
        ];
        let chunks = bounds
            .windows(2)
            .map(|pair| {
                Dispatch::with_uniform_constants(
                    ctx,
                    Kernel::UpdateLinear,
                    &dims(pair[0], pair[1]),
                    &[
                        buffers.perm.binding(),
                        buffers.obs.binding(),
                        buffers.records.binding(),
                        buffers.params.binding(),
                        buffers.adam_m.binding(),
                        buffers.adam_v.binding(),
                        buffers.agent_state.binding(),
                        buffers.history.binding(),
                        buffers.grads.binding(),
                        buffers.rewards.binding(),
                        buffers.flags.binding(),
                        buffers.final_values.binding(),
                        buffers.cur_obs.binding(),
                        buffers.explained_var.binding(),
                    ],
                    settings.num_agents as u64,
                    &overrides,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(LinearUpdate { chunks, prologue })
    }

    /// Whether the first dispatch also runs the bootstrap, GAE and the
    /// explained variance (else the engine records their own kernels).
    pub fn has_prologue(&self) -> bool {
        self.prologue
    }

    /// Dispatches one update records after the bootstrap and GAE (one on GPUs).
    pub fn dispatch_count(&self) -> usize {
        self.chunks.len()
    }

    /// Records every minibatch step (after GAE).
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        for chunk in &self.chunks {
            chunk.record(pass);
        }
    }
}
