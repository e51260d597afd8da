//! Observation and reward normalization as Gymnasium's `NormalizeObservation`
//! and `NormalizeReward` wrappers compute them, each followed by CleanRL's
//! clip to ±10 (`ppo_continuous_action.py`'s `make_env`), one wrapper pair
//! per env as CleanRL builds them.
//!
//! Gymnasium keeps the observation statistics in float32 (the observation
//! space's dtype) with a Python-float count, so with numpy 2 every update
//! and the normalization itself round to float32 at each operation; the
//! return statistics are float64. Both are reproduced operation by operation
//! (`tests/classic.rs` replays Gymnasium's recording bit for bit).

use serde::{Deserialize, Serialize};

use super::registry::HostEnv;
use super::vec_env::{EpisodeStats, StepOut, VecEnv};
use crate::{Error, Result};

/// Gymnasium's `epsilon` in both wrappers' denominators.
const EPSILON: f64 = 1e-8;
/// `RunningMeanStd`'s starting count.
const COUNT_EPSILON: f64 = 1e-4;

/// One env's running observation mean and variance (`NormalizeObservation`'s
/// `obs_rms`: float32 moments, a float64 count).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObsStats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    pub count: f64,
}

impl ObsStats {
    /// Fresh statistics for `dim` components: mean 0, variance 1.
    pub fn new(dim: usize) -> Self {
        Self {
            mean: vec![0.0; dim],
            var: vec![1.0; dim],
            count: COUNT_EPSILON,
        }
    }

    /// Adds one observation (`update_mean_var_count_from_moments` with a
    /// batch of one: batch mean `obs`, batch variance 0).
    pub fn update(&mut self, obs: &[f32]) {
        let tot_count = self.count + 1.0;
        // numpy 2: a Python float meeting a float32 array is rounded to float32.
        let (count, tot) = (self.count as f32, tot_count as f32);
        for ((mean, var), &x) in self.mean.iter_mut().zip(&mut self.var).zip(obs) {
            let delta = x - *mean;
            let new_mean = *mean + delta * 1.0 / tot;
            let m_a = *var * count;
            let m_b = 0.0f32 * 1.0;
            let m2 = m_a + m_b + delta * delta * count * 1.0 / tot;
            *mean = new_mean;
            *var = m2 / tot;
        }
        self.count = tot_count;
    }

    /// `(obs - mean) / sqrt(var + epsilon)`, clipped to ±`clip`, in place.
    pub fn normalize(&self, obs: &mut [f32], clip: f32) {
        for ((x, &mean), &var) in obs.iter_mut().zip(&self.mean).zip(&self.var) {
            let z = (*x - mean) / (var + EPSILON as f32).sqrt();
            *x = z.clamp(-clip, clip);
        }
    }

    /// The statistics of the union of `parts`' samples (the same moments
    /// formula, in float64): what one wrapper would hold had it seen every
    /// part's observations. For a frozen evaluation over several envs.
    pub fn merged(parts: &[ObsStats]) -> Option<ObsStats> {
        let first = parts.first()?;
        let dim = first.mean.len();
        let mut mean: Vec<f64> = first.mean.iter().map(|&m| f64::from(m)).collect();
        let mut var: Vec<f64> = first.var.iter().map(|&v| f64::from(v)).collect();
        let mut count = first.count;
        for part in &parts[1..] {
            let tot = count + part.count;
            for i in 0..dim {
                let delta = f64::from(part.mean[i]) - mean[i];
                let m2 = var[i] * count
                    + f64::from(part.var[i]) * part.count
                    + delta * delta * count * part.count / tot;
                mean[i] += delta * part.count / tot;
                var[i] = m2 / tot;
            }
            count = tot;
        }
        Some(ObsStats {
            mean: mean.iter().map(|&m| m as f32).collect(),
            var: var.iter().map(|&v| v as f32).collect(),
            count,
        })
    }
}

/// Per agent, the merged statistics of its envs (env `p * N + n` is agent
/// `p`'s): what an evaluation of agent `p` normalizes with.
pub fn per_agent(stats: &[ObsStats], num_agents: usize) -> Vec<ObsStats> {
    let n = stats.len() / num_agents.max(1);
    stats
        .chunks(n.max(1))
        .filter_map(ObsStats::merged)
        .collect()
}

/// The per-env observation statistics in a normalized batch's snapshot
/// (checkpoint metadata `env_state`).
pub fn obs_stats_in_snapshot(json: &str) -> Result<Vec<ObsStats>> {
    let snapshot: NormalizedSnapshot = serde_json::from_str(json).map_err(|e| Error::Format {
        path: "env snapshot".into(),
        reason: format!("not a normalized batch's state: {e}"),
    })?;
    Ok(snapshot.state.obs)
}

