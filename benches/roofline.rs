//! The adapter's limits for our kernels (issue 23's roofline), on the chosen
//! adapter (honors WGPU_BACKEND etc.):
//! - overheads: the submit + wait round trip, each extra dispatch in one
//!   submission, a workgroup barrier (64 lanes, one workgroup);
//! - arithmetic peak: eight independent vec4 FMA chains per invocation in
//!   registers (GFLOP/s);
//! - storage read bandwidth: vec4 loads summed (GB/s);
//! - the GEMM of the update's hidden layers, Y[R][64] = X[R][64] · Wᵀ
//!   (GFLOP/s at R = 128, 512, 4096, 65536): the crate's `linear_forward`
//!   (4×4 register blocks, storage weights, with its bias and identity
//!   activation), and 8 rows × 8 outputs per invocation with Wᵀ as vec4
//!   from storage and from a uniform block, and 2 rows × 8 outputs (more
//!   invocations for small R) from a uniform block; and rows as lanes (the
//!   fused update's `row_pass = rows` layout): 2 or 4 whole rows per
//!   invocation in private arrays, workgroups of 8, a loop over the outputs
//!   reading W [64][64] from a uniform block at an address the same in
//!   every lane. Each variant is checked against an f64 CPU reference
//!   before it is timed;
//! - what that means for CleanRL's update (64-64 tanh, 512 rows × 4
//!   epochs): its floating-point work and the least time it takes at the
//!   best GEMM rate measured at its minibatch size (128 rows).
//!
//! Timings are medians; each GEMM figure is per dispatch with 20 dispatches
//! in one submission (the dispatch cost included, as the update sees it).
//! Run: `cargo bench --bench roofline` (add `WGPU_BACKEND=gl` or `vulkan`).

use ppo_wgpu::gpu::kernels::create_pipeline_from_source;
use ppo_wgpu::gpu::{Dispatch, GpuBuffer};
use ppo_wgpu::ops::linear::{Activation, LinearForward};
use ppo_wgpu::ppo::ActorCriticSpec;
use ppo_wgpu::{AdapterOptions, GpuContext};

mod common;
use common::{filler, layer_64, median_seconds};

fn filled(ctx: &GpuContext, name: &str, len: usize, salt: usize) -> (Vec<f32>, GpuBuffer<f32>) {
    let data = filler(len, salt);
    let buffer = GpuBuffer::from_slice(ctx, name, &data).expect("buffer");
    (data, buffer)
}

/// A raw kernel of this bench: its pipeline and bind group.
struct Raw {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    groups: u32,
}

impl Raw {
    /// `bindings`: (resource, uniform?, read-only?) in binding order.
    fn new(
        ctx: &GpuContext,
        name: &str,
        source: &str,
        bindings: &[(wgpu::BindingResource<'_>, bool, bool)],
        groups: u32,
    ) -> Raw {
        let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
            .iter()
            .enumerate()
            .map(|(i, &(_, uniform, read_only))| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: if uniform {
                        wgpu::BufferBindingType::Uniform
                    } else {
                        wgpu::BufferBindingType::Storage { read_only }
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = ctx
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(name),
                entries: &entries,
            });
        let pipeline = create_pipeline_from_source(&ctx.device, name, source, "main", &[], &layout)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let entries: Vec<wgpu::BindGroupEntry> = bindings
            .iter()
            .enumerate()
            .map(|(i, (resource, _, _))| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: resource.clone(),
            })
            .collect();
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(name),
            layout: &layout,
            entries: &entries,
        });
        Raw {
            pipeline,
            bind_group,
            groups,
        }
    }

    /// Submits `times` dispatches of the kernel in one submission and waits.
    fn run(&self, ctx: &GpuContext, times: usize) {
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &self.bind_group, &[]);
            for _ in 0..times {
                pass.dispatch_workgroups(self.groups, 1, 1);
            }
        }
        ctx.submit_commands(encoder.finish());
        ctx.wait().expect("device wait");
    }
}

