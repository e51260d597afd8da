//! The host side of Gymnasium's classic-control tasks other than CartPole:
//! one batch type, [`Classic`], over the dynamics of each task.
//!
//! A task is a [`Dynamics`] (state layout, reset distribution, observation)
//! plus [`DiscreteDynamics`] or [`ContinuousDynamics`] (its step). The batch
//! keeps the float64 states as structure-of-arrays, the `TimeLimit` step
//! counters, the episode returns and the counter-based reset generator that
//! CartPole uses, so the k-th reset state of env `e` after `reset(seed)`
//! depends only on `(seed, e, k)`.
//!
//! Each task's step follows its Gymnasium 1.x source operation by operation,
//! with numpy's scalar types: where Gymnasium computes in float32 (numpy 2's
//! rules for a float32 scalar against a Python float), so does the step, and
//! `x ** 2` is the C library's `pow`, as numpy's scalar power is (it differs
//! from `x * x` in the last bit about once in a thousand).

pub(crate) use super::vec_env::invalid_env;
use super::vec_env::{check_env_index, reset_unit, EpisodeStats, StepOut, VecEnv};
use crate::{Error, Result};

/// A classic-control task's state, parameters, reset and observation.
pub trait Dynamics {
    /// Gymnasium's id, e.g. `"Acrobot-v1"`.
    const ID: &'static str;
    /// Components of the state Gymnasium keeps (`env.unwrapped.state`).
    const GYM_STATE_DIM: usize;
    /// Components the batch keeps per env: Gymnasium's, then any the step
    /// needs besides (such as which numpy type the state has). Components
    /// past [`Dynamics::GYM_STATE_DIM`] are 0 right after a reset.
    const STATE_DIM: usize;
    /// Observation components.
    const OBS_DIM: usize;
    /// Gymnasium's `TimeLimit` for the registered id.
    const MAX_EPISODE_STEPS: u32;
    /// Per-env physics.
    type Params: Copy + std::fmt::Debug + PartialEq + Default;

    /// Refuses parameters the step cannot use; `index` is the env.
    fn validate(params: &Self::Params, index: usize) -> Result<()>;

    /// Draws a reset state into `state` (`STATE_DIM` components), taking
    /// uniform draws in [0, 1) from `unit(k)` for k = 0, 1, ... (at most
    /// `STATE_DIM` of them).
    fn reset(params: &Self::Params, state: &mut [f64], unit: &mut dyn FnMut(usize) -> f64);

    /// The float32 observation of `state`.
    fn observe(state: &[f64], obs: &mut [f32]);
}

/// A task with actions `0..NUM_ACTIONS`.
pub trait DiscreteDynamics: Dynamics {
    /// Number of discrete actions.
    const NUM_ACTIONS: usize;

    /// Advances `state` by one step under `action` (already checked to be in
    /// range); returns the reward and whether the state is terminal.
    fn step(params: &Self::Params, state: &mut [f64], action: u32) -> (f64, bool);
}

/// A task with a box of float32 actions, clipped inside the step as
/// Gymnasium's env clips them.
pub trait ContinuousDynamics: Dynamics {
    /// Action components.
    const ACTION_DIM: usize;
    /// The action space's bounds (per component, the same for all).
    const ACTION_BOUNDS: (f32, f32);

    /// Advances `state` by one step under `action` (finite, `ACTION_DIM`
    /// components, possibly out of bounds); returns the reward and whether
    /// the state is terminal.
    fn step(params: &Self::Params, state: &mut [f64], action: &[f32]) -> (f64, bool);
}

/// The evolving part of a [`Classic`] batch (serializable for checkpoints).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassicSnapshot {
    /// Gymnasium's id of the task, checked on restore.
    pub env_id: String,
    /// `[num_envs][STATE_DIM]`.
    pub state: Vec<f64>,
    pub max_episode_steps: u32,
    pub elapsed_steps: Vec<u32>,
    pub returns: Vec<f64>,
    pub seed: u64,
    pub episodes_started: Vec<u64>,
}

/// `num_envs` envs of one classic-control task, float64 state, float32
/// observations, auto-reset as [`VecEnv`] describes. A new batch starts as
/// if `reset(0)` had been called.
#[derive(Debug, Clone)]
pub struct Classic<D: Dynamics> {
    params: Vec<D::Params>,
    /// `[num_envs][STATE_DIM]`.
    state: Vec<f64>,
    max_episode_steps: u32,
    elapsed_steps: Vec<u32>,
    returns: Vec<f64>,
    seed: u64,
    episodes_started: Vec<u64>,
    finished: Vec<EpisodeStats>,
}

