//! Kernel throughput and overhead on the chosen adapter (honors WGPU_BACKEND etc.).
//!
//! Prints, each as the median of several timed repetitions:
//! - dispatch cost: a submit of 1 vs 101 tiny dispatches, per dispatch (µs);
//! - submit + wait round trip (µs);
//! - linear_forward 64 -> 64 tanh over ROWS rows per agent, in 4×4 and 8×8
//!   blocks side by side (GFLOP/s, 20 dispatches per submission), and its
//!   backward passes (dx, and dW + db with their reduce) the same way;
//! - a 4-64-64-2 tanh MLP forward + backward for 4096 rows (ms), then each
//!   of its dispatches alone (ms and GFLOP/s), to show where a layered
//!   step's time goes.
//!
//! Run: `cargo bench --bench kernels` (add `WGPU_BACKEND=gl` or `vulkan`;
//! `ROWS=128` for the rows per agent, `AGENTS=8` for a population, each
//! agent its own parameters).

use ppo_wgpu::gpu::Dispatch;
use ppo_wgpu::nn::{MlpPlan, MlpSpec, Placement};
use ppo_wgpu::ops::linear::{
    Activation, LinearBackward, LinearBackwardBuffers, LinearForward, LinearSpec, RegisterBlock,
};
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
    let agents: usize = std::env::var("AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    // One 64 -> 64 tanh layer, each agent its own weights, in both blocks,
    // side by side in this process.
    let spec = LinearSpec {
        num_agents: agents,
        ..layer_64(rows, Activation::Tanh)
    };
    let (x, p, y) = (
        filled(&ctx, "x", agents * rows * 64),
        filled(&ctx, "p", agents * 64 * 65),
        filled(&ctx, "y", agents * rows * 64),
    );
    let flops = 2.0 * (agents * rows * 64 * 64) as f64;
    for block in [
        RegisterBlock::B4x4,
        RegisterBlock::B8x8,
        RegisterBlock::B4x4,
    ] {
        let op = LinearForward::with_block(&ctx, &spec, &x, &p, &y, block).expect("linear op");
        // 20 dispatches in one submission, as the update records them.
        let ops: Vec<&Dispatch> = (0..20).map(|_| op.dispatch()).collect();
        let t = median_seconds(11, || {
            ctx.run("linear", &ops);
            wait();
        }) / 20.0;
        println!(
            "linear_forward {block:?} {agents} x {rows} x 64 -> 64 tanh: {:8.3} ms  {:6.2} GFLOP/s",
            t * 1e3,
            flops / t / 1e9
        );
    }

    // The same layer's backward passes (dx, then dW + db), both blocks.
    let (dy, dx, grads) = (
        filled(&ctx, "dy", agents * rows * 64),
        filled(&ctx, "dx", agents * rows * 64),
        filled(&ctx, "grads", agents * 64 * 65),
    );
    for block in [
        RegisterBlock::B4x4,
        RegisterBlock::B8x8,
        RegisterBlock::B4x4,
    ] {
        let op = LinearBackward::with_block(
            &ctx,
            &spec,
            &LinearBackwardBuffers {
                x: &x,
                params: &p,
                y: &y,
                dy: &dy,
                dx: Some(&dx),
                grads: &grads,
            },
            block,
        )
        .expect("linear backward op");
        let passes: Vec<&Dispatch> = op.dispatches().collect();
        let (data, weights) = (passes[0], &passes[1..]);
        let t_data = median_seconds(11, || {
            ctx.run("backward data", &[data; 20]);
            wait();
        }) / 20.0;
        let many: Vec<&Dispatch> = (0..10).flat_map(|_| weights.iter().copied()).collect();
        let t_weights = median_seconds(11, || {
            ctx.run("backward weights", &many);
            wait();
        }) / 10.0;
        println!(
            "linear_backward {block:?} {agents} x {rows}: dx {:8.3} ms ({:6.2} GFLOP/s), dW+db {:8.3} ms ({:6.2} GFLOP/s)",
            t_data * 1e3,
            flops / t_data / 1e9,
            t_weights * 1e3,
            flops / t_weights / 1e9
        );
    }

    let mlp = MlpSpec::new(4, &[64, 64], 2).expect("spec");
    let placement = Placement {
        num_agents: agents,
        rows_per_agent: rows,
        param_stride: mlp.param_count(),
        base: 0,
    };
    let (mx, mp, mg) = (
        filled(&ctx, "obs", agents * rows * 4),
        filled(&ctx, "params", agents * mlp.param_count()),
        filled(&ctx, "grads", agents * mlp.param_count()),
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
        "MLP 4-64-64-2 forward, {agents} x {rows} rows:          {:8.3} ms ({} dispatches)",
        t_fwd * 1e3,
        forward.len()
    );
    println!(
        "MLP 4-64-64-2 forward+backward, {agents} x {rows} rows: {:8.3} ms ({} dispatches)",
        t_both * 1e3,
        both.len()
    );
    // Each dispatch alone (its round trip included: compare with the round
    // trip above). FLOPs of the 64 -> 64 layer's GEMMs, for scale.
    let gemm_flops = 2.0 * (agents * rows * 64 * 64) as f64;
    for (k, dispatch) in both.iter().enumerate() {
        let t = median_seconds(21, || {
            ctx.run("one dispatch", &[dispatch]);
            wait();
        });
        println!(
            "  {k:2} {:26} {:8.3} ms  ({:6.2} GFLOP/s if a 64x64 GEMM)",
            dispatch.kernel().name(),
            t * 1e3,
            gemm_flops / t / 1e9
        );
    }
}
