//! The test that matters most: from random rollout data (terminations and
//! truncations inside it) and random parameters, the GPU update and the f64
//! CPU reference of CleanRL's update loop (same permutations) end with the
//! same parameters, optimizer state and statistics.

mod common;

use common::{assert_close, ctx, random_vec, to_f64};
use ppo_wgpu::gpu::GpuContext;
use ppo_wgpu::ops::categorical::SampleKey;
use ppo_wgpu::ops::gae::{GaeVariant, TERMINATED, TRUNCATED};
use ppo_wgpu::ops::linear::{Activation, LinearSpec, RegisterBlock};
use ppo_wgpu::ops::ppo_loss::stat;
use ppo_wgpu::ops::{record, RECORD};
use ppo_wgpu::ppo::fused_update::fused_update_support;
use ppo_wgpu::ppo::fused_update::RowPass;
use ppo_wgpu::ppo::reference::{reference_update, ReferenceInputs};
use ppo_wgpu::ppo::{permutations, ActorCriticSpec, PpoGpu, UpdatePath, UpdateSettings};
use rand::{Rng, SeedableRng};

fn column(records: &[f32], field: usize) -> Vec<f32> {
    records.chunks(RECORD).map(|r| r[field]).collect()
}

fn settings(num_agents: usize, num_steps: usize, envs: usize) -> UpdateSettings {
    common::cleanrl_settings(num_agents, num_steps, envs)
}

/// What [`random_rollout`] fed the GPU.
struct Rollout {
    obs: Vec<f32>,
    rewards: Vec<f32>,
    flags: Vec<u32>,
    final_obs: Vec<f32>,
    next_obs: Vec<f32>,
    truncations: usize,
}

/// Random observations through the GPU policy (its sampled actions
/// recorded), random rewards, terminations and truncations.
fn random_rollout(
    ctx: &GpuContext,
    gpu: &mut PpoGpu,
    settings: &UpdateSettings,
    seed: u64,
) -> Rollout {
    let (t_count, rows) = (
        settings.num_steps,
        settings.num_agents * settings.envs_per_agent,
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed + 1);
    let (mut obs_all, mut rewards, mut flags, mut final_all) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut truncations = 0;
    for t in 0..t_count {
        let obs = random_vec(seed + 10 + t as u64, rows * 4, -1.5, 1.5);
        let key = SampleKey {
            seed,
            iteration: 1,
            step: t as u32,
        };
        let actions = gpu.rollout_step(ctx, t, &obs, key).unwrap();
        assert!(actions
            .iter()
            .all(|&a| (a as usize) < gpu.spec().num_actions));
        let reward: Vec<f32> = (0..rows).map(|_| rng.random_range(-1.0..1.5)).collect();
        let terminated: Vec<u8> = (0..rows).map(|_| rng.random_bool(0.08) as u8).collect();
        let truncated: Vec<u8> = (0..rows).map(|_| rng.random_bool(0.05) as u8).collect();
        let final_obs = random_vec(seed + 5000 + t as u64, rows * 4, -1.5, 1.5);
        gpu.record_env_step(ctx, t, &reward, &terminated, &truncated, &final_obs)
            .unwrap();
        truncations += truncated
            .iter()
            .zip(&terminated)
            .filter(|(&tr, &te)| tr == 1 && te == 0)
            .count();
        obs_all.extend(obs);
        rewards.extend(reward);
        flags.extend(
            terminated
                .iter()
                .zip(&truncated)
                .map(|(&te, &tr)| te as u32 * TERMINATED + tr as u32 * TRUNCATED),
        );
        final_all.extend(final_obs);
    }
    let next_obs = random_vec(seed + 9999, rows * 4, -1.5, 1.5);
    Rollout {
        obs: obs_all,
        rewards,
        flags,
        final_obs: final_all,
        next_obs,
        truncations,
    }
}