impl<D: Dynamics> Classic<D> {
    /// `num_envs` envs with Gymnasium's physics and time limit.
    pub fn new(num_envs: usize) -> Result<Self> {
        Self::with_params(&vec![D::Params::default(); num_envs])
    }

    /// One env per entry of `params`, each with its own physics.
    pub fn with_params(params: &[D::Params]) -> Result<Self> {
        if params.is_empty() {
            return Err(Error::config("num_envs", 0, "must be at least 1"));
        }
        for (index, p) in params.iter().enumerate() {
            D::validate(p, index)?;
        }
        let num_envs = params.len();
        let mut batch = Self {
            params: params.to_vec(),
            state: vec![0.0; num_envs * D::STATE_DIM],
            max_episode_steps: D::MAX_EPISODE_STEPS,
            elapsed_steps: vec![0; num_envs],
            returns: vec![0.0; num_envs],
            seed: 0,
            episodes_started: vec![0; num_envs],
            finished: Vec::new(),
        };
        batch.reset_all(0);
        Ok(batch)
    }

    /// Gymnasium's id of the task.
    pub fn id(&self) -> &'static str {
        D::ID
    }

    /// Per-env physics.
    pub fn params(&self) -> &[D::Params] {
        &self.params
    }

    /// Truncates episodes after `steps` steps instead of the registered limit.
    pub fn set_max_episode_steps(&mut self, steps: u32) -> Result<()> {
        if steps == 0 {
            return Err(Error::config("max_episode_steps", 0, "must be at least 1"));
        }
        self.max_episode_steps = steps;
        Ok(())
    }

    /// The episode limit in force.
    pub fn max_episode_steps(&self) -> u32 {
        self.max_episode_steps
    }

    /// Env `env`'s state as Gymnasium keeps it (`GYM_STATE_DIM` components).
    pub fn state(&self, env: usize) -> Result<Vec<f64>> {
        self.check_env(env)?;
        let start = env * D::STATE_DIM;
        Ok(self.state[start..start + D::GYM_STATE_DIM].to_vec())
    }

    /// Sets env `env`'s state to Gymnasium's right after a reset (for tests
    /// and replay): `state` has `GYM_STATE_DIM` finite components. The step
    /// counter is left alone.
    pub fn set_state(&mut self, env: usize, state: &[f64]) -> Result<()> {
        self.check_env(env)?;
        if state.len() != D::GYM_STATE_DIM {
            let op = format!("{}::set_state", D::ID);
            return Err(Error::shape(&op, "state", D::GYM_STATE_DIM, state.len()));
        }
        if !state.iter().all(|v| v.is_finite()) {
            return Err(invalid_env(
                env,
                "state",
                format!("{state:?}"),
                "must be finite",
            ));
        }
        let slot = &mut self.state[env * D::STATE_DIM..(env + 1) * D::STATE_DIM];
        slot.fill(0.0);
        slot[..D::GYM_STATE_DIM].copy_from_slice(state);
        Ok(())
    }

    /// Starts a new episode of env `env` from `state` (as
    /// [`Classic::set_state`] takes it), its step counter and return at 0.
    pub fn start_episode_from(&mut self, env: usize, state: &[f64]) -> Result<()> {
        self.set_state(env, state)?;
        self.elapsed_steps[env] = 0;
        self.returns[env] = 0.0;
        Ok(())
    }

    /// Sets env `env`'s step counter (for tests and replay).
    pub fn set_elapsed_steps(&mut self, env: usize, steps: u32) -> Result<()> {
        self.check_env(env)?;
        self.elapsed_steps[env] = steps;
        Ok(())
    }

    /// Everything that evolves as the envs step, so a run can stop and
    /// resume bit-exactly.
    pub fn snapshot(&self) -> ClassicSnapshot {
        ClassicSnapshot {
            env_id: D::ID.into(),
            state: self.state.clone(),
            max_episode_steps: self.max_episode_steps,
            elapsed_steps: self.elapsed_steps.clone(),
            returns: self.returns.clone(),
            seed: self.seed,
            episodes_started: self.episodes_started.clone(),
        }
    }

    /// Restores a [`Classic::snapshot`] of a batch of the same task and size.
    pub fn restore(&mut self, snapshot: &ClassicSnapshot) -> Result<()> {
        let op = format!("{}::restore", D::ID);
        if snapshot.env_id != D::ID {
            let reason = format!("is a {} batch's state, not {}'s", snapshot.env_id, D::ID);
            return Err(Error::config("env snapshot", &snapshot.env_id, reason));
        }
        let num_envs = self.params.len();
        let lengths = [
            ("state", snapshot.state.len(), num_envs * D::STATE_DIM),
            ("elapsed_steps", snapshot.elapsed_steps.len(), num_envs),
            ("returns", snapshot.returns.len(), num_envs),
            (
                "episodes_started",
                snapshot.episodes_started.len(),
                num_envs,
            ),
        ];
        for (field, len, expected) in lengths {
            if len != expected {
                return Err(Error::shape(&op, field, expected, len));
            }
        }
        if snapshot.max_episode_steps == 0 {
            return Err(Error::config("max_episode_steps", 0, "must be at least 1"));
        }
        self.state.clone_from(&snapshot.state);
        self.max_episode_steps = snapshot.max_episode_steps;
        self.elapsed_steps.clone_from(&snapshot.elapsed_steps);
        self.returns.clone_from(&snapshot.returns);
        self.seed = snapshot.seed;
        self.episodes_started.clone_from(&snapshot.episodes_started);
        self.finished.clear();
        Ok(())
    }

    /// The current observations, `[num_envs][OBS_DIM]`.
    pub fn observations(&self) -> Vec<f32> {
        let mut obs = vec![0.0; self.params.len() * D::OBS_DIM];
        for (state, slot) in
            (self.state.chunks_exact(D::STATE_DIM)).zip(obs.chunks_exact_mut(D::OBS_DIM))
        {
            D::observe(state, slot);
        }
        obs
    }

    fn check_env(&self, env: usize) -> Result<()> {
        check_env_index(env, self.params.len())
    }

    fn reset_all(&mut self, seed: u64) {
        self.seed = seed;
        self.episodes_started.fill(0);
        self.finished.clear();
        for env in 0..self.params.len() {
            self.start_episode(env);
        }
    }

    fn start_episode(&mut self, env: usize) {
        let episode = self.episodes_started[env];
        self.episodes_started[env] = episode + 1;
        let seed = self.seed;
        let mut unit = |k: usize| {
            let draw = episode * D::STATE_DIM as u64 + k as u64;
            reset_unit(seed, env as u64, draw)
        };
        let slot = &mut self.state[env * D::STATE_DIM..(env + 1) * D::STATE_DIM];
        slot.fill(0.0);
        D::reset(&self.params[env], slot, &mut unit);
        self.elapsed_steps[env] = 0;
        self.returns[env] = 0.0;
    }

    fn check_obs_len(&self, op: &str, obs: &[f32]) -> Result<()> {
        let expected = self.params.len() * D::OBS_DIM;
        if obs.len() == expected {
            Ok(())
        } else {
            Err(Error::shape(op, "obs", expected, obs.len()))
        }
    }

    /// Records env `env`'s step and auto-resets it if its episode ended.
    fn finish_step(&mut self, env: usize, reward: f64, terminal: bool, out: &mut StepOut) {
        let steps = self.elapsed_steps[env].saturating_add(1);
        self.elapsed_steps[env] = steps;
        self.returns[env] += reward;
        let truncated = steps >= self.max_episode_steps;
        out.reward[env] = reward as f32;
        out.terminated[env] = u8::from(terminal);
        out.truncated[env] = u8::from(truncated);
        let slot = env * D::OBS_DIM..(env + 1) * D::OBS_DIM;
        let state = &self.state[env * D::STATE_DIM..(env + 1) * D::STATE_DIM];
        D::observe(state, &mut out.obs[slot.clone()]);
        if terminal || truncated {
            self.finished.push(EpisodeStats {
                env,
                episode_return: self.returns[env],
                length: steps,
            });
            out.final_obs[slot.clone()].copy_from_slice(&out.obs[slot.clone()]);
            self.start_episode(env);
            let state = &self.state[env * D::STATE_DIM..(env + 1) * D::STATE_DIM];
            D::observe(state, &mut out.obs[slot]);
        }
    }
}

