//! Discrete 2-D point navigation, the discrete form of MAML's 2D-navigation
//! task (Finn et al. 2017, §5.3): a point starts at the origin of the square
//! `[-bound, bound]²`, moves by `step_size` along an axis (or stays) each
//! step, and is rewarded with minus its distance to a goal it cannot see.
//! Each env has its own goal, so a task distribution is a goal tensor.
//! Episodes are truncated after `max_episode_steps` (100, as in MAML); there
//! is no terminal state.

use super::vec_env::{EpisodeStats, EpisodeTracker, StepOut, VecEnv};
use crate::{Error, Result};

/// Observation: the point's position (x, y).
pub const NAV_OBS_DIM: usize = 2;

/// Actions: 0 stays, 1 moves +x, 2 moves −x, 3 moves +y, 4 moves −y.
pub const NAV_NUM_ACTIONS: usize = 5;

/// Displacement of each action, in units of `step_size`.
const MOVES: [[f64; 2]; NAV_NUM_ACTIONS] =
    [[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]];

/// Sizes and limits of a [`Nav`] batch.
#[derive(Debug, Clone, PartialEq)]
pub struct NavConfig {
    /// P: independent agents.
    pub num_agents: usize,
    /// N: envs per agent; env `e = p * N + n`.
    pub envs_per_agent: usize,
    /// Truncation (MAML's horizon).
    pub max_episode_steps: u32,
    /// Length of one move.
    pub step_size: f64,
    /// Positions are clamped to `[-bound, bound]` on both axes.
    pub bound: f64,
}

impl NavConfig {
    /// MAML's horizon of 100 steps, moves of 0.1 in the square [-1, 1]².
    pub fn new(num_agents: usize, envs_per_agent: usize) -> Self {
        Self {
            num_agents,
            envs_per_agent,
            max_episode_steps: 100,
            step_size: 0.1,
            bound: 1.0,
        }
    }
}

/// `num_agents × envs_per_agent` point-navigation envs, one goal per env.
#[derive(Debug, Clone)]
pub struct Nav {
    config: NavConfig,
    goals: Vec<[f64; 2]>,
    position: Vec<[f64; 2]>,
    elapsed_steps: Vec<u32>,
    episodes: EpisodeTracker,
}

impl Nav {
    /// One goal per env (`num_agents × envs_per_agent` of them).
    pub fn new(config: NavConfig, goals: &[[f64; 2]]) -> Result<Self> {
        let num_envs = config
            .num_agents
            .checked_mul(config.envs_per_agent)
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                let value = format!("{} × {}", config.num_agents, config.envs_per_agent);
                Error::config("num_agents × envs_per_agent", value, "must be at least 1")
            })?;
        if config.max_episode_steps == 0 {
            return Err(Error::config("max_episode_steps", 0, "must be at least 1"));
        }
        for (field, value) in [("step_size", config.step_size), ("bound", config.bound)] {
            if !(value.is_finite() && value > 0.0) {
                return Err(Error::config(field, value, "must be finite and positive"));
            }
        }
        if goals.len() != num_envs {
            return Err(Error::shape("Nav::new", "goals", num_envs, goals.len()));
        }
        if let Some(e) = goals.iter().position(|g| !g.iter().all(|v| v.is_finite())) {
            return Err(Error::InvalidEnv {
                index: e,
                field: "goal".into(),
                value: format!("{:?}", goals[e]),
                reason: "must be finite".into(),
            });
        }
        Ok(Nav {
            goals: goals.to_vec(),
            position: vec![[0.0; 2]; num_envs],
            elapsed_steps: vec![0; num_envs],
            episodes: EpisodeTracker::new(num_envs),
            config,
        })
    }

    pub fn goals(&self) -> &[[f64; 2]] {
        &self.goals
    }

    /// The point's position in env `e`.
    pub fn position(&self, e: usize) -> Option<[f64; 2]> {
        self.position.get(e).copied()
    }

    fn write_obs(&self, e: usize, obs: &mut [f32]) {
        obs[e * NAV_OBS_DIM] = self.position[e][0] as f32;
        obs[e * NAV_OBS_DIM + 1] = self.position[e][1] as f32;
    }
}

impl VecEnv for Nav {
    fn num_envs(&self) -> usize {
        self.goals.len()
    }

    fn obs_dim(&self) -> usize {
        NAV_OBS_DIM
    }

    fn num_actions(&self) -> usize {
        NAV_NUM_ACTIONS
    }

    /// Every point back at the origin; the reset is deterministic, so `seed` is unused.
    fn reset(&mut self, _seed: u64, obs: &mut [f32]) -> Result<()> {
        let n = self.num_envs();
        if obs.len() != n * NAV_OBS_DIM {
            return Err(Error::shape(
                "Nav::reset",
                "obs",
                n * NAV_OBS_DIM,
                obs.len(),
            ));
        }
        self.position.fill([0.0; 2]);
        self.elapsed_steps.fill(0);
        self.episodes.clear();
        obs.fill(0.0);
        Ok(())
    }

    fn step(&mut self, actions: &[u32], out: &mut StepOut) -> Result<()> {
        let n = self.num_envs();
        out.check_len("Nav::step", actions, n, NAV_OBS_DIM)?;
        if let Some(e) = actions.iter().position(|&a| a as usize >= NAV_NUM_ACTIONS) {
            return Err(Error::InvalidEnv {
                index: e,
                field: "action".into(),
                value: actions[e].to_string(),
                reason: format!("must be below {NAV_NUM_ACTIONS}"),
            });
        }
        let (step, bound) = (self.config.step_size, self.config.bound);
        for e in 0..n {
            let delta = MOVES[actions[e] as usize];
            let [x, y] = self.position[e];
            let moved = [
                (x + step * delta[0]).clamp(-bound, bound),
                (y + step * delta[1]).clamp(-bound, bound),
            ];
            self.position[e] = moved;
            let [gx, gy] = self.goals[e];
            let distance = ((moved[0] - gx).powi(2) + (moved[1] - gy).powi(2)).sqrt();
            out.reward[e] = -distance as f32;
            out.terminated[e] = 0;
            self.elapsed_steps[e] += 1;
            let truncated = self.elapsed_steps[e] >= self.config.max_episode_steps;
            out.truncated[e] = u8::from(truncated);
            self.write_obs(e, &mut out.obs);
            if truncated {
                out.final_obs[e * NAV_OBS_DIM..(e + 1) * NAV_OBS_DIM]
                    .copy_from_slice(&out.obs[e * NAV_OBS_DIM..(e + 1) * NAV_OBS_DIM]);
                self.position[e] = [0.0; 2];
                self.elapsed_steps[e] = 0;
                self.write_obs(e, &mut out.obs);
            }
        }
        self.episodes
            .record(&out.reward, &out.terminated, &out.truncated);
        Ok(())
    }

    fn drain_episodes(&mut self, into: &mut Vec<EpisodeStats>) {
        self.episodes.drain_into(into);
    }
}
