//! The device CartPole (`shaders/cartpole.wgsl`): the kernel against its f32
//! CPU reference, the f32 physics against the f64 host env step by step, the
//! reset draws, and a whole rollout in one submission against the host-env
//! rollout with the same start states and sampling seed.

mod common;

use common::{assert_close, ctx, random_vec, to_f64};
use ppo_wgpu::env::gpu_cartpole::{
    cartpole_step_cpu, reset_state_cpu, CartPoleLimits32, CartPolePhysics32, CartPoleStepBuffers,
    CartPoleStepOut32, EPISODE_STATS,
};
use ppo_wgpu::env::{
    CartPole, CartPoleConfig, CartPoleParams, CartPoleState32, GpuCartPole, StepOut, VecEnv,
    OBS_DIM,
};
use ppo_wgpu::gpu::{GpuBuffer, GpuContext};
use ppo_wgpu::ops::categorical::SampleKey;
use ppo_wgpu::ops::gae::{TERMINATED, TRUNCATED};
use ppo_wgpu::ops::{record, RECORD};
use ppo_wgpu::ppo::{permutations, ActorCriticSpec, PpoGpu, UpdateSettings};
use ppo_wgpu::Error;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROW_COUNTS: &[usize] = &[1, 63, 64, 65, 1000];
/// Flags are u32: poisoned with a value no step writes.
const FLAG_POISON: u32 = u32::MAX;

fn random_params(rng: &mut StdRng) -> CartPoleParams {
    CartPoleParams {
        gravity: rng.random_range(5.0..15.0),
        masscart: rng.random_range(0.5..2.0),
        masspole: rng.random_range(0.05..0.5),
        length: rng.random_range(0.25..1.0),
        force_mag: rng.random_range(5.0..15.0),
        tau: rng.random_range(0.01..0.03),
        polarity: if rng.random_bool(0.5) { 1.0 } else { -1.0 },
    }
}

/// Physics that differs from Gymnasium's in every constant, with the motor
/// wired backwards.
const ODD_PHYSICS: CartPoleParams = CartPoleParams {
    gravity: 12.0,
    masscart: 1.5,
    masspole: 0.2,
    length: 0.7,
    force_mag: 8.0,
    tau: 0.015,
    polarity: -1.0,
};

fn config(rows: usize, max_episode_steps: u32) -> CartPoleConfig {
    CartPoleConfig {
        max_episode_steps,
        ..CartPoleConfig::new(1, rows)
    }
}

/// Standalone policy-side buffers for driving the env kernel directly.
struct TestBuffers {
    actions: GpuBuffer<u32>,
    obs: GpuBuffer<f32>,
    final_obs: GpuBuffer<f32>,
    rewards: GpuBuffer<f32>,
    flags: GpuBuffer<u32>,
}

impl TestBuffers {
    fn new(ctx: &GpuContext, rows: usize, num_steps: usize) -> Self {
        TestBuffers {
            actions: GpuBuffer::zeros(ctx, "actions", rows).unwrap(),
            obs: GpuBuffer::zeros(ctx, "obs", rows * OBS_DIM).unwrap(),
            final_obs: GpuBuffer::zeros(ctx, "final obs", rows * OBS_DIM).unwrap(),
            rewards: GpuBuffer::zeros(ctx, "rewards", num_steps * rows).unwrap(),
            flags: GpuBuffer::zeros(ctx, "flags", num_steps * rows).unwrap(),
        }
    }

    fn bind(&self, ctx: &GpuContext, env: &mut GpuCartPole) {
        env.bind(
            ctx,
            &CartPoleStepBuffers {
                actions: &self.actions,
                obs: &self.obs,
                final_obs: &self.final_obs,
                rewards: &self.rewards,
                flags: &self.flags,
            },
        )
        .unwrap();
    }

