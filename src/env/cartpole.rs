//! Gymnasium CartPole-v1, vectorized over P agents × N envs.
//!
//! The arithmetic follows Gymnasium's `cartpole.py` operation by operation in
//! float64 (no fused multiply-add, same association order), so trajectories
//! match Gymnasium to float32 rounding of the observation; the golden replay
//! test checks that. The state is kept as structure-of-arrays and the step is
//! one straight-line loop with branch-free termination flags; the auto-reset
//! of finished envs is a second pass. The loop stays scalar because `sin` and
//! `cos` are the platform libm's, the functions numpy calls: a vectorized
//! approximation would differ in the last bit, and the unstable pole grows a
//! one-ulp difference to about 5e-2 within 500 steps.

use super::vec_env::{check_env_index, invalid_env, reset_unit, EpisodeStats, StepOut, VecEnv};
use crate::{Error, Result};

/// Observation components: cart position, cart velocity, pole angle, pole
/// angular velocity.
pub const OBS_DIM: usize = 4;

/// Actions: 0 pushes the cart left, 1 pushes it right (before polarity).
pub const NUM_ACTIONS: usize = 2;

/// Per-env physics. [`CartPoleParams::GYMNASIUM`] (also `Default`) is
/// CartPole-v1 exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CartPoleParams {
    /// Gravitational acceleration (m/s²).
    pub gravity: f64,
    /// Mass of the cart (kg).
    pub masscart: f64,
    /// Mass of the pole (kg).
    pub masspole: f64,
    /// Half the pole's length (m), as Gymnasium defines `length`.
    pub length: f64,
    /// Magnitude of the push (N).
    pub force_mag: f64,
    /// Integration time step (s).
    pub tau: f64,
    /// +1, or -1 for a motor wired backwards: the applied force is
    /// `polarity * force_mag * (if action == 1 { 1 } else { -1 })`.
    pub polarity: f64,
}

impl CartPoleParams {
    /// Gymnasium CartPole-v1's constants.
    pub const GYMNASIUM: Self = Self {
        gravity: 9.8,
        masscart: 1.0,
        masspole: 0.1,
        length: 0.5,
        force_mag: 10.0,
        tau: 0.02,
        polarity: 1.0,
    };

    /// Refuses non-finite or non-positive quantities and a polarity other
    /// than ±1; `index` is the env the parameters belong to.
    pub fn validate(&self, index: usize) -> Result<()> {
        let positive = [
            ("gravity", self.gravity),
            ("masscart", self.masscart),
            ("masspole", self.masspole),
            ("length", self.length),
            ("force_mag", self.force_mag),
            ("tau", self.tau),
        ];
        for (field, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(invalid_env(
                    index,
                    field,
                    value,
                    "must be finite and positive",
                ));
            }
        }
        if self.polarity != 1.0 && self.polarity != -1.0 {
            return Err(invalid_env(
                index,
                "polarity",
                self.polarity,
                "must be 1 or -1",
            ));
        }
        Ok(())
    }
}

impl Default for CartPoleParams {
    fn default() -> Self {
        Self::GYMNASIUM
    }
}

/// Batch shape, episode limits and reset distribution, shared by all envs.
#[derive(Debug, Clone, PartialEq)]
pub struct CartPoleConfig {
    /// P: independent agents.
    pub num_agents: usize,
    /// N: envs per agent; env `e = p * N + n`.
    pub envs_per_agent: usize,
    /// Episodes are truncated once this many steps have elapsed
    /// (Gymnasium's `TimeLimit`).
    pub max_episode_steps: u32,
    /// Terminate when the cart leaves `[-x_threshold, x_threshold]` (m).
    pub x_threshold: f64,
    /// Terminate when the pole angle leaves this range (radians).
    pub theta_threshold_radians: f64,
    /// Reset states are drawn from `U(-reset_bound, reset_bound)` for all
    /// four components.
    pub reset_bound: f64,
}