/// A uniform block of u32s (padded to 16 bytes).
fn uniform(ctx: &GpuContext, values: &[u32]) -> wgpu::Buffer {
    use wgpu::util::DeviceExt;
    let mut padded = values.to_vec();
    padded.resize(values.len().div_ceil(4).max(1) * 4, 0);
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("roofline uniform"),
            contents: bytemuck::cast_slice(&padded),
            usage: wgpu::BufferUsages::UNIFORM,
        })
}

const BARRIER_WGSL: &str = "
struct P { iters: u32, a: u32, b: u32, c: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
var<workgroup> shared_v: array<f32, 64>;
@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) lid: u32) {
    shared_v[lid] = f32(lid);
    for (var k = 0u; k < p.iters; k++) {
        workgroupBarrier();
        shared_v[(lid + 1u) & 63u] += 1.0;
    }
    workgroupBarrier();
    out[lid] = shared_v[lid];
}";

const PEAK_WGSL: &str = "
struct P { iters: u32, a: u32, b: u32, c: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let s = f32(gid.x) * 1e-7;
    var a0 = vec4<f32>(s, s + 0.1, s + 0.2, s + 0.3);
    var a1 = a0 + 0.01; var a2 = a0 + 0.02; var a3 = a0 + 0.03;
    var a4 = a0 + 0.04; var a5 = a0 + 0.05; var a6 = a0 + 0.06; var a7 = a0 + 0.07;
    let m = vec4<f32>(0.999);
    let c = vec4<f32>(0.001);
    for (var k = 0u; k < p.iters; k++) {
        a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
        a4 = fma(a4, m, c); a5 = fma(a5, m, c); a6 = fma(a6, m, c); a7 = fma(a7, m, c);
    }
    let t = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
    out[gid.x] = t.x + t.y + t.z + t.w;
}";

const BANDWIDTH_WGSL: &str = "
struct P { count: u32, stride: u32, b: u32, c: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    var acc = vec4<f32>(0.0);
    for (var k = 0u; k < p.count; k++) {
        acc += src[gid.x + k * p.stride];
    }
    out[gid.x] = acc.x + acc.y + acc.z + acc.w;
}";

/// Y[R][64] = X[R][64] · Wᵀ: one invocation per RB rows × 8 outputs, Wᵀ
/// [64][64] read as vec4 (two per input), from `WT_DECL`'s binding.
const BLOCK_WGSL: &str = "
struct P { rows: u32, a: u32, b: u32, c: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
WT_DECL
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let ob = gid.x & 7u;
    let r0 = (gid.x >> 3u) * RBu;
    if (r0 >= p.rows) {
        return;
    }
    var lo: array<vec4<f32>, RB>;
    var hi: array<vec4<f32>, RB>;
    for (var i = 0u; i < 64u + p.a; i++) {
        let wl = wt[i * 16u + ob * 2u];
        let wh = wt[i * 16u + ob * 2u + 1u];
        for (var r = 0u; r < RBu; r++) {
            let xv = x[(min(r0 + r, p.rows - 1u)) * 64u + i];
            lo[r] = fma(vec4<f32>(xv), wl, lo[r]);
            hi[r] = fma(vec4<f32>(xv), wh, hi[r]);
        }
    }
    for (var r = 0u; r < RBu; r++) {
        if (r0 + r < p.rows) {
            let at = (r0 + r) * 64u + ob * 8u;
            y[at] = lo[r].x; y[at + 1u] = lo[r].y; y[at + 2u] = lo[r].z; y[at + 3u] = lo[r].w;
            y[at + 4u] = hi[r].x; y[at + 5u] = hi[r].y; y[at + 6u] = hi[r].z; y[at + 7u] = hi[r].w;
        }
    }
}";