    /// Steps the envs at rollout step `step` with `actions`; returns what the
    /// step wrote (its block of rewards, flags and episodes).
    fn step(
        &self,
        ctx: &GpuContext,
        env: &GpuCartPole,
        step: usize,
        actions: &[u32],
    ) -> CartPoleStepOut32 {
        let rows = actions.len();
        self.actions.write(ctx, actions).unwrap();
        ctx.run("cartpole test step", &[env.step_dispatch(step).unwrap()]);
        let block = step * rows..(step + 1) * rows;
        CartPoleStepOut32 {
            obs: self.obs.read(ctx).unwrap(),
            final_obs: self.final_obs.read(ctx).unwrap(),
            rewards: self.rewards.read(ctx).unwrap()[block.clone()].to_vec(),
            flags: self.flags.read(ctx).unwrap()[block.clone()].to_vec(),
            episodes: env.read_episodes(ctx).unwrap()
                [block.start * EPISODE_STATS..block.end * EPISODE_STATS]
                .to_vec(),
        }
    }
}

fn random_states(rng: &mut StdRng, rows: usize, max_episode_steps: u32) -> Vec<CartPoleState32> {
    (0..rows)
        .map(|_| {
            // Some envs start beyond a threshold (terminate) or at the step
            // limit (truncate).
            let state = [
                rng.random_range(-2.6..2.6),
                rng.random_range(-2.0..2.0),
                rng.random_range(-0.25..0.25),
                rng.random_range(-2.0..2.0),
            ];
            let mut s = CartPoleState32::new(
                state,
                rng.random_range(0..max_episode_steps),
                rng.random_range(1..1000),
            );
            s.episode_return = rng.random_range(-50.0..50.0);
            s
        })
        .collect()
}

/// The float part of states as [rows][5] (x, x_dot, theta, theta_dot, return).
fn state_floats(states: &[CartPoleState32]) -> Vec<f32> {
    states
        .iter()
        .flat_map(|s| {
            let [a, b, c, d] = s.observation();
            [a, b, c, d, s.episode_return]
        })
        .collect()
}

#[test]
fn cartpole_step_matches_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    const STEPS: usize = 3;
    const MAX_EPISODE_STEPS: u32 = 20;
    for (case, &rows) in ROW_COUNTS.iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(100 + case as u64);
        let physics: Vec<CartPoleParams> = (0..rows).map(|_| random_params(&mut rng)).collect();
        let mut env =
            GpuCartPole::with_physics(ctx, config(rows, MAX_EPISODE_STEPS), &physics, STEPS)
                .unwrap();
        let seed = rng.random::<u64>();
        env.reset(ctx, seed).unwrap();
        let mut states = random_states(&mut rng, rows, MAX_EPISODE_STEPS);
        env.set_states(ctx, &states).unwrap();
        let buffers = TestBuffers::new(ctx, rows, STEPS);
        buffers.bind(ctx, &mut env);
        for buffer in [&buffers.obs, &buffers.final_obs, &buffers.rewards] {
            buffer.poison(ctx).unwrap();
        }
        env.episodes_buffer().poison(ctx).unwrap();
        buffers
            .flags
            .write(ctx, &vec![FLAG_POISON; STEPS * rows])
            .unwrap();

        let limits = *env.limits();
        let physics32: Vec<CartPolePhysics32> =
            physics.iter().map(CartPolePhysics32::new).collect();
        let (mut terminations, mut truncations) = (0, 0);
        for step in 0..STEPS {
            let actions: Vec<u32> = (0..rows).map(|_| rng.random_range(0..2)).collect();
            let want = cartpole_step_cpu(&limits, &physics32, &mut states, &actions);
            let got = buffers.step(ctx, &env, step, &actions);
            let what = |name: &str| format!("cartpole rows={rows} step={step} {name}");
            assert_close(&what("obs"), &to_f64(&want.obs), &got.obs, 1e-5, 1e-5);
            assert_close(
                &what("final_obs"),
                &to_f64(&want.final_obs),
                &got.final_obs,
                1e-5,
                1e-5,
            );
            assert_close(
                &what("rewards"),
                &to_f64(&want.rewards),
                &got.rewards,
                0.0,
                0.0,
            );
            assert_eq!(want.flags, got.flags, "{}", what("flags"));
            assert_close(
                &what("episodes"),
                &to_f64(&want.episodes),
                &got.episodes,
                0.0,
                0.0,
            );
            let got_states = env.read_states(ctx).unwrap();
            assert_close(
                &what("states"),
                &to_f64(&state_floats(&states)),
                &state_floats(&got_states),
                1e-5,
                1e-5,
            );
            for (r, (w, g)) in states.iter().zip(&got_states).enumerate() {
                assert_eq!(
                    (w.elapsed_steps, w.episodes_started),
                    (g.elapsed_steps, g.episodes_started),
                    "{} env {r}: step counter, episode counter",
                    what("states")
                );
            }
            // Later steps' blocks are still poisoned: the step wrote only its own.
            let later = (step + 1) * rows..;
            let rewards = buffers.rewards.read(ctx).unwrap();
            assert!(rewards[later.clone()].iter().all(|v| v.is_nan()));
            let flags = buffers.flags.read(ctx).unwrap();
            assert!(flags[later].iter().all(|&f| f == FLAG_POISON));
            terminations += want.flags.iter().filter(|&&f| f & TERMINATED != 0).count();
            truncations += want.flags.iter().filter(|&&f| f & TRUNCATED != 0).count();
            // Continue from the device's states so f32 rounding differences
            // do not accumulate into the next step's comparison.
            states = got_states;
        }
        if rows >= 63 {
            assert!(
                terminations > 0 && truncations > 0,
                "rows={rows}: {terminations} terminations, {truncations} truncations"
            );
        }
    }
}