impl CartPoleConfig {
    /// CartPole-v1's limits for `num_agents × envs_per_agent` envs.
    pub fn new(num_agents: usize, envs_per_agent: usize) -> Self {
        Self {
            num_agents,
            envs_per_agent,
            max_episode_steps: 500,
            x_threshold: 2.4,
            theta_threshold_radians: 12.0 * 2.0 * std::f64::consts::PI / 360.0,
            reset_bound: 0.05,
        }
    }

    /// Number of envs, refusing an empty or overflowing batch and
    /// non-finite or non-positive limits.
    pub(crate) fn validate(&self) -> Result<usize> {
        if self.num_agents == 0 {
            return Err(Error::config("num_agents", 0, "must be at least 1"));
        }
        if self.envs_per_agent == 0 {
            return Err(Error::config("envs_per_agent", 0, "must be at least 1"));
        }
        if self.max_episode_steps == 0 {
            return Err(Error::config("max_episode_steps", 0, "must be at least 1"));
        }
        for (field, value) in [
            ("x_threshold", self.x_threshold),
            ("theta_threshold_radians", self.theta_threshold_radians),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(Error::config(field, value, "must be finite and positive"));
            }
        }
        if !(self.reset_bound.is_finite() && self.reset_bound >= 0.0) {
            let reason = "must be finite and not negative";
            return Err(Error::config("reset_bound", self.reset_bound, reason));
        }
        self.num_agents
            .checked_mul(self.envs_per_agent)
            .ok_or_else(|| {
                let value = format!("{} × {}", self.num_agents, self.envs_per_agent);
                Error::config("num_agents × envs_per_agent", value, "overflows usize")
            })
    }
}

/// Per-env physics as structure-of-arrays, with the derived quantities
/// Gymnasium precomputes in `__init__` (so the step rounds the same way).
#[derive(Debug, Clone)]
struct PhysicsSoa {
    gravity: Vec<f64>,
    masspole: Vec<f64>,
    total_mass: Vec<f64>,
    length: Vec<f64>,
    polemass_length: Vec<f64>,
    /// `polarity * force_mag`: the force of action 1.
    push_force: Vec<f64>,
    tau: Vec<f64>,
}

impl PhysicsSoa {
    fn new(params: &[CartPoleParams]) -> Self {
        let field = |f: fn(&CartPoleParams) -> f64| params.iter().map(f).collect();
        Self {
            gravity: field(|p| p.gravity),
            masspole: field(|p| p.masspole),
            total_mass: field(|p| p.masspole + p.masscart),
            length: field(|p| p.length),
            polemass_length: field(|p| p.masspole * p.length),
            push_force: field(|p| p.polarity * p.force_mag),
            tau: field(|p| p.tau),
        }
    }
}

/// The evolving part of a [`CartPole`] batch (serializable for checkpoints).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CartPoleSnapshot {
    pub x: Vec<f64>,
    pub x_dot: Vec<f64>,
    pub theta: Vec<f64>,
    pub theta_dot: Vec<f64>,
    pub elapsed_steps: Vec<u32>,
    pub seed: u64,
    pub episodes_started: Vec<u64>,
}

/// `P × N` CartPole-v1 environments with float64 state and float32
/// observations.
///
/// Auto-reset draws come from a counter-based generator (SplitMix64): the
/// k-th reset state of env `e` after `reset(seed)` depends only on
/// `(seed, e, k)`, so runs are reproducible whatever the batch layout or
/// step order. A new `CartPole` starts as if `reset(0)` had been called.
#[derive(Debug, Clone)]
pub struct CartPole {
    config: CartPoleConfig,
    physics: Vec<CartPoleParams>,
    physics_soa: PhysicsSoa,
    x: Vec<f64>,
    x_dot: Vec<f64>,
    theta: Vec<f64>,
    theta_dot: Vec<f64>,
    elapsed_steps: Vec<u32>,
    seed: u64,
    /// Episodes started per env since the last `reset`: the reset RNG counter.
    episodes_started: Vec<u64>,
    finished: Vec<EpisodeStats>,
}