/// Wraps `inner` (`num_agents` agents' envs, in agent order) so that every
/// env normalizes observations with its agent's `stats`, frozen: how an
/// evaluation sees the env its agent was trained on.
pub fn frozen_obs_normalization(
    inner: Box<dyn HostEnv>,
    stats: &[ObsStats],
    clip: f64,
) -> Result<Normalized> {
    let num_envs = inner.num_envs();
    let per_agent = num_envs / stats.len().max(1);
    if stats.is_empty() || per_agent * stats.len() != num_envs {
        return Err(Error::shape(
            "frozen_obs_normalization",
            "stats",
            num_envs,
            stats.len(),
        ));
    }
    let settings = NormalizeSettings {
        obs: true,
        reward: false,
        gamma: 1.0,
        clip,
    };
    let mut env = Normalized::new(inner, settings)?;
    let obs = (0..num_envs)
        .map(|e| stats[e / per_agent].clone())
        .collect();
    env.set_state(NormalizeState {
        obs,
        reward: Vec::new(),
    })?;
    env.freeze(true);
    Ok(env)
}

/// One env's discounted return and its running variance (`NormalizeReward`'s
/// `discounted_reward` and `return_rms`, float64).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReturnStats {
    pub discounted: f64,
    pub mean: f64,
    pub var: f64,
    pub count: f64,
}

impl Default for ReturnStats {
    fn default() -> Self {
        Self {
            discounted: 0.0,
            mean: 0.0,
            var: 1.0,
            count: COUNT_EPSILON,
        }
    }
}

impl ReturnStats {
    /// The normalized, clipped reward of a step with `reward`; the
    /// discounted return restarts after a termination (not a truncation),
    /// as in Gymnasium.
    pub fn normalize(&mut self, reward: f64, terminated: bool, gamma: f64, clip: f64) -> f64 {
        let keep = if terminated { 0.0 } else { 1.0 };
        self.discounted = self.discounted * gamma * keep + reward;
        let tot_count = self.count + 1.0;
        let delta = self.discounted - self.mean;
        let new_mean = self.mean + delta * 1.0 / tot_count;
        let m2 = self.var * self.count + 0.0 * 1.0 + delta * delta * self.count * 1.0 / tot_count;
        self.mean = new_mean;
        self.var = m2 / tot_count;
        self.count = tot_count;
        (reward / (self.var + EPSILON).sqrt()).clamp(-clip, clip)
    }
}

/// What to normalize.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormalizeSettings {
    /// Observations (`NormalizeObservation`, then a clip).
    pub obs: bool,
    /// Rewards (`NormalizeReward` with `gamma`, then a clip).
    pub reward: bool,
    /// The discount of the running return.
    pub gamma: f64,
    /// Both clips are to ±this (CleanRL: 10).
    pub clip: f64,
}

/// The wrappers' state for every env of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormalizeState {
    /// Per env; empty when observations are not normalized.
    pub obs: Vec<ObsStats>,
    /// Per env; empty when rewards are not normalized.
    pub reward: Vec<ReturnStats>,
}

#[derive(Serialize, Deserialize)]
struct NormalizedSnapshot {
    inner: String,
    state: NormalizeState,
}

/// A host batch seen through one normalization wrapper pair per env. The
/// policy reads normalized observations and the update normalized rewards;
/// episode statistics stay the env's own returns. With
/// [`Normalized::freeze`] the statistics stop updating (for evaluation).
pub struct Normalized {
    inner: Box<dyn HostEnv>,
    settings: NormalizeSettings,
    state: NormalizeState,
    frozen: bool,
}

impl Normalized {
    /// Wraps `inner` with fresh statistics.
    pub fn new(inner: Box<dyn HostEnv>, settings: NormalizeSettings) -> Result<Self> {
        if !(settings.clip.is_finite() && settings.clip > 0.0) {
            let reason = "must be finite and positive";
            return Err(Error::config("norm_clip", settings.clip, reason));
        }
        if !(0.0..=1.0).contains(&settings.gamma) {
            return Err(Error::config("gamma", settings.gamma, "must be in [0, 1]"));
        }
        let (n, dim) = (inner.num_envs(), inner.obs_dim());
        let state = NormalizeState {
            obs: if settings.obs {
                vec![ObsStats::new(dim); n]
            } else {
                Vec::new()
            },
            reward: if settings.reward {
                vec![ReturnStats::default(); n]
            } else {
                Vec::new()
            },
        };
        Ok(Self {
            inner,
            settings,
            state,
            frozen: false,
        })
    }

    /// Stops (or resumes) updating the statistics.
    pub fn freeze(&mut self, frozen: bool) {
        self.frozen = frozen;
    }

