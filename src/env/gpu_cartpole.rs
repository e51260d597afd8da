//! CartPole-v1 stepped on the device (`shaders/cartpole.wgsl`), so that a
//! whole PPO rollout is one submission: the policy's sampled actions go
//! straight into the env kernel and its observations straight back into the
//! policy, and only finished-episode statistics come back, once per rollout.
//!
//! The physics is [`CartPole`](super::CartPole)'s, operation by operation, in
//! float32 instead of float64 (with the device's `sin`/`cos`), so trajectories
//! agree with the host env to float32 rounding for a few dozen steps and then
//! drift apart as the unstable pole amplifies the difference. Auto-resets draw
//! from a PCG hash keyed by (seed, env, episode index, component), not the host
//! env's SplitMix64 float64 stream: the two give different (equally
//! distributed) reset states. [`cartpole_step_cpu`] is the float32 reference
//! of the kernel.

use super::cartpole::{CartPoleConfig, CartPoleParams, OBS_DIM};
use super::vec_env::EpisodeStats;
use crate::error::{Error, Result};
use crate::gpu::buffers::decode;
use crate::gpu::{Dispatch, GpuBuffer, GpuContext, Kernel, Readback};
use crate::ops::categorical::pcg_hash;
use crate::ops::fits_u32;
use crate::ops::gae::{TERMINATED, TRUNCATED};

/// Floats per env per step in the episode statistics: return, length (both 0
/// where no episode ended).
pub const EPISODE_STATS: usize = 2;

/// One env's physics as the kernel reads it: Gymnasium's constants with the
/// sums and products `CartPole` precomputes (formed in f64, then rounded).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct CartPolePhysics32 {
    pub gravity: f32,
    pub masspole: f32,
    /// masspole + masscart.
    pub total_mass: f32,
    pub length: f32,
    /// masspole · length.
    pub polemass_length: f32,
    /// polarity · force_mag: the force of action 1.
    pub push_force: f32,
    pub tau: f32,
    pad: f32,
}

impl CartPolePhysics32 {
    pub fn new(params: &CartPoleParams) -> Self {
        CartPolePhysics32 {
            gravity: params.gravity as f32,
            masspole: params.masspole as f32,
            total_mass: (params.masspole + params.masscart) as f32,
            length: params.length as f32,
            polemass_length: (params.masspole * params.length) as f32,
            push_force: (params.polarity * params.force_mag) as f32,
            tau: params.tau as f32,
            pad: 0.0,
        }
    }
}

/// One env's evolving state on the device.
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    bytemuck::Pod,
    bytemuck::Zeroable,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct CartPoleState32 {
    pub x: f32,
    pub x_dot: f32,
    pub theta: f32,
    pub theta_dot: f32,
    /// Reward collected so far in the current episode.
    pub episode_return: f32,
    /// Steps elapsed in the current episode.
    pub elapsed_steps: u32,
    /// Episodes started since the last reset: the reset RNG's counter.
    pub episodes_started: u32,
    #[serde(skip)]
    pad: u32,
}

impl CartPoleState32 {
    /// A state `[x, x_dot, theta, theta_dot]` that has run `elapsed_steps`
    /// steps (with a reward of 1 each, so that is also its return) of episode
    /// number `episodes_started`.
    pub fn new(state: [f32; OBS_DIM], elapsed_steps: u32, episodes_started: u32) -> Self {
        let [x, x_dot, theta, theta_dot] = state;
        CartPoleState32 {
            x,
            x_dot,
            theta,
            theta_dot,
            episode_return: elapsed_steps as f32,
            elapsed_steps,
            episodes_started,
            pad: 0,
        }
    }

    /// The observation `[x, x_dot, theta, theta_dot]`.
    pub fn observation(&self) -> [f32; OBS_DIM] {
        [self.x, self.x_dot, self.theta, self.theta_dot]
    }
}

/// The limits and reset key shared by all envs, in the kernel's precision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CartPoleLimits32 {
    pub max_episode_steps: u32,
    pub x_threshold: f32,
    pub theta_threshold: f32,
    pub reset_bound: f32,
    /// Keys the reset draws.
    pub seed: u64,
}

