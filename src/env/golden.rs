//! Replay of trajectories recorded from Gymnasium (by
//! `scripts/gen_golden.py`) in
//! this crate's host envs, to check that the physics, flags and rewards
//! match the reference implementation. The file's `env_id` selects the env
//! (CartPole-v1 when absent).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::cartpole::{CartPole, CartPoleConfig};
use super::classic::{Classic, ContinuousDynamics, DiscreteDynamics};
use super::vec_env::{StepOut, VecEnv};
use super::{
    AcrobotDynamics, MountainCarContinuousDynamics, MountainCarDynamics, PendulumDynamics,
};
use crate::{Error, Result};

/// Largest accepted absolute difference between a replayed and a recorded
/// observation component. Gymnasium rounds its float64 state to float32 for
/// the observation, so a faithful replay differs by float32 rounding at most.
pub const OBS_TOLERANCE: f64 = 1e-5;

/// A golden file: trajectories plus the env and episode limit they were
/// recorded with.
#[derive(Debug, Clone, Deserialize)]
pub struct GoldenFile {
    /// Gymnasium's id of the env; CartPole-v1 when absent.
    #[serde(default = "default_env_id")]
    pub env_id: String,
    /// Gymnasium version that recorded the file, if noted.
    #[serde(default)]
    pub gymnasium_version: Option<String>,
    /// `TimeLimit`'s `max_episode_steps` during recording; the env's
    /// registered limit when absent.
    #[serde(default)]
    pub max_episode_steps: Option<u32>,
    /// The recorded trajectories.
    pub trajectories: Vec<GoldenTrajectory>,
}

fn default_env_id() -> String {
    "CartPole-v1".into()
}

/// One recorded run of consecutive episodes in a single environment.
#[derive(Debug, Clone, Deserialize)]
pub struct GoldenTrajectory {
    /// The state right after each reset, at the step where its episode
    /// starts. A last reset at the step after the final one (a reset with no
    /// steps after it) is accepted and does nothing.
    pub resets: Vec<GoldenReset>,
    /// Action of every step.
    pub actions: Vec<GoldenAction>,
    /// Float32 observation after every step (the terminal one at an episode
    /// end), as numbers.
    pub obs: Vec<Vec<f64>>,
    /// Reward of every step, as Gymnasium returned it (float64).
    pub reward: Vec<f64>,
    /// `terminated` of every step.
    pub terminated: Vec<bool>,
    /// `truncated` of every step.
    pub truncated: Vec<bool>,
}

/// A recorded action: an index for discrete envs, a list of (float32)
/// values for continuous ones, out of bounds allowed (the env clips it as
/// Gymnasium's does).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum GoldenAction {
    /// A discrete action.
    Discrete(u32),
    /// A continuous action's components.
    Continuous(Vec<f64>),
}

/// The float64 state an episode starts from.
#[derive(Debug, Clone, Deserialize)]
pub struct GoldenReset {
    /// Index into the per-step lists of the episode's first step.
    pub step: usize,
    /// `env.unwrapped.state` right after the reset, as JSON numbers or as
    /// decimal strings (Python's `repr`, as the CartPole recording has
    /// them); either is read correctly rounded, and one ulp in the start
    /// state would grow to about 5e-2 over a 500-step open-loop replay.
    #[serde(deserialize_with = "parse_state64")]
    pub state64: Vec<f64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Number(f64),
    Text(String),
}

