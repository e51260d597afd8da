//! Shared test helpers: one GPU context per test binary, seeded random data,
//! and the |ref − gpu| ≤ atol + rtol·|ref| comparison that prints the worst elements.
#![allow(dead_code)]

use std::sync::OnceLock;

use ppo_wgpu::ops::optim::ADAM_EPS;
use ppo_wgpu::ops::ppo_loss::LossCoefs;
use ppo_wgpu::ppo::UpdateSettings;
use ppo_wgpu::{AdapterOptions, GpuContext};
use rand::{Rng, SeedableRng};

/// The context every test of a binary shares. Without an adapter the test is
/// skipped with a message, except under `CI`, where that is a failure.
pub fn ctx() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::new(&AdapterOptions::default()) {
        Ok(ctx) => {
            eprintln!("test adapter: {}", ctx.adapter.describe());
            Some(ctx)
        }
        Err(e) => {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set and no adapter was found: {e}");
            }
            eprintln!("SKIPPED: no adapter ({e})");
            None
        }
    })
    .as_ref()
}

/// CleanRL's update settings (4 minibatches, 4 epochs, its loss
/// coefficients, advantage normalization, no target_kl) for these sizes.
pub fn cleanrl_settings(num_agents: usize, num_steps: usize, envs: usize) -> UpdateSettings {
    UpdateSettings {
        num_agents,
        num_steps,
        envs_per_agent: envs,
        num_minibatches: 4,
        update_epochs: 4,
        gamma: 0.99,
        gae_lambda: 0.95,
        norm_adv: true,
        coefs: LossCoefs {
            clip_coef: 0.2,
            ent_coef: 0.01,
            vf_coef: 0.5,
            clip_vloss: true,
        },
        max_grad_norm: 0.5,
        adam_eps: ADAM_EPS,
        target_kl: None,
    }
}

/// Seeded uniform values in [lo, hi).
pub fn random_vec(seed: u64, len: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(lo..hi)).collect()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Asserts `gpu` matches `reference` elementwise; reports the worst relative
/// error and the first mismatches. NaN anywhere in `gpu` fails.
pub fn assert_close(what: &str, reference: &[f64], gpu: &[f32], atol: f64, rtol: f64) {
    assert_eq!(reference.len(), gpu.len(), "{what}: length");
    let mut worst = (0usize, -1.0f64);
    let mut mismatches = Vec::new();
    for (i, (&r, &g)) in reference.iter().zip(gpu).enumerate() {
        let err = (r - g as f64).abs();
        let bound = atol + rtol * r.abs();
        // NaN compares false, so test it explicitly: an unwritten (poisoned) element fails.
        let score = if g.is_nan() {
            f64::INFINITY
        } else {
            err / bound
        };
        if score > 1.0 {
            mismatches.push(format!("  [{i}] ref {r:.9e} gpu {g:.9e} |err| {err:.3e}"));
        }
        if score > worst.1 {
            worst = (i, score);
        }
    }
    if let Some(&r) = reference.get(worst.0) {
        let g = gpu[worst.0] as f64;
        let err = (r - g).abs();
        eprintln!(
            "{what}: {} elements, worst at [{}]: ref {r:.6e} gpu {g:.6e} |err| {err:.3e} rel {:.3e}",
            reference.len(),
            worst.0,
            err / r.abs().max(1e-30)
        );
    }
    if !mismatches.is_empty() {
        let shown: Vec<_> = mismatches.iter().take(8).cloned().collect();
        panic!(
            "{what}: {} of {} elements exceed atol {atol:e} + rtol {rtol:e}·|ref|:\n{}",
            mismatches.len(),
            reference.len(),
            shown.join("\n")
        );
    }
}

/// The one entry of `root`: the run folder a command wrote there.
pub fn only_run_dir(root: &std::path::Path) -> std::path::PathBuf {
    let mut entries: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries.pop().unwrap()
}

/// An empty folder `ppo_wgpu_{group}_{name}_{pid}` in the temp dir.
pub fn scratch_dir(group: &str, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ppo_wgpu_{group}_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Train options writing run folders under `root`, otherwise the defaults.
pub fn train_options(root: &std::path::Path) -> ppo_wgpu::ppo::trainer::TrainOptions {
    ppo_wgpu::ppo::trainer::TrainOptions {
        runs_root: root.to_path_buf(),
        ..Default::default()
    }
}

/// Metrics without the timing columns (SPS, wall_s).
pub fn untimed(rows: &[ppo_wgpu::run::MetricsRow]) -> Vec<ppo_wgpu::run::MetricsRow> {
    rows.iter()
        .map(|r| ppo_wgpu::run::MetricsRow {
            sps: None,
            wall_s: 0.0,
            ..r.clone()
        })
        .collect()
}

/// The path of `tests/data/{name}_golden.json`.
pub fn golden_data(name: &str) -> String {
    format!(
        "{}/tests/data/{name}_golden.json",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Replays `tests/data/{name}_golden.json` (Gymnasium's `env_id`) and
/// checks it matches, and that it exercises at least `terminations` and
/// `truncations` episode ends.
pub fn check_replay(name: &str, env_id: &str, terminations: usize, truncations: usize) {
    let path = golden_data(name);
    let recording = ppo_wgpu::env::golden::load(&path).unwrap();
    assert_eq!(recording.env_id, env_id);
    let count = |flags: fn(&ppo_wgpu::env::golden::GoldenTrajectory) -> &Vec<bool>| -> usize {
        let trajectories = recording.trajectories.iter();
        trajectories
            .map(|t| flags(t).iter().filter(|&&f| f).count())
            .sum()
    };
    assert!(
        count(|t| &t.terminated) >= terminations,
        "{name}: too few terminations"
    );
    assert!(
        count(|t| &t.truncated) >= truncations,
        "{name}: too few truncations"
    );

    let report = ppo_wgpu::env::golden::replay_file(&path).unwrap();
    let steps: usize = recording.trajectories.iter().map(|t| t.actions.len()).sum();
    assert_eq!(report.trajectories, recording.trajectories.len());
    assert_eq!(report.steps, steps);
    assert!(
        report.max_obs_error <= ppo_wgpu::env::golden::OBS_TOLERANCE,
        "{name}: {report:?}"
    );
    assert_eq!(report.flag_mismatches, 0, "{name}: {report:?}");
    assert_eq!(report.reward_mismatches, 0, "{name}: {report:?}");
    // With glibc's libm (the one numpy used for the recording) the replay is
    // bit-exact. That is stricter than the tolerance: computing
    // MountainCarContinuous in float64 throughout, not with numpy's float32
    // scalars, stays within 1e-5 but is not exact.
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        assert_eq!(report.max_obs_error, 0.0, "{name}: {report:?}");
    }
    assert!(report.passed());
}
