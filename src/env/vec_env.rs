//! The batched environment interface the trainer drives, and helpers for
//! implementing it.

use crate::{Error, Result};

/// A batch of environments stepped together over structure-of-arrays buffers.
///
/// Env `e` owns `obs[e * obs_dim .. (e + 1) * obs_dim]` and element `e` of
/// every per-env buffer. Environments reset themselves: after a step that
/// ends an episode (`terminated` or `truncated`), `final_obs` holds the last
/// observation of that episode and `obs` already holds the first observation
/// of the next one, drawn from the seeded reset RNG. This is Gymnasium's
/// "same-step" autoreset as used by SB3 and CleanRL; the trainer bootstraps
/// truncated episodes from `final_obs`.
///
/// Implementations must be deterministic: the same `reset` seed followed by
/// the same actions gives the same buffers.
///
/// # Implementing it
///
/// Validate inputs (action values, buffer lengths with
/// [`StepOut::check_len`]) before changing any state, so that an error leaves
/// the batch as it was. [`EpisodeTracker`] keeps the per-episode statistics.
///
/// ```
/// use ppo_wgpu::env::{EpisodeStats, EpisodeTracker, StepOut, VecEnv};
/// use ppo_wgpu::{Error, Result};
///
/// /// Walk right (action 1) or left (action 0) on a line of `GOAL + 1`
/// /// cells; reaching cell `GOAL` ends the episode with reward 1.
/// struct Corridor {
///     position: Vec<u32>,
///     episodes: EpisodeTracker,
/// }
///
/// const GOAL: u32 = 3;
///
/// impl VecEnv for Corridor {
///     fn num_envs(&self) -> usize { self.position.len() }
///     fn obs_dim(&self) -> usize { 1 }
///     fn num_actions(&self) -> usize { 2 }
///
///     fn reset(&mut self, _seed: u64, obs: &mut [f32]) -> Result<()> {
///         if obs.len() != self.num_envs() {
///             return Err(Error::shape("Corridor::reset", "obs", self.num_envs(), obs.len()));
///         }
///         self.position.fill(0);
///         obs.fill(0.0);
///         self.episodes.clear();
///         Ok(())
///     }
///
///     fn step(&mut self, actions: &[u32], out: &mut StepOut) -> Result<()> {
///         out.check_len("Corridor::step", actions, self.num_envs(), self.obs_dim())?;
///         if let Some(e) = actions.iter().position(|&a| a > 1) {
///             return Err(Error::InvalidEnv {
///                 index: e,
///                 field: "action".into(),
///                 value: actions[e].to_string(),
///                 reason: "must be 0 or 1".into(),
///             });
///         }
///         for (e, &action) in actions.iter().enumerate() {
///             let position = if action == 1 {
///                 self.position[e] + 1
///             } else {
///                 self.position[e].saturating_sub(1)
///             };
///             let done = position == GOAL;
///             out.reward[e] = if done { 1.0 } else { 0.0 };
///             out.terminated[e] = done as u8;
///             out.truncated[e] = 0;
///             out.final_obs[e] = position as f32;
///             self.position[e] = if done { 0 } else { position };
///             out.obs[e] = self.position[e] as f32;
///         }
///         self.episodes.record(&out.reward, &out.terminated, &out.truncated);
///         Ok(())
///     }
///
///     fn drain_episodes(&mut self, into: &mut Vec<EpisodeStats>) {
///         self.episodes.drain_into(into);
///     }
/// }
///
/// let mut env = Corridor { position: vec![0; 2], episodes: EpisodeTracker::new(2) };
/// let mut out = StepOut::new(env.num_envs(), env.obs_dim());
/// env.reset(0, &mut out.obs)?;
/// for _ in 0..GOAL {
///     env.step(&[1, 0], &mut out)?;
/// }
/// assert_eq!(out.terminated, [1, 0]);
/// assert_eq!(out.final_obs[0], GOAL as f32);
/// let mut episodes = Vec::new();
/// env.drain_episodes(&mut episodes);
/// assert_eq!(episodes, [EpisodeStats { env: 0, episode_return: 1.0, length: GOAL }]);
/// # Ok::<(), Error>(())
/// ```
pub trait VecEnv {
    /// Number of environments in the batch.
    fn num_envs(&self) -> usize;

    /// Observation components per environment.
    fn obs_dim(&self) -> usize;

    /// Number of discrete actions; valid actions are `0..num_actions()`.
    fn num_actions(&self) -> usize;

    /// Starts a new episode in every environment, seeding the reset RNG with
    /// `seed`, and writes the initial observations (`num_envs * obs_dim`).
    /// Episode statistics not yet drained are discarded.
    fn reset(&mut self, seed: u64, obs: &mut [f32]) -> Result<()>;

    /// Advances every environment by one step with `actions` (one per env)
    /// and fills `out`; environments whose episode ended are reset.
    fn step(&mut self, actions: &[u32], out: &mut StepOut) -> Result<()>;

    /// Appends the statistics of episodes that ended since the last call.
    fn drain_episodes(&mut self, into: &mut Vec<EpisodeStats>);
}

