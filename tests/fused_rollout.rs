//! The fused rollout (`shaders/rollout_fused.wgsl`, `ppo::fused`): against
//! the layered device rollout (same actions, rewards, flags and episodes,
//! values and observations within float tolerance) at CleanRL's size and
//! beyond, with NaN-poisoned outputs and partial workgroups; against its CPU
//! reference; and the fallback and path choice.

mod common;

use common::{assert_close, ctx, random_vec, to_f64};
use ppo_wgpu::env::gpu_cartpole::{CartPoleLimits32, CartPolePhysics32};
use ppo_wgpu::env::{
    CartPole, CartPoleConfig, CartPoleParams, CartPoleState32, GpuCartPole, StepOut, VecEnv,
    OBS_DIM,
};
use ppo_wgpu::gpu::GpuContext;
use ppo_wgpu::ops::categorical::SampleKey;
use ppo_wgpu::ops::gae::{TERMINATED, TRUNCATED};
use ppo_wgpu::ops::{record, RECORD};
use ppo_wgpu::ppo::fused::{
    auto_picks_fused, fused_rollout_cpu, fused_rollout_source, lanes_rollout_source,
    lanes_uniform_weights, lanes_workgroup_bytes, FusedLayout, LANES_UP_TO_ENVS, MAX_FUSED_HIDDEN,
};
use ppo_wgpu::ppo::{permutations, ActorCriticSpec, PpoGpu, RolloutPath, UpdateSettings};
use ppo_wgpu::Error;

/// The fused kernels of networks with hidden layers take llvmpipe tens of
/// seconds to compile on first use, holding wgpu's GL context lock longer
/// than another thread of this binary waits for it (6 s): one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Flags are u32: poisoned with a value no step writes.
const FLAG_POISON: u32 = u32::MAX;