/// The fused step's kernel takes llvmpipe seconds to compile on first use,
/// holding wgpu's GL context lock longer than another thread of this binary
/// waits for it (6 s): one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Both minibatch steps: the layered one, and the fused one with the
/// gradients poisoned first (a parameter it missed would turn NaN).
const PATHS: [UpdatePath; 2] = [UpdatePath::Layered, UpdatePath::Fused];

/// A rollout of random observations through the GPU policy, with random
/// rewards, terminations and truncations, then one GPU update along `path`
/// and the reference update from the same data; returns the number of
/// truncations.
fn check_update(
    ctx: &GpuContext,
    hidden: &[usize],
    settings: &UpdateSettings,
    seed: u64,
    path: UpdatePath,
) -> usize {
    let spec = ActorCriticSpec::new(4, 2, hidden).unwrap();
    let mut gpu = PpoGpu::new(ctx, &spec, settings).unwrap();
    gpu.set_update_path(path);
    assert_eq!(
        gpu.uses_fused_update(ctx).unwrap(),
        path == UpdatePath::Fused
    );
    if path == UpdatePath::Fused {
        gpu.grads().poison(ctx).unwrap();
    }
    let (p_count, t_count, n) = (
        settings.num_agents,
        settings.num_steps,
        settings.envs_per_agent,
    );
    let k = spec.param_count();
    let params = random_vec(seed, p_count * k, -0.3, 0.3);
    gpu.set_params(ctx, &params).unwrap();
    let learning_rates: Vec<f64> = (0..p_count).map(|p| 2.5e-4 * (1.0 + p as f64)).collect();
    gpu.set_learning_rates(&learning_rates).unwrap();

    let Rollout {
        obs: obs_all,
        rewards,
        flags,
        final_obs: final_all,
        next_obs,
        truncations,
    } = random_rollout(ctx, &mut gpu, settings, seed);
    let perm = permutations(seed, 1, settings);
    let records_before = gpu.read_records(ctx).unwrap();
    let stats = gpu.update(ctx, Some(&next_obs), &perm).unwrap();
    if path == UpdatePath::Fused && hidden.is_empty() {
        // The linear network's whole update (bootstrap, GAE, explained
        // variance, every minibatch step) in one dispatch; a few more on
        // llvmpipe, whose loops are capped.
        let dispatches = gpu.update_dispatch_count();
        assert!(
            (1..=5).contains(&dispatches),
            "{}: {dispatches} dispatches",
            gpu.update_path_description(ctx)
        );
    }

    let zeros = vec![0.0; p_count * k];
    let reference = reference_update(&ReferenceInputs {
        spec: &spec,
        settings,
        params: &to_f64(&params),
        adam_m: &zeros,
        adam_v: &zeros,
        adam_steps: &vec![0; p_count],
        learning_rates: &learning_rates,
        obs: &to_f64(&obs_all),
        records: &to_f64(&records_before),
        rewards: &to_f64(&rewards),
        flags: &flags,
        final_obs: &to_f64(&final_all),
        next_obs: &to_f64(&next_obs),
        perm: &perm,
    });

    let what = format!(
        "{path:?} update, hidden {hidden:?} P={p_count} T={t_count} N={n} gae {:?}",
        gpu.gae_variant()
    );
    let records_after = gpu.read_records(ctx).unwrap();
    let value_scale = 1e-5;
    assert_close(
        &format!("{what}: advantages"),
        &reference.advantages,
        &column(&records_after, record::ADVANTAGE),
        value_scale,
        1e-4,
    );
    assert_close(
        &format!("{what}: returns"),
        &reference.returns,
        &column(&records_after, record::RETURN),
        value_scale,
        1e-4,
    );

    // The first minibatch of the first epoch evaluates the policy that
    // collected the data with the same kernels: the ratio is exactly 1.
    for (p, s) in stats.iter().enumerate() {
        let first = s.history[0];
        assert_eq!(
            first[stat::OLD_APPROX_KL],
            0.0,
            "{what}: agent {p} first-minibatch logratio"
        );
        assert_eq!(
            first[stat::APPROX_KL],
            0.0,
            "{what}: agent {p} first-minibatch approx_kl"
        );
        assert_eq!(
            first[stat::CLIPFRAC],
            0.0,
            "{what}: agent {p} first-minibatch clipfrac"
        );
    }

    let (m, v, steps) = gpu.read_optimizer(ctx).unwrap();
    assert_eq!(steps, reference.adam_steps, "{what}: Adam step counts");
    let got_params = gpu.read_params(ctx).unwrap();
    assert_close(
        &format!("{what}: params"),
        &reference.params,
        &got_params,
        2e-6,
        1e-4,
    );
    assert_close(
        &format!("{what}: adam m"),
        &reference.adam_m,
        &m,
        1e-6,
        1e-3,
    );
    assert_close(
        &format!("{what}: adam v"),
        &reference.adam_v,
        &v,
        1e-9,
        1e-3,
    );

    for (p, (got, want)) in stats.iter().zip(&reference.stats).enumerate() {
        assert_eq!(
            got.minibatch_updates, want.minibatch_updates,
            "{what}: agent {p} minibatch steps"
        );
        let pairs = [
            ("policy_loss", got.policy_loss, want.policy_loss),
            ("value_loss", got.value_loss, want.value_loss),
            ("entropy", got.entropy, want.entropy),
            ("old_approx_kl", got.old_approx_kl, want.old_approx_kl),
            ("approx_kl", got.approx_kl, want.approx_kl),
            (
                "explained_variance",
                got.explained_variance,
                want.explained_variance,
            ),
        ];
        for (name, g, w) in pairs {
            assert!(
                (g - w).abs() <= 1e-5 + 1e-4 * w.abs(),
                "{what}: agent {p} {name}: gpu {g:e} reference {w:e}"
            );
        }
        // clipfrac counts rows whose ratio lies outside the clip range: a ratio
        // within float rounding of the boundary may count on one side only.
        let minibatch = settings.minibatch_size() as f64;
        assert!(
            (got.clipfrac - want.clipfrac).abs() <= 1.0 / minibatch + 1e-9,
            "{what}: agent {p} clipfrac gpu {} reference {}",
            got.clipfrac,
            want.clipfrac
        );
        eprintln!(
            "{what}: agent {p} pg {:.6} v {:.6} ent {:.6} kl {:.3e} clipfrac {:.4} ev {:.4} steps {}",
            got.policy_loss, got.value_loss, got.entropy, got.approx_kl, got.clipfrac, got.explained_variance, got.minibatch_updates
        );
    }
    truncations
}

