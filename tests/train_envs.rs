//! `train --env ID` beyond CartPole: Acrobot-v1 learns, a run resumes
//! exactly, the config follows the env (preset, episode limit), and envs the
//! trainer cannot take yet are refused naming the field.

mod common;

use std::process::Command;

use common::ctx;
use ppo_wgpu::config::PpoConfig;
use ppo_wgpu::ppo::trainer::{train, TrainOptions};
use ppo_wgpu::run::{load_checkpoint, read_metrics, read_summary};
use ppo_wgpu::Error;

fn resolve(sets: &[&str]) -> ppo_wgpu::Result<PpoConfig> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    PpoConfig::resolve(None, None, &sets)
}

#[test]
fn the_config_follows_the_env() {
    // Without a preset, each env gets its own (CartPole-v1 the tuned
    // default, Acrobot CleanRL's ppo.py over 100k steps, MountainCar RL Zoo's
    // settings with normalization); the episode limit is the env's
    // TimeLimit unless set.
    let cartpole = resolve(&[]).unwrap();
    assert_eq!(
        (cartpole.hidden.clone(), cartpole.max_episode_steps),
        (vec![], 500)
    );
    let acrobot = resolve(&["env_id=Acrobot-v1"]).unwrap();
    assert_eq!(acrobot, PpoConfig::preset("acrobot").unwrap());
    assert_eq!(
        PpoConfig {
            env_id: "CartPole-v1".into(),
            total_timesteps: 500_000,
            ..acrobot
        },
        PpoConfig::preset("cleanrl").unwrap()
    );
    let car = resolve(&["env_id=MountainCar-v0"]).unwrap();
    assert_eq!(car, PpoConfig::preset("mountaincar").unwrap());
    assert!(car.norm_obs && car.norm_reward);
    // A preset names its env; another env's settings can be asked for.
    let preset = PpoConfig::resolve(Some("mountaincar"), None, &[]).unwrap();
    assert_eq!(preset.env_id, "MountainCar-v0");
    let cleanrl_car = PpoConfig::resolve(Some("cleanrl"), None, &["env_id=MountainCar-v0".into()]);
    assert_eq!(cleanrl_car.unwrap().max_episode_steps, 200);
    let car = resolve(&["env_id=MountainCar-v0", "max_episode_steps=300"]).unwrap();
    assert_eq!(car.max_episode_steps, 300);
    let named =
        PpoConfig::resolve(Some("linear"), None, &["env_id=MountainCar-v0".into()]).unwrap();
    assert_eq!((named.hidden.len(), named.max_episode_steps), (0, 200));
    // A config file's env counts as a set one.
    let dir = scratch_dir("file");
    let file = dir.join("acrobot.toml");
    std::fs::write(&file, "env_id = \"Acrobot-v1\"\ntotal_timesteps = 1024\n").unwrap();
    let from_file = PpoConfig::resolve(None, Some(&file), &[]).unwrap();
    assert_eq!(
        (from_file.hidden.len(), from_file.total_timesteps),
        (2, 1024)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn envs_the_trainer_cannot_take_are_refused_naming_the_field() {
    let cases: [(&[&str], &str, &str); 4] = [
        (
            &["env_id=LunarLander-v3"],
            "env_id",
            "known: CartPole-v1, Acrobot-v1, MountainCar-v0, MountainCarContinuous-v0, Pendulum-v1",
        ),
        (&["env_id=Pendulum-v1"], "env_id", "continuous actions"),
        (
            &["env_id=MountainCarContinuous-v0"],
            "env_id",
            "Gaussian policy head",
        ),
        (
            &["env_id=Acrobot-v1", "env_device=gpu"],
            "env_device",
            "only CartPole-v1 has a device env",
        ),
    ];
    for (sets, field, says) in cases {
        match resolve(sets) {
            Err(error @ Error::InvalidConfig { .. }) => {
                let text = error.to_string();
                assert!(
                    text.contains(field) && text.contains(says),
                    "{sets:?}: {text}"
                );
            }
            other => panic!("{sets:?}: expected InvalidConfig, got {other:?}"),
        }
    }
}

#[test]
fn acrobot_learns_and_resumes_exactly() {
    let Some(ctx) = ctx() else { return };
    let root = scratch_dir("acrobot");
    let mut config = resolve(&["env_id=Acrobot-v1", "eval_episodes=5", "eval_every=0"]).unwrap();
    config.total_timesteps = 20_480;
    let report = train(&config, ctx, &common::train_options(&root.join("learn"))).unwrap();
    let rows = read_metrics(&report.run_dir.join("metrics.csv")).unwrap();
    let first: Vec<f64> = rows
        .iter()
        .take(8)
        .filter_map(|r| r.episodic_return)
        .collect();
    let eval = report.summary.final_eval_mean[0];
    eprintln!("Acrobot-v1: first sampled returns {first:?}, greedy eval after 20k steps {eval:.1}");
    // A fresh policy rarely swings the tip up within the 500-step limit.
    assert!(first.iter().all(|&r| r <= -300.0), "{first:?}");
    assert!(eval > -300.0, "greedy eval {eval}");
    let summary = read_summary(&report.run_dir.join("summary.json")).unwrap();
    assert_eq!(
        (summary.env_id.as_str(), summary.solved_return),
        ("Acrobot-v1", -100.0)
    );
    assert!(report
        .run_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("Acrobot-v1__"));

    // Two agents, stopped after 2 of 6 iterations and resumed: the same
    // metrics, parameters and env state as the uninterrupted run.
    config.total_timesteps = 6 * 512;
    let (whole, a) = resumes_exactly(ctx, &config, &root);
    let state = a.metadata.get("env_state").unwrap();
    assert!(state.contains("\"env_id\":\"Acrobot-v1\""), "{state}");
    assert_eq!(a.actor_layers.first(), Some(&(6, 64)));
    assert_eq!(a.actor_layers.last(), Some(&(64, 3)));

    // `eval` plays the checkpoint's env, and refuses another or CartPole's
    // physics flags, naming both envs or the flag.
    let checkpoint = whole.run_dir.join("checkpoint.safetensors");
    let eval = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ppo-wgpu"))
            .args(["eval", "--greedy", "--episodes", "3", "--checkpoint"])
            .arg(&checkpoint)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = eval(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("over 3 greedy episodes").count(),
        2,
        "{stdout}"
    );
    for (extra, says) in [
        (
            &["--env", "CartPole-v1"][..],
            "the checkpoint was trained on Acrobot-v1",
        ),
        (&["--gravity", "5"][..], "--gravity"),
    ] {
        let out = eval(extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {stderr}");
        assert!(stderr.contains(says), "{extra:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn mountain_car_trains_on_the_host() {
    let Some(ctx) = ctx() else { return };
    let root = scratch_dir("car");
    let sets = [
        "env_id=MountainCar-v0".into(),
        "eval_episodes=2".into(),
        "eval_every=0".into(),
    ];
    let mut config = PpoConfig::resolve(Some("cleanrl"), None, &sets).unwrap();
    config.total_timesteps = 2 * 512;
    let report = train(&config, ctx, &common::train_options(&root)).unwrap();
    // Reward -1 per step, episodes cut at 200 steps: each env's first
    // episode ends within the 256 steps it took.
    let rows = read_metrics(&report.run_dir.join("metrics.csv")).unwrap();
    let ended: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| Some((r.episodic_return?, r.episodic_length?)))
        .collect();
    assert!(!ended.is_empty(), "{rows:?}");
    for (ret, len) in ended {
        assert!(ret == -len && len <= 200.0, "return {ret}, length {len}");
    }
    let eval = report.summary.final_eval_mean[0];
    assert!((-200.0..0.0).contains(&eval), "{eval}");
    let _ = std::fs::remove_dir_all(root);
}

fn scratch_dir(name: &str) -> std::path::PathBuf {
    common::scratch_dir("envs", name)
}

#[test]
fn normalized_runs_resume_exactly_and_eval_sees_the_saved_statistics() {
    let Some(ctx) = ctx() else { return };
    let root = scratch_dir("norm");
    let mut config = resolve(&[
        "env_id=MountainCar-v0",
        "num_envs=5",
        "num_steps=16",
        "norm_obs=true",
        "norm_reward=true",
        "eval_episodes=3",
        "eval_every=0",
    ])
    .unwrap();
    config.total_timesteps = 6 * 80;
    let (_, a) = resumes_exactly(ctx, &config, &root);
    let state = a.metadata.get("env_state").unwrap();
    assert!(
        state.contains("\"discounted\""),
        "reward statistics saved: {state}"
    );

    // `eval` normalizes with the checkpoint's statistics, frozen: with the
    // final evaluation's seed and size it returns the run's own result.
    // (CartPole: its greedy returns depend on the normalized inputs, where
    // MountainCar's untrained ones are all -200.)
    let mut config = resolve(&["norm_obs=true", "eval_episodes=4", "eval_every=0"]).unwrap();
    config.total_timesteps = 4 * 1024;
    config.num_agents = 2;
    let run = train(&config, ctx, &common::train_options(&root.join("cartpole"))).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ppo-wgpu"))
        .args(["eval", "--greedy", "--episodes", "4", "--seed"])
        .arg((config.seed + 1_000_003).to_string())
        .arg("--checkpoint")
        .arg(run.run_dir.join("checkpoint.safetensors"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "final eval {:?}; eval: {stdout}",
        run.summary.final_eval_mean
    );
    for (p, mean) in run.summary.final_eval_mean.iter().enumerate() {
        assert!(
            stdout.contains(&format!("agent {p}: mean return {mean:.1} ")),
            "{mean}: {stdout}"
        );
    }
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn normalization_settings_are_checked() {
    for (sets, field) in [
        (&["norm_obs=true", "env_device=gpu"][..], "norm_obs"),
        (&["norm_reward=true", "env_device=gpu"][..], "norm_reward"),
        (&["norm_clip=0"][..], "norm_clip"),
        (&["norm_clip=nan"][..], "norm_clip"),
    ] {
        match resolve(sets) {
            Err(error @ Error::InvalidConfig { .. }) => {
                assert!(error.to_string().contains(field), "{sets:?}: {error}")
            }
            other => panic!("{sets:?}: expected InvalidConfig, got {other:?}"),
        }
    }
}

/// Two agents of `config`, stopped after 2 of its 6 iterations and resumed:
/// the same metrics, parameters, env state and final evaluation as the
/// uninterrupted run, whose report and checkpoint are returned.
fn resumes_exactly(
    ctx: &ppo_wgpu::GpuContext,
    config: &PpoConfig,
    root: &std::path::Path,
) -> (
    ppo_wgpu::ppo::trainer::TrainReport,
    ppo_wgpu::run::Checkpoint,
) {
    let mut config = config.clone();
    config.num_agents = 2;
    config.checkpoint_every = 1;
    let whole = train(&config, ctx, &common::train_options(&root.join("whole"))).unwrap();
    let parts = common::train_options(&root.join("parts"));
    let limited = TrainOptions {
        max_iterations: Some(2),
        ..parts.clone()
    };
    let first = train(&config, ctx, &limited).unwrap();
    let resumed = TrainOptions {
        resume: Some(first.run_dir.clone()),
        ..parts
    };
    let resumed = train(&config, ctx, &resumed).unwrap();
    assert_eq!(resumed.iteration, 6);
    let rows_whole = read_metrics(&whole.run_dir.join("metrics.csv")).unwrap();
    let rows_resumed = read_metrics(&resumed.run_dir.join("metrics.csv")).unwrap();
    assert_eq!(common::untimed(&rows_whole), common::untimed(&rows_resumed));
    let a = load_checkpoint(&whole.run_dir.join("checkpoint.safetensors")).unwrap();
    let b = load_checkpoint(&resumed.run_dir.join("checkpoint.safetensors")).unwrap();
    assert_eq!(a.agents, b.agents);
    assert_eq!(a.metadata.get("env_state"), b.metadata.get("env_state"));
    assert!(a.metadata.contains_key("env_state"));
    assert_eq!(
        resumed.summary.final_eval_mean,
        whole.summary.final_eval_mean
    );
    (whole, a)
}

#[test]
fn bench_runs_other_envs_and_names_them() {
    if ctx().is_none() {
        return;
    }
    let dir = scratch_dir("bench");
    let json = dir.join("bench.json");
    let bench = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ppo-wgpu"))
            .args([
                "bench",
                "--presets",
                "cleanrl",
                "--agents",
                "1",
                "--max-timesteps",
                "1024",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = bench(&[
        "--envs",
        "Acrobot-v1,MountainCar-v0",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ids: Vec<&str> = table
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["env_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["Acrobot-v1", "MountainCar-v0"]);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("cleanrl") && l.contains("Acrobot-v1")),
        "{stdout}"
    );
    for (extra, says) in [
        (&["--envs", "Pendulum-v1"][..], "continuous actions"),
        (
            &["--envs", "Acrobot-v1", "--env-devices", "gpu"][..],
            "only CartPole-v1 has a device env",
        ),
    ] {
        let out = bench(extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {stderr}");
        assert!(
            stderr.contains(says) && !stderr.contains("adapter:"),
            "{extra:?}: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