fn settings(num_agents: usize, envs: usize, num_steps: usize) -> UpdateSettings {
    UpdateSettings {
        num_agents,
        num_steps,
        envs_per_agent: envs,
        num_minibatches: 4,
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

/// Half the envs with Gymnasium's physics, the rest with their own.
fn physics(rows: usize) -> Vec<CartPoleParams> {
    (0..rows)
        .map(|e| {
            if e % 2 == 0 {
                CartPoleParams::GYMNASIUM
            } else {
                CartPoleParams {
                    gravity: 9.8 + (e % 7) as f64 * 0.3,
                    length: 0.5 + (e % 5) as f64 * 0.1,
                    polarity: if e % 3 == 0 { -1.0 } else { 1.0 },
                    ..CartPoleParams::GYMNASIUM
                }
            }
        })
        .collect()
}

struct Outputs {
    records: Vec<f32>,
    obs: Vec<f32>,
    rewards: Vec<f32>,
    flags: Vec<u32>,
    final_values: Vec<f32>,
    episodes: Vec<(usize, u32, f64)>,
    cur_obs: Vec<f32>,
    states: Vec<CartPoleState32>,
    fused: bool,
    layout: Option<FusedLayout>,
    dispatches: usize,
}

/// Two rollouts (iterations 0 and 1) on `path`, from the same env seed;
/// the outputs of the second, after an update in between.
fn run(
    ctx: &GpuContext,
    spec: &ActorCriticSpec,
    settings: &UpdateSettings,
    params: &[f32],
    max_episode_steps: u32,
    path: RolloutPath,
    layout: Option<FusedLayout>,
) -> Outputs {
    let (p, n, t) = (
        settings.num_agents,
        settings.envs_per_agent,
        settings.num_steps,
    );
    let mut gpu = PpoGpu::new(ctx, spec, settings).unwrap();
    gpu.set_params(ctx, params).unwrap();
    gpu.set_rollout_path(path);
    gpu.set_fused_layout(layout);
    let config = CartPoleConfig {
        max_episode_steps,
        ..CartPoleConfig::new(p, n)
    };
    let mut env = GpuCartPole::with_physics(ctx, config, &physics(p * n), t).unwrap();
    env.reset(ctx, 77).unwrap();
    let seed = 4242;
    gpu.rollout_gpu(ctx, &mut env, seed, 0).unwrap();
    let perm = permutations(seed, 0, settings);
    gpu.update(ctx, None, &perm).unwrap();

    // Poison every output of the second rollout.
    let b = gpu.rollout_buffers();
    for buffer in [&b.obs, &b.records, &b.rewards, &b.final_values] {
        buffer.write(ctx, &vec![f32::NAN; buffer.len()]).unwrap();
    }
    b.flags
        .write(ctx, &vec![FLAG_POISON; b.flags.len()])
        .unwrap();
    let episodes = env.episodes_buffer();
    episodes
        .write(ctx, &vec![f32::NAN; episodes.len()])
        .unwrap();

    let stats = gpu.rollout_gpu(ctx, &mut env, seed, 1).unwrap();
    Outputs {
        records: gpu.read_records(ctx).unwrap(),
        obs: gpu.read_rollout_obs(ctx).unwrap(),
        rewards: gpu.read_rewards(ctx).unwrap(),
        flags: gpu.read_flags(ctx).unwrap(),
        final_values: gpu.read_final_values(ctx).unwrap(),
        episodes: stats
            .episodes
            .iter()
            .map(|e| (e.env, e.length, e.episode_return))
            .collect(),
        cur_obs: gpu.read_current_obs(ctx).unwrap(),
        states: env.read_states(ctx).unwrap(),
        fused: stats.fused_layout.is_some(),
        layout: stats.fused_layout,
        dispatches: stats.dispatches,
    }
}

fn column(records: &[f32], field: usize) -> Vec<f32> {
    records.chunks(RECORD).map(|r| r[field]).collect()
}

fn assert_same_rollout(what: &str, layered: &Outputs, fused: &Outputs) {
    assert!(!layered.fused && fused.fused, "{what}: paths");
    assert!(
        fused.dispatches * 8 <= layered.dispatches,
        "{what}: fused {} dispatches, layered {}",
        fused.dispatches,
        layered.dispatches
    );
    assert_eq!(
        column(&layered.records, record::ACTION),
        column(&fused.records, record::ACTION),
        "{what}: actions"
    );
    assert_eq!(layered.flags, fused.flags, "{what}: flags");
    assert_eq!(layered.rewards, fused.rewards, "{what}: rewards");
    assert_eq!(layered.episodes, fused.episodes, "{what}: episodes");
    for (name, field) in [("log-prob", record::LOGPROB), ("value", record::VALUE)] {
        assert_close(
            &format!("{what}: {name}"),
            &to_f64(&column(&layered.records, field)),
            &column(&fused.records, field),
            1e-5,
            1e-5,
        );
    }
    assert_close(
        &format!("{what}: obs"),
        &to_f64(&layered.obs),
        &fused.obs,
        1e-6,
        1e-6,
    );
    assert_close(
        &format!("{what}: next obs"),
        &to_f64(&layered.cur_obs),
        &fused.cur_obs,
        1e-6,
        1e-6,
    );
    assert_eq!(layered.states, fused.states, "{what}: env states");
    let bootstrapped: Vec<usize> = (0..layered.flags.len())
        .filter(|&i| layered.flags[i] == TRUNCATED)
        .collect();
    let terminated = layered
        .flags
        .iter()
        .filter(|&&f| f & TERMINATED != 0)
        .count();
    assert!(
        !bootstrapped.is_empty() && terminated > 0,
        "{what}: {} truncations, {terminated} terminations",
        bootstrapped.len()
    );
    let pick = |v: &[f32]| -> Vec<f32> { bootstrapped.iter().map(|&i| v[i]).collect() };
    assert_close(
        &format!("{what}: V(final obs) where truncated"),
        &to_f64(&pick(&layered.final_values)),
        &pick(&fused.final_values),
        1e-5,
        1e-5,
    );
}

/// Both fused layouts against the layered rollout: CleanRL's network and
/// rollout length (T = 128, 64-64) for 1, 2 and 8 agents of 1 to 33 envs
/// (partial workgroups and partial lanes blocks), a long rollout (T = 1200)
/// that splits into several dispatches on CPU adapters (llvmpipe's loop
/// cap), the linear policy over hundreds of steps per dispatch, and
/// networks whose widths leave lanes idle (20, 7) or reuse the activation
/// buffers (three hidden layers); short episodes so truncations and
/// terminations both fall inside.
#[test]
fn fused_rollout_equals_layered_rollout() {
    let _serial = serial();
    let Some(ctx) = ctx() else { return };
    let per_env = Some(FusedLayout::PerEnv);
    let lanes = |envs| Some(FusedLayout::Lanes { envs });
    for (hidden, p, n, t, max_steps, layout) in [
        (&[64usize, 64][..], 2, 33, 128, 40, per_env),
        (&[64, 64][..], 2, 33, 128, 40, lanes(8)),
        (&[64, 64][..], 1, 4, 128, 40, lanes(2)),
        (&[64, 64][..], 1, 1, 128, 14, lanes(1)),
        (&[64, 64][..], 8, 4, 128, 35, lanes(2)),
        (&[64, 64][..], 1, 5, 1200, 45, lanes(3)),
        (&[][..], 1, 65, 600, 12, per_env),
        (&[16][..], 3, 4, 64, 25, per_env),
        (&[20, 7][..], 3, 5, 64, 25, lanes(2)),
        (&[16, 24, 8][..], 2, 3, 64, 20, lanes(3)),
        // Weights too big for a uniform block: read from storage.
        (&[128, 128][..], 2, 3, 48, 20, lanes(2)),
        (&[128, 128][..], 1, 4, 48, 8, lanes(2)),
    ] {
        let spec = ActorCriticSpec::new(OBS_DIM, 2, hidden).unwrap();
        let settings = settings(p, n, t);
        let params = random_vec(9, p * spec.param_count(), -0.4, 0.4);
        let layered = run(
            ctx,
            &spec,
            &settings,
            &params,
            max_steps,
            RolloutPath::Layered,
            None,
        );
        let fused = run(
            ctx,
            &spec,
            &settings,
            &params,
            max_steps,
            RolloutPath::Fused,
            layout,
        );
        let what = format!("hidden {hidden:?}, P {p} × N {n}, T {t}, {layout:?}");
        eprintln!(
            "{what}: fused {} dispatches, layered {}",
            fused.dispatches, layered.dispatches
        );
        assert_eq!(fused.layout, layout, "{what}: layout");
        assert_same_rollout(&what, &layered, &fused);
    }
}

/// The kernel against its CPU reference over a short rollout (f32 kernel,
/// f64 forward: trajectories agree until an action's draw lands within
/// float rounding of a CDF boundary, which these seeds avoid).
#[test]
fn fused_rollout_matches_cpu_reference() {
    let _serial = serial();
    let Some(ctx) = ctx() else { return };
    for layout in [FusedLayout::PerEnv, FusedLayout::Lanes { envs: 2 }] {
        matches_cpu_reference(ctx, layout);
    }
}

fn matches_cpu_reference(ctx: &GpuContext, layout: FusedLayout) {
    let (p, n, t) = (2, 5, 12);
    let rows = p * n;
    let spec = ActorCriticSpec::new(OBS_DIM, 2, &[8, 8]).unwrap();
    let settings = settings(p, n, t);
    let params = random_vec(21, p * spec.param_count(), -0.6, 0.6);
    let config = CartPoleConfig {
        max_episode_steps: 7,
        ..CartPoleConfig::new(p, n)
    };
    let physics = physics(rows);
    let mut gpu = PpoGpu::new(ctx, &spec, &settings).unwrap();
    gpu.set_params(ctx, &params).unwrap();
    gpu.set_rollout_path(RolloutPath::Fused);
    gpu.set_fused_layout(Some(layout));
    let mut env = GpuCartPole::with_physics(ctx, config.clone(), &physics, t).unwrap();
    env.reset(ctx, 5).unwrap();
    let mut states = env.read_states(ctx).unwrap();
    let b = gpu.rollout_buffers();
    for buffer in [&b.obs, &b.records, &b.final_values] {
        buffer.write(ctx, &vec![f32::NAN; buffer.len()]).unwrap();
    }
    let (seed, iteration) = (99, 7);
    let stats = gpu.rollout_gpu(ctx, &mut env, seed, iteration).unwrap();
    assert_eq!(stats.fused_layout, Some(layout));

    let physics32: Vec<CartPolePhysics32> = physics.iter().map(CartPolePhysics32::new).collect();
    let cpu = fused_rollout_cpu(
        &spec,
        n,
        t,
        &params,
        &physics32,
        &CartPoleLimits32::new(&config, 5),
        &mut states,
        SampleKey {
            seed,
            iteration,
            step: 0,
        },
    );
    assert!(cpu.min_margin > 1e-5, "margin {}", cpu.min_margin);
    let device = gpu.read_records(ctx).unwrap();
    assert_eq!(
        column(&cpu.records, record::ACTION),
        column(&device, record::ACTION),
        "actions"
    );
    assert_eq!(cpu.flags, gpu.read_flags(ctx).unwrap(), "flags");
    assert_eq!(cpu.rewards, gpu.read_rewards(ctx).unwrap(), "rewards");
    assert_eq!(cpu.episodes, env.read_episodes(ctx).unwrap(), "episodes");
    for (name, field) in [("log-prob", record::LOGPROB), ("value", record::VALUE)] {
        assert_close(
            name,
            &to_f64(&column(&cpu.records, field)),
            &column(&device, field),
            1e-5,
            1e-4,
        );
    }
    assert_close(
        "obs",
        &to_f64(&cpu.obs),
        &gpu.read_rollout_obs(ctx).unwrap(),
        1e-5,
        1e-4,
    );
    let bootstrapped: Vec<usize> = (0..cpu.flags.len())
        .filter(|&i| cpu.flags[i] == TRUNCATED)
        .collect();
    assert!(!bootstrapped.is_empty(), "no truncation in the rollout");
    let device_final = gpu.read_final_values(ctx).unwrap();
    assert_close(
        "V(final obs)",
        &bootstrapped
            .iter()
            .map(|&i| cpu.final_values[i] as f64)
            .collect::<Vec<_>>(),
        &bootstrapped
            .iter()
            .map(|&i| device_final[i])
            .collect::<Vec<_>>(),
        1e-5,
        1e-4,
    );
    let device_states = env.read_states(ctx).unwrap();
    let floats = |s: &[CartPoleState32]| -> Vec<f32> {
        s.iter()
            .flat_map(|s| {
                let mut v = s.observation().to_vec();
                v.extend([s.episode_return, s.elapsed_steps as f32]);
                v
            })
            .collect()
    };
    assert_close(
        "states",
        &to_f64(&floats(&states)),
        &floats(&device_states),
        1e-5,
        1e-4,
    );
}

/// Wide networks fall back to the layered path under Auto, and asking for
/// the fused path there is refused with the reason.
#[test]
fn wide_networks_fall_back_to_the_layered_path() {
    let _serial = serial();
    let Some(ctx) = ctx() else { return };
    let wide = MAX_FUSED_HIDDEN + 1;
    let spec = ActorCriticSpec::new(OBS_DIM, 2, &[wide]).unwrap();
    let settings = settings(1, 2, 4);
    let mut gpu = PpoGpu::new(ctx, &spec, &settings).unwrap();
    assert!(gpu.fused_unsupported(ctx).is_some());
    let mut env = GpuCartPole::new(ctx, CartPoleConfig::new(1, 2), 4).unwrap();
    let stats = gpu.rollout_gpu(ctx, &mut env, 1, 0).unwrap();
    assert!(
        stats.fused_layout.is_none(),
        "Auto took the fused path for hidden {wide}"
    );
    gpu.set_rollout_path(RolloutPath::Fused);
    match gpu.rollout_gpu(ctx, &mut env, 1, 1) {
        Err(Error::InvalidConfig { field, reason, .. }) => {
            assert_eq!(field, "rollout");
            assert!(reason.contains(&wide.to_string()), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let small = ActorCriticSpec::new(OBS_DIM, 2, &[64, 64]).unwrap();
    let gpu = PpoGpu::new(ctx, &small, &settings).unwrap();
    assert!(gpu.fused_unsupported(ctx).is_none());
    // Auto takes the fused path for hidden layers with few envs (the lanes
    // layout) everywhere, and with many only on hardware adapters: llvmpipe
    // spends 8-22 s compiling one env per invocation (see `auto_picks_fused`).
    assert!(gpu.uses_fused_rollout(ctx).unwrap());
    assert!(matches!(
        gpu.fused_layout(ctx),
        FusedLayout::Lanes { envs: 1 }
    ));
    // Many envs: the lanes layout stays where an agent's weights fit a
    // uniform block (read without a per-lane loop); where they do not
    // (128-128: 139 KB), one env per invocation takes over.
    let many = LANES_UP_TO_ENVS + 1;
    let big = ActorCriticSpec::new(OBS_DIM, 2, &[128, 128]).unwrap();
    assert!(lanes_uniform_weights(ctx, &small));
    assert!(!lanes_uniform_weights(ctx, &big));
    assert!(matches!(
        FusedLayout::choose(ctx, &small, many),
        FusedLayout::Lanes { envs: 4 }
    ));
    assert!(matches!(
        FusedLayout::choose(ctx, &big, LANES_UP_TO_ENVS),
        FusedLayout::Lanes { envs: 4 }
    ));
    let population = UpdateSettings {
        num_agents: 2,
        envs_per_agent: many,
        ..settings
    };
    let gpu = PpoGpu::new(ctx, &big, &population).unwrap();
    assert_eq!(gpu.fused_layout(ctx), FusedLayout::PerEnv);
    assert_eq!(
        gpu.uses_fused_rollout(ctx).unwrap(),
        !ctx.adapter.is_software
    );
    assert_eq!(auto_picks_fused(ctx, &big, many), !ctx.adapter.is_software);
    let linear = ActorCriticSpec::new(OBS_DIM, 2, &[]).unwrap();
    assert!(auto_picks_fused(ctx, &linear, 512));
    // A lanes layout that does not fit workgroup memory is refused, naming it.
    let mut gpu = PpoGpu::new(ctx, &spec_256(), &settings).unwrap();
    gpu.set_rollout_path(RolloutPath::Fused);
    gpu.set_fused_layout(Some(FusedLayout::Lanes { envs: 8 }));
    let bytes = lanes_workgroup_bytes(&spec_256(), 8);
    let limit = ctx.limits.max_compute_workgroup_storage_size as usize;
    assert!(bytes > limit, "{bytes} bytes fit {limit}");
    match gpu.rollout_gpu(ctx, &mut env, 1, 2) {
        Err(Error::InvalidConfig { field, reason, .. }) => {
            assert_eq!(field, "fused layout");
            assert!(reason.contains(&limit.to_string()), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn spec_256() -> ActorCriticSpec {
    ActorCriticSpec::new(OBS_DIM, 2, &[256, 256]).unwrap()
}

/// The generated source names the network's sizes and nothing else changes
/// between two shapes but the forward functions.
#[test]
fn generated_source_follows_the_network() {
    let linear = ActorCriticSpec::new(OBS_DIM, 2, &[]).unwrap();
    let deep = ActorCriticSpec::new(OBS_DIM, 3, &[64, 100]).unwrap();
    let (a, per_step_linear) = fused_rollout_source(&linear);
    let (b, per_step_deep) = fused_rollout_source(&deep);
    assert!(a.contains("const NUM_ACTIONS: u32 = 2u;"));
    assert!(b.contains("const NUM_ACTIONS: u32 = 3u;"));
    assert!(b.contains("array<f32, 100>"), "second hidden layer");
    assert!(per_step_deep > 10 * per_step_linear);
    let (lanes, per_step_lanes) = lanes_rollout_source(&deep, 4, false);
    assert!(lanes.contains("const LANES_E: u32 = 4u;"));
    assert!(lanes.contains("var<workgroup> act_a0: array<f32, 400>;"));
    assert!(per_step_lanes < per_step_deep, "lanes loop less per lane");
}

/// What a host-env rollout and the update after it leave.
struct HostOutputs {
    records: Vec<f32>,
    obs: Vec<f32>,
    final_values: Vec<f32>,
    next_obs: Vec<f32>,
    value_loss: Vec<f64>,
    episodes: usize,
}

/// One rollout on host CartPoles (f64, Gymnasium's), then an update.
fn run_host(
    ctx: &GpuContext,
    spec: &ActorCriticSpec,
    settings: &UpdateSettings,
    params: &[f32],
    max_episode_steps: u32,
    path: RolloutPath,
) -> HostOutputs {
    let rows = settings.num_agents * settings.envs_per_agent;
    let mut gpu = PpoGpu::new(ctx, spec, settings).unwrap();
    gpu.set_params(ctx, params).unwrap();
    gpu.set_rollout_path(path);
    assert_eq!(
        gpu.uses_fused_policy_step(ctx).unwrap(),
        path == RolloutPath::Fused
    );
    let b = gpu.rollout_buffers();
    for buffer in [&b.obs, &b.records, &b.final_values] {
        buffer.write(ctx, &vec![f32::NAN; buffer.len()]).unwrap();
    }
    let config = CartPoleConfig {
        max_episode_steps,
        ..CartPoleConfig::new(settings.num_agents, settings.envs_per_agent)
    };
    let mut env = CartPole::new(config).unwrap();
    let mut obs = vec![0.0; rows * OBS_DIM];
    env.reset(31, &mut obs).unwrap();
    let mut out = StepOut::new(rows, OBS_DIM);
    let mut finished = Vec::new();
    let seed = 555;
    gpu.rollout_host(ctx, &mut env, &mut obs, &mut out, seed, 3, &mut finished)
        .unwrap();
    let records = gpu.read_records(ctx).unwrap();
    let rollout_obs = gpu.read_rollout_obs(ctx).unwrap();
    let stats = gpu
        .update(ctx, Some(&obs), &permutations(seed, 3, settings))
        .unwrap();
    HostOutputs {
        records,
        obs: rollout_obs,
        final_values: gpu.read_final_values(ctx).unwrap(),
        next_obs: obs,
        value_loss: stats.iter().map(|s| s.value_loss).collect(),
        episodes: finished.len(),
    }
}

/// The one-dispatch host step (`policy_lanes.wgsl`) against the layered
/// step on the same host envs: the same actions, so the same trajectories;
/// log-probs, values, observations, truncation bootstraps and the update
/// after it within float rounding; for CleanRL's network, odd widths with
/// partial workgroups and the linear policy, one agent (uniform weights)
/// and populations (storage).
#[test]
fn fused_host_step_equals_layered_step() {
    let _serial = serial();
    let Some(ctx) = ctx() else { return };
    for (hidden, p, n, t, max_steps) in [
        (&[64usize, 64][..], 1, 4, 128, 12),
        (&[20, 7][..], 3, 5, 64, 10),
        (&[][..], 2, 9, 64, 10),
    ] {
        let spec = ActorCriticSpec::new(OBS_DIM, 2, hidden).unwrap();
        let settings = settings(p, n, t);
        let params = random_vec(17, p * spec.param_count(), -0.4, 0.4);
        let layered = run_host(
            ctx,
            &spec,
            &settings,
            &params,
            max_steps,
            RolloutPath::Layered,
        );
        let fused = run_host(
            ctx,
            &spec,
            &settings,
            &params,
            max_steps,
            RolloutPath::Fused,
        );
        let what = format!("host step, hidden {hidden:?}, P {p} × N {n}, T {t}");
        assert_eq!(
            column(&layered.records, record::ACTION),
            column(&fused.records, record::ACTION),
            "{what}: actions"
        );
        assert!(layered.episodes > 0, "{what}: no episode ended");
        assert_eq!(layered.episodes, fused.episodes, "{what}: episodes");
        assert_eq!(layered.next_obs, fused.next_obs, "{what}: host env states");
        for (name, field) in [("log-prob", record::LOGPROB), ("value", record::VALUE)] {
            assert_close(
                &format!("{what}: {name}"),
                &to_f64(&column(&layered.records, field)),
                &column(&fused.records, field),
                1e-5,
                1e-5,
            );
        }
        assert_close(
            &format!("{what}: obs"),
            &to_f64(&layered.obs),
            &fused.obs,
            0.0,
            0.0,
        );
        let bootstrapped: Vec<usize> = (0..layered.final_values.len())
            .filter(|&i| !layered.final_values[i].is_nan())
            .collect();
        assert!(!bootstrapped.is_empty(), "{what}: no truncation");
        let pick = |v: &[f32]| -> Vec<f32> { bootstrapped.iter().map(|&i| v[i]).collect() };
        assert_close(
            &format!("{what}: V(final obs)"),
            &to_f64(&pick(&layered.final_values)),
            &pick(&fused.final_values),
            1e-5,
            1e-5,
        );
        assert_close(
            &format!("{what}: value loss"),
            &layered.value_loss,
            &fused
                .value_loss
                .iter()
                .map(|&v| v as f32)
                .collect::<Vec<_>>(),
            1e-4,
            1e-4,
        );
    }
}