impl<D: Dynamics> Classic<D> {
    fn reset_into(&mut self, seed: u64, obs: &mut [f32]) -> Result<()> {
        self.check_obs_len(&format!("{}::reset", D::ID), obs)?;
        self.reset_all(seed);
        obs.copy_from_slice(&self.observations());
        Ok(())
    }
}

impl<D: DiscreteDynamics> VecEnv for Classic<D> {
    fn num_envs(&self) -> usize {
        self.params.len()
    }

    fn obs_dim(&self) -> usize {
        D::OBS_DIM
    }

    fn num_actions(&self) -> usize {
        D::NUM_ACTIONS
    }

    fn reset(&mut self, seed: u64, obs: &mut [f32]) -> Result<()> {
        self.reset_into(seed, obs)
    }

    fn step(&mut self, actions: &[u32], out: &mut StepOut) -> Result<()> {
        // The env's id names it in errors (no per-step formatting).
        out.check_len(D::ID, actions, self.num_envs(), D::OBS_DIM)?;
        if let Some(env) = actions.iter().position(|&a| a as usize >= D::NUM_ACTIONS) {
            let reason = format!("must be below {}", D::NUM_ACTIONS);
            return Err(invalid_env(env, "action", actions[env], reason));
        }
        for (env, &action) in actions.iter().enumerate() {
            let state = &mut self.state[env * D::STATE_DIM..(env + 1) * D::STATE_DIM];
            let (reward, terminal) = D::step(&self.params[env], state, action);
            self.finish_step(env, reward, terminal, out);
        }
        Ok(())
    }