/// A population large enough that the layered kernels take 8×8 register
/// blocks on software adapters (8 agents × 128 rows: 1024 minibatch rows
/// in all), against the f64 reference. (At 128 steps, or 32 agents, whose
/// learning rates reach 8e-3 here, f32 drift exceeds the tolerance in
/// either block alike.)
#[test]
fn layered_update_in_8x8_blocks_matches_cpu_reference() {
    let _serial = serial();
    let Some(ctx) = ctx() else { return };
    let s = settings(8, 32, 16);
    let rows = s.num_agents * s.minibatch_size();
    let layer = LinearSpec {
        num_agents: s.num_agents,
        rows_per_agent: s.minibatch_size(),
        in_dim: 64,
        out_dim: 64,
        param_stride: 64 * 65,
        w_offset: 0,
        b_offset: 64 * 64,
        activation: Activation::Tanh,
    };
    assert_eq!(rows, 1024);
    if ctx.adapter.is_software {
        assert_eq!(RegisterBlock::choose(ctx, &layer), RegisterBlock::B8x8);
    }
    let truncations = check_update(ctx, &[64, 64], &s, 17, UpdatePath::Layered);
    assert!(truncations > 0, "the data must contain truncations");
}

#[test]
fn gpu_update_matches_cpu_reference_64_64_tanh() {
    let _serial = serial();
    let Some(ctx) = ctx() else { return };
    for path in PATHS {
        for p in [1, 4] {
            let truncations =
                check_update(ctx, &[64, 64], &settings(p, 32, 4), 11 + p as u64, path);
            assert!(truncations > 0, "the data must contain truncations");
        }
    }
}

