//! `summary.json`: the few numbers that describe a finished run, for
//! comparing runs and adapters without reading the metrics.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{io_error, write_atomic};
use crate::error::{Error, Result};

/// End-of-run numbers. Per-agent fields are indexed by agent. Missing keys
/// read as their defaults, so summaries written before a field was added
/// still load.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    /// The adapter that ran the kernels, as `ppo-wgpu adapters` describes it.
    pub adapter: String,
    /// The env trained (Gymnasium's id); empty in summaries written before
    /// other envs than CartPole-v1 could be trained.
    pub env_id: String,
    /// The mean greedy return that counts as solved for that env (its
    /// Gymnasium `reward_threshold`); `steps_to_475` and `seconds_to_475`
    /// are measured to it (475 for CartPole-v1, hence their names).
    pub solved_return: f64,
    /// Seconds from start to end of training.
    pub wall_s: f64,
    /// Environment steps taken, summed over all agents.
    pub global_steps: u64,
    /// `global_steps` over the training seconds (evaluations excluded).
    pub sps: f64,
    /// Per agent: the env steps (per agent) of the first evaluation during
    /// training whose mean greedy return reached `solved_return` (475,
    /// CartPole-v1's threshold, gave the name), or `None` if none did.
    pub steps_to_475: Vec<Option<u64>>,
    /// Per agent: the wall-clock seconds at that point, start-up and
    /// evaluations included.
    pub seconds_to_475: Vec<Option<f64>>,
    /// The evaluations during training: (env steps per agent, wall seconds,
    /// mean greedy return per agent).
    pub evaluations: Vec<(u64, f64, Vec<f64>)>,
    /// Per agent: mean return of the final greedy evaluation.
    pub final_eval_mean: Vec<f64>,
    /// Per agent: standard deviation of that return.
    pub final_eval_std: Vec<f64>,
    /// Which rollout ran: "host, fused step" or "host, layered" (envs on
    /// the host), "layered", or "fused" with its layout (`env_device = gpu`).
    pub rollout: String,
    /// The rollout phase alone: env steps over all agents per second of
    /// rollouts (this run's part, after a resume).
    pub rollout_sps: f64,
    /// The update phase alone: mean milliseconds per update (bootstrap, GAE
    /// and every epoch's minibatches, statistics read back).
    pub update_ms: f64,
    /// Which update ran ("fused, linear", "fused, rows" or
    /// "layered").
    pub update: String,
    /// Kernel dispatches per update (one submission).
    pub update_dispatches: usize,
    /// Queue submissions per training iteration, rollout and update
    /// (evaluations not counted); 0 in summaries written before it was.
    #[serde(default)]
    pub submissions_per_iteration: f64,
}

/// Writes `summary` as pretty JSON, atomically. JSON has no NaN or infinity:
/// such values are written as `null`, which [`read_summary`] refuses.
pub fn write_summary(path: &Path, summary: &Summary) -> Result<()> {
    let mut text = serde_json::to_string_pretty(summary).map_err(|e| Error::Format {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Reads a summary written by [`write_summary`].
pub fn read_summary(path: &Path) -> Result<Summary> {
    let text = std::fs::read_to_string(path).map_err(|source| io_error(path, source))?;
    serde_json::from_str(&text).map_err(|e| Error::Format {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