/// Y[R][64] = X[R][64] · Wᵀ with rows as lanes: one invocation per RB rows,
/// each row's inputs in a private array, a loop over the outputs whose index
/// is the same in every lane, so W (natural [64][64] layout, vec4) is read
/// from a uniform block at a lane-uniform address.
const ROWS_WGSL: &str = "
struct P { rows: u32, a: u32, b: u32, c: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> w: array<vec4<f32>, 1024>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r0 = gid.x * RBu;
    if (r0 >= p.rows) {
        return;
    }
    var xr: array<array<vec4<f32>, 16>, RB>;
    for (var r = 0u; r < RBu; r++) {
        let src = min(r0 + r, p.rows - 1u) * 16u;
        for (var k = 0u; k < 16u; k++) {
            xr[r][k] = x[src + k];
        }
    }
    var yr: array<array<f32, 64>, RB>;
    for (var o = 0u; o < 64u + p.a; o++) {
        var acc: array<vec4<f32>, RB>;
        for (var k = 0u; k < 16u; k++) {
            let wk = w[o * 16u + k];
            for (var r = 0u; r < RBu; r++) {
                acc[r] = fma(xr[r][k], wk, acc[r]);
            }
        }
        for (var r = 0u; r < RBu; r++) {
            yr[r][o] = acc[r].x + acc[r].y + acc[r].z + acc[r].w;
        }
    }
    for (var r = 0u; r < RBu; r++) {
        if (r0 + r < p.rows) {
            for (var o = 0u; o < 64u; o++) {
                y[(r0 + r) * 64u + o] = yr[r][o];
            }
        }
    }
}";

const GEMM_ROWS: [usize; 4] = [128, 512, 4096, 65536];
const REPEAT: usize = 20;

/// Checks `got` against X · Wᵀ (+ bias) in f64; panics naming `what`.
fn check_gemm(what: &str, x: &[f32], w: &[f32], bias: Option<&[f32]>, got: &[f32]) {
    let rows = x.len() / 64;
    let mut worst = 0.0f64;
    for r in 0..rows {
        for o in 0..64 {
            let mut want = bias.map_or(0.0, |b| b[o] as f64);
            for i in 0..64 {
                want += x[r * 64 + i] as f64 * w[o * 64 + i] as f64;
            }
            let err = (want - got[r * 64 + o] as f64).abs() / (1.0 + want.abs());
            worst = worst.max(err);
        }
    }
    assert!(worst < 1e-5, "{what}: worst relative error {worst:e}");
}

