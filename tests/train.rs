//! End-to-end training on the adapter: learning happens, runs are
//! reproducible and resumable, bad configs are refused before any GPU work,
//! and a NaN stops the run with the last good checkpoint kept.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ctx, only_run_dir};
use ppo_wgpu::config::{EnvDevice, PpoConfig, RolloutPath, UpdatePath};
use ppo_wgpu::gpu::GpuContext;
use ppo_wgpu::ppo::trainer::{train, TrainOptions};
use ppo_wgpu::run::{load_checkpoint, read_metrics};
use ppo_wgpu::Error;

/// A small, quick config (CleanRL's network and loop, fewer steps).
fn small_config(total_timesteps: usize) -> PpoConfig {
    let mut config = PpoConfig::preset("cleanrl").unwrap();
    config.total_timesteps = total_timesteps;
    config.eval_episodes = 5;
    config
}

#[test]
fn a_short_run_clearly_raises_the_return() {
    let Some(ctx) = ctx() else { return };
    let root = scratch_dir("learns");
    let mut config = small_config(40_960);
    config.learning_rate = 1e-3;
    let report = train(&config, ctx, &common::train_options(&root)).unwrap();
    let rows = read_metrics(&report.run_dir.join("metrics.csv")).unwrap();
    assert_eq!(rows.len(), 80, "one row per iteration");
    let returns: Vec<f64> = rows.iter().filter_map(|r| r.episodic_return).collect();
    let first: f64 = returns[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = returns[returns.len() - 5..].iter().sum::<f64>() / 5.0;
    eprintln!("episodic return: first 5 iterations {first:.1}, last 5 {last:.1}");
    assert!(
        last > 2.5 * first && last > 80.0,
        "return did not clearly rise: {first:.1} -> {last:.1}"
    );
    for file in [
        "config.toml",
        "metrics.csv",
        "checkpoint.safetensors",
        "summary.json",
        "learning_curve.svg",
    ] {
        assert!(report.run_dir.join(file).is_file(), "{file} missing");
    }
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn the_same_seed_gives_identical_metrics() {
    let Some(ctx) = ctx() else { return };
    let root = scratch_dir("determinism");
    let mut config = small_config(4 * 512);
    config.num_agents = 2;
    let a = train(&config, ctx, &common::train_options(&root.join("a"))).unwrap();
    let b = train(&config, ctx, &common::train_options(&root.join("b"))).unwrap();
    let rows_a = read_metrics(&a.run_dir.join("metrics.csv")).unwrap();
    let rows_b = read_metrics(&b.run_dir.join("metrics.csv")).unwrap();
    assert_eq!(rows_a.len(), 8);
    assert_eq!(common::untimed(&rows_a), common::untimed(&rows_b));
    let ckpt_a = load_checkpoint(&a.run_dir.join("checkpoint.safetensors")).unwrap();
    let ckpt_b = load_checkpoint(&b.run_dir.join("checkpoint.safetensors")).unwrap();
    assert_eq!(
        ckpt_a.agents, ckpt_b.agents,
        "parameters differ between identical runs"
    );
    // Different seeds do differ.
    config.seed = 2;
    let c = train(&config, ctx, &common::train_options(&root.join("c"))).unwrap();
    let rows_c = read_metrics(&c.run_dir.join("metrics.csv")).unwrap();
    assert_ne!(common::untimed(&rows_a), common::untimed(&rows_c));
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn a_resumed_run_ends_where_the_uninterrupted_run_ends() {
    let Some(ctx) = ctx() else { return };
    let root = scratch_dir("resume");
    let mut config = small_config(6 * 512);
    config.num_agents = 2;
    config.checkpoint_every = 1;
    let whole = train(&config, ctx, &common::train_options(&root.join("whole"))).unwrap();
    assert!(!whole.interrupted);

    let first = train(
        &config,
        ctx,
        &TrainOptions {
            max_iterations: Some(2),
            ..common::train_options(&root.join("parts"))
        },
    )
    .unwrap();
    assert!(first.interrupted);
    assert_eq!(first.iteration, 2);
    let resumed = train(
        &config,
        ctx,
        &TrainOptions {
            resume: Some(first.run_dir.clone()),
            ..common::train_options(&root.join("parts"))
        },
    )
    .unwrap();
    assert_eq!(resumed.run_dir, first.run_dir);
    assert_eq!(resumed.iteration, 6);
    let rows_whole = read_metrics(&whole.run_dir.join("metrics.csv")).unwrap();
    let rows_resumed = read_metrics(&resumed.run_dir.join("metrics.csv")).unwrap();
    assert_eq!(common::untimed(&rows_whole), common::untimed(&rows_resumed));
    let a = load_checkpoint(&whole.run_dir.join("checkpoint.safetensors")).unwrap();
    let b = load_checkpoint(&resumed.run_dir.join("checkpoint.safetensors")).unwrap();
    assert_eq!(
        a.agents, b.agents,
        "parameters or optimizer state differ after resume"
    );
    assert_eq!(
        whole.summary.final_eval_mean,
        resumed.summary.final_eval_mean
    );
    let _ = std::fs::remove_dir_all(root);
}

/// `env_device = gpu`: the device CartPole learns, and a run resumed from a
/// checkpoint (the device env states inside) ends where the whole run ends.
#[test]
fn device_envs_learn_and_resume_exactly() {
    let Some(ctx) = ctx() else { return };
    let root = scratch_dir("device_envs");
    let mut config = PpoConfig::preset("default").unwrap();
    config.env_device = EnvDevice::Gpu;
    config.total_timesteps = 40 * 1024;
    config.eval_episodes = 5;
    let report = train(&config, ctx, &common::train_options(&root.join("learns"))).unwrap();
    let rows = read_metrics(&report.run_dir.join("metrics.csv")).unwrap();
    let returns: Vec<f64> = rows.iter().filter_map(|r| r.episodic_return).collect();
    let first: f64 = returns[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = returns[returns.len() - 5..].iter().sum::<f64>() / 5.0;
    eprintln!("device envs, episodic return: first 5 iterations {first:.1}, last 5 {last:.1}");
    assert!(
        last > 2.5 * first && last > 150.0,
        "return did not clearly rise: {first:.1} -> {last:.1}"
    );
    // The summary names the rollout and the update, and times each phase.
    let summary = &report.summary;
    assert_eq!(summary.rollout, "fused per-env");
    assert!(summary.rollout_sps > 0.0 && summary.update_ms > 0.0);
    assert_eq!(summary.update, "fused, linear");
    assert!(
        (1..=5).contains(&summary.update_dispatches),
        "{}",
        summary.update_dispatches
    );
    // Tests share the context, so the count is checked through the CLI
    // (bench_runs_short_configs_back_to_back).
    assert!(summary.submissions_per_iteration >= 2.0);

    // Resume from a checkpoint, with the linear policy (per-env fused
    // rollout, one-dispatch update) and with 64-64 (lanes; the layered
    // update auto gives populations, and the two-dispatch fused step),
    // 2 agents × 8 envs.
    for (hidden, rollout, update) in [
        (vec![], "fused per-env", UpdatePath::Auto),
        (vec![64, 64], "fused lanes E=4", UpdatePath::Auto),
        (vec![64, 64], "fused lanes E=4", UpdatePath::Fused),
    ] {
        config.hidden = hidden;
        config.update = update;
        let dir = format!("{}_{update:?}", rollout.replace(' ', "_"));
        resumes_exactly(ctx, &config, &root.join(dir), rollout);
    }
    let _ = std::fs::remove_dir_all(root);
}

fn resumes_exactly(ctx: &GpuContext, config: &PpoConfig, root: &Path, rollout: &str) {
    let mut config = config.clone();
    config.total_timesteps = 6 * 1024;
    config.num_agents = 2;
    config.checkpoint_every = 1;
    let whole = train(&config, ctx, &common::train_options(&root.join("whole"))).unwrap();
    assert_eq!(whole.summary.rollout, rollout);
    let parts = common::train_options(&root.join("parts"));
    let first = train(
        &config,
        ctx,
        &TrainOptions {
            max_iterations: Some(2),
            ..parts.clone()
        },
    )
    .unwrap();
    let resumed = train(
        &config,
        ctx,
        &TrainOptions {
            resume: Some(first.run_dir.clone()),
            ..parts
        },
    )
    .unwrap();
    assert_eq!(resumed.iteration, 6);
    let rows_whole = read_metrics(&whole.run_dir.join("metrics.csv")).unwrap();
    let rows_resumed = read_metrics(&resumed.run_dir.join("metrics.csv")).unwrap();
    assert_eq!(common::untimed(&rows_whole), common::untimed(&rows_resumed));
    let a = load_checkpoint(&whole.run_dir.join("checkpoint.safetensors")).unwrap();
    let b = load_checkpoint(&resumed.run_dir.join("checkpoint.safetensors")).unwrap();
    assert_eq!(a.agents, b.agents);
    assert_eq!(
        a.metadata.get("gpu_env_state"),
        b.metadata.get("gpu_env_state")
    );
    assert!(!a.metadata.contains_key("env_state"));
}

#[test]
fn invalid_configs_are_refused_before_any_work() {
    let Some(ctx) = ctx() else { return };
    let root = scratch_dir("invalid");
    type Breaker = fn(&mut PpoConfig);
    let cases: [(&str, Breaker); 7] = [
        ("num_envs", |c| c.num_envs = 0),
        // The final evaluation's size, refused before training (it once
        // panicked, or was refused only after the whole run).
        ("eval_episodes", |c| c.eval_episodes = usize::MAX / 2),
        ("eval_episodes", |c| c.eval_episodes = 10_000_000),
        ("num_minibatches", |c| c.num_minibatches = 3),
        ("learning_rate", |c| c.learning_rate = -1.0),
        // A fused rollout asked for where the network is too wide for it,
        // with device envs and with host envs.
        ("rollout = fused: hidden layer of 300", |c| {
            c.hidden = vec![300];
            c.rollout = RolloutPath::Fused;
            c.env_device = EnvDevice::Gpu;
        }),
        ("rollout = fused: hidden layer of 300", |c| {
            c.hidden = vec![300];
            c.rollout = RolloutPath::Fused;
        }),
    ];
    for (field, break_it) in cases {
        let mut config = small_config(2048);
        break_it(&mut config);
        let err = train(&config, ctx, &common::train_options(&root)).unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig { .. }),
            "{field}: {err:?}"
        );
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        0,
        "a refused config must not create a run folder"
    );
    let err = PpoConfig::resolve(Some("cleanrl"), None, &["learning_rat=0.1".into()]).unwrap_err();
    assert!(err.to_string().contains("learning_rat"), "{err}");
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn a_nan_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let Some(ctx) = ctx() else { return };
    let root = scratch_dir("nan");
    let mut config = small_config(20 * 512);
    config.checkpoint_every = 1;
    // No clipping and an absurd step size: parameters overflow within a few updates.
    config.learning_rate = 1e30;
    config.max_grad_norm = 1e30;
    config.anneal_lr = false;
    let err = train(&config, ctx, &common::train_options(&root)).unwrap_err();
    eprintln!("{err}");
    let Error::NonFinite { iteration, .. } = err else {
        panic!("expected Error::NonFinite, got {err:?}")
    };
    let run = only_run_dir(&root);
    let checkpoint =
        load_checkpoint(&run.join("checkpoint.safetensors")).expect("a good checkpoint is kept");
    assert!(checkpoint
        .agents
        .iter()
        .all(|a| a.params.iter().all(|v| v.is_finite())));
    let saved: usize = checkpoint.metadata["iteration"].parse().unwrap();
    assert!(
        saved < iteration,
        "checkpoint of iteration {saved} is from before the failure at {iteration}"
    );
    let _ = std::fs::remove_dir_all(root);
}

/// `train --quiet --resume RUN`, run to its end.
fn resume(run: &Path) -> std::process::Output {
    binary()
        .args(["train", "--quiet", "--resume"])
        .arg(run)
        .output()
        .unwrap()
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ppo-wgpu"))
}

/// `eval` of a checkpoint whose networks do not fit CartPole (3 actions, 5
/// inputs, a critic of 2 values) is refused before the adapter opens,
/// naming what the env needs; before, the first ran and reported a return
/// and the second failed with "CartPole::reset: tensor 'obs' has 25
/// elements".
#[test]
fn eval_refuses_a_network_that_does_not_fit_the_env() {
    use ppo_wgpu::run::{save_checkpoint, AgentState, Checkpoint};
    let dir = scratch_dir("misfit");
    type Layers = &'static [(usize, usize)];
    let cases: [(Layers, Layers, &str); 3] = [
        (&[(4, 8), (8, 3)], &[(4, 8), (8, 1)], "gives 3 actions"),
        (&[(5, 8), (8, 2)], &[(5, 8), (8, 1)], "takes 5 inputs"),
        (&[(4, 8), (8, 2)], &[(4, 8), (8, 2)], "gives 2 values"),
    ];
    for (k, (actor, critic, says)) in cases.into_iter().enumerate() {
        let count: usize = actor.iter().chain(critic).map(|(i, o)| (i + 1) * o).sum();
        let path = dir.join(format!("misfit{k}.safetensors"));
        let checkpoint = Checkpoint {
            actor_layers: actor.to_vec(),
            critic_layers: critic.to_vec(),
            agents: vec![AgentState {
                params: (0..count).map(|i| (i as f32 * 0.1).sin()).collect(),
                optimizer: None,
            }],
            ..Checkpoint::default()
        };
        save_checkpoint(&path, &checkpoint).unwrap();
        let out = binary()
            .args(["eval", "--episodes", "2", "--checkpoint"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{actor:?}: {stderr}{stdout}");
        assert!(stderr.contains(says), "{actor:?}: {stderr}");
        assert!(
            stderr.contains("CartPole-v1 needs an actor of 4 inputs")
                && stderr.contains("2 actions"),
            "{stderr}"
        );
        assert!(!stdout.contains("mean return"), "{stdout}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cli_names_bad_input_and_exits_nonzero() {
    let out = binary()
        .args(["train", "--set", "num_envs=0", "--runs-dir"])
        .arg(scratch_dir("cli"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("num_envs"), "{stderr}");
    assert!(
        !stderr.contains("adapter:"),
        "config errors come before the adapter is opened: {stderr}"
    );

    let out = binary()
        .args(["train", "--preset", "fastest"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cleanrl"),
        "valid presets are listed"
    );

    let refused: [(&[&str], &str); 10] = [
        (&["bench", "--env-devices", "cpu,tpu"], "env_device"),
        // Once blamed on total_timesteps alone, a key the user never set.
        (
            &[
                "meta-train",
                "--family",
                "cartpole",
                "--set",
                "meta_batch=20000",
            ],
            "multi-task baseline, one agent with num_envs × meta_batch",
        ),
        // Issue 16 item 10: once "invalid type: string", and a meta key's
        // typo listed only the PPO keys.
        (
            &["train", "--seed", "18446744073709551615"],
            "seed = 18446744073709551615: over the largest integer",
        ),
        (
            &["meta-train", "--family", "cartpole", "--set", "meta_btch=4"],
            "did you mean `meta_batch`?",
        ),
        // Counts that size allocations (these once panicked or aborted).
        (
            &["train", "--set", "eval_episodes=9223372036854775807"],
            "eval_episodes",
        ),
        (
            &[
                "eval",
                "--checkpoint",
                "no-such-checkpoint.safetensors",
                "--episodes",
                "18446744073709551615",
            ],
            "--episodes",
        ),
        (
            &[
                "meta-train",
                "--family",
                "cartpole",
                "--set",
                "adapt_eval_episodes=9223372036854775807",
            ],
            "adapt_eval_episodes",
        ),
        (
            &[
                "meta-train",
                "--family",
                "cartpole",
                "--set",
                "eval_tasks=100000000",
            ],
            "eval_tasks",
        ),
        (
            &[
                "meta-train",
                "--family",
                "nav",
                "--set",
                "adapt_steps=[0,5,2]",
            ],
            "adapt_steps",
        ),
        (
            &[
                "meta-train",
                "--family",
                "cartpole",
                "--set",
                "force_mag=[15.0,5.0]",
            ],
            "force_mag",
        ),
    ];
    // A --runs-dir that is a file: once only "File exists (os error 17)".
    let file = scratch_dir("runs_dir_file").join("a_file");
    std::fs::write(&file, b"").unwrap();
    let out = binary()
        .args(["train", "--runs-dir"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--runs-dir") && stderr.contains("is a file, not a folder"),
        "{stderr}"
    );
    assert!(!stderr.contains("adapter:"), "{stderr}");
    for (args, field) in refused {
        let out = binary().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert_ne!(out.status.code(), Some(101), "{args:?} panicked");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(field), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("adapter:"),
            "{args:?}: refused only after opening the adapter: {stderr}"
        );
    }

    if ctx().is_some() {
        let out = binary()
            .args(["adapters", "--adapter", "no-such-gpu-anywhere"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("no-such-gpu-anywhere") && stderr.contains("Adapters present"),
            "{stderr}"
        );
    }
}

/// `bench` runs short trainings back to back: two of the same seed within
/// one second once collided on their run folder. It prints each run's
/// update and its dispatch count.
#[test]
fn bench_runs_short_configs_back_to_back() {
    if ctx().is_none() {
        return;
    }
    let json = scratch_dir("bench_json").join("bench.json");
    let out = binary()
        .args([
            "bench",
            "--presets",
            "default,linear",
            "--agents",
            "1",
            "--env-devices",
            "gpu",
            "--max-timesteps",
            "2048",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("fused, linear"))
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    // With device envs an iteration is two submissions: the rollout and the update.
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = table.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{table}");
    for row in rows {
        assert_eq!(row["submissions_per_iteration"], 2.0, "{row}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("Cpu,") {
        // Both rows are the linear network with one agent.
        assert!(
            stderr.contains("software threads: one thread (LP_NUM_THREADS=0)"),
            "{stderr}"
        );
    }
}

/// `train` picks llvmpipe's thread count before the driver loads and says
/// which: one thread for the default preset (the linear network, one
/// agent), the driver's pool where `software_threads = "driver"`, and an
/// `LP_NUM_THREADS` the user set is left alone.
#[test]
fn train_chooses_software_threads_and_says_so() {
    if ctx().is_none() {
        return;
    }
    let cases: [(&[&str], Option<&str>, &str); 3] = [
        (&[], None, "one thread (LP_NUM_THREADS=0): measured faster"),
        (
            &["--set", "software_threads=driver"],
            None,
            "a thread per core (the driver's pool), as software_threads asks",
        ),
        (
            &["--set", "software_threads=single"],
            Some("1"),
            "LP_NUM_THREADS=1 from the environment",
        ),
    ];
    for (index, (args, env, expect)) in cases.into_iter().enumerate() {
        let root = scratch_dir(&format!("threads{index}"));
        let mut command = binary();
        command
            .args(["train", "--quiet", "--set", "total_timesteps=2048"])
            .args(args)
            .arg("--runs-dir")
            .arg(&root)
            .env_remove("LP_NUM_THREADS");
        if let Some(value) = env {
            command.env("LP_NUM_THREADS", value);
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        if stderr.contains("(a CPU software adapter") {
            let line = format!("software threads: {expect}");
            assert!(stderr.contains(&line), "{args:?}: {stderr}");
        } else {
            assert!(!stderr.contains("software threads"), "{stderr}");
        }
        let _ = std::fs::remove_dir_all(root);
    }
}

/// The README's `train`, `eval` and `adapters` example commands run as
/// written (a test once found `--polarity -1` refused by the argument
/// parser): shortened with `--set total_timesteps=2048 --set
/// eval_episodes=5`, in a scratch folder, the run and checkpoint paths
/// replaced by a real run's.
#[test]
fn the_readme_examples_run() {
    if ctx().is_none() {
        return;
    }
    let readme = include_str!("../README.md");
    let commands: Vec<Vec<String>> = readme
        .lines()
        .filter_map(|line| line.trim().strip_prefix("cargo run --release -- "))
        .map(|line| line.split(" #").next().unwrap_or(line))
        .filter(|line| {
            ["train", "eval", "adapters"].contains(&line.split(' ').next().unwrap_or(""))
        })
        .map(|line| {
            line.split_whitespace()
                .map(|word| {
                    if word == "''" {
                        String::new()
                    } else {
                        word.to_string()
                    }
                })
                .collect()
        })
        .collect();
    let subcommands: Vec<&str> = commands.iter().map(|c| c[0].as_str()).collect();
    assert!(
        subcommands.iter().filter(|&&c| c == "train").count() >= 5
            && subcommands.iter().filter(|&&c| c == "eval").count() >= 2,
        "the README's examples were not found: {commands:?}"
    );
    let dir = scratch_dir("readme");
    std::fs::write(dir.join("my.toml"), "num_envs = 4\nlearning_rate = 5e-3\n").unwrap();
    let mut run: Option<PathBuf> = None;
    for command in commands {
        let mut args = command.clone();
        match args[0].as_str() {
            "train" if args.iter().any(|a| a == "--resume") => {
                let Some(run) = &run else {
                    panic!("--resume before any run: {command:?}")
                };
                let at = args.iter().position(|a| a == "--resume").unwrap() + 1;
                args[at] = run.display().to_string();
            }
            "train" => args.extend(
                [
                    "--set",
                    "total_timesteps=2048",
                    "--set",
                    "eval_episodes=5",
                    "--quiet",
                ]
                .map(String::from),
            ),
            "eval" => {
                let Some(run) = &run else {
                    panic!("eval before any run: {command:?}")
                };
                let at = args.iter().position(|a| a == "--checkpoint").unwrap() + 1;
                args[at] = run.join("checkpoint.safetensors").display().to_string();
            }
            _ => {}
        }
        let out = binary().args(&args).current_dir(&dir).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if args.iter().any(|a| a == "--resume") {
            // The run resumed here has finished: resume says so.
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("the run is finished"),
                "{command:?}: {stderr}"
            );
            continue;
        }
        assert!(
            out.status.success(),
            "{command:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if run.is_none() && args[0] == "train" {
            let line = stdout
                .lines()
                .find_map(|l| l.strip_prefix("run: "))
                .unwrap();
            run = Some(dir.join(line));
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A default training process under `root` that checkpoints every
/// iteration and does not evaluate, for tests that stop it.
fn spawn_checkpointing_run(root: &Path, total_timesteps: u64) -> std::process::Child {
    binary()
        .args([
            "train",
            "--quiet",
            "--set",
            "checkpoint_every=1",
            "--set",
            &format!("total_timesteps={total_timesteps}"),
            "--set",
            "eval_every=0",
            "--runs-dir",
        ])
        .arg(root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// The run folder under `root` of a training process started there, once
/// its metrics.csv has `rows` rows (two minutes at most).
fn wait_for_iterations(root: &Path, rows: usize) -> PathBuf {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no run under {} reached {rows} iterations",
            root.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        let Some(run) = std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .next()
        else {
            continue;
        };
        if read_metrics(&run.join("metrics.csv"))
            .unwrap_or_default()
            .len()
            >= rows
        {
            return run;
        }
    }
}

/// SIGTERM (what schedulers send) and SIGINT stop a run as Ctrl-C does:
/// it finishes its iteration, saves its checkpoint (here with the default
/// `checkpoint_every = 0`, so only the run's start was saved before) and exits 143 or
/// 130, not 0, so a script can tell it from a finished run. Before,
/// SIGTERM killed the run with nothing saved, and a Ctrl-C stop exited 0.
#[cfg(unix)]
#[test]
fn sigterm_and_sigint_save_and_exit_with_the_signal_code() {
    if ctx().is_none() {
        return;
    }
    for (signal, code) in [("TERM", 143), ("INT", 130)] {
        let root = scratch_dir(&format!("signal_{signal}"));
        let child = binary()
            .args([
                "train",
                "--quiet",
                "--set",
                "total_timesteps=20000000",
                "--set",
                "eval_every=0",
                "--runs-dir",
            ])
            .arg(&root)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let run = wait_for_iterations(&root, 3);
        let status = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "SIG{signal}: {stderr}");
        assert!(stdout.contains("interrupted at iteration"), "{stdout}");
        assert!(stderr.contains("stopping after this iteration"), "{stderr}");
        let checkpoint = load_checkpoint(&run.join("checkpoint.safetensors")).unwrap();
        let saved: usize = checkpoint.metadata["iteration"].parse().unwrap();
        assert!(saved >= 3, "SIG{signal}: saved iteration {saved}");
        let _ = std::fs::remove_dir_all(&root);
    }
}

/// Resuming a run folder with no checkpoint (a run killed in its first
/// milliseconds) says there is nothing to resume, before the adapter opens.
#[test]
fn resuming_a_run_with_no_checkpoint_says_so() {
    let root = scratch_dir("empty_run");
    for with_config in [false, true] {
        if with_config {
            std::fs::write(
                root.join("config.toml"),
                PpoConfig::default().to_toml().unwrap(),
            )
            .unwrap();
        }
        let out = resume(&root);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("--resume") && stderr.contains("nothing to resume"),
            "{stderr}"
        );
        assert!(!stderr.contains("adapter:"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// A second process training into a run folder that one is training is
/// refused before it reads or writes anything (two `--resume` of one run
/// both ran before), and the lock ends with its process, even killed with
/// SIGKILL.
#[test]
fn a_run_in_training_cannot_be_resumed_beside_itself() {
    if ctx().is_none() {
        return;
    }
    let root = scratch_dir("lock");
    let mut child = spawn_checkpointing_run(&root, 20_000_000);
    let run = wait_for_iterations(&root, 3);
    let out = resume(&run);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--resume") && stderr.contains("another ppo-wgpu process"),
        "{stderr}"
    );
    let dir = ppo_wgpu::run::RunDir::open(&run).unwrap();
    assert!(dir.lock("--resume").is_err(), "the lock is held");
    child.kill().unwrap();
    child.wait().unwrap();
    let lock = dir
        .lock("--resume")
        .expect("a killed process releases its lock");
    assert!(dir.lock("--resume").is_err(), "one holder at a time");
    drop(lock);
    dir.lock("--resume").expect("released when dropped");
    let _ = std::fs::remove_dir_all(&root);
}

/// A run killed (SIGKILL) after a periodic checkpoint and resumed keeps its
/// clock: the checkpoint holds the time spent so far, so `wall_s` in
/// metrics.csv never goes back and the resumed run's summary counts both
/// processes' time (the checkpoint once held only earlier processes' time,
/// 0 here, and the resumed clock restarted).
#[test]
fn time_spent_survives_a_kill_and_resume() {
    if ctx().is_none() {
        return;
    }
    let root = scratch_dir("kill");
    let mut child = spawn_checkpointing_run(&root, 2_000_000);
    // Wait for a few checkpointed iterations, then kill without warning.
    let run = wait_for_iterations(&root, 20);
    child.kill().unwrap();
    child.wait().unwrap();
    // What a kill during a checkpoint write leaves; the resume removes it
    // (it was left forever), and keeps a file that only looks alike.
    let stale = run.join(".checkpoint.safetensors.tmp.4194305.7");
    let kept = run.join(".notes.tmp.txt");
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    std::fs::write(&kept, b"mine").unwrap();
    let checkpoint = load_checkpoint(&run.join("checkpoint.safetensors")).unwrap();
    let saved: usize = checkpoint.metadata["iteration"].parse().unwrap();
    let progress: serde_json::Value =
        serde_json::from_str(&checkpoint.metadata["progress"]).unwrap();
    let offset = progress["wall_offset_s"].as_f64().unwrap();
    let before = read_metrics(&run.join("metrics.csv")).unwrap();
    let at_save = before.iter().find(|r| r.iteration == saved).unwrap().wall_s;
    assert!(
        offset >= at_save && at_save > 0.0,
        "checkpoint of iteration {saved}: wall_offset_s {offset}, wall_s {at_save} at that iteration"
    );

    let out = resume(&run);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stale.exists(), "the stale temporary file is still there");
    assert!(kept.exists());
    let rows = read_metrics(&run.join("metrics.csv")).unwrap();
    for pair in rows.windows(2) {
        assert!(
            pair[1].iteration == pair[0].iteration + 1 && pair[1].wall_s >= pair[0].wall_s,
            "iteration {} at {} s, then iteration {} at {} s",
            pair[0].iteration,
            pair[0].wall_s,
            pair[1].iteration,
            pair[1].wall_s
        );
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let wall = summary["wall_s"].as_f64().unwrap();
    assert!(
        wall >= rows.last().unwrap().wall_s && wall > offset,
        "summary wall_s {wall}"
    );

    // Resuming the finished run says so and changes nothing (it once
    // rewrote summary.json with sps 0 and exited 0).
    let files = ["summary.json", "metrics.csv", "checkpoint.safetensors"];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(run.join(f)).unwrap())
        .collect();
    let out = resume(&run);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("finished"),
        "{stderr}"
    );
    for (file, bytes) in files.iter().zip(before) {
        assert_eq!(
            std::fs::read(run.join(file)).unwrap(),
            bytes,
            "{file} changed"
        );
    }
    let _ = std::fs::remove_dir_all(root);
}

fn scratch_dir(name: &str) -> std::path::PathBuf {
    common::scratch_dir("train", name)
}
