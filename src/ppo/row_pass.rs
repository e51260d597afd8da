//! The fused update's row pass in the rows layout: one invocation runs
//! [`ROW_PASS_ROWS`] minibatch rows alone through the forward, the loss and
//! the backward of both networks, instead of a workgroup sharing each row's
//! units across lanes (the lanes layout, `super::fused_update`).
//!
//! Each layer is a loop over its outputs `o` whose index is the same in every
//! invocation, around an unrolled sum over the layer's inputs held in the
//! invocation's private arrays. So with the weights in a uniform block (one
//! agent) a weight is one load for every lane of llvmpipe's SIMD batch and
//! every row of the invocation, where the lanes layout gathers a different
//! weight per lane and reads its inputs from workgroup memory (a scalar
//! loop over the lanes on llvmpipe). The roofline bench measured this
//! layout's GEMM at 17-24 GFLOP/s from 512 rows on Mesa 25 llvmpipe GL,
//! against 10-11 for `linear_forward` (`benches/NOTES.md`).
//!
//! The generated shader keeps the lanes layout's bindings, scratch layout,
//! loss (`row_loss` of `shaders/update_rows.wgsl`) and summation order, so
//! `update_grads` and the optimizer step follow it unchanged.

use std::fmt::Write;

use crate::gpu::kernels::{PPO_LOSS_TERMS_WGSL, UPDATE_ROWS_WGSL};
use crate::nn::LayerLayout;

use super::fused_update::{delta_jobs, row_pass_preamble, ScratchLayout};
use super::ActorCriticSpec;

/// Invocations per workgroup of the rows layout: one SIMD batch of
/// llvmpipe's 8 lanes, so even a 128-row minibatch spreads over both cores.
pub const ROW_PASS_WG: usize = 8;
/// Rows per invocation.
pub const ROW_PASS_ROWS: usize = 2;

/// The forward's sums over a layer's inputs are unrolled whole: reading the
/// inputs from a private array at a loop index cost 1.4× the whole update.
/// The backward's units (held in registers across its loop over the
/// outputs) come in chunks of [`ROW_PASS_CHUNK`] for layers wider than
/// this (a loop with its bound hidden from the compiler, then the rest):
/// unrolled whole, llvmpipe's first compile of CleanRL's row pass took
/// ~8 s longer, and ran no faster (Mesa 25 GL, `benches/NOTES.md`).
pub const ROW_PASS_UNROLL: usize = 16;
/// Units per chunk of the backward's loop (a multiple of 4).
pub const ROW_PASS_CHUNK: usize = 16;

/// Loop iterations one invocation of the rows layout counts for `spec`
/// (llvmpipe silently stops an invocation's loops after 65,535): a loop
/// over the outputs of every layer's forward, and for every hidden layer's
/// delta one over the outputs of the layer above per chunk of its units.
pub fn row_pass_iterations(spec: &ActorCriticSpec) -> usize {
    let mut total = 0;
    for layers in [
        spec.actor().layers(0),
        spec.critic().layers(spec.critic_base()),
    ] {
        for (l, layer) in layers.iter().enumerate() {
            total += layer.out_dim + 1;
            if l > 0 {
                let width = layer.in_dim;
                let chunks = if width <= ROW_PASS_UNROLL {
                    1
                } else {
                    width / ROW_PASS_CHUNK + 2
                };
                total += chunks * (layer.out_dim + 1);
            }
        }
    }
    total
}

/// How the generated code reads the weights of output row `o` of a layer.
struct WeightRow {
    /// The statement at the top of the output loop's body.
    prelude: String,
    /// From a uniform block of vec4 at a constant shift (else `pw`).
    shift: Option<usize>,
    tag: &'static str,
}

impl WeightRow {
    /// Weight row `o` (a WGSL expression) of `layer`. From a uniform block
    /// of vec4 (one agent, its parameters at 0) where every row starts at
    /// the same offset modulo 4, each weight is a component of a vec4 at a
    /// constant distance from the row's first vec4; else `pw` of its index.
    fn new(layer: &LayerLayout, o: &str, uniform: bool, tag: &'static str) -> Self {
        let (i_dim, w) = (layer.in_dim, layer.w_offset);
        if uniform && i_dim % 4 == 0 {
            let shift = w % 4;
            WeightRow {
                prelude: format!("let wq{tag} = {}u + {o} * {}u;", (w - shift) / 4, i_dim / 4),
                shift: Some(shift),
                tag,
            }
        } else {
            WeightRow {
                prelude: format!("let wr{tag} = base + {w}u + {o} * {i_dim}u;"),
                shift: None,
                tag,
            }
        }
    }

    /// Weight k0 + j of the row, k0 a WGSL expression that is a multiple of 4.
    fn weight(&self, k0: &str, j: usize) -> String {
        let tag = self.tag;
        let from = if k0 == "0u" {
            String::new()
        } else {
            format!("{k0} + ")
        };
        match self.shift {
            Some(shift) => {
                let at = shift + j;
                let comp = ["x", "y", "z", "w"][at % 4];
                let quad = if k0 == "0u" {
                    String::new()
                } else {
                    format!("({k0} >> 2u) + ")
                };
                format!("params[wq{tag} + {quad}{}u].{comp}", at / 4)
            }
            None => format!("pw(wr{tag} + {from}{j}u)"),
        }
    }
}