impl CartPole {
    /// Envs that all use Gymnasium's physics.
    pub fn new(config: CartPoleConfig) -> Result<Self> {
        let num_envs = config.validate()?;
        Self::with_physics(config, &vec![CartPoleParams::GYMNASIUM; num_envs])
    }

    /// Envs with their own physics, `physics[e]` for env `e`.
    pub fn with_physics(config: CartPoleConfig, physics: &[CartPoleParams]) -> Result<Self> {
        let num_envs = config.validate()?;
        if physics.len() != num_envs {
            let op = "CartPole::with_physics";
            return Err(Error::shape(op, "physics", num_envs, physics.len()));
        }
        for (index, params) in physics.iter().enumerate() {
            params.validate(index)?;
        }
        let mut cartpole = Self {
            config,
            physics: physics.to_vec(),
            physics_soa: PhysicsSoa::new(physics),
            x: vec![0.0; num_envs],
            x_dot: vec![0.0; num_envs],
            theta: vec![0.0; num_envs],
            theta_dot: vec![0.0; num_envs],
            elapsed_steps: vec![0; num_envs],
            seed: 0,
            episodes_started: vec![0; num_envs],
            finished: Vec::new(),
        };
        cartpole.reset_all(0);
        Ok(cartpole)
    }

    /// The configuration the batch was built with.
    pub fn config(&self) -> &CartPoleConfig {
        &self.config
    }

    /// Per-env physics, indexed by env.
    pub fn physics(&self) -> &[CartPoleParams] {
        &self.physics
    }

    /// P.
    pub fn num_agents(&self) -> usize {
        self.config.num_agents
    }

    /// N.
    pub fn envs_per_agent(&self) -> usize {
        self.config.envs_per_agent
    }

    /// Float64 state `[x, x_dot, theta, theta_dot]` of env `env`.
    pub fn state(&self, env: usize) -> Result<[f64; 4]> {
        self.check_env(env)?;
        Ok([
            self.x[env],
            self.x_dot[env],
            self.theta[env],
            self.theta_dot[env],
        ])
    }

    /// Overwrites env `env`'s state (for tests and replay); the step counter
    /// is left alone.
    pub fn set_state(&mut self, env: usize, state: [f64; 4]) -> Result<()> {
        self.check_env(env)?;
        if !state.iter().all(|v| v.is_finite()) {
            return Err(invalid_env(
                env,
                "state",
                format!("{state:?}"),
                "must be finite",
            ));
        }
        [
            self.x[env],
            self.x_dot[env],
            self.theta[env],
            self.theta_dot[env],
        ] = state;
        Ok(())
    }

    /// Steps elapsed in env `env`'s current episode.
    pub fn elapsed_steps(&self, env: usize) -> Result<u32> {
        self.check_env(env)?;
        Ok(self.elapsed_steps[env])
    }

    /// Sets env `env`'s step counter (for tests and replay). The counter is
    /// the episode length reported at the episode's end, and with a reward of
    /// 1 per step also its return.
    pub fn set_elapsed_steps(&mut self, env: usize, steps: u32) -> Result<()> {
        self.check_env(env)?;
        self.elapsed_steps[env] = steps;
        Ok(())
    }

    /// Everything that evolves as the envs step (state, step counters, the
    /// reset RNG's position), so a run can stop and resume bit-exactly.
    pub fn snapshot(&self) -> CartPoleSnapshot {
        CartPoleSnapshot {
            x: self.x.clone(),
            x_dot: self.x_dot.clone(),
            theta: self.theta.clone(),
            theta_dot: self.theta_dot.clone(),
            elapsed_steps: self.elapsed_steps.clone(),
            seed: self.seed,
            episodes_started: self.episodes_started.clone(),
        }
    }

