//! Replay of trajectories recorded from Gymnasium's CartPole-v1 (by
//! `scripts/gen_cartpole_golden.py`) in [`CartPole`], to check that the
//! physics, flags and rewards match the reference implementation.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::cartpole::{CartPole, CartPoleConfig, OBS_DIM};
use super::vec_env::{StepOut, VecEnv};
use crate::{Error, Result};

/// Largest accepted absolute difference between a replayed and a recorded
/// observation component. Gymnasium rounds its float64 state to float32 for
/// the observation, so a faithful replay differs by float32 rounding at most.
pub const OBS_TOLERANCE: f64 = 1e-5;

/// A golden file: trajectories plus the episode limit they were recorded with.
#[derive(Debug, Clone, Deserialize)]
pub struct GoldenFile {
    /// Gymnasium version that recorded the file, if noted.
    #[serde(default)]
    pub gymnasium_version: Option<String>,
    /// `TimeLimit`'s `max_episode_steps` during recording.
    #[serde(default = "default_max_episode_steps")]
    pub max_episode_steps: u32,
    /// The recorded trajectories.
    pub trajectories: Vec<GoldenTrajectory>,
}

fn default_max_episode_steps() -> u32 {
    CartPoleConfig::new(1, 1).max_episode_steps
}

/// One recorded run of consecutive episodes in a single environment.
#[derive(Debug, Clone, Deserialize)]
pub struct GoldenTrajectory {
    /// The state right after each reset, at the step where its episode starts.
    pub resets: Vec<GoldenReset>,
    /// Action of every step.
    pub actions: Vec<u32>,
    /// Float32 observation after every step (the terminal one at an episode end).
    pub obs: Vec<[f32; OBS_DIM]>,
    /// Reward of every step.
    pub reward: Vec<f32>,
    /// `terminated` of every step.
    pub terminated: Vec<bool>,
    /// `truncated` of every step.
    pub truncated: Vec<bool>,
}

/// The float64 state an episode starts from.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct GoldenReset {
    /// Index into the per-step lists of the episode's first step.
    pub step: usize,
    /// `[x, x_dot, theta, theta_dot]` right after the reset, written in the
    /// file as decimal strings (Python's `repr`) and parsed here with Rust's
    /// correctly rounded parser. As JSON numbers they would go through
    /// serde_json's default float parser, which can be one ulp off, and one
    /// ulp grows to about 5e-2 over a 500-step open-loop replay.
    #[serde(deserialize_with = "parse_state64")]
    pub state64: [f64; 4],
}

fn parse_state64<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<[f64; 4], D::Error> {
    let text = <[String; 4]>::deserialize(deserializer)?;
    let mut state = [0.0; 4];
    for (value, text) in state.iter_mut().zip(&text) {
        *value = text.parse().map_err(|e| {
            serde::de::Error::custom(format!("state64 entry {text:?} is not a float: {e}"))
        })?;
    }
    Ok(state)
}

/// Where a replay disagreed with the recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepIndex {
    /// Index of the trajectory in the file.
    pub trajectory: usize,
    /// Index of the step in the trajectory.
    pub step: usize,
}

/// Outcome of a replay.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayReport {
    /// Trajectories replayed.
    pub trajectories: usize,
    /// Steps replayed over all trajectories.
    pub steps: usize,
    /// Episodes started over all trajectories.
    pub episodes: usize,
    /// Worst absolute observation difference.
    pub max_obs_error: f64,
    /// Step with the worst observation difference.
    pub max_obs_error_at: Option<StepIndex>,
    /// Steps whose `terminated` or `truncated` differs.
    pub flag_mismatches: usize,
    /// Steps whose reward differs.
    pub reward_mismatches: usize,
    /// First step with a flag or reward mismatch.
    pub first_mismatch_at: Option<StepIndex>,
}

impl ReplayReport {
    /// Observations within [`OBS_TOLERANCE`], flags and rewards exact.
    pub fn passed(&self) -> bool {
        self.max_obs_error <= OBS_TOLERANCE
            && self.flag_mismatches == 0
            && self.reward_mismatches == 0
    }
}

/// Reads and replays a golden file.
pub fn replay_file(path: impl AsRef<Path>) -> Result<ReplayReport> {
    let path = path.as_ref();
    let golden = load(path)?;
    replay_golden(&golden).map_err(|reason| format_error(path, reason))
}

/// Reads a golden file.
pub fn load(path: impl AsRef<Path>) -> Result<GoldenFile> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| format_error(path, e.to_string()))
}