fn main() {
    let ctx = GpuContext::new(&AdapterOptions::default()).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    println!("adapter: {}", ctx.adapter.describe());
    if let Ok(threads) = std::env::var("LP_NUM_THREADS") {
        println!("LP_NUM_THREADS={threads}");
    }

    // Overheads.
    let (_, out) = filled(&ctx, "out", 64 * 512, 0);
    let noop_uniform = uniform(&ctx, &[0]);
    let noop = Raw::new(
        &ctx,
        "barrier (0 iterations)",
        BARRIER_WGSL,
        &[
            (noop_uniform.as_entire_binding(), true, true),
            (out.buffer.as_entire_binding(), false, false),
        ],
        1,
    );
    let t_one = median_seconds(51, || noop.run(&ctx, 1));
    let t_many = median_seconds(21, || noop.run(&ctx, 101));
    println!("submit + wait round trip:           {:9.1} µs", t_one * 1e6);
    println!(
        "each extra dispatch in one submit:  {:9.1} µs",
        (t_many - t_one) / 100.0 * 1e6
    );
    const BARRIERS: u32 = 20_000;
    let barrier_uniform = uniform(&ctx, &[BARRIERS]);
    let barrier = Raw::new(
        &ctx,
        "barrier",
        BARRIER_WGSL,
        &[
            (barrier_uniform.as_entire_binding(), true, true),
            (out.buffer.as_entire_binding(), false, false),
        ],
        1,
    );
    let t_barrier = median_seconds(11, || barrier.run(&ctx, 1));
    println!(
        "workgroup barrier (64 lanes):       {:9.3} µs",
        (t_barrier - t_one) / BARRIERS as f64 * 1e6
    );

    // Arithmetic peak: 512 workgroups × 64 invocations × ITERS × 64 flops.
    const ITERS: u32 = 4096;
    let peak_uniform = uniform(&ctx, &[ITERS]);
    let peak = Raw::new(
        &ctx,
        "peak",
        PEAK_WGSL,
        &[
            (peak_uniform.as_entire_binding(), true, true),
            (out.buffer.as_entire_binding(), false, false),
        ],
        512,
    );
    let t_peak = median_seconds(11, || peak.run(&ctx, 1));
    let peak_gflops = (512.0 * 64.0 * ITERS as f64 * 64.0) / t_peak / 1e9;
    println!("arithmetic peak (vec4 FMA chains):  {peak_gflops:9.1} GFLOP/s");

    // Storage read bandwidth: 64 MiB read once as vec4.
    let vec4s = 4 << 20;
    let per_invocation = 16;
    let invocations = vec4s / per_invocation;
    let (_, src) = filled(&ctx, "src", vec4s * 4, 1);
    let (_, sums) = filled(&ctx, "sums", invocations, 2);
    let bw_uniform = uniform(&ctx, &[per_invocation as u32, invocations as u32]);
    let bandwidth = Raw::new(
        &ctx,
        "bandwidth",
        BANDWIDTH_WGSL,
        &[
            (bw_uniform.as_entire_binding(), true, true),
            (src.buffer.as_entire_binding(), false, true),
            (sums.buffer.as_entire_binding(), false, false),
        ],
        (invocations / 64) as u32,
    );
    let t_bw = median_seconds(11, || bandwidth.run(&ctx, 1));
    println!(
        "storage read bandwidth (vec4):      {:9.1} GB/s",
        (vec4s * 16) as f64 / t_bw / 1e9
    );

    // The hidden layers' GEMM.
    let (w, _) = filled(&ctx, "w", 64 * 64, 3);
    let wt: Vec<f32> = (0..64 * 64).map(|k| w[(k % 64) * 64 + k / 64]).collect();
    let wt_storage = GpuBuffer::from_slice(&ctx, "wt", &wt).expect("wt");
    let wt_uniform = {
        use wgpu::util::DeviceExt;
        ctx.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("wt uniform"),
                contents: bytemuck::cast_slice(&wt),
                usage: wgpu::BufferUsages::UNIFORM,
            })
    };
    let w_uniform = {
        use wgpu::util::DeviceExt;
        ctx.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("w uniform"),
                contents: bytemuck::cast_slice(&w),
                usage: wgpu::BufferUsages::UNIFORM,
            })
    };
    let uniform_fits = ctx.limits.max_uniform_buffer_binding_size >= 64 * 64 * 4;
    println!("\nY[R][64] = X[R][64]·Wᵀ, GFLOP/s per dispatch ({REPEAT} in one submission):");
    println!(
        "{:>8} {:>16} {:>16} {:>16} {:>16} {:>16} {:>16}",
        "rows",
        "linear_fwd 4×4",
        "8×8 storage W",
        "8×8 uniform W",
        "2×8 uniform W",
        "2 rows/lane",
        "4 rows/lane"
    );
    let mut best_at_128 = 0.0f64;
    for rows in GEMM_ROWS {
        let (x, x_gpu) = filled(&ctx, "x", rows * 64, 4);
        let y = GpuBuffer::<f32>::zeros(&ctx, "y", rows * 64).expect("y");
        let flops = 2.0 * (rows * 64 * 64) as f64;
        let mut figures = Vec::new();

        // The crate's layer (bias and identity activation included).
        let mut params = w.clone();
        params.extend(std::iter::repeat_n(0.25f32, 64));
        let p_gpu = GpuBuffer::from_slice(&ctx, "params", &params).expect("params");
        let spec = layer_64(rows, Activation::Identity);
        let op = LinearForward::new(&ctx, &spec, &x_gpu, &p_gpu, &y).expect("linear_forward");
        y.poison(&ctx).expect("poison");
        ctx.run("linear_forward", &[op.dispatch()]);
        check_gemm(
            &format!("linear_forward R={rows}"),
            &x,
            &w,
            Some(&params[64 * 64..]),
            &y.read(&ctx).expect("read"),
        );
        let dispatches: Vec<&Dispatch> = vec![op.dispatch(); REPEAT];
        let t = median_seconds(7, || {
            ctx.run("linear_forward", &dispatches);
            ctx.wait().expect("wait");
        }) / REPEAT as f64;
        figures.push(Some(flops / t / 1e9));

        let rows_uniform = uniform(&ctx, &[rows as u32]);
        // (name, source, W's binding, from a uniform block, workgroups).
        let mut variants = Vec::new();
        for (block_rows, from_uniform) in [(8, false), (8, true), (2, true)] {
            let (decl, resource) = if from_uniform {
                (
                    "@group(0) @binding(2) var<uniform> wt: array<vec4<f32>, 1024>;",
                    wt_uniform.as_entire_binding(),
                )
            } else {
                (
                    "@group(0) @binding(2) var<storage, read> wt: array<vec4<f32>>;",
                    wt_storage.buffer.as_entire_binding(),
                )
            };
            let source = BLOCK_WGSL
                .replace("WT_DECL", decl)
                .replace("RB", &block_rows.to_string());
            let groups = (rows.div_ceil(block_rows) * 8).div_ceil(64) as u32;
            let name = format!("{block_rows}x8 block R={rows} uniform={from_uniform}");
            variants.push((name, source, resource, from_uniform, groups));
        }
        for block_rows in [2, 4] {
            let source = ROWS_WGSL
                .replace("RB", &block_rows.to_string())
                .replace("WG", "8");
            let groups = rows.div_ceil(block_rows).div_ceil(8) as u32;
            let name = format!("{block_rows} rows per lane R={rows}");
            variants.push((name, source, w_uniform.as_entire_binding(), true, groups));
        }
        for (name, source, resource, from_uniform, groups) in variants {
            if from_uniform && !uniform_fits {
                figures.push(None);
                continue;
            }
            let kernel = Raw::new(
                &ctx,
                &name,
                &source,
                &[
                    (rows_uniform.as_entire_binding(), true, true),
                    (x_gpu.buffer.as_entire_binding(), false, true),
                    (resource, from_uniform, true),
                    (y.buffer.as_entire_binding(), false, false),
                ],
                groups,
            );
            y.poison(&ctx).expect("poison");
            kernel.run(&ctx, 1);
            check_gemm(&name, &x, &w, None, &y.read(&ctx).expect("read"));
            let t = median_seconds(7, || kernel.run(&ctx, REPEAT)) / REPEAT as f64;
            figures.push(Some(flops / t / 1e9));
        }
        let cell = |f: &Option<f64>| f.map_or("-".to_string(), |g| format!("{g:.1}"));
        let cells: Vec<String> = figures.iter().map(|f| format!("{:>16}", cell(f))).collect();
        println!("{rows:>8} {}", cells.join(" "));
        if rows == 128 {
            best_at_128 = figures.iter().flatten().fold(0.0, |a, &b| a.max(b));
        }
    }

    // CleanRL's update: forward (2·in·out per layer and row), the weight
    // gradients (the same) and the input gradients (all but the first
    // layer), for actor and critic, over 512 rows × 4 epochs.
    let spec = ActorCriticSpec::new(4, 2, &[64, 64]).expect("spec");
    let mut per_row = 0usize;
    for layers in [
        spec.actor().layers(0),
        spec.critic().layers(spec.critic_base()),
    ] {
        for (l, layer) in layers.iter().enumerate() {
            let mac = layer.in_dim * layer.out_dim;
            per_row += 2 * mac * if l == 0 { 2 } else { 3 };
        }
    }
    let update_flops = (per_row * 512 * 4) as f64;
    println!(
        "\nCleanRL's update (64-64 tanh, 512 rows × 4 epochs): {:.1} MFLOP; at the best \
         GEMM rate measured at its 128-row minibatches ({best_at_128:.1} GFLOP/s) it takes \
         at least {:.2} ms; at the arithmetic peak {:.2} ms",
        update_flops / 1e6,
        update_flops / (best_at_128 * 1e9) * 1e3,
        update_flops / (peak_gflops * 1e9) * 1e3,
    );
}
