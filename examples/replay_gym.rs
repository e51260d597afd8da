//! Replays Gymnasium recordings (CartPole-v1, Acrobot-v1, MountainCar-v0,
//! MountainCarContinuous-v0, Pendulum-v1; the file's `env_id` selects the
//! env) in the crate's host envs.
//!
//! `cargo run --release --example replay_gym -- FILE.json`
//!
//! FILE.json comes from `scripts/gen_golden.py` or is written in its schema.
//! Prints the worst absolute observation error and the number of flag and reward mismatches;
//! exits with 1 when the replay is off beyond tolerance or the file cannot be
//! read, and 2 on a usage error.

use std::process::ExitCode;

use ppo_wgpu::env::golden::{replay_file, OBS_TOLERANCE};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path] = args.as_slice() else {
        eprintln!("usage: replay_gym FILE.json");
        return ExitCode::from(2);
    };
    let report = match replay_file(path) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{path}: {} trajectories, {} episodes, {} steps",
        report.trajectories, report.episodes, report.steps
    );
    let worst_at = report
        .max_obs_error_at
        .map(|at| format!(" (trajectory {}, step {})", at.trajectory, at.step))
        .unwrap_or_default();
    println!(
        "worst |obs error|: {:.3e}{worst_at} (tolerance {OBS_TOLERANCE:e})",
        report.max_obs_error
    );
    let first_mismatch = report
        .first_mismatch_at
        .map(|at| format!(" (first: trajectory {}, step {})", at.trajectory, at.step))
        .unwrap_or_default();
    println!(
        "flag mismatches: {}, reward mismatches: {}{first_mismatch}",
        report.flag_mismatches, report.reward_mismatches
    );
    if report.passed() {
        println!("PASS");
        ExitCode::SUCCESS
    } else {
        println!("FAIL");
        ExitCode::FAILURE
    }
}