#[test]
fn gpu_update_matches_cpu_reference_plain_linear() {
    let _serial = serial();
    let Some(ctx) = ctx() else { return };
    for path in PATHS {
        for p in [1, 4] {
            check_update(ctx, &[], &settings(p, 32, 4), 21 + p as u64, path);
        }
    }
}

#[test]
fn gpu_update_matches_reference_without_clipping_or_normalization() {
    let _serial = serial();
    let Some(ctx) = ctx() else { return };
    let mut s = settings(2, 16, 8);
    s.norm_adv = false;
    s.coefs.clip_vloss = false;
    s.coefs.ent_coef = 0.0;
    s.max_grad_norm = 1e9;
    s.num_minibatches = 1;
    s.update_epochs = 5;
    for path in PATHS {
        for hidden in [&[8][..], &[]] {
            check_update(ctx, hidden, &s, 31, path);
        }
    }
}

#[test]
fn target_kl_stops_agents_like_cleanrl() {
    let _serial = serial();
    let Some(ctx) = ctx() else { return };
    let mut s = settings(4, 32, 4);
    // Small enough that some agents stop after an epoch; the step counts per
    // agent are compared with the reference.
    s.target_kl = Some(2e-4);
    for path in PATHS {
        for hidden in [&[16][..], &[]] {
            check_update(ctx, hidden, &s, 41, path);
        }
    }
}

#[test]
fn long_horizon_uses_the_scan_gae_and_matches() {
    let _serial = serial();
    let Some(ctx) = ctx() else { return };
    let s = UpdateSettings {
        num_minibatches: 2,
        update_epochs: 1,
        ..settings(1, 300, 2)
    };
    let spec = ActorCriticSpec::new(4, 2, &[]).unwrap();
    assert_eq!(
        PpoGpu::new(ctx, &spec, &s).unwrap().gae_variant(),
        GaeVariant::Scan
    );
    check_update(ctx, &[], &s, 51, UpdatePath::Layered);
}