    /// Restores a [`CartPole::snapshot`] taken from a batch of the same size.
    pub fn restore(&mut self, snapshot: &CartPoleSnapshot) -> Result<()> {
        let num_envs = self.x.len();
        let lengths = [
            ("x", snapshot.x.len()),
            ("x_dot", snapshot.x_dot.len()),
            ("theta", snapshot.theta.len()),
            ("theta_dot", snapshot.theta_dot.len()),
            ("elapsed_steps", snapshot.elapsed_steps.len()),
            ("episodes_started", snapshot.episodes_started.len()),
        ];
        for (field, len) in lengths {
            if len != num_envs {
                return Err(Error::shape("CartPole::restore", field, num_envs, len));
            }
        }
        self.x.clone_from(&snapshot.x);
        self.x_dot.clone_from(&snapshot.x_dot);
        self.theta.clone_from(&snapshot.theta);
        self.theta_dot.clone_from(&snapshot.theta_dot);
        self.elapsed_steps.clone_from(&snapshot.elapsed_steps);
        self.seed = snapshot.seed;
        self.episodes_started.clone_from(&snapshot.episodes_started);
        self.finished.clear();
        Ok(())
    }

    /// The current observations, [num_envs][4].
    pub fn observations(&self) -> Vec<f32> {
        (0..self.x.len())
            .flat_map(|env| self.observation(env))
            .collect()
    }

    fn check_env(&self, env: usize) -> Result<()> {
        check_env_index(env, self.x.len())
    }

    fn reset_all(&mut self, seed: u64) {
        self.seed = seed;
        self.episodes_started.fill(0);
        self.finished.clear();
        for env in 0..self.x.len() {
            self.start_episode(env);
        }
    }

    /// Draws env `env`'s next reset state and restarts its step counter.
    fn start_episode(&mut self, env: usize) {
        let episode = self.episodes_started[env];
        self.episodes_started[env] = episode + 1;
        let (low, high) = (-self.config.reset_bound, self.config.reset_bound);
        let [x, x_dot, theta, theta_dot] = std::array::from_fn(|component| {
            let draw = episode * OBS_DIM as u64 + component as u64;
            // numpy's `uniform`: low + (high - low) * U[0, 1).
            low + (high - low) * reset_unit(self.seed, env as u64, draw)
        });
        self.x[env] = x;
        self.x_dot[env] = x_dot;
        self.theta[env] = theta;
        self.theta_dot[env] = theta_dot;
        self.elapsed_steps[env] = 0;
    }

    fn observation(&self, env: usize) -> [f32; OBS_DIM] {
        let state = [
            self.x[env],
            self.x_dot[env],
            self.theta[env],
            self.theta_dot[env],
        ];
        state.map(|v| v as f32)
    }