    fn drain_episodes(&mut self, into: &mut Vec<EpisodeStats>) {
        into.append(&mut self.finished);
    }
}

impl<D: ContinuousDynamics> Classic<D> {
    /// Action components per env.
    pub fn action_dim(&self) -> usize {
        D::ACTION_DIM
    }

    /// Starts a new episode in every env (see [`VecEnv::reset`]).
    pub fn reset_continuous(&mut self, seed: u64, obs: &mut [f32]) -> Result<()> {
        self.reset_into(seed, obs)
    }

    /// Steps every env with `actions` (`[num_envs][ACTION_DIM]`), as
    /// [`VecEnv::step`] does for discrete actions. Out-of-bound actions are
    /// clipped as Gymnasium's env clips them; a non-finite one is refused
    /// before any env steps.
    pub fn step_continuous(&mut self, actions: &[f32], out: &mut StepOut) -> Result<()> {
        let num_envs = self.params.len();
        let expected = num_envs * D::ACTION_DIM;
        if actions.len() != expected {
            return Err(Error::shape(D::ID, "actions", expected, actions.len()));
        }
        out.check_buffers(D::ID, num_envs, D::OBS_DIM)?;
        if let Some(i) = actions.iter().position(|a| !a.is_finite()) {
            return Err(invalid_env(
                i / D::ACTION_DIM,
                "action",
                actions[i],
                "must be finite",
            ));
        }
        for env in 0..num_envs {
            let action = &actions[env * D::ACTION_DIM..(env + 1) * D::ACTION_DIM];
            let state = &mut self.state[env * D::STATE_DIM..(env + 1) * D::STATE_DIM];
            let (reward, terminal) = D::step(&self.params[env], state, action);
            self.finish_step(env, reward, terminal, out);
        }
        Ok(())
    }

    /// Appends the statistics of episodes that ended since the last call.
    pub fn drain_episodes_continuous(&mut self, into: &mut Vec<EpisodeStats>) {
        into.append(&mut self.finished);
    }
}

/// Refuses a parameter that is not finite and positive.
pub(crate) fn check_positive(index: usize, fields: &[(&str, f64)]) -> Result<()> {
    for &(field, value) in fields {
        if !(value.is_finite() && value > 0.0) {
            return Err(invalid_env(
                index,
                field,
                value,
                "must be finite and positive",
            ));
        }
    }
    Ok(())
}

/// `x ** 2` for a numpy float64 scalar or a Python float: the C library's
/// `pow`, kept from being folded into `x * x` (which rounds differently).
pub(crate) fn pow2(x: f64) -> f64 {
    x.powf(std::hint::black_box(2.0))
}

/// `x ** 2` for a numpy float32 scalar: the C library's `powf`.
pub(crate) fn pow2_f32(x: f32) -> f32 {
    x.powf(std::hint::black_box(2.0))
}