/// Host envs (f64) and device envs (f32) with the same physics: per-env
/// physics alternating Gymnasium's and [`ODD_PHYSICS`] (polarity -1).
fn host_and_device(
    ctx: &GpuContext,
    rows: usize,
    max_episode_steps: u32,
    reset_bound: f64,
) -> (CartPole, GpuCartPole, TestBuffers) {
    let physics: Vec<CartPoleParams> = (0..rows)
        .map(|e| {
            if e % 2 == 0 {
                CartPoleParams::GYMNASIUM
            } else {
                ODD_PHYSICS
            }
        })
        .collect();
    let config = CartPoleConfig {
        reset_bound,
        ..config(rows, max_episode_steps)
    };
    let host = CartPole::with_physics(config.clone(), &physics).unwrap();
    let mut device = GpuCartPole::with_physics(ctx, config, &physics, 1).unwrap();
    let buffers = TestBuffers::new(ctx, rows, 1);
    buffers.bind(ctx, &mut device);
    (host, device, buffers)
}

/// A stabilizing controller most of the time (so episodes reach the step
/// limit), random pushes otherwise; every fourth env pushes at random only
/// (so it falls).
fn controller_actions(rng: &mut StdRng, host: &CartPole) -> Vec<u32> {
    (0..host.config().num_agents * host.config().envs_per_agent)
        .map(|e| {
            let [_, _, theta, theta_dot] = host.state(e).unwrap();
            let right = theta + 0.5 * theta_dot > 0.0;
            let right = right == (host.physics()[e].polarity > 0.0);
            if e % 4 != 0 && rng.random_bool(0.85) {
                right as u32
            } else {
                rng.random_range(0..2)
            }
        })
        .collect()
}

/// The device state equal to the host's, rounded to f32.
fn device_state_of(host: &CartPole, env: usize) -> CartPoleState32 {
    let state = host.state(env).unwrap().map(|v| v as f32);
    CartPoleState32::new(state, host.elapsed_steps(env).unwrap(), 1)
}

/// |x| or |theta| within `margin` of its threshold: f32 and f64 may
/// legitimately disagree about termination there.
fn near_threshold(host: &CartPole, obs: &[f32], margin: f64) -> bool {
    let c = host.config();
    ((obs[0].abs() as f64) - c.x_threshold).abs() < margin
        || ((obs[2].abs() as f64) - c.theta_threshold_radians).abs() < margin
}

fn flags_of(out: &StepOut, env: usize) -> u32 {
    u32::from(out.terminated[env] != 0) * TERMINATED
        + u32::from(out.truncated[env] != 0) * TRUNCATED
}