/// Replays every trajectory in a single-env [`CartPole`] with the file's
/// episode limit, setting the recorded state at each reset. Errs, with the
/// reason, on an inconsistent recording.
fn replay_golden(golden: &GoldenFile) -> std::result::Result<ReplayReport, String> {
    let mut config = CartPoleConfig::new(1, 1);
    config.max_episode_steps = golden.max_episode_steps;
    let mut cartpole = CartPole::new(config).map_err(|e| e.to_string())?;
    let mut report = ReplayReport {
        trajectories: golden.trajectories.len(),
        steps: 0,
        episodes: 0,
        max_obs_error: 0.0,
        max_obs_error_at: None,
        flag_mismatches: 0,
        reward_mismatches: 0,
        first_mismatch_at: None,
    };
    for (index, trajectory) in golden.trajectories.iter().enumerate() {
        replay_trajectory(&mut cartpole, trajectory, index, &mut report)
            .map_err(|reason| format!("trajectory {index}: {reason}"))?;
    }
    Ok(report)
}

fn replay_trajectory(
    cartpole: &mut CartPole,
    trajectory: &GoldenTrajectory,
    trajectory_index: usize,
    report: &mut ReplayReport,
) -> std::result::Result<(), String> {
    check_consistent(trajectory)?;
    let mut out = StepOut::new(1, OBS_DIM);
    let mut resets = trajectory.resets.iter().peekable();
    for step in 0..trajectory.actions.len() {
        if let Some(reset) = resets.next_if(|reset| reset.step == step) {
            cartpole
                .set_state(0, reset.state64)
                .and_then(|()| cartpole.set_elapsed_steps(0, 0))
                .map_err(|e| format!("reset at step {step}: {e}"))?;
            report.episodes += 1;
        }
        cartpole
            .step(&trajectory.actions[step..=step], &mut out)
            .map_err(|e| format!("step {step}: {e}"))?;
        let at = StepIndex {
            trajectory: trajectory_index,
            step,
        };
        let replayed_obs = if out.is_done(0) {
            &out.final_obs
        } else {
            &out.obs
        };
        for (&replayed, &recorded) in replayed_obs.iter().zip(&trajectory.obs[step]) {
            let error = (f64::from(replayed) - f64::from(recorded)).abs();
            // A NaN observation sticks as the maximum and fails the replay.
            if error > report.max_obs_error || error.is_nan() {
                report.max_obs_error = error;
                report.max_obs_error_at = Some(at);
            }
        }
        let flags_match = (out.terminated[0] != 0) == trajectory.terminated[step]
            && (out.truncated[0] != 0) == trajectory.truncated[step];
        let reward_matches = out.reward[0] == trajectory.reward[step];
        report.flag_mismatches += usize::from(!flags_match);
        report.reward_mismatches += usize::from(!reward_matches);
        if !(flags_match && reward_matches) && report.first_mismatch_at.is_none() {
            report.first_mismatch_at = Some(at);
        }
    }
    report.steps += trajectory.actions.len();
    Ok(())
}

/// Equal list lengths, a reset at step 0, and a reset right after every
/// recorded episode end (except the last step) and nowhere else.
fn check_consistent(trajectory: &GoldenTrajectory) -> std::result::Result<(), String> {
    let steps = trajectory.actions.len();
    let lengths = [
        ("obs", trajectory.obs.len()),
        ("reward", trajectory.reward.len()),
        ("terminated", trajectory.terminated.len()),
        ("truncated", trajectory.truncated.len()),
    ];
    for (field, len) in lengths {
        if len != steps {
            return Err(format!("{field} has {len} entries, actions has {steps}"));
        }
    }
    let mut expected_resets = vec![0];
    let ends = (trajectory.terminated.iter().zip(&trajectory.truncated)).enumerate();
    for (step, (&terminated, &truncated)) in ends {
        if (terminated || truncated) && step + 1 < steps {
            expected_resets.push(step + 1);
        }
    }
    let reset_steps: Vec<usize> = trajectory.resets.iter().map(|r| r.step).collect();
    if reset_steps != expected_resets {
        return Err(format!(
            "resets at steps {reset_steps:?}, but the recorded episode ends put them at {expected_resets:?}"
        ));
    }
    Ok(())
}

fn format_error(path: &Path, reason: String) -> Error {
    Error::Format {
        path: PathBuf::from(path),
        reason,
    }
}