impl CartPoleLimits32 {
    pub fn new(config: &CartPoleConfig, seed: u64) -> Self {
        CartPoleLimits32 {
            max_episode_steps: config.max_episode_steps,
            x_threshold: config.x_threshold as f32,
            theta_threshold: config.theta_threshold_radians as f32,
            reset_bound: config.reset_bound as f32,
            seed,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct CartPoleDims {
    rows: u32,
    step: u32,
    max_episode_steps: u32,
    seed_lo: u32,
    seed_hi: u32,
    x_threshold: f32,
    theta_threshold: f32,
    reset_bound: f32,
}

/// Component `component` of env `env`'s reset state for episode `episode`
/// (bit-identical to the kernel's `reset_draw`): in `[-reset_bound, reset_bound)`.
pub fn reset_draw_cpu(limits: &CartPoleLimits32, env: u32, episode: u32, component: u32) -> f32 {
    let mut h = pcg_hash(env);
    h = pcg_hash(h ^ episode);
    h = pcg_hash(h ^ component);
    h = pcg_hash(h ^ (limits.seed >> 32) as u32);
    h = pcg_hash(h ^ limits.seed as u32);
    let unit = (h >> 8) as f32 * (1.0 / 16777216.0);
    limits.reset_bound * (2.0 * unit - 1.0)
}

/// Env `env`'s reset state for episode `episode`.
pub fn reset_state_cpu(limits: &CartPoleLimits32, env: u32, episode: u32) -> [f32; OBS_DIM] {
    std::array::from_fn(|component| reset_draw_cpu(limits, env, episode, component as u32))
}

/// Everything one step writes, per env: `obs` and `final_obs` [rows][4],
/// `rewards` and `flags` [rows], `episodes` [rows][EPISODE_STATS].
#[derive(Clone, Debug, PartialEq)]
pub struct CartPoleStepOut32 {
    pub obs: Vec<f32>,
    pub final_obs: Vec<f32>,
    pub rewards: Vec<f32>,
    pub flags: Vec<u32>,
    pub episodes: Vec<f32>,
}

/// CPU reference of `cartpole_step`: the same f32 operations in the same
/// order (the kernel's `sin`, `cos` and division may differ by a few ulp,
/// and a device may fuse multiply-adds). Steps `states` in place.
pub fn cartpole_step_cpu(
    limits: &CartPoleLimits32,
    physics: &[CartPolePhysics32],
    states: &mut [CartPoleState32],
    actions: &[u32],
) -> CartPoleStepOut32 {
    let rows = states.len();
    let mut out = CartPoleStepOut32 {
        obs: vec![0.0; rows * OBS_DIM],
        final_obs: vec![0.0; rows * OBS_DIM],
        rewards: vec![1.0; rows],
        flags: vec![0; rows],
        episodes: vec![0.0; rows * EPISODE_STATS],
    };
    for (r, (s, p)) in states.iter_mut().zip(physics).enumerate() {
        let force = if actions[r] == 1 {
            p.push_force
        } else {
            -p.push_force
        };
        let costheta = s.theta.cos();
        let sintheta = s.theta.sin();
        let temp =
            (force + p.polemass_length * (s.theta_dot * s.theta_dot) * sintheta) / p.total_mass;
        let thetaacc = (p.gravity * sintheta - costheta * temp)
            / (p.length * (4.0 / 3.0 - p.masspole * (costheta * costheta) / p.total_mass));
        let xacc = temp - p.polemass_length * thetaacc * costheta / p.total_mass;
        let next = [
            s.x + p.tau * s.x_dot,
            s.x_dot + p.tau * xacc,
            s.theta + p.tau * s.theta_dot,
            s.theta_dot + p.tau * thetaacc,
        ];
        let steps = s.elapsed_steps.saturating_add(1);
        let [x, _, theta, _] = next;
        let fell = x < -limits.x_threshold
            || x > limits.x_threshold
            || theta < -limits.theta_threshold
            || theta > limits.theta_threshold;
        let cut = steps >= limits.max_episode_steps;
        let episode_return = s.episode_return + 1.0;
        out.final_obs[r * OBS_DIM..(r + 1) * OBS_DIM].copy_from_slice(&next);
        out.flags[r] = (u32::from(fell) * TERMINATED) | (u32::from(cut) * TRUNCATED);
        if fell || cut {
            out.episodes[r * EPISODE_STATS] = episode_return;
            out.episodes[r * EPISODE_STATS + 1] = steps as f32;
            let episode = s.episodes_started;
            *s = CartPoleState32::new(reset_state_cpu(limits, r as u32, episode), 0, episode + 1);
        } else {
            [s.x, s.x_dot, s.theta, s.theta_dot] = next;
            s.episode_return = episode_return;
            s.elapsed_steps = steps;
        }
        out.obs[r * OBS_DIM..(r + 1) * OBS_DIM].copy_from_slice(&s.observation());
    }
    out
}

/// The buffers one env step writes and reads besides the env's own: the
/// policy's `actions` [rows] and current `obs` [rows][4], the `final_obs`
/// [rows][4] the final-value critic reads, and the rollout's `rewards` and
/// `flags` [T][rows].
pub struct CartPoleStepBuffers<'a> {
    pub actions: &'a GpuBuffer<u32>,
    pub obs: &'a GpuBuffer<f32>,
    pub final_obs: &'a GpuBuffer<f32>,
    pub rewards: &'a GpuBuffer<f32>,
    pub flags: &'a GpuBuffer<u32>,
}

/// A [`GpuCartPole`]'s device state, for checkpoints.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GpuCartPoleSnapshot {
    pub seed: u64,
    pub states: Vec<CartPoleState32>,
}

/// `P × N` CartPole-v1 environments living on the device, stepped by one
/// dispatch per rollout step (`T` of them, one per step of the rollout,
/// each with its own step index so that a whole rollout is one submission).
#[derive(Debug)]
pub struct GpuCartPole {
    config: CartPoleConfig,
    physics: Vec<CartPoleParams>,
    limits: CartPoleLimits32,
    num_steps: usize,
    physics_gpu: GpuBuffer<CartPolePhysics32>,
    states: GpuBuffer<CartPoleState32>,
    /// Finished episodes, [T][rows][EPISODE_STATS].
    episodes: GpuBuffer<f32>,
    /// One dispatch per rollout step, once bound.
    steps: Vec<Dispatch>,
    /// The buffers `steps` are bound to (actions, obs, final_obs, rewards, flags).
    bound: Option<[wgpu::Buffer; 5]>,
    /// Step counters at the start of the next rollout (they say when a
    /// truncation can happen).
    start_elapsed: Vec<u32>,
    /// Observations written by `reset` or `set_states` that the policy has
    /// not seen yet.
    pending_obs: Option<Vec<f32>>,
    readback: Readback,
}

impl GpuCartPole {
    /// Envs with Gymnasium's physics, for rollouts of `num_steps` steps; reset
    /// with seed 0.
    pub fn new(ctx: &GpuContext, config: CartPoleConfig, num_steps: usize) -> Result<Self> {
        let num_envs = config.validate()?;
        let physics = vec![CartPoleParams::GYMNASIUM; num_envs];
        Self::with_physics(ctx, config, &physics, num_steps)
    }

