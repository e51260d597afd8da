//! PPO phases on the chosen adapter at CleanRL's CartPole sizes (4 envs ×
//! 128 steps, 4 minibatches × 4 epochs, 64-64 tanh): one rollout step
//! (forward + sample + action readback), one full update (one submission),
//! each as the median of several runs, with the dispatch count. Then the
//! whole rollout phase in env-steps/s with the envs on the host (one
//! submission and readback per step, f64 CartPole) and on the device
//! (`rollout_gpu`: one submission per rollout), side by side.
//!
//! Last, a grid over agents P and envs per agent N (CleanRL's loop
//! otherwise, both networks): the rollout phase with device envs, the update
//! phase and the whole iteration, each in env steps per second over all
//! agents.
//!
//! Run: `cargo bench --bench ppo` (add `WGPU_BACKEND=gl` or `vulkan`;
//! `PPO_BENCH_AGENTS=64` for a population in the first part;
//! `PPO_BENCH_GRID_P=1,8,64` and `PPO_BENCH_GRID_N=4,32` for the grid;
//! `PPO_BENCH_UPDATE=fused` or `layered` forces the grid's update path,
//! `PPO_BENCH_ROW_PASS=rows` or `lanes` the fused row pass's layout,
//! `PPO_BENCH_BLOCK=4x4` or `8x8` the layered kernels' register blocks).

use std::time::Instant;

use ppo_wgpu::config::PpoConfig;
use ppo_wgpu::env::{CartPole, CartPoleConfig, GpuCartPole, StepOut, VecEnv};
use ppo_wgpu::ops::categorical::SampleKey;
use ppo_wgpu::ops::linear::{force_register_block, RegisterBlock};
use ppo_wgpu::ppo::fused::LANES_AUTO_ENVS;
use ppo_wgpu::ppo::fused_update::RowPass;
use ppo_wgpu::ppo::trainer::{initial_params, update_settings};
use ppo_wgpu::ppo::{permutations, ActorCriticSpec, FusedLayout, PpoGpu, RolloutPath, UpdatePath};
use ppo_wgpu::{AdapterOptions, GpuContext};

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Timed rollouts per path; the median is reported.
const ROLLOUT_REPETITIONS: usize = 5;

