//! The test that matters most: from random rollout data (terminations and
//! truncations inside it) and random parameters, the GPU update and the f64
//! CPU reference of CleanRL's update loop (same permutations) end with the
//! same parameters, optimizer state and statistics.

mod common;

use common::{assert_close, ctx, random_vec, to_f64};
use ppo_wgpu::gpu::GpuContext;
use ppo_wgpu::ops::categorical::SampleKey;
use ppo_wgpu::ops::gae::{GaeVariant, TERMINATED, TRUNCATED};
use ppo_wgpu::ops::ppo_loss::{stat, LossCoefs};
use ppo_wgpu::ops::{record, RECORD};
use ppo_wgpu::ppo::reference::{reference_update, ReferenceInputs};
use ppo_wgpu::ppo::{permutations, ActorCriticSpec, PpoGpu, UpdateSettings};
use rand::{Rng, SeedableRng};

fn column(records: &[f32], field: usize) -> Vec<f32> {
    records.chunks(RECORD).map(|r| r[field]).collect()
}

fn settings(num_agents: usize, num_steps: usize, envs: usize) -> UpdateSettings {
    UpdateSettings {
        num_agents,
        num_steps,
        envs_per_agent: envs,
        num_minibatches: 4,
        update_epochs: 4,
        gamma: 0.99,
        gae_lambda: 0.95,
        norm_adv: true,
        coefs: LossCoefs {
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

/// A rollout of random observations through the GPU policy, with random
/// rewards, terminations and truncations, then one GPU update and the
/// reference update from the same data; returns the number of truncations.
fn check_update(ctx: &GpuContext, hidden: &[usize], settings: &UpdateSettings, seed: u64) -> usize {
    let spec = ActorCriticSpec::new(4, 2, hidden).unwrap();
    let mut gpu = PpoGpu::new(ctx, &spec, settings).unwrap();
    let (p_count, t_count, n) = (
        settings.num_agents,
        settings.num_steps,
        settings.envs_per_agent,
    );
    let rows = p_count * n;
    let k = spec.param_count();
    let params = random_vec(seed, p_count * k, -0.3, 0.3);
    gpu.set_params(ctx, &params).unwrap();
    let learning_rates: Vec<f64> = (0..p_count).map(|p| 2.5e-4 * (1.0 + p as f64)).collect();
    gpu.set_learning_rates(&learning_rates).unwrap();

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
        assert!(actions.iter().all(|&a| a < 2));
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
    let perm = permutations(seed, 1, settings);
    let records_before = gpu.read_records(ctx).unwrap();
    let stats = gpu.update(ctx, Some(&next_obs), &perm).unwrap();

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
        "hidden {hidden:?} P={p_count} T={t_count} N={n} gae {:?}",
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

#[test]
fn gpu_update_matches_cpu_reference_64_64_tanh() {
    let Some(ctx) = ctx() else { return };
    for p in [1, 4] {
        let truncations = check_update(ctx, &[64, 64], &settings(p, 32, 4), 11 + p as u64);
        assert!(truncations > 0, "the data must contain truncations");
    }
}

#[test]
fn gpu_update_matches_cpu_reference_plain_linear() {
    let Some(ctx) = ctx() else { return };
    for p in [1, 4] {
        check_update(ctx, &[], &settings(p, 32, 4), 21 + p as u64);
    }
}

#[test]
fn gpu_update_matches_reference_without_clipping_or_normalization() {
    let Some(ctx) = ctx() else { return };
    let mut s = settings(2, 16, 8);
    s.norm_adv = false;
    s.coefs.clip_vloss = false;
    s.coefs.ent_coef = 0.0;
    s.max_grad_norm = 1e9;
    s.num_minibatches = 1;
    s.update_epochs = 5;
    check_update(ctx, &[8], &s, 31);
}

#[test]
fn target_kl_stops_agents_like_cleanrl() {
    let Some(ctx) = ctx() else { return };
    let mut s = settings(4, 32, 4);
    // Small enough that some agents stop after an epoch; the step counts per
    // agent are compared with the reference.
    s.target_kl = Some(2e-4);
    check_update(ctx, &[16], &s, 41);
}

#[test]
fn long_horizon_uses_the_scan_gae_and_matches() {
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
    check_update(ctx, &[], &s, 51);
}

#[test]
fn bad_sizes_are_refused_before_any_dispatch() {
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