fn parse_state64<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Vec<f64>, D::Error> {
    let entries = Vec::<Number>::deserialize(deserializer)?;
    entries
        .into_iter()
        .map(|entry| match entry {
            Number::Number(value) => Ok(value),
            Number::Text(text) => text.parse().map_err(|e| {
                serde::de::Error::custom(format!("state64 entry {text:?} is not a float: {e}"))
            }),
        })
        .collect()
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

/// One env replaying a recording: set the state at a reset, step with a
/// recorded action.
trait Replayer {
    fn obs_dim(&self) -> usize;
    fn start(&mut self, state: &[f64]) -> Result<()>;
    fn step(&mut self, action: &GoldenAction, out: &mut StepOut)
        -> std::result::Result<(), String>;
}

impl Replayer for CartPole {
    fn obs_dim(&self) -> usize {
        VecEnv::obs_dim(self)
    }

    fn start(&mut self, state: &[f64]) -> Result<()> {
        let state: [f64; 4] = state
            .try_into()
            .map_err(|_| Error::shape("CartPole::set_state", "state", 4, state.len()))?;
        self.set_state(0, state)?;
        self.set_elapsed_steps(0, 0)
    }

    fn step(
        &mut self,
        action: &GoldenAction,
        out: &mut StepOut,
    ) -> std::result::Result<(), String> {
        let action = discrete(action)?;
        VecEnv::step(self, &[action], out).map_err(|e| e.to_string())
    }
}

fn discrete(action: &GoldenAction) -> std::result::Result<u32, String> {
    match action {
        GoldenAction::Discrete(a) => Ok(*a),
        GoldenAction::Continuous(a) => Err(format!(
            "action {a:?} is a list; this env's actions are integers"
        )),
    }
}

struct Discrete<D: DiscreteDynamics>(Classic<D>);

impl<D: DiscreteDynamics> Replayer for Discrete<D> {
    fn obs_dim(&self) -> usize {
        D::OBS_DIM
    }

    fn start(&mut self, state: &[f64]) -> Result<()> {
        self.0.start_episode_from(0, state)
    }

    fn step(
        &mut self,
        action: &GoldenAction,
        out: &mut StepOut,
    ) -> std::result::Result<(), String> {
        let action = discrete(action)?;
        self.0.step(&[action], out).map_err(|e| e.to_string())
    }
}

struct Continuous<D: ContinuousDynamics>(Classic<D>);

impl<D: ContinuousDynamics> Replayer for Continuous<D> {
    fn obs_dim(&self) -> usize {
        D::OBS_DIM
    }

    fn start(&mut self, state: &[f64]) -> Result<()> {
        self.0.start_episode_from(0, state)
    }

    fn step(
        &mut self,
        action: &GoldenAction,
        out: &mut StepOut,
    ) -> std::result::Result<(), String> {
        let GoldenAction::Continuous(values) = action else {
            return Err(format!(
                "action {action:?} is an integer; this env's actions are lists of {} floats",
                D::ACTION_DIM
            ));
        };
        // The recorded values are float32s written as float64.
        let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        self.0
            .step_continuous(&values, out)
            .map_err(|e| e.to_string())
    }
}

fn classic<D: super::classic::Dynamics>(max_episode_steps: Option<u32>) -> Result<Classic<D>> {
    let mut env = Classic::<D>::new(1)?;
    if let Some(steps) = max_episode_steps {
        env.set_max_episode_steps(steps)?;
    }
    Ok(env)
}

/// A single env of the recording's kind with its episode limit.
fn replayer(golden: &GoldenFile) -> std::result::Result<Box<dyn Replayer>, String> {
    let limit = golden.max_episode_steps;
    let built: Result<Box<dyn Replayer>> = match golden.env_id.as_str() {
        "CartPole-v1" => {
            let mut config = CartPoleConfig::new(1, 1);
            if let Some(steps) = limit {
                config.max_episode_steps = steps;
            }
            CartPole::new(config).map(|env| Box::new(env) as Box<dyn Replayer>)
        }
        "Acrobot-v1" => classic::<AcrobotDynamics>(limit).map(|e| Box::new(Discrete(e)) as _),
        "MountainCar-v0" => {
            classic::<MountainCarDynamics>(limit).map(|e| Box::new(Discrete(e)) as _)
        }
        "MountainCarContinuous-v0" => {
            classic::<MountainCarContinuousDynamics>(limit).map(|e| Box::new(Continuous(e)) as _)
        }
        "Pendulum-v1" => classic::<PendulumDynamics>(limit).map(|e| Box::new(Continuous(e)) as _),
        other => {
            return Err(format!(
                "env_id {other:?} is not an env this crate has; known: {}",
                super::registry::known_ids()
            ))
        }
    };
    built.map_err(|e| e.to_string())
}

/// Replays every trajectory in a single env of the recording's kind with
/// the file's episode limit, setting the recorded state at each reset.
/// Errs, with the reason, on an inconsistent recording.
fn replay_golden(golden: &GoldenFile) -> std::result::Result<ReplayReport, String> {
    let mut env = replayer(golden)?;
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
        replay_trajectory(env.as_mut(), trajectory, index, &mut report)
            .map_err(|reason| format!("trajectory {index}: {reason}"))?;
    }
    Ok(report)
}

fn replay_trajectory(
    env: &mut dyn Replayer,
    trajectory: &GoldenTrajectory,
    trajectory_index: usize,
    report: &mut ReplayReport,
) -> std::result::Result<(), String> {
    let obs_dim = env.obs_dim();
    check_consistent(trajectory, obs_dim)?;
    let mut out = StepOut::new(1, obs_dim);
    let mut resets = trajectory.resets.iter().peekable();
    for step in 0..trajectory.actions.len() {
        if let Some(reset) = resets.next_if(|reset| reset.step == step) {
            env.start(&reset.state64)
                .map_err(|e| format!("reset at step {step}: {e}"))?;
            report.episodes += 1;
        }
        env.step(&trajectory.actions[step], &mut out)
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
            // The recording holds float32 values; compare them as such.
            let error = (f64::from(replayed) - f64::from(recorded as f32)).abs();
            // A NaN observation sticks as the maximum and fails the replay.
            if error > report.max_obs_error || error.is_nan() {
                report.max_obs_error = error;
                report.max_obs_error_at = Some(at);
            }
        }
        let flags_match = (out.terminated[0] != 0) == trajectory.terminated[step]
            && (out.truncated[0] != 0) == trajectory.truncated[step];
        let reward_matches = out.reward[0] == trajectory.reward[step] as f32;
        report.flag_mismatches += usize::from(!flags_match);
        report.reward_mismatches += usize::from(!reward_matches);
        if !(flags_match && reward_matches) && report.first_mismatch_at.is_none() {
            report.first_mismatch_at = Some(at);
        }
    }
    report.steps += trajectory.actions.len();
    Ok(())
}

/// Equal list lengths, `obs_dim` components per observation, a reset at
/// step 0, and a reset right after every recorded episode end and nowhere
/// else (the one after an end at the last step is optional).
fn check_consistent(
    trajectory: &GoldenTrajectory,
    obs_dim: usize,
) -> std::result::Result<(), String> {
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
    if let Some(step) = trajectory.obs.iter().position(|obs| obs.len() != obs_dim) {
        let len = trajectory.obs[step].len();
        return Err(format!(
            "obs at step {step} has {len} components, the env has {obs_dim}"
        ));
    }
    let mut expected_resets = vec![0];
    let ends = (trajectory.terminated.iter().zip(&trajectory.truncated)).enumerate();
    for (step, (&terminated, &truncated)) in ends {
        if (terminated || truncated) && step + 1 < steps {
            expected_resets.push(step + 1);
        }
    }
    let mut reset_steps: Vec<usize> = trajectory.resets.iter().map(|r| r.step).collect();
    let ended_last = (trajectory.terminated.last().copied().unwrap_or(false))
        || (trajectory.truncated.last().copied().unwrap_or(false));
    if steps > 0 && ended_last && reset_steps.last() == Some(&steps) {
        reset_steps.pop();
    }
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