    /// Envs with their own physics, `physics[e]` for env `e`.
    pub fn with_physics(
        ctx: &GpuContext,
        config: CartPoleConfig,
        physics: &[CartPoleParams],
        num_steps: usize,
    ) -> Result<Self> {
        const OP: &str = "GpuCartPole::with_physics";
        let num_envs = config.validate()?;
        if physics.len() != num_envs {
            return Err(Error::shape(OP, "physics", num_envs, physics.len()));
        }
        for (index, params) in physics.iter().enumerate() {
            params.validate(index)?;
        }
        if num_steps == 0 {
            return Err(Error::config("num_steps", 0, "must be at least 1"));
        }
        let stats_len = num_steps
            .checked_mul(num_envs)
            .and_then(|n| n.checked_mul(EPISODE_STATS))
            .ok_or_else(|| {
                Error::config(
                    "num_steps × num_envs",
                    format!("{num_steps} × {num_envs}"),
                    "overflows usize",
                )
            })?;
        fits_u32(OP, "num_steps × num_envs × 2", stats_len)?;
        let physics32: Vec<CartPolePhysics32> =
            physics.iter().map(CartPolePhysics32::new).collect();
        let limits = CartPoleLimits32::new(&config, 0);
        let state_bytes = num_envs * std::mem::size_of::<CartPoleState32>();
        let mut env = GpuCartPole {
            physics: physics.to_vec(),
            limits,
            num_steps,
            physics_gpu: GpuBuffer::from_slice(ctx, "cartpole physics", &physics32)?,
            states: GpuBuffer::zeros(ctx, "cartpole states", num_envs)?,
            episodes: GpuBuffer::zeros(ctx, "cartpole episodes", stats_len)?,
            steps: Vec::new(),
            bound: None,
            start_elapsed: vec![0; num_envs],
            pending_obs: None,
            readback: Readback::new(
                ctx,
                "cartpole episodes readback",
                (stats_len * 4 + state_bytes) as u64,
            ),
            config,
        };
        env.reset(ctx, 0)?;
        Ok(env)
    }

