//! Kernel throughput and overhead on the chosen adapter (honors WGPU_BACKEND etc.).
//!
//! Prints, each as the median of several timed repetitions:
//! - dispatch cost: a submit of 1 vs 101 tiny dispatches, per dispatch (µs);
//! - submit + wait round trip (µs);
//! - linear_forward 4096x64 -> 64 tanh (GFLOP/s);
//! - a 4-64-64-2 tanh MLP forward + backward for 4096 rows (ms).
//!
//! Run: `cargo bench --bench kernels` (add `WGPU_BACKEND=gl` or `vulkan`).

use ppo_wgpu::gpu::Dispatch;
use ppo_wgpu::nn::{MlpPlan, MlpSpec, Placement};
use ppo_wgpu::ops::linear::{Activation, LinearForward, LinearSpec};
use ppo_wgpu::{AdapterOptions, GpuContext};

mod common;
use common::{filled, layer_64, median_seconds};

fn main() {
    let ctx = GpuContext::new(&AdapterOptions::default()).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    println!("adapter: {}", ctx.adapter.describe());
    let wait = || ctx.wait().expect("device wait");

    // A 1x1 -> 1 linear layer on one row: the smallest dispatch we have.
    let tiny = LinearSpec {
        num_agents: 1,
        rows_per_agent: 1,
        in_dim: 1,
        out_dim: 1,
        param_stride: 2,
        w_offset: 0,
        b_offset: 1,
        activation: Activation::Identity,
    };
    let (tx, tp, ty) = (
        filled(&ctx, "x", 1),
        filled(&ctx, "p", 2),
        filled(&ctx, "y", 1),
    );
    let tiny_op = LinearForward::new(&ctx, &tiny, &tx, &tp, &ty).expect("tiny op");
    let one: Vec<&Dispatch> = vec![tiny_op.dispatch()];
    let many: Vec<&Dispatch> = vec![tiny_op.dispatch(); 101];
    let t_one = median_seconds(51, || {
        ctx.run("one", &one);
        wait();
    });
    let t_many = median_seconds(21, || {
        ctx.run("many", &many);
        wait();
    });
    println!(
        "submit + wait round trip (1 tiny dispatch): {:8.1} µs",
        t_one * 1e6
    );
    println!(
        "cost per extra dispatch in one submit:      {:8.1} µs",
        (t_many - t_one) / 100.0 * 1e6
    );

    let rows: usize = std::env::var("ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let spec = layer_64(rows, Activation::Tanh);
    let (x, p, y) = (
        filled(&ctx, "x", rows * 64),
        filled(&ctx, "p", 64 * 65),
        filled(&ctx, "y", rows * 64),
    );
    let op = LinearForward::new(&ctx, &spec, &x, &p, &y).expect("linear op");
    let t_linear = median_seconds(21, || {
        ctx.run("linear", &[op.dispatch()]);
        wait();
    });
    let flops = 2.0 * (rows * 64 * 64) as f64;
    println!(
        "linear_forward 4096x64->64 tanh:            {:8.3} ms  {:6.2} GFLOP/s",
        t_linear * 1e3,
        flops / t_linear / 1e9
    );

    let mlp = MlpSpec::new(4, &[64, 64], 2).expect("spec");
    let placement = Placement {
        num_agents: 1,
        rows_per_agent: rows,
        param_stride: mlp.param_count(),
        base: 0,
    };
    let (mx, mp, mg) = (
        filled(&ctx, "obs", rows * 4),
        filled(&ctx, "params", mlp.param_count()),
        filled(&ctx, "grads", mlp.param_count()),
    );
    let plan = MlpPlan::new(&ctx, "actor", &mlp, placement, &mx, &mp, &mg).expect("plan");
    let forward: Vec<_> = plan.forward_dispatches().collect();
    let both: Vec<_> = plan
        .forward_dispatches()
        .chain(plan.backward_dispatches())
        .collect();
    let t_fwd = median_seconds(21, || {
        ctx.run("mlp forward", &forward);
        wait();
    });
    let t_both = median_seconds(21, || {
        ctx.run("mlp forward+backward", &both);
        wait();
    });
    println!(
        "MLP 4-64-64-2 forward, 4096 rows:          {:8.3} ms ({} dispatches)",
        t_fwd * 1e3,
        forward.len()
    );
    println!(
        "MLP 4-64-64-2 forward+backward, 4096 rows: {:8.3} ms ({} dispatches)",
        t_both * 1e3,
        both.len()
    );
}