/// Env steps per second of whole rollouts (policy inference, sampling and the
/// env step; no update) with host envs and with device envs, for
/// `num_envs` envs per agent and CleanRL's 128 steps.
fn rollout_phase(ctx: &GpuContext, hidden: &[usize], agents: usize, num_envs: usize) {
    let spec = ActorCriticSpec::new(4, 2, hidden).expect("spec");
    let mut config = PpoConfig::preset("cleanrl").expect("preset");
    config.num_agents = agents;
    config.num_envs = num_envs;
    let settings = update_settings(&config);
    let (rows, steps) = (agents * num_envs, config.num_steps);
    let params = initial_params(&spec, agents, 1);
    let env_config = CartPoleConfig::new(agents, num_envs);

    // Host envs with the layered step (a dispatch per layer and one for the
    // sampler), then with the fused step (one dispatch); the first rollout
    // (which compiles) untimed.
    let env_steps = (rows * steps) as f64;
    let mut line = format!("rollout hidden {hidden:?} P={agents} N={num_envs} T={steps}:");
    let mut host_s = f64::NAN;
    for path in [RolloutPath::Layered, RolloutPath::Fused] {
        let mut gpu = PpoGpu::new(ctx, &spec, &settings).expect("engine");
        gpu.set_params(ctx, &params).expect("params");
        gpu.set_rollout_path(path);
        let mut host = CartPole::new(env_config.clone()).expect("env");
        let mut obs = vec![0.0; rows * 4];
        host.reset(1, &mut obs).expect("reset");
        let mut out = StepOut::new(rows, 4);
        let mut episodes = Vec::new();
        let mut host_times = Vec::new();
        for iteration in 0..=ROLLOUT_REPETITIONS as u32 {
            let start = Instant::now();
            gpu.rollout_host(
                ctx,
                &mut host,
                &mut obs,
                &mut out,
                1,
                iteration,
                &mut episodes,
            )
            .expect("rollout");
            episodes.clear();
            if iteration > 0 {
                host_times.push(start.elapsed().as_secs_f64());
            }
        }
        let s = median(host_times);
        let name = if path == RolloutPath::Layered {
            host_s = s;
            "host env"
        } else {
            ", host env fused step"
        };
        line += &format!(
            " {name} {:.2} ms = {:.0} env-steps/s",
            s * 1e3,
            env_steps / s
        );
    }
    // The layered path, then each fused layout: one env per invocation, and
    // for networks with hidden layers the lanes layout with as many envs per
    // workgroup as `FusedLayout::choose` would take (up to 4) at any N.
    let lanes = FusedLayout::Lanes {
        envs: num_envs.div_ceil(2).clamp(1, LANES_AUTO_ENVS),
    };
    let mut variants = vec![
        (RolloutPath::Layered, None),
        (RolloutPath::Fused, Some(FusedLayout::PerEnv)),
    ];
    if !hidden.is_empty() {
        variants.push((RolloutPath::Fused, Some(lanes)));
    }
    for (path, layout) in variants {
        let mut gpu = PpoGpu::new(ctx, &spec, &settings).expect("engine");
        gpu.set_params(ctx, &params).expect("params");
        gpu.set_rollout_path(path);
        gpu.set_fused_layout(layout);
        if path == RolloutPath::Fused {
            if let Some(reason) = gpu.fused_unsupported(ctx) {
                line += &format!(", fused: not supported ({reason})");
                continue;
            }
        }
        let mut device = GpuCartPole::new(ctx, env_config.clone(), steps).expect("device env");
        device.reset(ctx, 1).expect("reset");
        // The first rollout builds the dispatches and compiles: timed apart.
        let start = Instant::now();
        let first = gpu.rollout_gpu(ctx, &mut device, 1, 0).expect("warm-up");
        let first_s = start.elapsed().as_secs_f64();
        let device_times: Vec<f64> = (1..=ROLLOUT_REPETITIONS as u32)
            .map(|iteration| {
                let start = Instant::now();
                gpu.rollout_gpu(ctx, &mut device, 1, iteration)
                    .expect("rollout");
                start.elapsed().as_secs_f64()
            })
            .collect();
        let device_s = median(device_times);
        line += &format!(
            ", device env {} {:.2} ms = {:.0} env-steps/s ({:.1}x host; {} dispatches; first rollout {:.2} s)",
            first
                .fused_layout
                .map_or("layered".to_string(), |l| format!("fused {}", l.name())),
            device_s * 1e3,
            env_steps / device_s,
            host_s / device_s,
            first.dispatches,
            first_s
        );
    }
    println!("{line}");
}

/// Rollout (device envs), update and whole-iteration env steps per second
/// for P agents × N envs: medians of `ROLLOUT_REPETITIONS` iterations after
/// one untimed warm-up, each phase timed until its results are back.
fn grid_point(ctx: &GpuContext, hidden: &[usize], agents: usize, num_envs: usize) {
    let spec = ActorCriticSpec::new(4, 2, hidden).expect("spec");
    let mut config = PpoConfig::preset("cleanrl").expect("preset");
    config.num_agents = agents;
    config.num_envs = num_envs;
    let settings = update_settings(&config);
    let steps = config.num_steps;
    let mut gpu = PpoGpu::new(ctx, &spec, &settings).expect("engine");
    gpu.set_params(ctx, &initial_params(&spec, agents, 1))
        .expect("params");
    gpu.set_learning_rates(&vec![config.learning_rate; agents])
        .expect("lr");
    let update = match std::env::var("PPO_BENCH_UPDATE").as_deref() {
        Ok("fused") => UpdatePath::Fused,
        Ok("layered") => UpdatePath::Layered,
        _ => UpdatePath::Auto,
    };
    gpu.set_update_path(update);
    gpu.set_row_pass(match std::env::var("PPO_BENCH_ROW_PASS").as_deref() {
        Ok("rows") => RowPass::Rows,
        Ok("lanes") => RowPass::Lanes,
        _ => RowPass::Auto,
    });
    let mut env =
        GpuCartPole::new(ctx, CartPoleConfig::new(agents, num_envs), steps).expect("device env");
    env.reset(ctx, 1).expect("reset");
    let (mut rollout_times, mut update_times) = (Vec::new(), Vec::new());
    for iteration in 0..=ROLLOUT_REPETITIONS as u32 {
        let start = Instant::now();
        gpu.rollout_gpu(ctx, &mut env, 1, iteration)
            .expect("rollout");
        let rollout_s = start.elapsed().as_secs_f64();
        let perm = permutations(1, iteration as u64, &settings);
        let start = Instant::now();
        gpu.update(ctx, None, &perm).expect("update");
        if iteration > 0 {
            rollout_times.push(rollout_s);
            update_times.push(start.elapsed().as_secs_f64());
        }
    }
    let batch = (agents * num_envs * steps) as f64;
    let (rollout_s, update_s) = (median(rollout_times), median(update_times));
    println!(
        "grid hidden {hidden:?} P={agents} N={num_envs}: rollout {:.0} steps/s, update {:.0} steps/s ({:.1} ms, {}), \
         iteration {:.0} env steps/s",
        batch / rollout_s,
        batch / update_s,
        update_s * 1e3,
        gpu.update_name(ctx),
        batch / (rollout_s + update_s)
    );
}

