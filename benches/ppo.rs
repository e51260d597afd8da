//! PPO phases on the chosen adapter at CleanRL's CartPole sizes (4 envs ×
//! 128 steps, 4 minibatches × 4 epochs, 64-64 tanh): one rollout step
//! (forward + sample + action readback), one full update (one submission),
//! each as the median of several runs, with the dispatch count.
//!
//! Run: `cargo bench --bench ppo` (add `WGPU_BACKEND=gl` or `vulkan`;
//! `PPO_BENCH_AGENTS=64` for a population).

use std::time::Instant;

use ppo_wgpu::config::PpoConfig;
use ppo_wgpu::ops::categorical::SampleKey;
use ppo_wgpu::ppo::trainer::{initial_params, update_settings};
use ppo_wgpu::ppo::{permutations, ActorCriticSpec, PpoGpu};
use ppo_wgpu::{AdapterOptions, GpuContext};

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let ctx = GpuContext::new(&AdapterOptions::default()).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    let agents: usize = std::env::var("PPO_BENCH_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    println!("adapter: {}", ctx.adapter.describe());
    for hidden in [vec![64, 64], vec![]] {
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
}
