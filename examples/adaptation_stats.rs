//! How far each PPO adaptation update moves a `meta-train` run's
//! initializations on its held-out tasks: per update, the means over tasks
//! of the last minibatch's approx KL, clip fraction and entropy, and the
//! explained variance of the critic on the update's rollout.
//!
//! ```sh
//! cargo run --release --example adaptation_stats -- runs/meta-cartpole__ppo__1__1795577418 [UPDATES]
//! ```
//!
//! The held-out tasks, seeds and inner loop are `meta-eval`'s.

use std::path::PathBuf;

use ppo_wgpu::config::PpoConfig;
use ppo_wgpu::meta::inner::{rollout, InnerEnv};
use ppo_wgpu::meta::tasks::{family_spec, make_env, repeat_tasks};
use ppo_wgpu::meta::train::{load_init, META_CHECKPOINT_FILE, MULTITASK_CHECKPOINT_FILE};
use ppo_wgpu::meta::{sample_tasks, MetaConfig};
use ppo_wgpu::ppo::trainer::{load_run_config, update_settings};
use ppo_wgpu::ppo::{permutations, AgentUpdateStats, PpoGpu};
use ppo_wgpu::run::RunDir;
use ppo_wgpu::{AdapterOptions, GpuContext};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let run_path = PathBuf::from(args.next().ok_or("usage: adaptation_stats RUN [UPDATES]")?);
    let updates: u32 = args.next().map_or(Ok(5), |s| s.parse())?;
    let run = RunDir::open(&run_path)?;
    let ppo = load_run_config(&run)?;
    let meta: MetaConfig = toml::from_str(&std::fs::read_to_string(run_path.join("meta.toml"))?)?;
    let ctx = GpuContext::new(&AdapterOptions::default())?;
    println!("adapter: {}", ctx.adapter.describe());
    let spec = family_spec(meta.family, &ppo.hidden)?;
    let tasks = sample_tasks(&meta, meta.eval_seed, meta.eval_tasks);
    let config = PpoConfig {
        num_agents: meta.eval_tasks,
        ..ppo.clone()
    };
    let max_steps = u32::try_from(ppo.max_episode_steps)?;
    for file in [META_CHECKPOINT_FILE, MULTITASK_CHECKPOINT_FILE] {
        let path = run_path.join(file);
        if !path.exists() {
            continue;
        }
        let theta = load_init(&path, &spec)?;
        let mut gpu = PpoGpu::new(&ctx, &spec, &update_settings(&config))?;
        gpu.set_params(&ctx, &theta.repeat(meta.eval_tasks))?;
        gpu.reset_optimizer(&ctx)?;
        gpu.set_learning_rates(&vec![ppo.learning_rate; meta.eval_tasks])?;
        let env = make_env(
            &meta,
            &repeat_tasks(&tasks, ppo.num_envs),
            meta.eval_tasks,
            ppo.num_envs,
            max_steps,
        )?;
        let mut inner = InnerEnv::new(env, meta.eval_seed)?;
        println!("{file}");
        println!("update  approx_kl  clipfrac  entropy  explained_variance");
        for k in 0..updates {
            rollout(&ctx, &mut gpu, &mut inner, meta.eval_seed, k)?;
            let perm = permutations(meta.eval_seed, u64::from(k), gpu.settings());
            let stats = gpu.update(&ctx, Some(&inner.obs), &perm)?;
            let mean = |f: fn(&AgentUpdateStats) -> f64| {
                stats.iter().map(f).sum::<f64>() / stats.len() as f64
            };
            println!(
                "{:>6}  {:>9.4}  {:>8.3}  {:>7.3}  {:>18.3}",
                k + 1,
                mean(|s| s.approx_kl),
                mean(|s| s.clipfrac),
                mean(|s| s.entropy),
                mean(|s| s.explained_variance),
            );
        }
    }
    Ok(())
}