#[test]
fn device_physics_tracks_host_env_step_by_step() {
    let Some(ctx) = ctx() else { return };
    const ROWS: usize = 16;
    const STEPS: usize = 600;
    let (mut host, mut device, buffers) = host_and_device(ctx, ROWS, 30, 0.05);
    let mut rng = StdRng::seed_from_u64(7);
    let mut out = StepOut::new(ROWS, OBS_DIM);
    let (mut terminations, mut truncations, mut near) = (0, 0, 0);
    let mut worst = 0.0f64;
    for step in 0..STEPS {
        // Re-sync: both start the step from the host's state.
        let states: Vec<CartPoleState32> = (0..ROWS).map(|e| device_state_of(&host, e)).collect();
        device.set_states(ctx, &states).unwrap();
        let actions = controller_actions(&mut rng, &host);
        host.step(&actions, &mut out).unwrap();
        let got = buffers.step(ctx, &device, 0, &actions);
        for e in 0..ROWS {
            let slot = e * OBS_DIM..(e + 1) * OBS_DIM;
            let host_final = &out.final_obs[slot.clone()];
            let want_flags = flags_of(&out, e);
            let done = want_flags != 0;
            // The observation before any auto-reset: host obs if still running.
            let want_obs = if done {
                host_final
            } else {
                &out.obs[slot.clone()]
            };
            if got.flags[e] != want_flags {
                assert!(
                    near_threshold(&host, want_obs, 1e-4),
                    "step {step} env {e}: flags host {want_flags} device {} at {want_obs:?}",
                    got.flags[e]
                );
                near += 1;
                continue;
            }
            for (k, (&w, &g)) in want_obs
                .iter()
                .zip(&got.final_obs[slot.clone()])
                .enumerate()
            {
                let err = (w as f64 - g as f64).abs();
                worst = worst.max(err / (1.0 + (w as f64).abs()));
                assert!(
                    err <= 1e-5 + 1e-5 * (w as f64).abs(),
                    "step {step} env {e} component {k}: host {w} device {g}"
                );
            }
            if !done {
                assert_eq!(
                    &got.obs[slot.clone()],
                    &got.final_obs[slot],
                    "obs = final_obs while running"
                );
            }
            assert_eq!(got.rewards[e], out.reward[e]);
            terminations += usize::from(want_flags & TERMINATED != 0);
            truncations += usize::from(want_flags & TRUNCATED != 0);
        }
        host.drain_episodes(&mut Vec::new());
    }
    eprintln!(
        "{STEPS} re-synced steps × {ROWS} envs: {terminations} terminations, {truncations} truncations, \
         {near} near-threshold flag differences, worst |err|/(1+|x|) {worst:.2e}"
    );
    assert!(terminations >= 20 && truncations >= 20);
    assert!(near <= 2, "{near} flag differences near a threshold");
}

#[test]
fn free_running_device_trajectory_stays_close_to_host() {
    let Some(ctx) = ctx() else { return };
    const ROWS: usize = 16;
    const STEPS: usize = 25;
    let (mut host, mut device, buffers) = host_and_device(ctx, ROWS, 500, 0.05);
    let mut obs = vec![0.0; ROWS * OBS_DIM];
    host.reset(3, &mut obs).unwrap();
    // Same start: the host's reset states rounded to f32, on both sides.
    for e in 0..ROWS {
        let state = host.state(e).unwrap().map(|v| v as f32 as f64);
        host.set_state(e, state).unwrap();
    }
    let states: Vec<CartPoleState32> = (0..ROWS).map(|e| device_state_of(&host, e)).collect();
    device.set_states(ctx, &states).unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let mut out = StepOut::new(ROWS, OBS_DIM);
    let mut running = [true; ROWS];
    let mut worst = 0.0f64;
    for step in 0..STEPS {
        let actions = controller_actions(&mut rng, &host);
        host.step(&actions, &mut out).unwrap();
        let got = buffers.step(ctx, &device, 0, &actions);
        for (e, running) in running.iter_mut().enumerate() {
            if !*running {
                continue;
            }
            let slot = e * OBS_DIM..(e + 1) * OBS_DIM;
            let want = &out.final_obs[slot.clone()];
            let want = if flags_of(&out, e) != 0 {
                want
            } else {
                &out.obs[slot.clone()]
            };
            assert_eq!(got.flags[e], flags_of(&out, e), "step {step} env {e}");
            for (&w, &g) in want.iter().zip(&got.final_obs[slot]) {
                let err = (w as f64 - g as f64).abs();
                worst = worst.max(err);
                assert!(
                    err <= 1e-4,
                    "step {step} env {e}: host {want:?} device {:?}",
                    got.final_obs
                );
            }
            // After a reset the two envs draw different starts: stop comparing.
            *running = got.flags[e] == 0;
        }
        host.drain_episodes(&mut Vec::new());
    }
    eprintln!("free-running {STEPS} steps: worst |err| {worst:.2e}");
    assert!(running.iter().filter(|&&r| r).count() >= ROWS / 2);
}