fn list_var(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn main() {
    let ctx = GpuContext::new(&AdapterOptions::default()).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    force_register_block(match std::env::var("PPO_BENCH_BLOCK").as_deref() {
        Ok("4x4") => Some(RegisterBlock::B4x4),
        Ok("8x8") => Some(RegisterBlock::B8x8),
        _ => None,
    });
    let agents: usize = std::env::var("PPO_BENCH_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    println!("adapter: {}", ctx.adapter.describe());
    // PPO_BENCH_PHASES: a comma list of policy, rollout, grid (default all).
    let phases = std::env::var("PPO_BENCH_PHASES").unwrap_or("policy,rollout,grid".into());
    let phase = |name: &str| phases.split(',').any(|p| p.trim() == name);
    for hidden in [vec![64, 64], vec![]]
        .into_iter()
        .filter(|_| phase("policy"))
    {
        let spec = ActorCriticSpec::new(4, 2, &hidden).expect("spec");
        let mut config = PpoConfig::preset("cleanrl").expect("preset");
        config.num_agents = agents;
        let settings = update_settings(&config);
        let mut gpu = PpoGpu::new(&ctx, &spec, &settings).expect("engine");
        gpu.set_params(&ctx, &initial_params(&spec, agents, 1))
            .expect("params");
        gpu.set_learning_rates(&vec![2.5e-4; agents]).expect("lr");
        let rows = agents * 4;
        let obs: Vec<f32> = (0..rows * 4)
            .map(|i| ((i % 7) as f32 - 3.0) * 0.01)
            .collect();
        let zeros = vec![0u8; rows];
        let mut step_times = Vec::new();
        let mut update_times = Vec::new();
        for iteration in 0..5u32 {
            for step in 0..128 {
                let key = SampleKey {
                    seed: 1,
                    iteration,
                    step: step as u32,
                };
                let start = Instant::now();
                gpu.rollout_step(&ctx, step, &obs, key).expect("step");
                step_times.push(start.elapsed().as_secs_f64());
                gpu.record_env_step(&ctx, step, &vec![1.0; rows], &zeros, &zeros, &obs)
                    .expect("record");
            }
            let perm = permutations(1, iteration as u64, &settings);
            let start = Instant::now();
            gpu.update(&ctx, Some(&obs), &perm).expect("update");
            update_times.push(start.elapsed().as_secs_f64());
        }
        let (step_s, update_s) = (median(step_times), median(update_times));
        let iteration_s = 128.0 * step_s + update_s;
        println!(
            "hidden {hidden:?} P={agents}: rollout step {:.1} µs, update {:.2} ms ({} dispatches, 1 submission), \
             iteration {:.1} ms = {:.0} env steps/s (policy only, no env)",
            step_s * 1e6,
            update_s * 1e3,
            gpu.update_dispatch_count(),
            iteration_s * 1e3,
            (512 * agents) as f64 / iteration_s
        );
    }
    for hidden in [vec![64, 64], vec![]]
        .into_iter()
        .filter(|_| phase("rollout"))
    {
        for &num_envs in &list_var("PPO_BENCH_ROLLOUT_N", &[4, 64, 512]) {
            rollout_phase(&ctx, &hidden, agents, num_envs);
        }
    }
    for hidden in [vec![64, 64], vec![]].into_iter().filter(|_| phase("grid")) {
        for &agents in &list_var("PPO_BENCH_GRID_P", &[1, 8, 64]) {
            for &num_envs in &list_var("PPO_BENCH_GRID_N", &[4, 32]) {
                grid_point(&ctx, &hidden, agents, num_envs);
            }
        }
    }
}