#[test]
fn bad_sizes_are_refused_before_any_dispatch() {
    let _serial = serial();
    let Some(ctx) = ctx() else { return };
    let spec = ActorCriticSpec::new(4, 2, &[64, 64]).unwrap();
    let mut s = settings(1, 128, 4);
    s.num_minibatches = 3;
    let err = PpoGpu::new(ctx, &spec, &s).unwrap_err().to_string();
    assert!(
        err.contains("num_minibatches") && err.contains("512"),
        "{err}"
    );

    let gpu_settings = settings(2, 8, 4);
    let mut gpu = PpoGpu::new(ctx, &spec, &gpu_settings).unwrap();
    let err = gpu
        .set_params(ctx, &vec![0.0; spec.param_count()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("params") && err.contains(&(2 * spec.param_count()).to_string()),
        "{err}"
    );
    let err = gpu
        .rollout_step(
            ctx,
            0,
            &[0.0; 5],
            SampleKey {
                seed: 0,
                iteration: 0,
                step: 0,
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("obs") && err.contains("32"), "{err}");
    let err = gpu
        .update(ctx, Some(&[0.0; 32]), &[99; 4 * 2 * 32])
        .unwrap_err()
        .to_string();
    assert!(err.contains("perm"), "{err}");
}

/// A PpoGpu of `spec` along `path`, its parameters seeded, after a random
/// rollout; returns it with the next observations and the permutations.
fn prepared(
    ctx: &GpuContext,
    spec: &ActorCriticSpec,
    settings: &UpdateSettings,
    seed: u64,
    path: UpdatePath,
) -> (PpoGpu, Vec<f32>, Vec<u32>) {
    prepared_with(ctx, spec, settings, seed, path, RowPass::Auto)
}

/// [`prepared`] with the fused row pass's layout.
fn prepared_with(
    ctx: &GpuContext,
    spec: &ActorCriticSpec,
    settings: &UpdateSettings,
    seed: u64,
    path: UpdatePath,
    row_pass: RowPass,
) -> (PpoGpu, Vec<f32>, Vec<u32>) {
    let mut gpu = PpoGpu::new(ctx, spec, settings).unwrap();
    gpu.set_update_path(path);
    gpu.set_row_pass(row_pass);
    let p_count = settings.num_agents;
    gpu.set_params(
        ctx,
        &random_vec(seed, p_count * spec.param_count(), -0.3, 0.3),
    )
    .unwrap();
    gpu.set_learning_rates(&vec![1e-3; p_count]).unwrap();
    gpu.grads().poison(ctx).unwrap();
    let rollout = random_rollout(ctx, &mut gpu, settings, seed);
    let perm = permutations(seed, 1, settings);
    (gpu, rollout.next_obs, perm)
}

/// The fused step against the layered kernels it replaces, at sizes that
/// leave partial workgroups and partial lanes everywhere: 3 hidden layers of
/// odd widths (one wider than a workgroup), 3 actions, 3 agents, 39 rows per
/// minibatch. The gradients of the same minibatch, then the parameters after
/// two epochs of updates.
#[test]
fn fused_step_equals_the_layered_kernels_at_odd_sizes() {
    let _serial = serial();
    let Some(ctx) = ctx() else { return };
    let spec = ActorCriticSpec::new(4, 3, &[20, 37, 5]).unwrap();
    let s = UpdateSettings {
        num_minibatches: 1,
        update_epochs: 2,
        ..settings(3, 13, 3)
    };
    assert_eq!(s.minibatch_size(), 39);
    let mut grads = Vec::new();
    let mut params = Vec::new();
    for path in PATHS {
        let (mut gpu, next_obs, perm) = prepared(ctx, &spec, &s, 71, path);
        gpu.gradient(ctx, Some(&next_obs), &perm).unwrap();
        grads.push(gpu.grads().read(ctx).unwrap());
        let (mut gpu, next_obs, perm) = prepared(ctx, &spec, &s, 71, path);
        gpu.update(ctx, Some(&next_obs), &perm).unwrap();
        params.push(gpu.read_params(ctx).unwrap());
    }
    let layered = to_f64(&grads[0]);
    let scale = layered.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    assert!(scale > 1e-4, "the gradients must not vanish: {scale:e}");
    assert_close(
        "fused vs layered gradients",
        &layered,
        &grads[1],
        1e-5 * scale,
        1e-4,
    );
    assert_close(
        "fused vs layered params after 2 epochs",
        &to_f64(&params[0]),
        &params[1],
        1e-6,
        1e-4,
    );
}

/// Both layouts of the fused row pass against the layered kernels at odd
/// sizes: one agent (weights from a uniform block, rows starting at every
/// offset modulo 4, layers of widths that are and are not multiples of 4,
/// one wider than the backward's chunks) and three agents (weights from
/// storage), 39 rows per minibatch (a partial block of rows and a partial
/// workgroup). The gradients of one minibatch, then the parameters after
/// two epochs.
#[test]
fn row_pass_layouts_equal_the_layered_kernels_at_odd_sizes() {
    let _serial = serial();
    let Some(ctx) = ctx() else { return };
    let spec = ActorCriticSpec::new(4, 3, &[20, 37, 5]).unwrap();
    for agents in [1, 3] {
        let s = UpdateSettings {
            num_minibatches: 1,
            update_epochs: 2,
            ..settings(agents, 13, 3)
        };
        let run = |path: UpdatePath, row_pass: RowPass| {
            let (mut gpu, next_obs, perm) = prepared_with(ctx, &spec, &s, 73, path, row_pass);
            gpu.gradient(ctx, Some(&next_obs), &perm).unwrap();
            let grads = gpu.grads().read(ctx).unwrap();
            let name = gpu.update_name(ctx);
            let (mut gpu, next_obs, perm) = prepared_with(ctx, &spec, &s, 73, path, row_pass);
            gpu.update(ctx, Some(&next_obs), &perm).unwrap();
            (grads, gpu.read_params(ctx).unwrap(), name)
        };
        let (grads, params, name) = run(UpdatePath::Layered, RowPass::Auto);
        assert_eq!(name, "layered");
        let layered = to_f64(&grads);
        let scale = layered.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        assert!(scale > 1e-4, "the gradients must not vanish: {scale:e}");
        for (row_pass, want) in [
            (RowPass::Rows, "fused, rows"),
            (RowPass::Lanes, "fused, lanes"),
        ] {
            let (fused_grads, fused_params, name) = run(UpdatePath::Fused, row_pass);
            assert_eq!(name, want, "{agents} agents");
            let what = format!("{want} vs layered, {agents} agents");
            assert_close(
                &format!("{what}: gradients"),
                &layered,
                &fused_grads,
                1e-5 * scale,
                1e-4,
            );
            assert_close(
                &format!("{what}: params after 2 epochs"),
                &to_f64(&params),
                &fused_params,
                1e-6,
                1e-4,
            );
        }
    }
}

/// CleanRL's CartPole sizes (64-64, 4 envs × 128 steps, 128-row minibatches)
/// along the fused step, against the f64 reference.
#[test]
fn fused_update_matches_the_reference_at_cleanrl_size() {
    let _serial = serial();
    let Some(ctx) = ctx() else { return };
    check_update(ctx, &[64, 64], &settings(1, 128, 4), 81, UpdatePath::Fused);
    // The target: at most 64 dispatches for CleanRL's whole update
    // (bootstrap, GAE and 16 minibatch steps), in one submission.
    let spec = ActorCriticSpec::new(4, 2, &[64, 64]).unwrap();
    let (mut gpu, next_obs, perm) =
        prepared(ctx, &spec, &settings(1, 128, 4), 82, UpdatePath::Fused);
    let before = ctx.submissions();
    gpu.update(ctx, Some(&next_obs), &perm).unwrap();
    assert_eq!(
        ctx.submissions() - before,
        1,
        "the update is one submission"
    );
    let dispatches = gpu.update_dispatch_count();
    assert!(
        dispatches <= 64,
        "{dispatches} dispatches per CleanRL update"
    );
}

/// Same inputs, same bits: the fused step's sums run in a fixed order.
#[test]
fn fused_update_is_bitwise_repeatable() {
    let _serial = serial();
    let Some(ctx) = ctx() else { return };
    let spec = ActorCriticSpec::new(4, 2, &[64, 64]).unwrap();
    let s = settings(2, 16, 8);
    let runs: Vec<(Vec<f32>, Vec<f64>)> = (0..2)
        .map(|_| {
            let (mut gpu, next_obs, perm) = prepared(ctx, &spec, &s, 91, UpdatePath::Fused);
            let stats = gpu.update(ctx, Some(&next_obs), &perm).unwrap();
            let history = stats.iter().flat_map(|a| a.history.concat()).collect();
            (gpu.read_params(ctx).unwrap(), history)
        })
        .collect();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&runs[0].0),
        bits(&runs[1].0),
        "params differ between runs"
    );
    assert_eq!(runs[0].1, runs[1].1, "statistics differ between runs");
}