    /// The configuration the batch was built with.
    pub fn config(&self) -> &CartPoleConfig {
        &self.config
    }

    /// Per-env physics, indexed by env.
    pub fn physics(&self) -> &[CartPoleParams] {
        &self.physics
    }

    /// The limits and reset key in the kernel's precision.
    pub fn limits(&self) -> &CartPoleLimits32 {
        &self.limits
    }

    /// P · N.
    pub fn num_envs(&self) -> usize {
        self.start_elapsed.len()
    }

    /// T: steps of the rollouts this batch serves.
    pub fn num_steps(&self) -> usize {
        self.num_steps
    }

    /// Starts every env's episode 0 from the reset draws of `seed`.
    pub fn reset(&mut self, ctx: &GpuContext, seed: u64) -> Result<()> {
        self.limits.seed = seed;
        let limits = self.limits;
        let states: Vec<CartPoleState32> = (0..self.num_envs())
            .map(|env| CartPoleState32::new(reset_state_cpu(&limits, env as u32, 0), 0, 1))
            .collect();
        self.write_uniforms(ctx);
        self.set_states(ctx, &states)
    }

    /// Overwrites every env's state (for tests, replay and resume).
    pub fn set_states(&mut self, ctx: &GpuContext, states: &[CartPoleState32]) -> Result<()> {
        if states.len() != self.num_envs() {
            let op = "GpuCartPole::set_states";
            return Err(Error::shape(op, "states", self.num_envs(), states.len()));
        }
        if let Some(env) = states.iter().position(|s| {
            !(s.observation().iter().all(|v| v.is_finite()) && s.episode_return.is_finite())
        }) {
            return Err(Error::InvalidEnv {
                index: env,
                field: "state".into(),
                value: format!("{:?}", states[env]),
                reason: "must be finite".into(),
            });
        }
        self.states.write(ctx, states)?;
        self.start_elapsed = states.iter().map(|s| s.elapsed_steps).collect();
        self.pending_obs = Some(states.iter().flat_map(|s| s.observation()).collect());
        Ok(())
    }

    /// Every env's state as the device holds it (waits for the device).
    pub fn read_states(&self, ctx: &GpuContext) -> Result<Vec<CartPoleState32>> {
        self.states.read(ctx)
    }

    /// Episode statistics of the last rollout, [T][rows][EPISODE_STATS].
    pub fn read_episodes(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        self.episodes.read(ctx)
    }

    /// The episode statistics buffer, [T][rows][EPISODE_STATS] (tests poison it).
    pub fn episodes_buffer(&self) -> &GpuBuffer<f32> {
        &self.episodes
    }

    /// Per-env physics on the device, [rows] (the fused rollout binds it).
    pub fn physics_buffer(&self) -> &GpuBuffer<CartPolePhysics32> {
        &self.physics_gpu
    }

    /// Per-env state on the device, [rows] (the fused rollout binds it).
    pub fn states_buffer(&self) -> &GpuBuffer<CartPoleState32> {
        &self.states
    }

    /// The device state, for a checkpoint.
    pub fn snapshot(&self, ctx: &GpuContext) -> Result<GpuCartPoleSnapshot> {
        Ok(GpuCartPoleSnapshot {
            seed: self.limits.seed,
            states: self.read_states(ctx)?,
        })
    }

    /// Restores a [`GpuCartPole::snapshot`] of a batch of the same size.
    pub fn restore(&mut self, ctx: &GpuContext, snapshot: &GpuCartPoleSnapshot) -> Result<()> {
        self.limits.seed = snapshot.seed;
        self.write_uniforms(ctx);
        self.set_states(ctx, &snapshot.states)
    }

    fn dims(&self, step: usize) -> CartPoleDims {
        CartPoleDims {
            rows: self.num_envs() as u32,
            step: step as u32,
            max_episode_steps: self.limits.max_episode_steps,
            seed_lo: self.limits.seed as u32,
            seed_hi: (self.limits.seed >> 32) as u32,
            x_threshold: self.limits.x_threshold,
            theta_threshold: self.limits.theta_threshold,
            reset_bound: self.limits.reset_bound,
        }
    }

    fn write_uniforms(&self, ctx: &GpuContext) {
        for (step, dispatch) in self.steps.iter().enumerate() {
            dispatch.write_uniform(ctx, &self.dims(step));
        }
    }