/// Emits `body(out, i0, width)` over units 0..dim: once with i0 = "0u"
/// where dim ≤ [`ROW_PASS_UNROLL`], else in a loop over chunks (i0 = `var`)
/// and once for the rest.
fn emit_chunks(
    g: &mut String,
    var: &str,
    dim: usize,
    body: &mut dyn FnMut(&mut String, &str, usize),
) {
    if dim <= ROW_PASS_UNROLL {
        body(g, "0u", dim);
        return;
    }
    let whole = dim / ROW_PASS_CHUNK * ROW_PASS_CHUNK;
    let _ = writeln!(
        g,
        "    for (var {var} = 0u; {var} < {whole}u + dims.pad; {var} += {ROW_PASS_CHUNK}u) {{"
    );
    body(g, var, ROW_PASS_CHUNK);
    let _ = writeln!(g, "    }}");
    if whole < dim {
        let _ = writeln!(g, "    {{");
        body(g, &format!("{whole}u"), dim - whole);
        let _ = writeln!(g, "    }}");
    }
}

/// Where a layer's outputs go: `array[e * stride + offset + o]` for row e,
/// through tanh or not, and for the live rows into scratch at `scratch`.
struct Outputs<'a> {
    array: &'a str,
    stride: usize,
    offset: usize,
    tanh: bool,
    scratch: Option<usize>,
}

/// One layer's forward for `rows` rows: for every output o (a loop),
/// acc = bias, then += input[e][k] · W[o][k] for k ascending.
fn emit_forward(
    g: &mut String,
    layer: &LayerLayout,
    input: &str,
    out: &Outputs<'_>,
    rows: usize,
    uniform: bool,
) {
    let (i_dim, o_dim) = (layer.in_dim, layer.out_dim);
    let row = WeightRow::new(layer, "o", uniform, "");
    let _ = writeln!(
        g,
        "    for (var o = 0u; o < {o_dim}u + dims.pad; o++) {{\n        {}\n        \
         let bias = pw(base + {}u + o);",
        row.prelude, layer.b_offset
    );
    for e in 0..rows {
        let _ = writeln!(g, "        var acc{e} = bias;");
    }
    for k in 0..i_dim {
        let _ = writeln!(g, "        let w{k} = {};", row.weight("0u", k));
        for e in 0..rows {
            let _ = writeln!(g, "        acc{e} += {input}[{}u] * w{k};", e * i_dim + k);
        }
    }
    for e in 0..rows {
        let value = if out.tanh {
            format!("stable_tanh(acc{e})")
        } else {
            format!("acc{e}")
        };
        let _ = writeln!(
            g,
            "        {{\n            let v = {value};\n            {}[{}u + o] = v;",
            out.array,
            e * out.stride + out.offset
        );
        if let Some(at) = out.scratch {
            let _ = writeln!(
                g,
                "            if (slive{e}) {{\n                scratch[srow{e} + {at}u + o] = v;\n            }}"
            );
        }
        let _ = writeln!(g, "        }}");
    }
    let _ = writeln!(g, "    }}");
}

/// One hidden layer's delta for `rows` rows from the layer above (`next`):
/// per chunk of its units i, g[e][i] = Σ_o dnext[e][o] · W_next[o][i] (o
/// ascending, a loop), then dz = g · (1 - y²) into `dout` (where a lower
/// layer reads it) and the live rows' scratch at `scratch`. `dnext` rows
/// are `stride` apart from `offset`.
fn emit_delta(
    g: &mut String,
    next: &LayerLayout,
    (dnext, stride, offset): (&str, usize, usize),
    (act, dout): (&str, Option<&str>),
    scratch: usize,
    rows: usize,
    uniform: bool,
) {
    let width = next.in_dim;
    let row = WeightRow::new(next, "o", uniform, "");
    emit_chunks(g, "i0", width, &mut |g, i0, units| {
        let _ = writeln!(g, "    {{");
        for e in 0..rows {
            for j in 0..units {
                let _ = writeln!(g, "        var g{e}_{j} = 0.0;");
            }
        }
        let _ = writeln!(
            g,
            "        for (var o = 0u; o < {}u + dims.pad; o++) {{\n            {}",
            next.out_dim, row.prelude
        );
        for e in 0..rows {
            let _ = writeln!(
                g,
                "            let z{e} = {dnext}[{}u + o];",
                e * stride + offset
            );
        }
        for j in 0..units {
            let _ = writeln!(g, "            let w{j} = {};", row.weight(i0, j));
            for e in 0..rows {
                let _ = writeln!(g, "            g{e}_{j} += z{e} * w{j};");
            }
        }
        let _ = writeln!(g, "        }}");
        for e in 0..rows {
            for j in 0..units {
                let at = format!("{}u + {i0} + {j}u", e * width);
                let _ = writeln!(
                    g,
                    "        {{\n            let y = {act}[{at}];\n            let d = g{e}_{j} * (1.0 - y * y);"
                );
                if let Some(dout) = dout {
                    let _ = writeln!(g, "            {dout}[{at}] = d;");
                }
                let _ = writeln!(
                    g,
                    "            if (slive{e}) {{\n                scratch[srow{e} + {scratch}u + {i0} + {j}u] = d;\n            }}\n        }}"
                );
            }
        }
        let _ = writeln!(g, "    }}");
    });
}