#[test]
fn reset_draws_are_bounded_distinct_and_match_the_device() {
    let Some(ctx) = ctx() else { return };
    const ROWS: usize = 1000;
    const EPISODES: u32 = 6;
    let reset_bound = 0.05;
    let mut env = GpuCartPole::new(ctx, config(ROWS, 500), 1).unwrap();
    env.reset(ctx, 0xDEAD_BEEF_0000_0042).unwrap();
    let limits = *env.limits();
    let buffers = TestBuffers::new(ctx, ROWS, 1);
    buffers.bind(ctx, &mut env);

    let mut seen = std::collections::HashSet::new();
    let mut draws = Vec::new();
    for episode in 0..EPISODES {
        let want: Vec<[f32; OBS_DIM]> = (0..ROWS)
            .map(|e| reset_state_cpu(&limits, e as u32, episode))
            .collect();
        let got = env.read_states(ctx).unwrap();
        for (e, (w, g)) in want.iter().zip(&got).enumerate() {
            assert_eq!(
                *w,
                g.observation(),
                "episode {episode} env {e}: device draw"
            );
            assert_eq!(g.episodes_started, episode + 1);
            assert!(w
                .iter()
                .all(|v| (-reset_bound..reset_bound).contains(&(*v as f64))));
            assert!(
                seen.insert(w.map(f32::to_bits)),
                "repeated reset state {w:?}"
            );
            draws.extend(w.iter().map(|&v| v as f64));
        }
        // Push every env over the edge: all terminate and reset to episode + 1.
        let mut states = got;
        for s in &mut states {
            s.x = 10.0;
        }
        env.set_states(ctx, &states).unwrap();
        let out = buffers.step(ctx, &env, 0, &vec![0; ROWS]);
        assert!(out.flags.iter().all(|&f| f == TERMINATED));
    }
    // Uniform on [-b, b): mean near 0, a quarter of the draws in each quarter.
    let n = draws.len() as f64;
    let mean = draws.iter().sum::<f64>() / n;
    assert!(mean.abs() < 0.01 * reset_bound, "mean {mean}");
    for quarter in 0..4 {
        let lo = -reset_bound + quarter as f64 * reset_bound / 2.0;
        let count = draws
            .iter()
            .filter(|&&v| v >= lo && v < lo + reset_bound / 2.0)
            .count();
        assert!(
            (count as f64 / n - 0.25).abs() < 0.02,
            "quarter {quarter}: {count} of {n}"
        );
    }
    // Another seed gives other states.
    let other = CartPoleLimits32 {
        seed: limits.seed + 1,
        ..limits
    };
    let moved = (0..ROWS)
        .filter(|&e| reset_state_cpu(&other, e as u32, 0) != reset_state_cpu(&limits, e as u32, 0))
        .count();
    assert_eq!(moved, ROWS);
}