    /// Binds the step dispatches to a policy's buffers (see
    /// [`CartPoleStepBuffers`]); does nothing when already bound to them.
    pub fn bind(&mut self, ctx: &GpuContext, buffers: &CartPoleStepBuffers<'_>) -> Result<()> {
        const OP: &str = "GpuCartPole::bind";
        let (rows, t) = (self.num_envs(), self.num_steps);
        buffers.actions.expect_len(OP, rows)?;
        buffers.obs.expect_len(OP, rows * OBS_DIM)?;
        buffers.final_obs.expect_len(OP, rows * OBS_DIM)?;
        buffers.rewards.expect_len(OP, t * rows)?;
        buffers.flags.expect_len(OP, t * rows)?;
        let wanted = [
            buffers.actions.buffer.clone(),
            buffers.obs.buffer.clone(),
            buffers.final_obs.buffer.clone(),
            buffers.rewards.buffer.clone(),
            buffers.flags.buffer.clone(),
        ];
        if self.bound.as_ref() == Some(&wanted) {
            return Ok(());
        }
        fits_u32(OP, "rows", rows)?;
        self.steps = (0..t)
            .map(|step| {
                Dispatch::with_uniform(
                    ctx,
                    Kernel::CartPoleStep,
                    &self.dims(step),
                    &[
                        buffers.actions.binding(),
                        self.physics_gpu.binding(),
                        self.states.binding(),
                        buffers.obs.binding(),
                        buffers.final_obs.binding(),
                        buffers.rewards.binding(),
                        buffers.flags.binding(),
                        self.episodes.binding(),
                    ],
                    rows as u64,
                )
            })
            .collect::<Result<_>>()?;
        self.bound = Some(wanted);
        Ok(())
    }

    /// The dispatch of rollout step `step` (after [`GpuCartPole::bind`]).
    pub fn step_dispatch(&self, step: usize) -> Result<&Dispatch> {
        if self.steps.is_empty() {
            return Err(Error::config(
                "GpuCartPole",
                "unbound",
                "bind it to a policy's buffers before stepping",
            ));
        }
        self.steps.get(step).ok_or_else(|| {
            Error::config(
                "step",
                step,
                format!("the rollout has {} steps", self.num_steps),
            )
        })
    }

    /// Takes the observations that `reset`/`set_states` wrote and the
    /// policy's observation buffer does not hold yet.
    pub fn take_pending_obs(&mut self) -> Option<Vec<f32>> {
        self.pending_obs.take()
    }

    /// For each step of the next rollout: whether some env can be truncated
    /// there. An env that has run `e` steps is truncated at step
    /// `max_episode_steps - 1 - e` unless it terminates first, and a later
    /// episode only at steps `>= max_episode_steps`; elsewhere the final
    /// value of a truncation is never read and its critic can be skipped.
    pub fn truncation_steps(&self) -> Vec<bool> {
        let max = self.limits.max_episode_steps as usize;
        let mut possible: Vec<bool> = (0..self.num_steps).map(|t| t >= max).collect();
        for &elapsed in &self.start_elapsed {
            let first = max.saturating_sub(1).saturating_sub(elapsed as usize);
            if let Some(slot) = possible.get_mut(first) {
                *slot = true;
            }
        }
        possible
    }

    /// Records the copies of the episode statistics and states that
    /// [`GpuCartPole::finish_rollout`] reads.
    pub fn record_readback(&self, encoder: &mut wgpu::CommandEncoder) {
        self.readback.record_copy(encoder, &self.episodes, 0);
        let stats_bytes = (self.episodes.len() * 4) as u64;
        self.readback
            .record_copy(encoder, &self.states, stats_bytes);
    }

    /// After the rollout's submission: the episodes that ended, in step then
    /// env order (as the host env reports them).
    pub fn finish_rollout(&mut self, ctx: &GpuContext) -> Result<Vec<EpisodeStats>> {
        let bytes = self.readback.read_bytes(ctx)?;
        let stats: Vec<f32> = decode(&bytes, 0, self.episodes.len());
        let states: Vec<CartPoleState32> = decode(&bytes, stats.len() * 4, self.num_envs());
        self.start_elapsed = states.iter().map(|s| s.elapsed_steps).collect();
        let rows = self.num_envs();
        Ok(stats
            .chunks_exact(EPISODE_STATS)
            .enumerate()
            .filter(|(_, s)| s[1] > 0.0)
            .map(|(i, s)| EpisodeStats {
                env: i % rows,
                episode_return: s[0] as f64,
                length: s[1] as u32,
            })
            .collect())
    }
}