/// `update_rows`' WGSL in the rows layout for `spec`, `rows` rows per
/// invocation, the weights from storage or (`uniform_weights`, one agent)
/// a uniform block of vec4.
pub fn row_pass_source(spec: &ActorCriticSpec, rows: usize, uniform_weights: bool) -> String {
    let d = spec.obs_dim;
    let actions = spec.num_actions;
    let scratch = ScratchLayout::new(spec);
    let hidden = spec.hidden.len();
    let mut g = row_pass_preamble(
        spec,
        "ppo::row_pass for this network's sizes and rows per invocation",
        ("ROWS_WG", ROW_PASS_WG),
        rows,
        uniform_weights,
    );
    let heads_len = rows * (actions + 1);
    let _ = writeln!(
        g,
        "var<private> heads: array<f32, {heads_len}>;\nvar<private> dheads: array<f32, {heads_len}>;"
    );
    let _ = writeln!(
        g,
        "@compute @workgroup_size(ROWS_WG)\n\
         fn update_rows(@builtin(local_invocation_index) lid: u32,\n               \
         @builtin(workgroup_id) wid: vec3<u32>,\n               \
         @builtin(num_workgroups) groups: vec3<u32>) {{\n    \
         let g = wid.x + wid.y * groups.x;\n    \
         if (g >= dims.total_groups) {{\n        return;\n    }}\n    \
         let agent = g / dims.blocks_per_agent;\n    \
         let m0 = ((g % dims.blocks_per_agent) * ROWS_WG + lid) * LANES_E;\n    \
         let first = agent * dims.minibatch_size;\n    \
         let base = agent * dims.param_stride;"
    );
    let _ = writeln!(g, "    var xs: array<f32, {}>;", rows * d);
    for net in ["a", "c"] {
        for (l, &width) in spec.hidden.iter().enumerate() {
            let _ = writeln!(g, "    var act_{net}{l}: array<f32, {}>;", rows * width);
            if l > 0 {
                let _ = writeln!(g, "    var d_{net}{l}: array<f32, {}>;", rows * width);
            }
        }
    }
    // Each row's scratch row (clamped), whether it is in the minibatch, and
    // its observation (through the permutation) into xs and scratch.
    for e in 0..rows {
        let _ = writeln!(
            g,
            "    let slive{e} = m0 + {e}u < dims.minibatch_size;\n    \
             let srow{e} = (first + min(m0 + {e}u, dims.minibatch_size - 1u)) * STRIDE;\n    \
             {{\n        let src = source_row(agent, min(m0 + {e}u, dims.minibatch_size - 1u)) * {d}u;"
        );
        for k in 0..d {
            let _ = writeln!(
                g,
                "        let x{k} = obs[src + {k}u];\n        xs[{}u] = x{k};\n        \
                 if (slive{e}) {{\n            scratch[srow{e} + {}u] = x{k};\n        }}",
                e * d + k,
                scratch.obs + k
            );
        }
        let _ = writeln!(g, "    }}");
    }

    let actor = spec.actor().layers(0);
    let critic = spec.critic().layers(spec.critic_base());
    let input = |net: &str, l: usize| -> String {
        if l == 0 {
            "xs".to_string()
        } else {
            format!("act_{net}{}", l - 1)
        }
    };
    for l in 0..hidden {
        for (n, net, layers) in [(0, "a", &actor), (1, "c", &critic)] {
            let array = format!("act_{net}{l}");
            let out = Outputs {
                array: &array,
                stride: spec.hidden[l],
                offset: 0,
                tanh: true,
                scratch: Some(scratch.act[n][l]),
            };
            emit_forward(
                &mut g,
                &layers[l],
                &input(net, l),
                &out,
                rows,
                uniform_weights,
            );
        }
    }
    for (offset, net, layers) in [(0, "a", &actor), (actions, "c", &critic)] {
        let out = Outputs {
            array: "heads",
            stride: actions + 1,
            offset,
            tanh: false,
            scratch: None,
        };
        emit_forward(
            &mut g,
            &layers[hidden],
            &input(net, hidden),
            &out,
            rows,
            uniform_weights,
        );
    }
    for e in 0..rows {
        let _ = writeln!(
            g,
            "    if (slive{e}) {{\n        row_loss({e}u, agent, m0 + {e}u);\n    }}"
        );
    }
    for job in delta_jobs(spec) {
        emit_delta(
            &mut g,
            &job.next,
            (&job.dnext, job.stride, job.offset),
            (&job.act, job.dout.as_deref()),
            job.scratch,
            rows,
            uniform_weights,
        );
    }
    let _ = writeln!(g, "}}");
    [UPDATE_ROWS_WGSL.source, PPO_LOSS_TERMS_WGSL.source, &g].join("\n")
}