#[test]
fn bad_shapes_and_states_are_refused() {
    let Some(ctx) = ctx() else { return };
    let mut env = GpuCartPole::new(ctx, config(4, 500), 2).unwrap();
    let wrong = TestBuffers::new(ctx, 5, 2);
    let result = env.bind(
        ctx,
        &CartPoleStepBuffers {
            actions: &wrong.actions,
            obs: &wrong.obs,
            final_obs: &wrong.final_obs,
            rewards: &wrong.rewards,
            flags: &wrong.flags,
        },
    );
    assert!(
        matches!(
            result,
            Err(Error::ShapeMismatch {
                expected: 4,
                got: 5,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(matches!(
        env.step_dispatch(0),
        Err(Error::InvalidConfig { .. })
    ));
    let mut states = env.read_states(ctx).unwrap();
    states[2].theta = f32::NAN;
    assert!(matches!(
        env.set_states(ctx, &states),
        Err(Error::InvalidEnv { index: 2, .. })
    ));
    assert!(matches!(
        env.set_states(ctx, &states[..3]),
        Err(Error::ShapeMismatch {
            expected: 4,
            got: 3,
            ..
        })
    ));
    let zero_steps = GpuCartPole::new(ctx, config(4, 500), 0);
    assert!(
        matches!(zero_steps, Err(Error::InvalidConfig { ref field, .. }) if field == "num_steps")
    );
}

fn rollout_settings(num_agents: usize, num_steps: usize, envs: usize) -> UpdateSettings {
    UpdateSettings {
        num_agents,
        num_steps,
        envs_per_agent: envs,
        num_minibatches: 2,
        update_epochs: 2,
        gamma: 0.99,
        gae_lambda: 0.95,
        norm_adv: true,
        coefs: ppo_wgpu::ops::ppo_loss::LossCoefs {
            clip_coef: 0.2,
            ent_coef: 0.01,
            vf_coef: 0.5,
            clip_vloss: true,
        },
        max_grad_norm: 0.5,
        adam_eps: ppo_wgpu::ops::optim::ADAM_EPS,
        target_kl: None,
    }
}

/// One rollout with the host env and one with the device env, from the same
/// start states, parameters and sampling seed. Resets go to the origin
/// (reset_bound 0) on both sides, so trajectories stay comparable across
/// episode ends; step limits are short so truncations (and their final
/// values) fall inside the rollout, and some start states are close to
/// falling so terminations do too. The states differ only by f32 rounding, so
/// the sampled actions agree unless a uniform lands within ~1e-6 of a CDF
/// boundary; with these fixed seeds none does, so the test is deterministic.
#[test]
fn device_rollout_matches_host_rollout() {
    let Some(ctx) = ctx() else { return };
    let (p_count, n, t_count) = (2, 4, 16);
    let rows = p_count * n;
    let settings = rollout_settings(p_count, t_count, n);
    let spec = ActorCriticSpec::new(OBS_DIM, 2, &[16]).unwrap();
    let params = random_vec(5, p_count * spec.param_count(), -0.5, 0.5);
    let (seed, iteration) = (1234, 3);
    let physics: Vec<CartPoleParams> = (0..rows)
        .map(|e| {
            if e % 3 == 1 {
                ODD_PHYSICS
            } else {
                CartPoleParams::GYMNASIUM
            }
        })
        .collect();
    let env_config = CartPoleConfig {
        max_episode_steps: 9,
        reset_bound: 0.0,
        ..CartPoleConfig::new(p_count, n)
    };
    let mut rng = StdRng::seed_from_u64(17);
    let starts: Vec<CartPoleState32> = (0..rows)
        .map(|e| {
            let tilt = if e % 4 == 0 { 0.19 } else { 0.02 };
            let state = [
                rng.random_range(-0.1..0.1),
                rng.random_range(-0.1..0.1),
                rng.random_range(-tilt..tilt),
                rng.random_range(-0.1..0.1),
            ];
            CartPoleState32::new(state, rng.random_range(0..8), 1)
        })
        .collect();

    // Host env rollout.
    let mut host_gpu = PpoGpu::new(ctx, &spec, &settings).unwrap();
    host_gpu.set_params(ctx, &params).unwrap();
    let mut host = CartPole::with_physics(env_config.clone(), &physics).unwrap();
    for (e, s) in starts.iter().enumerate() {
        host.set_state(e, s.observation().map(f64::from)).unwrap();
        host.set_elapsed_steps(e, s.elapsed_steps).unwrap();
    }
    let mut obs = host.observations();
    let mut out = StepOut::new(rows, OBS_DIM);
    let (mut host_rewards, mut host_flags) = (Vec::new(), Vec::new());
    for step in 0..t_count {
        let key = SampleKey {
            seed,
            iteration,
            step: step as u32,
        };
        let actions = host_gpu.rollout_step(ctx, step, &obs, key).unwrap();
        host.step(&actions, &mut out).unwrap();
        host_gpu
            .record_env_step(
                ctx,
                step,
                &out.reward,
                &out.terminated,
                &out.truncated,
                &out.final_obs,
            )
            .unwrap();
        host_rewards.extend_from_slice(&out.reward);
        host_flags.extend((0..rows).map(|e| flags_of(&out, e)));
        std::mem::swap(&mut obs, &mut out.obs);
    }
    let mut host_episodes = Vec::new();
    host.drain_episodes(&mut host_episodes);
    // update() runs the pending final-value critic; read the rollout before.
    let host_records = host_gpu.read_records(ctx).unwrap();
    let perm = permutations(seed, iteration as u64, &settings);
    let host_stats = host_gpu.update(ctx, Some(&obs), &perm).unwrap();
    let host_final_values = host_gpu.read_final_values(ctx).unwrap();

    // Device env rollout: one submission.
    let mut device_gpu = PpoGpu::new(ctx, &spec, &settings).unwrap();
    device_gpu.set_params(ctx, &params).unwrap();
    let perm_error = device_gpu.update(ctx, None, &perm);
    assert!(
        matches!(perm_error, Err(Error::InvalidConfig { ref field, .. }) if field == "next_obs"),
        "update(None) needs a device rollout first: {perm_error:?}"
    );
    let mut device = GpuCartPole::with_physics(ctx, env_config, &physics, t_count).unwrap();
    device.set_states(ctx, &starts).unwrap();
    let rollout = device_gpu
        .rollout_gpu(ctx, &mut device, seed, iteration)
        .unwrap();
    let device_records = device_gpu.read_records(ctx).unwrap();
    let device_rewards = device_gpu.read_rewards(ctx).unwrap();
    let device_flags = device_gpu.read_flags(ctx).unwrap();
    let device_final_values = device_gpu.read_final_values(ctx).unwrap();

    let actions = |records: &[f32]| -> Vec<u32> {
        records
            .chunks(RECORD)
            .map(|r| r[record::ACTION] as u32)
            .collect()
    };
    assert_eq!(
        actions(&host_records),
        actions(&device_records),
        "sampled actions"
    );
    assert_eq!(host_flags, device_flags, "flags [T][P][N]");
    assert_eq!(host_rewards, device_rewards, "rewards");
    let column = |records: &[f32], field: usize| -> Vec<f32> {
        records.chunks(RECORD).map(|r| r[field]).collect()
    };
    for (name, field) in [("log-prob", record::LOGPROB), ("value", record::VALUE)] {
        assert_close(
            name,
            &to_f64(&column(&host_records, field)),
            &column(&device_records, field),
            1e-4,
            1e-4,
        );
    }
    let truncated: Vec<usize> = (0..t_count * rows)
        .filter(|&i| host_flags[i] == TRUNCATED)
        .collect();
    let terminated = host_flags.iter().filter(|&&f| f & TERMINATED != 0).count();
    assert!(
        !truncated.is_empty() && terminated > 0,
        "{} truncations, {terminated} terminations",
        truncated.len()
    );
    assert_close(
        "V(final obs) where truncated",
        &truncated
            .iter()
            .map(|&i| host_final_values[i] as f64)
            .collect::<Vec<_>>(),
        &truncated
            .iter()
            .map(|&i| device_final_values[i])
            .collect::<Vec<_>>(),
        1e-4,
        1e-4,
    );
    let as_tuples = |episodes: &[ppo_wgpu::env::EpisodeStats]| -> Vec<(usize, u32, f64)> {
        episodes
            .iter()
            .map(|e| (e.env, e.length, e.episode_return))
            .collect()
    };
    assert_eq!(
        as_tuples(&host_episodes),
        as_tuples(&rollout.episodes),
        "finished episodes"
    );
    assert!(
        rollout.final_value_steps < t_count,
        "the final critic is skipped where no env can be truncated"
    );

    // The update runs unchanged on what the device left: the next
    // observations, rewards and flags, and gives the host path's statistics.
    let device_stats = device_gpu.update(ctx, None, &perm).unwrap();
    for (h, d) in host_stats.iter().zip(&device_stats) {
        let pairs = [
            (h.policy_loss, d.policy_loss),
            (h.value_loss, d.value_loss),
            (h.entropy, d.entropy),
            (h.approx_kl, d.approx_kl),
            (h.explained_variance, d.explained_variance),
        ];
        for (a, b) in pairs {
            assert!(
                b.is_finite() && (a - b).abs() <= 1e-3 * (1.0 + a.abs()),
                "host {h:?}\ndevice {d:?}"
            );
        }
    }
    // A second device rollout continues from where the first left the envs.
    let second = device_gpu
        .rollout_gpu(ctx, &mut device, seed, iteration + 1)
        .unwrap();
    assert!(!second.episodes.is_empty());
    let stats = device_gpu.update(ctx, None, &perm).unwrap();
    assert!(stats
        .iter()
        .all(|s| s.policy_loss.is_finite() && s.value_loss.is_finite()));
}