/// What the fused step cannot take is refused naming the config key, and
/// the automatic choice keeps the layered step.
#[test]
fn fused_update_refusals_name_the_key() {
    let _serial = serial();
    let Some(ctx) = ctx() else { return };
    let wide = ActorCriticSpec::new(4, 2, &[300]).unwrap();
    let mut gpu = PpoGpu::new(ctx, &wide, &settings(1, 8, 4)).unwrap();
    gpu.set_update_path(UpdatePath::Fused);
    let err = gpu.uses_fused_update(ctx).unwrap_err().to_string();
    assert!(err.contains("update") && err.contains("300"), "{err}");
    // auto: layered where the fused update is refused, fused elsewhere.
    gpu.set_update_path(UpdatePath::Auto);
    assert!(!gpu.uses_fused_update(ctx).unwrap());
    let linear = ActorCriticSpec::new(4, 2, &[]).unwrap();
    for (spec, auto) in [
        (&linear, true),
        (&ActorCriticSpec::new(4, 2, &[64, 64]).unwrap(), true),
    ] {
        let mut gpu = PpoGpu::new(ctx, spec, &settings(1, 8, 4)).unwrap();
        assert_eq!(gpu.uses_fused_update(ctx).unwrap(), auto, "{spec:?}");
        gpu.set_update_path(UpdatePath::Layered);
        assert!(!gpu.uses_fused_update(ctx).unwrap());
    }
    // Populations with hidden layers keep the layered step under auto
    // (their rows kernel compiles for ~70 s on llvmpipe); asked for, the
    // fused one runs, by lanes, or by rows where row_pass says so.
    let spec = ActorCriticSpec::new(4, 2, &[64, 64]).unwrap();
    let mut gpu = PpoGpu::new(ctx, &spec, &settings(2, 8, 4)).unwrap();
    assert!(!gpu.uses_fused_update(ctx).unwrap());
    assert_eq!(gpu.update_name(ctx), "layered");
    gpu.set_row_pass(RowPass::Rows);
    assert!(gpu.uses_fused_update(ctx).unwrap());
    assert_eq!(gpu.update_name(ctx), "fused, rows");
    gpu.set_row_pass(RowPass::Auto);
    gpu.set_update_path(UpdatePath::Fused);
    assert!(gpu.uses_fused_update(ctx).unwrap());
    assert_eq!(gpu.update_name(ctx), "fused, lanes");
    // A scratch buffer over the adapter's binding limit is refused, by size.
    let rows = (ctx.max_binding_bytes() / (4 * 4)) as usize + 1;
    let reason = fused_update_support(ctx, &ActorCriticSpec::new(4, 2, &[]).unwrap(), 1, rows)
        .or_else(|| fused_update_support(ctx, &spec, 1, rows))
        .unwrap();
    assert!(
        reason.contains("scratch") || reason.contains("65000"),
        "{reason}"
    );
    let big = fused_update_support(ctx, &spec, 64, 1024);
    let scratch = 64 * 1024 * 519 * 4;
    assert_eq!(
        big.is_some(),
        scratch > ctx.max_binding_bytes().min(ctx.limits.max_buffer_size),
        "{big:?}"
    );

    let spec = ActorCriticSpec::new(4, 2, &[8]).unwrap();
    let big = UpdateSettings {
        num_minibatches: 1,
        update_epochs: 1,
        ..settings(1, 1024, 64)
    };
    let mut gpu = PpoGpu::new(ctx, &spec, &big).unwrap();
    gpu.set_update_path(UpdatePath::Fused);
    let err = gpu.uses_fused_update(ctx).unwrap_err().to_string();
    assert!(err.contains("update") && err.contains("65536"), "{err}");
}

/// The linear network's one-dispatch update at a size where llvmpipe's
/// loop cap splits it (16,384-row batches, 8,192-row minibatches: a few
/// dispatches there, the first with the bootstrap and GAE), against the
/// f64 reference.
#[test]
fn fused_linear_update_matches_the_reference_when_split() {
    let _serial = serial();
    let Some(ctx) = ctx() else { return };
    let s = UpdateSettings {
        num_minibatches: 2,
        ..settings(1, 256, 64)
    };
    check_update(ctx, &[], &s, 101, UpdatePath::Fused);
}