    /// Physics, observations, rewards and flags for every env: one loop
    /// without data-dependent branches.
    fn integrate(&mut self, actions: &[u32], out: &mut StepOut) {
        let n = self.x.len();
        let (x, x_dot) = (&mut self.x[..n], &mut self.x_dot[..n]);
        let (theta, theta_dot) = (&mut self.theta[..n], &mut self.theta_dot[..n]);
        let elapsed_steps = &mut self.elapsed_steps[..n];
        let p = &self.physics_soa;
        let (gravity, masspole, total_mass) =
            (&p.gravity[..n], &p.masspole[..n], &p.total_mass[..n]);
        let (length, polemass_length) = (&p.length[..n], &p.polemass_length[..n]);
        let (push_force, tau) = (&p.push_force[..n], &p.tau[..n]);
        let actions = &actions[..n];
        let obs: &mut [[f32; OBS_DIM]] = bytemuck::cast_slice_mut(&mut out.obs[..n * OBS_DIM]);
        let reward = &mut out.reward[..n];
        let terminated = &mut out.terminated[..n];
        let truncated = &mut out.truncated[..n];
        let x_threshold = self.config.x_threshold;
        let theta_threshold = self.config.theta_threshold_radians;
        let max_episode_steps = self.config.max_episode_steps;

        for e in 0..n {
            // Gymnasium's step, same operations in the same order.
            let force = if actions[e] == 1 {
                push_force[e]
            } else {
                -push_force[e]
            };
            let costheta = theta[e].cos();
            let sintheta = theta[e].sin();
            let temp = (force + polemass_length[e] * (theta_dot[e] * theta_dot[e]) * sintheta)
                / total_mass[e];
            let thetaacc = (gravity[e] * sintheta - costheta * temp)
                / (length[e] * (4.0 / 3.0 - masspole[e] * (costheta * costheta) / total_mass[e]));
            let xacc = temp - polemass_length[e] * thetaacc * costheta / total_mass[e];
            let new_x = x[e] + tau[e] * x_dot[e];
            let new_x_dot = x_dot[e] + tau[e] * xacc;
            let new_theta = theta[e] + tau[e] * theta_dot[e];
            let new_theta_dot = theta_dot[e] + tau[e] * thetaacc;
            x[e] = new_x;
            x_dot[e] = new_x_dot;
            theta[e] = new_theta;
            theta_dot[e] = new_theta_dot;
            obs[e] = [
                new_x as f32,
                new_x_dot as f32,
                new_theta as f32,
                new_theta_dot as f32,
            ];

            let steps = elapsed_steps[e].saturating_add(1);
            elapsed_steps[e] = steps;
            // Non-short-circuit `|` keeps this a select, not a branch.
            let fell = (new_x < -x_threshold)
                | (new_x > x_threshold)
                | (new_theta < -theta_threshold)
                | (new_theta > theta_threshold);
            terminated[e] = u8::from(fell);
            truncated[e] = u8::from(steps >= max_episode_steps);
            // Gymnasium's default reward: 1 for every step, the terminal one included.
            reward[e] = 1.0;
        }
    }

    /// Second pass: finished envs record their episode, keep their last
    /// observation in `final_obs` and start a new episode.
    fn auto_reset(&mut self, out: &mut StepOut) {
        for env in 0..self.x.len() {
            if !out.is_done(env) {
                continue;
            }
            let length = self.elapsed_steps[env];
            self.finished.push(EpisodeStats {
                env,
                episode_return: f64::from(length),
                length,
            });
            let slot = env * OBS_DIM..(env + 1) * OBS_DIM;
            out.final_obs[slot.clone()].copy_from_slice(&out.obs[slot.clone()]);
            self.start_episode(env);
            out.obs[slot].copy_from_slice(&self.observation(env));
        }
    }
}

impl VecEnv for CartPole {
    fn num_envs(&self) -> usize {
        self.x.len()
    }

    fn obs_dim(&self) -> usize {
        OBS_DIM
    }

    fn num_actions(&self) -> usize {
        NUM_ACTIONS
    }

    fn reset(&mut self, seed: u64, obs: &mut [f32]) -> Result<()> {
        let num_envs = self.num_envs();
        if obs.len() != num_envs * OBS_DIM {
            let expected = num_envs * OBS_DIM;
            return Err(Error::shape("CartPole::reset", "obs", expected, obs.len()));
        }
        self.reset_all(seed);
        for (env, slot) in obs.chunks_exact_mut(OBS_DIM).enumerate() {
            slot.copy_from_slice(&self.observation(env));
        }
        Ok(())
    }

    fn step(&mut self, actions: &[u32], out: &mut StepOut) -> Result<()> {
        out.check_len("CartPole::step", actions, self.num_envs(), OBS_DIM)?;
        if let Some(env) = actions.iter().position(|&a| a >= NUM_ACTIONS as u32) {
            return Err(invalid_env(env, "action", actions[env], "must be 0 or 1"));
        }
        self.integrate(actions, out);
        self.auto_reset(out);
        Ok(())
    }

    fn drain_episodes(&mut self, into: &mut Vec<EpisodeStats>) {
        into.append(&mut self.finished);
    }
}