/// Per-step outputs of a [`VecEnv`], one element (or `obs_dim` elements) per
/// env. Flags are 0 or 1.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOut {
    /// Observation after the step; after an episode end, the first
    /// observation of the next episode.
    pub obs: Vec<f32>,
    /// Reward of the step.
    pub reward: Vec<f32>,
    /// The episode ended in a terminal state.
    pub terminated: Vec<u8>,
    /// The episode was cut off by the time limit (may coincide with
    /// `terminated`).
    pub truncated: Vec<u8>,
    /// Last observation of the episode; meaningful only where `terminated`
    /// or `truncated` is set.
    pub final_obs: Vec<f32>,
}

impl StepOut {
    /// Zeroed buffers for `num_envs` environments with `obs_dim` components.
    pub fn new(num_envs: usize, obs_dim: usize) -> Self {
        Self {
            obs: vec![0.0; num_envs * obs_dim],
            reward: vec![0.0; num_envs],
            terminated: vec![0; num_envs],
            truncated: vec![0; num_envs],
            final_obs: vec![0.0; num_envs * obs_dim],
        }
    }

    /// Whether env `e`'s episode ended on the last step.
    pub fn is_done(&self, e: usize) -> bool {
        (self.terminated[e] | self.truncated[e]) != 0
    }

    /// Checks that `actions` and every buffer fit `num_envs` environments
    /// with `obs_dim` components; `op` names the caller in the error.
    pub fn check_len(
        &self,
        op: &str,
        actions: &[u32],
        num_envs: usize,
        obs_dim: usize,
    ) -> Result<()> {
        if actions.len() != num_envs {
            return Err(Error::shape(op, "actions", num_envs, actions.len()));
        }
        self.check_buffers(op, num_envs, obs_dim)
    }

    /// Checks that every buffer fits `num_envs` environments with `obs_dim`
    /// components (for envs whose actions are not one index per env).
    pub fn check_buffers(&self, op: &str, num_envs: usize, obs_dim: usize) -> Result<()> {
        let lengths = [
            ("obs", self.obs.len(), num_envs * obs_dim),
            ("reward", self.reward.len(), num_envs),
            ("terminated", self.terminated.len(), num_envs),
            ("truncated", self.truncated.len(), num_envs),
            ("final_obs", self.final_obs.len(), num_envs * obs_dim),
        ];
        match lengths.iter().find(|(_, got, expected)| got != expected) {
            Some(&(buffer, got, expected)) => Err(Error::shape(op, buffer, expected, got)),
            None => Ok(()),
        }
    }
}

/// Return and length of one finished episode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpisodeStats {
    /// Flat index of the env the episode ran in.
    pub env: usize,
    /// Undiscounted sum of rewards.
    pub episode_return: f64,
    /// Number of steps.
    pub length: u32,
}

/// Accumulates per-env returns and lengths from step outputs and collects
/// the episodes that ended, for [`VecEnv`] implementations.
#[derive(Debug, Clone)]
pub struct EpisodeTracker {
    returns: Vec<f64>,
    lengths: Vec<u32>,
    finished: Vec<EpisodeStats>,
}

impl EpisodeTracker {
    /// A tracker for `num_envs` environments, all at the start of an episode.
    pub fn new(num_envs: usize) -> Self {
        Self {
            returns: vec![0.0; num_envs],
            lengths: vec![0; num_envs],
            finished: Vec::new(),
        }
    }

    /// Adds one step's rewards; episodes flagged terminated or truncated are
    /// recorded as finished and their counters restart.
    pub fn record(&mut self, reward: &[f32], terminated: &[u8], truncated: &[u8]) {
        let steps = self.returns.iter_mut().zip(&mut self.lengths).zip(reward);
        for ((episode_return, length), &r) in steps {
            *episode_return += f64::from(r);
            *length += 1;
        }
        let flags = terminated.iter().zip(truncated);
        for (env, (&term, &trunc)) in flags.enumerate() {
            if (term | trunc) != 0 {
                self.finished.push(EpisodeStats {
                    env,
                    episode_return: self.returns[env],
                    length: self.lengths[env],
                });
                self.returns[env] = 0.0;
                self.lengths[env] = 0;
            }
        }
    }

    /// Appends the finished episodes to `into` and forgets them.
    pub fn drain_into(&mut self, into: &mut Vec<EpisodeStats>) {
        into.append(&mut self.finished);
    }

    /// Restarts every episode and forgets undrained ones (for `reset`).
    pub fn clear(&mut self) {
        self.returns.fill(0.0);
        self.lengths.fill(0);
        self.finished.clear();
    }
}

/// An [`Error::InvalidEnv`] for env `index`.
pub(crate) fn invalid_env(
    index: usize,
    field: &str,
    value: impl ToString,
    reason: impl Into<String>,
) -> Error {
    Error::InvalidEnv {
        index,
        field: field.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Refuses an env index outside a batch of `num_envs`.
pub(crate) fn check_env_index(env: usize, num_envs: usize) -> Result<()> {
    if env < num_envs {
        Ok(())
    } else {
        let reason = format!("env index out of range for {num_envs} envs");
        Err(invalid_env(env, "env", env, reason))
    }
}

/// Uniform in [0, 1) for draw `draw` of env `env` under `seed`: SplitMix64's
/// output function applied to a counter, keyed by seed and env.
pub(crate) fn reset_unit(seed: u64, env: u64, draw: u64) -> f64 {
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
    let key = splitmix64_mix(splitmix64_mix(seed) ^ env);
    let bits = splitmix64_mix(key.wrapping_add(draw.wrapping_add(1).wrapping_mul(GAMMA)));
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

fn splitmix64_mix(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
