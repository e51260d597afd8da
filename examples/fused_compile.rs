//! First-use cost of the fused kernels: the first rollout (which compiles
//! the kernel on Mesa) and the median of 5 more, for each layout named; or
//! the first update and the median of 5 more for `update:fused` /
//! `update:layered`. Set `MESA_SHADER_CACHE_DISABLE=true` to measure
//! compiles on Mesa:
//! `cargo run --release --example fused_compile -- 64,64 4 lanes:2 per-env update:fused`
//! (hidden sizes, envs, layouts).

use std::time::Instant;

use ppo_wgpu::config::PpoConfig;
use ppo_wgpu::env::{CartPoleConfig, GpuCartPole};
use ppo_wgpu::ppo::fused::FusedLayout;
use ppo_wgpu::ppo::trainer::{initial_params, update_settings};
use ppo_wgpu::ppo::{permutations, ActorCriticSpec, PpoGpu, RolloutPath, UpdatePath};
use ppo_wgpu::{AdapterOptions, GpuContext};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let hidden: Vec<usize> = args
        .first()
        .map(|h| h.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![64, 64]);
    let num_envs: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(4);
    let ctx = GpuContext::new(&AdapterOptions::default()).expect("adapter");
    println!("adapter: {}", ctx.adapter.describe());
    let spec = ActorCriticSpec::new(4, 2, &hidden).expect("spec");
    let mut config = PpoConfig::preset("cleanrl").expect("preset");
    config.num_envs = num_envs;
    let settings = update_settings(&config);
    for layout in args.iter().skip(2) {
        if let Some(path) = layout.strip_prefix("update:") {
            let path = match path {
                "fused" => UpdatePath::Fused,
                _ => UpdatePath::Layered,
            };
            let mut gpu = PpoGpu::new(&ctx, &spec, &settings).expect("engine");
            gpu.set_params(&ctx, &initial_params(&spec, 1, 1))
                .expect("params");
            gpu.set_update_path(path);
            let mut env =
                GpuCartPole::new(&ctx, CartPoleConfig::new(1, num_envs), config.num_steps)
                    .expect("env");
            env.reset(&ctx, 1).expect("reset");
            gpu.rollout_gpu(&ctx, &mut env, 1, 0).expect("rollout");
            let perm = permutations(1, 1, &settings);
            let start = Instant::now();
            gpu.update(&ctx, None, &perm).expect("update");
            let first = start.elapsed().as_secs_f64();
            let mut times: Vec<f64> = (0..5)
                .map(|_| {
                    let start = Instant::now();
                    gpu.update(&ctx, None, &perm).expect("update");
                    start.elapsed().as_secs_f64()
                })
                .collect();
            times.sort_by(f64::total_cmp);
            println!(
                "hidden {hidden:?} N={num_envs} update {path:?}: first update {first:.2} s, then {:.2} ms ({} dispatches)",
                times[2] * 1e3,
                gpu.update_dispatch_count()
            );
            continue;
        }
        let kind = match layout.strip_prefix("lanes:") {
            Some(envs) => FusedLayout::Lanes {
                envs: envs.parse().expect("lanes:E"),
            },
            None => FusedLayout::PerEnv,
        };
        let mut gpu = PpoGpu::new(&ctx, &spec, &settings).expect("engine");
        gpu.set_params(&ctx, &initial_params(&spec, 1, 1))
            .expect("params");
        gpu.set_rollout_path(RolloutPath::Fused);
        gpu.set_fused_layout(Some(kind));
        let mut env = GpuCartPole::new(&ctx, CartPoleConfig::new(1, num_envs), config.num_steps)
            .expect("env");
        env.reset(&ctx, 1).expect("reset");
        let start = Instant::now();
        gpu.rollout_gpu(&ctx, &mut env, 1, 0).expect("rollout");
        let first = start.elapsed().as_secs_f64();
        let mut times: Vec<f64> = (1..=5)
            .map(|i| {
                let start = Instant::now();
                gpu.rollout_gpu(&ctx, &mut env, 1, i).expect("rollout");
                start.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let steps = (num_envs * config.num_steps) as f64;
        println!(
            "hidden {hidden:?} N={num_envs} {kind:?}: first rollout {first:.2} s, then {:.2} ms = {:.0} env-steps/s",
            times[2] * 1e3,
            steps / times[2]
        );
    }
}