    /// The wrappers' statistics.
    pub fn state(&self) -> &NormalizeState {
        &self.state
    }

    /// Replaces the wrappers' statistics (same env count and size).
    pub fn set_state(&mut self, state: NormalizeState) -> Result<()> {
        let n = self.inner.num_envs();
        let dim = self.inner.obs_dim();
        let obs_len = if self.settings.obs { n } else { 0 };
        let reward_len = if self.settings.reward { n } else { 0 };
        if state.obs.len() != obs_len {
            return Err(Error::shape(
                "Normalized::set_state",
                "obs",
                obs_len,
                state.obs.len(),
            ));
        }
        if state.reward.len() != reward_len {
            let got = state.reward.len();
            return Err(Error::shape(
                "Normalized::set_state",
                "reward",
                reward_len,
                got,
            ));
        }
        if let Some(e) = state
            .obs
            .iter()
            .position(|s| s.mean.len() != dim || s.var.len() != dim)
        {
            let got = state.obs[e].mean.len();
            return Err(Error::shape("Normalized::set_state", "obs mean", dim, got));
        }
        self.state = state;
        Ok(())
    }

    fn observe(&mut self, env: usize, obs: &mut [f32]) {
        if let Some(stats) = self.state.obs.get_mut(env) {
            if !self.frozen {
                stats.update(obs);
            }
            stats.normalize(obs, self.settings.clip as f32);
        }
    }
}

impl VecEnv for Normalized {
    fn num_envs(&self) -> usize {
        self.inner.num_envs()
    }

    fn obs_dim(&self) -> usize {
        self.inner.obs_dim()
    }

    fn num_actions(&self) -> usize {
        self.inner.num_actions()
    }

    fn reset(&mut self, seed: u64, obs: &mut [f32]) -> Result<()> {
        self.inner.reset(seed, obs)?;
        let dim = self.obs_dim();
        for env in 0..self.num_envs() {
            let slot = &mut obs[env * dim..(env + 1) * dim];
            self.observe(env, slot);
        }
        Ok(())
    }

    fn step(&mut self, actions: &[u32], out: &mut StepOut) -> Result<()> {
        let (n, dim) = (self.num_envs(), self.obs_dim());
        out.check_len("Normalized::step", actions, n, dim)?;
        // The env writes its raw step into `out`; each env's entries are
        // then normalized in place (its raw reward read before it is
        // overwritten).
        self.inner.step(actions, out)?;
        let (gamma, clip) = (self.settings.gamma, self.settings.clip);
        for env in 0..n {
            let slot = env * dim..(env + 1) * dim;
            // Gymnasium's order: the step's (terminal) observation, then
            // after an episode end the reset's.
            if out.is_done(env) {
                self.observe(env, &mut out.final_obs[slot.clone()]);
            }
            self.observe(env, &mut out.obs[slot]);
            if let Some(stats) = self.state.reward.get_mut(env) {
                let reward = f64::from(out.reward[env]);
                out.reward[env] = if self.frozen {
                    (reward / (stats.var + EPSILON).sqrt()).clamp(-clip, clip)
                } else {
                    stats.normalize(reward, out.terminated[env] != 0, gamma, clip)
                } as f32;
            }
        }
        Ok(())
    }

    fn drain_episodes(&mut self, into: &mut Vec<EpisodeStats>) {
        self.inner.drain_episodes(into);
    }
}

impl HostEnv for Normalized {
    fn snapshot_json(&self) -> Result<String> {
        let snapshot = NormalizedSnapshot {
            inner: self.inner.snapshot_json()?,
            state: self.state.clone(),
        };
        serde_json::to_string(&snapshot).map_err(|e| Error::Format {
            path: "env snapshot".into(),
            reason: e.to_string(),
        })
    }

    fn restore_json(&mut self, json: &str) -> Result<()> {
        let snapshot: NormalizedSnapshot =
            serde_json::from_str(json).map_err(|e| Error::Format {
                path: "env snapshot".into(),
                reason: format!("not a normalized batch's state: {e}"),
            })?;
        self.inner.restore_json(&snapshot.inner)?;
        self.set_state(snapshot.state)
    }

    fn obs_stats(&self) -> Option<&[ObsStats]> {
        self.settings.obs.then_some(self.state.obs.as_slice())
    }

    fn current_observations(&self) -> Vec<f32> {
        // The normalized observations are the policy's input: recompute them
        // from the raw ones with the statistics as they stand (the update
        // for these observations already happened when they were produced).
        let mut obs = self.inner.current_observations();
        let dim = self.obs_dim();
        for (env, stats) in self.state.obs.iter().enumerate() {
            stats.normalize(
                &mut obs[env * dim..(env + 1) * dim],
                self.settings.clip as f32,
            );
        }
        obs
    }
}
