//! The PPO kernels against their CPU references: categorical head, GAE,
//! minibatch gather, PPO loss, the per-agent statistics and clip + Adam.
//! Seeded random inputs, sizes that hit partial workgroups, outputs poisoned
//! with NaN before the run so an unwritten element fails.

mod common;

use bytemuck::Pod;
use common::{assert_close, ctx, random_vec, to_f64};
use ppo_wgpu::gpu::GpuBuffer;
use ppo_wgpu::ops::categorical::{
    categorical_sample_cpu, log_softmax, CategoricalSample, SampleKey,
};
use ppo_wgpu::ops::gae::{gae_cpu, Gae, GaeInputs, GaeVariant, TERMINATED, TRUNCATED};
use ppo_wgpu::ops::gather::{minibatch_rows_cpu, BatchShape, GatherBuffers, GatherMinibatch};
use ppo_wgpu::ops::optim::{
    adam_cpu, clip_grad_norm_cpu, optimizer_step, AgentState, ClipAdam, OptimBuffers, ADAM_EPS,
};
use ppo_wgpu::ops::ppo_loss::{ppo_loss_cpu, stat, LossBuffers, LossCoefs, PpoLoss, ROW_STATS};
use ppo_wgpu::ops::stats::{
    adv_moments, adv_norm, adv_norm_cpu, explained_variance, explained_variance_cpu,
    row_stats_mean, row_stats_mean_cpu, AdvMomentsBuffers, RowStatsBuffers, HISTORY_STATS,
};
use ppo_wgpu::ops::{record, record_column, RECORD};
use ppo_wgpu::ppo::{permutations, UpdateSettings};
use ppo_wgpu::GpuContext;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const AGENT_COUNTS: &[usize] = &[1, 3];

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn upload<T: Pod>(ctx: &GpuContext, name: &str, data: &[T]) -> GpuBuffer<T> {
    GpuBuffer::from_slice(ctx, name, data).unwrap()
}

fn poisoned(ctx: &GpuContext, name: &str, len: usize) -> GpuBuffer<f32> {
    let buffer = GpuBuffer::<f32>::zeros(ctx, name, len).unwrap();
    buffer.poison(ctx).unwrap();
    buffer
}

/// One field of every record row, as stored.
fn field(records: &[f32], f: usize) -> Vec<f32> {
    records.chunks(RECORD).map(|r| r[f]).collect()
}

/// Bit-for-bit equality (copies and untouched elements), NaN included.
fn assert_bitwise(what: &str, want: &[f32], got: &[f32]) {
    assert_eq!(want.len(), got.len(), "{what}: length");
    let bad: Vec<_> = want
        .iter()
        .zip(got)
        .enumerate()
        .filter(|(_, (w, g))| w.to_bits() != g.to_bits())
        .take(8)
        .map(|(i, (w, g))| format!("  [{i}] want {w:e} got {g:e}"))
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: not bitwise equal:\n{}",
        bad.join("\n")
    );
}

/// Rows of logits in [-3, 3), with every fifth row scaled to [-30, 30), rows
/// holding exact ±30 and rows whose last logit repeats an earlier one (ties).
fn categorical_logits(seed: u64, rows: usize, num_actions: usize) -> Vec<f32> {
    let mut logits = random_vec(seed, rows * num_actions, -3.0, 3.0);
    for (r, row) in logits.chunks_mut(num_actions).enumerate() {
        match r % 5 {
            0 => row.iter_mut().for_each(|l| *l *= 10.0),
            1 => {
                row[r % num_actions] = 30.0;
                row[(r + 1) % num_actions] = -30.0;
            }
            2 => row[num_actions - 1] = row[0].max(row[1]),
            _ => {}
        }
    }
    logits
}

#[test]
fn categorical_sample_matches_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    const BLOCKS: usize = 3;
    const BLOCK: u32 = 1;
    let mut seed = 10;
    let (mut worst_logprob, mut near_ties) = (0.0f64, 0);
    for &num_actions in &[2usize, 3, 5] {
        for &rows in &[1usize, 63, 64, 65, 1000] {
            for key in [
                Some(SampleKey {
                    seed: 0x1234_5678_9abc_def0 + seed,
                    iteration: 7,
                    step: seed as u32,
                }),
                None,
            ] {
                seed += 1;
                let logits = categorical_logits(seed, rows, num_actions);
                let values = random_vec(seed + 1000, rows, -5.0, 5.0);
                let logits_gpu = upload(ctx, "logits", &logits);
                let values_gpu = upload(ctx, "values", &values);
                let records_gpu = poisoned(ctx, "records", BLOCKS * rows * RECORD);
                let actions_gpu = upload(ctx, "actions", &vec![u32::MAX; rows]);
                let mut plan = CategoricalSample::new(
                    ctx,
                    num_actions,
                    &logits_gpu,
                    &values_gpu,
                    &records_gpu,
                    &actions_gpu,
                )
                .unwrap();
                plan.set_step(ctx, key, BLOCK);
                ctx.run("categorical", &[plan.dispatch()]);
                let records = records_gpu.read(ctx).unwrap();
                let actions = actions_gpu.read(ctx).unwrap();

                let what = format!(
                    "categorical A={num_actions} rows={rows} {}",
                    if key.is_some() { "sampled" } else { "greedy" }
                );
                let logits64 = to_f64(&logits);
                let want = categorical_sample_cpu(&logits64, num_actions, key);
                let block = BLOCK as usize * rows * RECORD..(BLOCK as usize + 1) * rows * RECORD;
                assert!(
                    records[..block.start]
                        .iter()
                        .chain(&records[block.end..])
                        .all(|x| x.is_nan()),
                    "{what}: wrote outside record block {BLOCK}"
                );
                let mine = &records[block];
                let mut want_logprob = Vec::with_capacity(rows);
                for (r, (w, rec)) in want.iter().zip(mine.chunks(RECORD)).enumerate() {
                    let got = actions[r];
                    if got != w.action {
                        assert!(
                            w.margin < 1e-5,
                            "{what}: row {r} action {got}, reference {} (margin {:e})",
                            w.action,
                            w.margin
                        );
                        near_ties += 1;
                    }
                    assert!((got as usize) < num_actions, "{what}: row {r} action {got}");
                    assert_eq!(
                        rec[record::ACTION],
                        got as f32,
                        "{what}: row {r} action field"
                    );
                    assert_eq!(
                        rec[record::VALUE].to_bits(),
                        values[r].to_bits(),
                        "{what}: row {r} value field"
                    );
                    assert!(
                        rec[record::ADVANTAGE].is_nan() && rec[record::RETURN].is_nan(),
                        "{what}: row {r} advantage/return written"
                    );
                    let row_logp = log_softmax(&logits64[r * num_actions..(r + 1) * num_actions]);
                    want_logprob.push(row_logp[got as usize]);
                }
                let got_logprob = field(mine, record::LOGPROB);
                assert_close(
                    &format!("{what} logprob"),
                    &want_logprob,
                    &got_logprob,
                    4e-6,
                    1e-6,
                );
                for (w, g) in want_logprob.iter().zip(&got_logprob) {
                    worst_logprob = worst_logprob.max((w - *g as f64).abs());
                }
            }
        }
    }
    eprintln!(
        "categorical: worst |logprob err| {worst_logprob:.3e}, {near_ties} near-tie actions differ"
    );
}

fn sample_actions(
    ctx: &GpuContext,
    logits: &[f32],
    num_actions: usize,
    key: SampleKey,
) -> Vec<u32> {
    let rows = logits.len() / num_actions;
    let logits_gpu = upload(ctx, "logits", logits);
    let values_gpu = upload(ctx, "values", &vec![0.0f32; rows]);
    let records_gpu = poisoned(ctx, "records", rows * RECORD);
    let actions_gpu = upload(ctx, "actions", &vec![u32::MAX; rows]);
    let mut plan = CategoricalSample::new(
        ctx,
        num_actions,
        &logits_gpu,
        &values_gpu,
        &records_gpu,
        &actions_gpu,
    )
    .unwrap();
    plan.set_step(ctx, Some(key), 0);
    ctx.run("categorical", &[plan.dispatch()]);
    actions_gpu.read(ctx).unwrap()
}

/// Many rows with the same logits: the action frequencies must match the
/// softmax within 4 standard errors, for several keys.
#[test]
fn categorical_sampling_frequencies_match_softmax() {
    let Some(ctx) = ctx() else { return };
    const ROWS: usize = 4096;
    let row = [0.3f32, -0.6, 1.1];
    let probs: Vec<f64> = log_softmax(&to_f64(&row)).iter().map(|l| l.exp()).collect();
    let logits: Vec<f32> = row.iter().copied().cycle().take(ROWS * 3).collect();
    for (k, key) in [
        SampleKey {
            seed: 1,
            iteration: 0,
            step: 0,
        },
        SampleKey {
            seed: 0xdead_beef_0000_0001,
            iteration: 3,
            step: 17,
        },
        SampleKey {
            seed: 42,
            iteration: 1000,
            step: 499,
        },
    ]
    .into_iter()
    .enumerate()
    {
        let actions = sample_actions(ctx, &logits, 3, key);
        let mut counts = [0usize; 3];
        for &a in &actions {
            counts[a as usize] += 1;
        }
        for (a, (&count, &p)) in counts.iter().zip(&probs).enumerate() {
            let freq = count as f64 / ROWS as f64;
            let sigma = (p * (1.0 - p) / ROWS as f64).sqrt();
            eprintln!(
                "key {k} action {a}: freq {freq:.4} softmax {p:.4} ({:+.2} sigma)",
                (freq - p) / sigma
            );
            assert!(
                (freq - p).abs() <= 4.0 * sigma,
                "key {key:?} action {a}: frequency {freq} vs softmax {p} (sigma {sigma:.4})"
            );
        }
    }
}

/// The same key gives the same actions; changing any part of it changes them.
#[test]
fn categorical_sampling_is_deterministic_per_key() {
    let Some(ctx) = ctx() else { return };
    let rows = 512;
    let logits = random_vec(77, rows * 3, -1.0, 1.0);
    let key = SampleKey {
        seed: 0x0123_4567_89ab_cdef,
        iteration: 5,
        step: 9,
    };
    let first = sample_actions(ctx, &logits, 3, key);
    assert_eq!(
        first,
        sample_actions(ctx, &logits, 3, key),
        "same key, different actions"
    );
    for (what, other) in [
        ("step", SampleKey { step: 10, ..key }),
        (
            "iteration",
            SampleKey {
                iteration: 6,
                ..key
            },
        ),
        (
            "seed low word",
            SampleKey {
                seed: key.seed ^ 1,
                ..key
            },
        ),
        (
            "seed high word",
            SampleKey {
                seed: key.seed ^ (1 << 40),
                ..key
            },
        ),
    ] {
        let changed = sample_actions(ctx, &logits, 3, other);
        let differing = first.iter().zip(&changed).filter(|(a, b)| a != b).count();
        assert!(
            differing > rows / 10,
            "changing the {what} changed only {differing} of {rows} actions"
        );
    }
}

/// Random done flags: mostly none, some terminated, truncated, or both.
fn random_flags(seed: u64, len: usize) -> Vec<u32> {
    let mut rng = rng(seed);
    (0..len)
        .map(|_| match rng.random_range(0..100) {
            0..=4 => TERMINATED,
            5..=9 => TRUNCATED,
            10..=11 => TERMINATED | TRUNCATED,
            _ => 0,
        })
        .collect()
}

/// Runs GAE on the GPU; `records` carries the values in field 1. Returns the records after.
#[allow(clippy::too_many_arguments)]
fn gae_gpu(
    ctx: &GpuContext,
    variant: GaeVariant,
    num_steps: usize,
    sequences: usize,
    gamma: f32,
    lambda: f32,
    rewards: &[f32],
    flags: &[u32],
    final_values: &[f32],
    last_values: &[f32],
    records: &[f32],
) -> Vec<f32> {
    let rewards_gpu = upload(ctx, "rewards", rewards);
    let flags_gpu = upload(ctx, "flags", flags);
    let final_gpu = upload(ctx, "final_values", final_values);
    let last_gpu = upload(ctx, "last_values", last_values);
    let records_gpu = upload(ctx, "records", records);
    let plan = Gae::new(
        ctx,
        num_steps,
        sequences,
        gamma,
        lambda,
        variant,
        &GaeInputs {
            rewards: &rewards_gpu,
            flags: &flags_gpu,
            final_values: &final_gpu,
            last_values: &last_gpu,
            records: &records_gpu,
        },
    )
    .unwrap();
    assert_eq!(plan.variant(), variant);
    ctx.run("gae", &[plan.dispatch()]);
    records_gpu.read(ctx).unwrap()
}

/// Records with random log-prob, value and action, advantage and return NaN.
fn records_with_values(seed: u64, values: &[f32]) -> Vec<f32> {
    let mut rng = rng(seed);
    values
        .iter()
        .flat_map(|&v| {
            [
                rng.random_range(-3.0..0.0),
                v,
                f32::NAN,
                f32::NAN,
                rng.random_range(0..4) as f32,
            ]
        })
        .collect()
}

#[test]
fn gae_matches_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    let mut seed = 2000;
    for variant in [GaeVariant::Sequential, GaeVariant::Scan] {
        for &(gamma, lambda) in &[(0.99f32, 0.95f32), (1.0, 1.0)] {
            for &num_steps in &[1usize, 7, 64, 255, 256, 257, 600] {
                for &sequences in &[1usize, 3, 64, 65] {
                    seed += 10;
                    let n = num_steps * sequences;
                    let rewards = random_vec(seed, n, -1.0, 1.0);
                    let values = random_vec(seed + 1, n, -2.0, 2.0);
                    let final_values = random_vec(seed + 2, n, -2.0, 2.0);
                    let last_values = random_vec(seed + 3, sequences, -2.0, 2.0);
                    let flags = random_flags(seed + 4, n);
                    let records = records_with_values(seed + 5, &values);
                    let got = gae_gpu(
                        ctx,
                        variant,
                        num_steps,
                        sequences,
                        gamma,
                        lambda,
                        &rewards,
                        &flags,
                        &final_values,
                        &last_values,
                        &records,
                    );
                    let (advantages, returns) = gae_cpu(
                        num_steps,
                        sequences,
                        gamma as f64,
                        lambda as f64,
                        &to_f64(&rewards),
                        &flags,
                        &to_f64(&final_values),
                        &to_f64(&last_values),
                        &to_f64(&values),
                    );
                    let what = format!(
                        "gae {variant:?} gamma={gamma} lambda={lambda} T={num_steps} S={sequences}"
                    );
                    let atol = 5e-6;
                    assert_close(
                        &format!("{what} advantage"),
                        &advantages,
                        &field(&got, record::ADVANTAGE),
                        atol,
                        1e-5,
                    );
                    assert_close(
                        &format!("{what} return"),
                        &returns,
                        &field(&got, record::RETURN),
                        atol,
                        1e-5,
                    );
                    for f in [record::LOGPROB, record::VALUE, record::ACTION] {
                        assert_bitwise(
                            &format!("{what} field {f} unchanged"),
                            &field(&records, f),
                            &field(&got, f),
                        );
                    }
                }
            }
        }
    }
}

/// A hand-computed case: T = 3, one sequence, a termination (or truncation)
/// at t = 1. The reference itself is checked against known numbers, then
/// both kernels against it, and rewards after the boundary must not reach
/// the advantages up to it.
#[test]
fn gae_episode_boundary_stops_the_recursion() {
    let (gamma, lambda) = (0.75, 0.5);
    let rewards = [1.0, 2.0, 3.0];
    let values = [0.5, 0.25, 0.75];
    let final_values = [0.0, 1.5, 0.0];
    let last_values = [2.0];
    // t=2: delta = 3 + 0.75*2 - 0.75 = 3.75, adv = 3.75.
    // t=1 terminated: delta = 2 - 0.25 = 1.75, no carry. Truncated: 2 + 0.75*1.5 - 0.25 = 2.875.
    // t=0: delta = 1 + 0.75*0.25 - 0.5 = 0.6875, adv = 0.6875 + 0.375 * adv[1].
    let cases = [
        (TERMINATED, [0.6875 + 0.375 * 1.75, 1.75, 3.75]),
        (TERMINATED | TRUNCATED, [0.6875 + 0.375 * 1.75, 1.75, 3.75]),
        (TRUNCATED, [0.6875 + 0.375 * 2.875, 2.875, 3.75]),
    ];
    for (flag, want_adv) in cases {
        let flags = [0, flag, 0];
        let run_cpu = |rewards: &[f64]| {
            gae_cpu(
                3,
                1,
                gamma,
                lambda,
                rewards,
                &flags,
                &final_values,
                &last_values,
                &values,
            )
        };
        let (adv, ret) = run_cpu(&rewards);
        assert_eq!(adv, want_adv, "flag {flag}: reference advantages");
        let want_ret: Vec<f64> = want_adv.iter().zip(&values).map(|(a, v)| a + v).collect();
        assert_eq!(ret, want_ret, "flag {flag}: reference returns");
        let (changed, _) = run_cpu(&[1.0, 2.0, -7.0]);
        assert_eq!(
            changed[..2],
            adv[..2],
            "flag {flag}: reward after the boundary leaked"
        );
        assert_ne!(changed[2], adv[2]);

        let Some(ctx) = ctx() else { continue };
        let f32s = |x: &[f64]| x.iter().map(|&v| v as f32).collect::<Vec<_>>();
        for variant in [GaeVariant::Sequential, GaeVariant::Scan] {
            for rewards in [rewards, [1.0, 2.0, -7.0]] {
                let got = gae_gpu(
                    ctx,
                    variant,
                    3,
                    1,
                    gamma as f32,
                    lambda as f32,
                    &f32s(&rewards),
                    &flags,
                    &f32s(&final_values),
                    &f32s(&last_values),
                    &records_with_values(5, &f32s(&values)),
                );
                let (want, _) = run_cpu(&rewards);
                let what = format!("gae {variant:?} flag {flag} rewards {rewards:?}");
                assert_close(&what, &want, &field(&got, record::ADVANTAGE), 1e-6, 1e-6);
                // All numbers here are exact in f32 and the boundary cuts the carry:
                // the advantages up to it are the same whatever comes after.
                assert_eq!(got[2], (adv[0] as f32), "{what}: adv[0]");
                assert_eq!(got[RECORD + 2], (adv[1] as f32), "{what}: adv[1]");
            }
        }
    }
}

/// A gather plan for `shape` into fresh minibatch buffers (obs, records).
fn gather_plan(
    ctx: &GpuContext,
    shape: &BatchShape,
    perm: &GpuBuffer<u32>,
    obs: &GpuBuffer<f32>,
    records: &GpuBuffer<f32>,
) -> (GatherMinibatch, GpuBuffer<f32>, GpuBuffer<f32>) {
    let mb_rows = shape.num_agents * shape.minibatch_size;
    let mb_obs = GpuBuffer::<f32>::zeros(ctx, "mb_obs", mb_rows * shape.obs_dim).unwrap();
    let mb_records = GpuBuffer::<f32>::zeros(ctx, "mb_records", mb_rows * RECORD).unwrap();
    let plan = GatherMinibatch::new(
        ctx,
        shape,
        &GatherBuffers {
            perm,
            obs,
            records,
            mb_obs: &mb_obs,
            mb_records: &mb_records,
        },
    )
    .unwrap();
    (plan, mb_obs, mb_records)
}

#[test]
fn gather_minibatch_matches_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    const OBS_DIM: usize = 4;
    // (num_steps, envs_per_agent, minibatch_size, epochs)
    let shapes = [
        (1, 1, 1, 1),
        (8, 4, 8, 2),
        (16, 3, 12, 3),
        (128, 2, 64, 2),
        (5, 13, 65, 1),
    ];
    let mut seed = 3000;
    for &num_agents in AGENT_COUNTS {
        for &(num_steps, envs_per_agent, minibatch_size, epochs) in &shapes {
            seed += 1;
            let shape = BatchShape {
                num_agents,
                num_steps,
                envs_per_agent,
                obs_dim: OBS_DIM,
                minibatch_size,
                epochs,
            };
            let batch = shape.batch_per_agent();
            let settings = UpdateSettings {
                num_minibatches: batch / minibatch_size,
                update_epochs: epochs,
                adam_eps: [ADAM_EPS, 1e-2][seed as usize % 2],
                ..common::cleanrl_settings(num_agents, num_steps, envs_per_agent)
            };
            let perm = permutations(seed, 4, &settings);
            let rows = num_agents * batch;
            let obs = random_vec(seed, rows * OBS_DIM, -10.0, 10.0);
            let records = random_vec(seed + 1, rows * RECORD, -10.0, 10.0);
            let perm_gpu = upload(ctx, "perm", &perm);
            let obs_gpu = upload(ctx, "obs", &obs);
            let records_gpu = upload(ctx, "records", &records);
            let (plan, mb_obs_gpu, mb_records_gpu) =
                gather_plan(ctx, &shape, &perm_gpu, &obs_gpu, &records_gpu);
            for epoch in 0..epochs {
                for minibatch in 0..batch / minibatch_size {
                    mb_obs_gpu.poison(ctx).unwrap();
                    mb_records_gpu.poison(ctx).unwrap();
                    ctx.run("gather", &[plan.dispatch(epoch, minibatch)]);
                    let (mut want_obs, mut want_records) = (Vec::new(), Vec::new());
                    for p in 0..num_agents {
                        for row in minibatch_rows_cpu(&shape, &perm, epoch, minibatch, p) {
                            want_obs.extend_from_slice(&obs[row * OBS_DIM..(row + 1) * OBS_DIM]);
                            want_records
                                .extend_from_slice(&records[row * RECORD..(row + 1) * RECORD]);
                        }
                    }
                    let what = format!(
                        "gather P={num_agents} T={num_steps} N={envs_per_agent} M={minibatch_size} epoch {epoch} minibatch {minibatch}"
                    );
                    assert_bitwise(
                        &format!("{what} obs"),
                        &want_obs,
                        &mb_obs_gpu.read(ctx).unwrap(),
                    );
                    assert_bitwise(
                        &format!("{what} records"),
                        &want_records,
                        &mb_records_gpu.read(ctx).unwrap(),
                    );
                }
            }
        }
    }
}

/// Minibatch inputs of the loss: old log-probs within ±0.5 of the current
/// ones (ratios in [0.61, 1.65], so both sides of a 0.2 clip), advantages of
/// both signs, values within ±0.5 of the old ones.
fn loss_inputs(seed: u64, rows: usize, num_actions: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = rng(seed);
    let logits = random_vec(seed + 1, rows * num_actions, -2.0, 2.0);
    let mut records = Vec::with_capacity(rows * RECORD);
    let mut values = Vec::with_capacity(rows);
    for r in 0..rows {
        let logp = log_softmax(&to_f64(&logits[r * num_actions..(r + 1) * num_actions]));
        let action = rng.random_range(0..num_actions);
        let old_logprob = (logp[action] - rng.random_range(-0.5..0.5)) as f32;
        let old_value: f32 = rng.random_range(-1.0..1.0);
        values.push(old_value + rng.random_range(-0.5..0.5));
        records.extend_from_slice(&[
            old_logprob,
            old_value,
            rng.random_range(-2.0..2.0),
            rng.random_range(-2.0..2.0),
            action as f32,
        ]);
    }
    (records, logits, values)
}

/// Whether a row's ratio, or its value change, lies within `margin` of a clip boundary.
fn near_clip_boundary(
    records: &[f64],
    logits: &[f64],
    values: &[f64],
    num_actions: usize,
    clip: f64,
    margin: f64,
) -> (Vec<bool>, Vec<bool>) {
    let rows = values.len();
    let mut ratio_near = Vec::with_capacity(rows);
    let mut value_near = Vec::with_capacity(rows);
    for r in 0..rows {
        let rec = &records[r * RECORD..(r + 1) * RECORD];
        let logp = log_softmax(&logits[r * num_actions..(r + 1) * num_actions]);
        let ratio = (logp[rec[record::ACTION] as usize] - rec[record::LOGPROB]).exp();
        ratio_near
            .push((ratio - (1.0 - clip)).abs() < margin || (ratio - (1.0 + clip)).abs() < margin);
        let diff = values[r] - rec[record::VALUE];
        value_near.push((diff.abs() - clip).abs() < margin);
    }
    (ratio_near, value_near)
}

#[test]
fn ppo_loss_matches_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    let mut seed = 4000;
    let (mut clipped_rows, mut total_rows, mut skipped) = (0usize, 0usize, 0usize);
    for &num_agents in AGENT_COUNTS {
        for &minibatch_size in &[1usize, 63, 64, 65] {
            for &num_actions in &[2usize, 4] {
                for clip_vloss in [false, true] {
                    seed += 10;
                    let coefs = LossCoefs {
                        clip_coef: 0.2,
                        ent_coef: 0.01,
                        vf_coef: 0.5,
                        clip_vloss,
                    };
                    let rows = num_agents * minibatch_size;
                    let (records, logits, values) = loss_inputs(seed, rows, num_actions);
                    let records_gpu = upload(ctx, "mb_records", &records);
                    let logits_gpu = upload(ctx, "logits", &logits);
                    let values_gpu = upload(ctx, "values", &values);
                    let dlogits_gpu = poisoned(ctx, "dlogits", rows * num_actions);
                    let dvalues_gpu = poisoned(ctx, "dvalues", rows);
                    let stats_gpu = poisoned(ctx, "row_stats", rows * ROW_STATS);
                    let plan = PpoLoss::new(
                        ctx,
                        rows,
                        minibatch_size,
                        num_actions,
                        coefs,
                        &LossBuffers {
                            mb_records: &records_gpu,
                            logits: &logits_gpu,
                            values: &values_gpu,
                            dlogits: &dlogits_gpu,
                            dvalues: &dvalues_gpu,
                            row_stats: &stats_gpu,
                        },
                    )
                    .unwrap();
                    ctx.run("ppo_loss", &[plan.dispatch()]);
                    let dlogits = dlogits_gpu.read(ctx).unwrap();
                    let dvalues = dvalues_gpu.read(ctx).unwrap();
                    let row_stats = stats_gpu.read(ctx).unwrap();

                    let (records64, logits64, values64) =
                        (to_f64(&records), to_f64(&logits), to_f64(&values));
                    let want = ppo_loss_cpu(
                        &records64,
                        &logits64,
                        &values64,
                        num_actions,
                        minibatch_size,
                        coefs,
                    );
                    // Where the ratio (or the value change) sits on a clip boundary the
                    // gradient jumps and f32 may fall on either side: leave those rows out.
                    let (ratio_near, value_near) = near_clip_boundary(
                        &records64,
                        &logits64,
                        &values64,
                        num_actions,
                        0.2,
                        1e-6,
                    );
                    let mut keep = |near: &[bool], want: &[f64], got: &[f32], width: usize| {
                        let mut kept = (Vec::new(), Vec::new());
                        for (r, &skip) in near.iter().enumerate() {
                            if skip {
                                skipped += 1;
                                continue;
                            }
                            kept.0.extend_from_slice(&want[r * width..(r + 1) * width]);
                            kept.1.extend_from_slice(&got[r * width..(r + 1) * width]);
                        }
                        kept
                    };
                    let what = format!(
                        "ppo_loss P={num_agents} M={minibatch_size} A={num_actions} clip_vloss={clip_vloss}"
                    );
                    // The gradients are divided by M: scale the absolute tolerance with them.
                    let inv_m = 1.0 / minibatch_size as f64;
                    let (w, g) = keep(&ratio_near, &want.dlogits, &dlogits, num_actions);
                    assert_close(&format!("{what} dlogits"), &w, &g, 1e-6 * inv_m, 1e-5);
                    let (w, g) = keep(&value_near, &want.dvalues, &dvalues, 1);
                    assert_close(&format!("{what} dvalues"), &w, &g, 1e-6 * inv_m, 1e-5);
                    let smooth = |stats: &[f32]| -> Vec<f32> {
                        stats
                            .chunks(ROW_STATS)
                            .flat_map(|s| s[..stat::CLIPFRAC].to_vec())
                            .collect()
                    };
                    let want_smooth: Vec<f64> = want
                        .row_stats
                        .chunks(ROW_STATS)
                        .flat_map(|s| s[..stat::CLIPFRAC].to_vec())
                        .collect();
                    assert_close(
                        &format!("{what} row_stats"),
                        &want_smooth,
                        &smooth(&row_stats),
                        1e-6,
                        1e-5,
                    );
                    for r in 0..rows {
                        let (want_clip, got_clip) = (
                            want.row_stats[r * ROW_STATS + stat::CLIPFRAC],
                            row_stats[r * ROW_STATS + stat::CLIPFRAC],
                        );
                        assert!(
                            got_clip == 0.0 || got_clip == 1.0,
                            "{what}: row {r} clipfrac {got_clip}"
                        );
                        if !ratio_near[r] {
                            assert_eq!(got_clip as f64, want_clip, "{what}: row {r} clipfrac");
                        }
                        clipped_rows += want_clip as usize;
                        total_rows += 1;
                    }
                }
            }
        }
    }
    eprintln!(
        "ppo_loss: {clipped_rows} of {total_rows} rows clipped, {skipped} boundary rows left out"
    );
    assert!(clipped_rows > total_rows / 5 && clipped_rows < total_rows * 4 / 5);
}

/// The reference's gradients are those of the mean loss
/// mean(pg) - ent_coef·mean(entropy) + vf_coef·mean(v), by central differences
/// in f64, on rows away from every clip boundary.
#[test]
fn ppo_loss_cpu_gradient_matches_finite_differences() {
    const H: f64 = 1e-5;
    let (num_agents, minibatch_size) = (2, 24);
    let rows = num_agents * minibatch_size;
    for &num_actions in &[2usize, 4] {
        for clip_vloss in [false, true] {
            let coefs = LossCoefs {
                clip_coef: 0.2,
                ent_coef: 0.03,
                vf_coef: 0.7,
                clip_vloss,
            };
            // Redraw rows until none is within 1e-3 of a clip boundary.
            let mut seed = 5000 + num_actions as u64 * 100 + clip_vloss as u64;
            let (records, logits, values) = loop {
                seed += 1;
                let (r, l, v) = loss_inputs(seed, rows, num_actions);
                let (r, l, v) = (to_f64(&r), to_f64(&l), to_f64(&v));
                let (a, b) = near_clip_boundary(&r, &l, &v, num_actions, coefs.clip_coef, 1e-3);
                if !a.iter().chain(&b).any(|&x| x) {
                    break (r, l, v);
                }
            };
            // Summed over agents, each row's gradient is that of its own agent's mean.
            let loss = |logits: &[f64], values: &[f64]| -> f64 {
                let out =
                    ppo_loss_cpu(&records, logits, values, num_actions, minibatch_size, coefs);
                out.row_stats
                    .chunks(ROW_STATS)
                    .map(|s| {
                        s[stat::POLICY_LOSS] - coefs.ent_coef * s[stat::ENTROPY]
                            + coefs.vf_coef * s[stat::VALUE_LOSS]
                    })
                    .sum::<f64>()
                    / minibatch_size as f64
            };
            let want = ppo_loss_cpu(
                &records,
                &logits,
                &values,
                num_actions,
                minibatch_size,
                coefs,
            );
            let mut numeric_dlogits = Vec::with_capacity(logits.len());
            for i in 0..logits.len() {
                let (mut up, mut down) = (logits.clone(), logits.clone());
                up[i] += H;
                down[i] -= H;
                numeric_dlogits.push((loss(&up, &values) - loss(&down, &values)) / (2.0 * H));
            }
            let mut numeric_dvalues = Vec::with_capacity(rows);
            for i in 0..rows {
                let (mut up, mut down) = (values.clone(), values.clone());
                up[i] += H;
                down[i] -= H;
                numeric_dvalues.push((loss(&logits, &up) - loss(&logits, &down)) / (2.0 * H));
            }
            let what = format!("ppo_loss_cpu A={num_actions} clip_vloss={clip_vloss}");
            let mut worst = 0.0f64;
            for (name, analytic, numeric) in [
                ("dlogits", &want.dlogits, &numeric_dlogits),
                ("dvalues", &want.dvalues, &numeric_dvalues),
            ] {
                for (i, (a, n)) in analytic.iter().zip(numeric).enumerate() {
                    let err = (a - n).abs();
                    worst = worst.max(err);
                    assert!(
                        err <= 1e-8 + 1e-6 * n.abs(),
                        "{what} {name}[{i}]: analytic {a:e} numeric {n:e}"
                    );
                }
            }
            eprintln!("{what}: worst |analytic - numeric| {worst:.3e}");
        }
    }
}

/// Minibatch records [P][M][RECORD] with advantages of nonzero mean.
fn random_records(seed: u64, rows: usize) -> Vec<f32> {
    let mut records = random_vec(seed, rows * RECORD, -2.0, 2.0);
    for rec in records.chunks_mut(RECORD) {
        rec[record::ADVANTAGE] = rec[record::ADVANTAGE] * 2.0 + 1.5;
    }
    records
}

#[test]
fn adv_norm_matches_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    let mut seed = 6000;
    for &num_agents in AGENT_COUNTS {
        for &minibatch_size in &[2usize, 63, 64, 65, 1000] {
            seed += 1;
            let records = random_records(seed, num_agents * minibatch_size);
            let records_gpu = upload(ctx, "mb_records", &records);
            let dispatch = adv_norm(ctx, num_agents, minibatch_size, &records_gpu).unwrap();
            ctx.run("adv_norm", &[&dispatch]);
            let got = records_gpu.read(ctx).unwrap();
            let want: Vec<f64> = record_column(&records, record::ADVANTAGE)
                .chunks(minibatch_size)
                .flat_map(adv_norm_cpu)
                .collect();
            let what = format!("adv_norm P={num_agents} M={minibatch_size}");
            assert_close(&what, &want, &field(&got, record::ADVANTAGE), 1e-6, 1e-6);
            for f in [
                record::LOGPROB,
                record::VALUE,
                record::RETURN,
                record::ACTION,
            ] {
                assert_bitwise(
                    &format!("{what} field {f} unchanged"),
                    &field(&records, f),
                    &field(&got, f),
                );
            }
        }
    }
}

fn agent_states(num_agents: usize, updating: impl Fn(usize) -> bool) -> Vec<AgentState> {
    (0..num_agents)
        .map(|p| AgentState {
            learning_rate: 2.5e-4 * (p + 1) as f32,
            updating: updating(p) as u32,
            adam_step: 3 + p as u32,
            clip_scale: 0.25 + p as f32,
        })
        .collect()
}

/// Runs row_stats_mean into a 3-entry history; returns (history, agent states after).
fn row_stats_gpu(
    ctx: &GpuContext,
    row_stats: &[f32],
    states: &[AgentState],
    minibatch_size: usize,
    history_index: usize,
    target_kl: Option<f64>,
) -> (Vec<f32>, Vec<AgentState>) {
    let num_agents = states.len();
    let stats_gpu = upload(ctx, "row_stats", row_stats);
    let state_gpu = upload(ctx, "agent_state", states);
    let history_gpu = poisoned(ctx, "history", 3 * num_agents * HISTORY_STATS);
    let dispatch = row_stats_mean(
        ctx,
        num_agents,
        minibatch_size,
        history_index,
        target_kl,
        &RowStatsBuffers {
            row_stats: &stats_gpu,
            agent_state: &state_gpu,
            history: &history_gpu,
        },
    )
    .unwrap();
    ctx.run("row_stats_mean", &[&dispatch]);
    (history_gpu.read(ctx).unwrap(), state_gpu.read(ctx).unwrap())
}

/// Checks history entry `index` against the reference means (slot ROW_STATS:
/// whether the agent was updating) and that every other entry is untouched.
fn check_history(
    what: &str,
    history: &[f32],
    row_stats: &[f32],
    states: &[AgentState],
    minibatch_size: usize,
    index: usize,
) {
    let num_agents = states.len();
    let entry = num_agents * HISTORY_STATS;
    for (i, chunk) in history.chunks(entry).enumerate() {
        if i != index {
            assert!(
                chunk.iter().all(|x| x.is_nan()),
                "{what}: history entry {i} written"
            );
        }
    }
    let mut want = Vec::new();
    for (p, state) in states.iter().enumerate() {
        let rows = &row_stats[p * minibatch_size * ROW_STATS..(p + 1) * minibatch_size * ROW_STATS];
        want.extend(row_stats_mean_cpu(&to_f64(rows)));
        want.push(state.updating as f64);
    }
    assert_close(
        what,
        &want,
        &history[index * entry..(index + 1) * entry],
        1e-6,
        1e-5,
    );
}

#[test]
fn row_stats_mean_matches_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    let mut seed = 7000;
    for &num_agents in AGENT_COUNTS {
        for &minibatch_size in &[1usize, 63, 64, 65, 1000] {
            for history_index in [0, 2] {
                seed += 1;
                let row_stats =
                    random_vec(seed, num_agents * minibatch_size * ROW_STATS, -2.0, 3.0);
                // The middle agent of three has already stopped: its slot reads 0.
                let states = agent_states(num_agents, |p| p != 1);
                let (history, after) = row_stats_gpu(
                    ctx,
                    &row_stats,
                    &states,
                    minibatch_size,
                    history_index,
                    None,
                );
                let what = format!(
                    "row_stats_mean P={num_agents} M={minibatch_size} index {history_index}"
                );
                check_history(
                    &what,
                    &history,
                    &row_stats,
                    &states,
                    minibatch_size,
                    history_index,
                );
                assert_eq!(
                    after, states,
                    "{what}: agent state changed without target_kl"
                );
            }
        }
    }
}

/// With target_kl, an updating agent whose mean approx_kl exceeds it stops;
/// one below it keeps updating; a stopped agent stays stopped.
#[test]
fn row_stats_mean_stops_agents_above_target_kl() {
    let Some(ctx) = ctx() else { return };
    const TARGET_KL: f64 = 0.02;
    let minibatch_size = 65;
    // Per agent: (updating before, approx_kl around, updating after).
    let agents = [
        (true, 0.03f32, false),
        (true, 0.01, true),
        (false, 0.03, false),
        (false, 0.01, false),
    ];
    let mut row_stats = random_vec(7100, agents.len() * minibatch_size * ROW_STATS, -1.0, 1.0);
    let jitter = random_vec(7101, agents.len() * minibatch_size, -0.005, 0.005);
    for (r, stats) in row_stats.chunks_mut(ROW_STATS).enumerate() {
        stats[stat::APPROX_KL] = agents[r / minibatch_size].1 + jitter[r];
    }
    let states = agent_states(agents.len(), |p| agents[p].0);
    let (history, after) =
        row_stats_gpu(ctx, &row_stats, &states, minibatch_size, 1, Some(TARGET_KL));
    check_history(
        "row_stats_mean target_kl",
        &history,
        &row_stats,
        &states,
        minibatch_size,
        1,
    );
    for (p, (&(_, kl, updating_after), (before, after))) in
        agents.iter().zip(states.iter().zip(&after)).enumerate()
    {
        assert_eq!(
            after.updating, updating_after as u32,
            "agent {p} (approx_kl ~{kl}, updating {}) after target_kl {TARGET_KL}",
            before.updating
        );
        assert_eq!(
            AgentState {
                updating: before.updating,
                ..*after
            },
            *before,
            "agent {p}: only `updating` may change"
        );
    }
}

#[test]
fn explained_variance_matches_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    let mut seed = 8000;
    for &num_agents in AGENT_COUNTS {
        for &(num_steps, envs_per_agent) in &[(1usize, 1usize), (7, 3), (64, 1), (33, 4), (128, 8)]
        {
            seed += 1;
            let rows = num_steps * num_agents * envs_per_agent;
            let mut records = random_vec(seed, rows * RECORD, -2.0, 2.0);
            let noise = random_vec(seed + 1, rows, -0.5, 0.5);
            for (rec, e) in records.chunks_mut(RECORD).zip(noise) {
                rec[record::RETURN] = 0.8 * rec[record::VALUE] + e + 0.3;
            }
            // The last agent's returns are constant: explained variance is NaN.
            let constant_agent = num_agents - 1;
            let agent_rows = |p: usize| -> Vec<usize> {
                (0..num_steps)
                    .flat_map(|t| {
                        (0..envs_per_agent).map(move |n| (t * num_agents + p) * envs_per_agent + n)
                    })
                    .collect()
            };
            if num_agents > 1 {
                for row in agent_rows(constant_agent) {
                    records[row * RECORD + record::RETURN] = 1.5;
                }
            }
            let records_gpu = upload(ctx, "records", &records);
            let ev_gpu = poisoned(ctx, "explained_var", num_agents);
            let dispatch = explained_variance(
                ctx,
                num_agents,
                num_steps,
                envs_per_agent,
                &records_gpu,
                &ev_gpu,
            )
            .unwrap();
            ctx.run("explained_variance", &[&dispatch]);
            let got = ev_gpu.read(ctx).unwrap();
            let what =
                format!("explained_variance P={num_agents} T={num_steps} N={envs_per_agent}");
            for (p, &g) in got.iter().enumerate() {
                let (values, returns): (Vec<f64>, Vec<f64>) = agent_rows(p)
                    .into_iter()
                    .map(|row| {
                        (
                            records[row * RECORD + record::VALUE] as f64,
                            records[row * RECORD + record::RETURN] as f64,
                        )
                    })
                    .unzip();
                let want = explained_variance_cpu(&values, &returns);
                if want.is_nan() {
                    assert!(
                        g.is_nan(),
                        "{what} agent {p}: constant returns give {g}, want NaN"
                    );
                } else {
                    assert_close(&format!("{what} agent {p}"), &[want], &[g], 1e-6, 1e-6);
                }
            }
            if num_agents > 1 {
                assert!(
                    got[constant_agent].is_nan(),
                    "{what}: constant returns not NaN"
                );
            }
        }
    }
}

/// Rescales each agent's gradient to a chosen global norm.
fn grads_with_norms(seed: u64, params_per_agent: usize, norms: &[f64]) -> Vec<f32> {
    let mut grads = random_vec(seed, norms.len() * params_per_agent, -1.0, 1.0);
    for (chunk, &norm) in grads.chunks_mut(params_per_agent).zip(norms) {
        let current = chunk
            .iter()
            .map(|&g| (g as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        chunk
            .iter_mut()
            .for_each(|g| *g = (*g as f64 * norm / current) as f32);
    }
    grads
}

#[test]
fn clip_adam_matches_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    const MAX_GRAD_NORM: f64 = 0.5;
    const STEPS: usize = 5;
    let mut seed = 9000;
    let (mut clipped, mut unclipped) = (0, 0);
    for &num_agents in AGENT_COUNTS {
        for &k in &[1usize, 63, 64, 65, 9155] {
            seed += 100;
            // CleanRL's ε and a large one (the meta preset's), alternately.
            let eps = [ADAM_EPS, 1e-2][(seed / 100) as usize % 2];
            let total = num_agents * k;
            // Agent 0 starts fresh (step 0, m = v = 0); the others mid-run with
            // random moments. Agent 2 of three has stopped (target_kl).
            let states: Vec<AgentState> = (0..num_agents)
                .map(|p| AgentState {
                    learning_rate: [3e-4, 1e-3, 2.5e-4][p],
                    updating: (p != 2) as u32,
                    adam_step: [0, 7, 4][p],
                    clip_scale: f32::NAN,
                })
                .collect();
            let params = random_vec(seed, total, -1.0, 1.0);
            let mut m = random_vec(seed + 1, total, -0.05, 0.05);
            let mut v = random_vec(seed + 2, total, 0.0, 0.01);
            m[..k].iter_mut().for_each(|x| *x = 0.0);
            v[..k].iter_mut().for_each(|x| *x = 0.0);
            let grads_gpu = GpuBuffer::<f32>::zeros(ctx, "grads", total).unwrap();
            let state_gpu = upload(ctx, "agent_state", &states);
            let params_gpu = upload(ctx, "params", &params);
            let m_gpu = upload(ctx, "adam_m", &m);
            let v_gpu = upload(ctx, "adam_v", &v);
            let plan = ClipAdam::new(
                ctx,
                num_agents,
                k,
                MAX_GRAD_NORM,
                eps,
                &OptimBuffers {
                    grads: &grads_gpu,
                    agent_state: &state_gpu,
                    params: &params_gpu,
                    adam_m: &m_gpu,
                    adam_v: &v_gpu,
                },
            )
            .unwrap();
            let (mut want_params, mut want_m, mut want_v) =
                (to_f64(&params), to_f64(&m), to_f64(&v));
            let mut want_steps: Vec<u32> = states.iter().map(|s| s.adam_step).collect();
            for step in 0..STEPS {
                // Alternate each agent between a norm below max_grad_norm and one above.
                let norms: Vec<f64> = (0..num_agents)
                    .map(|p| if (p + step) % 2 == 0 { 0.3 } else { 2.0 })
                    .collect();
                let grads = grads_with_norms(seed + 10 + step as u64, k, &norms);
                grads_gpu.write(ctx, &grads).unwrap();
                ctx.run("clip_adam", &plan.dispatches());
                let got_states = state_gpu.read(ctx).unwrap();
                let (got_params, got_m, got_v) = (
                    params_gpu.read(ctx).unwrap(),
                    m_gpu.read(ctx).unwrap(),
                    v_gpu.read(ctx).unwrap(),
                );
                let what = format!("clip_adam P={num_agents} K={k} step {step}");
                let mut want_scales = Vec::new();
                let mut got_scales = Vec::new();
                for p in 0..num_agents {
                    let range = p * k..(p + 1) * k;
                    if states[p].updating == 0 {
                        assert_eq!(
                            got_states[p].adam_step, states[p].adam_step,
                            "{what}: stopped agent {p} stepped"
                        );
                        for (name, start, now) in [
                            ("params", &params, &got_params),
                            ("m", &m, &got_m),
                            ("v", &v, &got_v),
                        ] {
                            assert_bitwise(
                                &format!("{what} stopped agent {p} {name}"),
                                &start[range.clone()],
                                &now[range.clone()],
                            );
                        }
                        continue;
                    }
                    let mut g = to_f64(&grads[range.clone()]);
                    let scale = clip_grad_norm_cpu(&mut g, MAX_GRAD_NORM);
                    if scale < 1.0 {
                        clipped += 1;
                    } else {
                        unclipped += 1;
                    }
                    want_steps[p] += 1;
                    adam_cpu(
                        &mut want_params[range.clone()],
                        &g,
                        &mut want_m[range.clone()],
                        &mut want_v[range.clone()],
                        states[p].learning_rate as f64,
                        eps,
                        want_steps[p],
                    );
                    want_scales.push(scale);
                    got_scales.push(got_states[p].clip_scale);
                    assert_eq!(
                        got_states[p].adam_step, want_steps[p],
                        "{what}: agent {p} adam_step"
                    );
                    assert_eq!(
                        (got_states[p].learning_rate, got_states[p].updating),
                        (states[p].learning_rate, states[p].updating),
                        "{what}: agent {p} learning rate / updating changed"
                    );
                }
                assert_close(
                    &format!("{what} clip_scale"),
                    &want_scales,
                    &got_scales,
                    0.0,
                    2e-6,
                );
                let updating: Vec<usize> = (0..total)
                    .filter(|&i| states[i / k].updating != 0)
                    .collect();
                let pick64 = |x: &[f64]| updating.iter().map(|&i| x[i]).collect::<Vec<_>>();
                let pick32 = |x: &[f32]| updating.iter().map(|&i| x[i]).collect::<Vec<_>>();
                assert_close(
                    &format!("{what} params"),
                    &pick64(&want_params),
                    &pick32(&got_params),
                    1e-6,
                    0.0,
                );
                // m and v cancel towards the gradient: absolute error relative to a clipped gradient element.
                let grad_scale = MAX_GRAD_NORM / (k as f64).sqrt();
                assert_close(
                    &format!("{what} m"),
                    &pick64(&want_m),
                    &pick32(&got_m),
                    1e-6 * grad_scale,
                    1e-5,
                );
                assert_close(
                    &format!("{what} v"),
                    &pick64(&want_v),
                    &pick32(&got_v),
                    1e-6 * grad_scale * grad_scale,
                    1e-5,
                );
            }
        }
    }
    assert!(
        clipped > 0 && unclipped > 0,
        "clipped {clipped}, unclipped {unclipped}"
    );
}

/// The fused update's optimizer step (one dispatch, a workgroup per agent)
/// against the three dispatches it replaces, clip + Adam then the row
/// means: bitwise equal in parameters, moments, agent state and history,
/// with agents clipped and not, one stopped before the step, one stopped
/// by target_kl at the step (and one just under it), at partial-workgroup
/// sizes and CleanRL's (K = 9155, M = 128), over several steps.
#[test]
fn optimizer_step_equals_clip_adam_and_row_means_bitwise() {
    let Some(ctx) = ctx() else { return };
    const MAX_GRAD_NORM: f64 = 0.5;
    const ENTRIES: usize = 4;
    let mut seed = 9700;
    for &(num_agents, k, m) in &[
        (1usize, 9155usize, 128usize),
        (3, 65, 37),
        (4, 1000, 1),
        (3, 64, 64),
    ] {
        seed += 100;
        let total = num_agents * k;
        let states: Vec<AgentState> = (0..num_agents)
            .map(|p| AgentState {
                learning_rate: [3e-4, 1e-3, 2.5e-4, 2e-2][p],
                updating: (p != 2) as u32,
                adam_step: [0, 7, 4, 1][p],
                clip_scale: f32::NAN,
            })
            .collect();
        let params = random_vec(seed, total, -1.0, 1.0);
        let adam_m = random_vec(seed + 1, total, -0.05, 0.05);
        let adam_v = random_vec(seed + 2, total, 0.0, 0.01);
        let target_kl = 0.02;
        // Two copies of every buffer the step writes: the layered dispatches
        // run on one, the fused step on the other.
        let copies: Vec<_> = (0..2)
            .map(|_| {
                let history = poisoned(ctx, "history", ENTRIES * num_agents * HISTORY_STATS);
                (
                    GpuBuffer::<f32>::zeros(ctx, "grads", total).unwrap(),
                    upload(ctx, "agent_state", &states),
                    upload(ctx, "params", &params),
                    upload(ctx, "adam_m", &adam_m),
                    upload(ctx, "adam_v", &adam_v),
                    GpuBuffer::<f32>::zeros(ctx, "row_stats", num_agents * m * ROW_STATS).unwrap(),
                    history,
                )
            })
            .collect();
        let mut layered = Vec::new();
        let mut fused = Vec::new();
        for index in 0..ENTRIES {
            // The target-KL check at the last entry, as at an epoch's end.
            let kl = (index == ENTRIES - 1).then_some(target_kl);
            for (copy, (grads, state, params, adam_m, adam_v, row_stats, history)) in
                copies.iter().enumerate()
            {
                let optim = OptimBuffers {
                    grads,
                    agent_state: state,
                    params,
                    adam_m,
                    adam_v,
                };
                let stats = RowStatsBuffers {
                    row_stats,
                    agent_state: state,
                    history,
                };
                if copy == 0 {
                    let clip_adam =
                        ClipAdam::new(ctx, num_agents, k, MAX_GRAD_NORM, ADAM_EPS, &optim).unwrap();
                    let means = row_stats_mean(ctx, num_agents, m, index, kl, &stats).unwrap();
                    layered.push((clip_adam, means));
                } else {
                    fused.push(
                        optimizer_step(
                            ctx,
                            num_agents,
                            k,
                            MAX_GRAD_NORM,
                            ADAM_EPS,
                            m,
                            index,
                            kl,
                            &optim,
                            &stats,
                        )
                        .unwrap(),
                    );
                }
            }
        }
        for index in 0..ENTRIES {
            let norms: Vec<f64> = (0..num_agents)
                .map(|p| if (p + index) % 2 == 0 { 0.3 } else { 2.0 })
                .collect();
            let grads = grads_with_norms(seed + 10 + index as u64, k, &norms);
            // Mean approx_kl (stat 4) of agent 0 above target_kl, agent 1
            // just under it; the rest random.
            let mut row_stats = random_vec(
                seed + 20 + index as u64,
                num_agents * m * ROW_STATS,
                -1.0,
                1.0,
            );
            for p in 0..num_agents.min(2) {
                for j in 0..m {
                    row_stats[(p * m + j) * ROW_STATS + stat::APPROX_KL] = [0.03, 0.019][p] as f32;
                }
            }
            for (grads_gpu, _, _, _, _, row_stats_gpu, _) in &copies {
                grads_gpu.write(ctx, &grads).unwrap();
                row_stats_gpu.write(ctx, &row_stats).unwrap();
            }
            let (clip_adam, means) = &layered[index];
            let mut dispatches: Vec<&ppo_wgpu::gpu::Dispatch> = clip_adam.dispatches().to_vec();
            dispatches.push(means);
            ctx.run("clip_adam + row_stats_mean", &dispatches);
            ctx.run("optimizer_step", &[&fused[index]]);
            let what = format!("optimizer_step P={num_agents} K={k} M={m} entry {index}");
            let (a, b) = (&copies[0], &copies[1]);
            for (name, want, got) in [
                ("params", &a.2, &b.2),
                ("adam_m", &a.3, &b.3),
                ("adam_v", &a.4, &b.4),
                ("history", &a.6, &b.6),
            ] {
                assert_bitwise(
                    &format!("{what} {name}"),
                    &want.read(ctx).unwrap(),
                    &got.read(ctx).unwrap(),
                );
            }
            let (want, got) = (a.1.read(ctx).unwrap(), b.1.read(ctx).unwrap());
            for p in 0..num_agents {
                assert_eq!(
                    want[p].updating, got[p].updating,
                    "{what}: agent {p} updating"
                );
                assert_eq!(
                    want[p].adam_step, got[p].adam_step,
                    "{what}: agent {p} step"
                );
                assert_eq!(
                    want[p].clip_scale.to_bits(),
                    got[p].clip_scale.to_bits(),
                    "{what}: agent {p} clip_scale"
                );
            }
        }
        // The check stopped agent 0 (over target_kl) and kept agent 1.
        let states = copies[1].1.read(ctx).unwrap();
        assert_eq!(states[0].updating, 0, "agent 0 stops at the epoch's end");
        if num_agents > 1 {
            assert_eq!(states[1].updating, 1, "agent 1 is under target_kl");
        }
        // Every history entry was written (none left NaN-poisoned).
        let history = copies[1].6.read(ctx).unwrap();
        assert!(history.iter().all(|v| v.is_finite()), "{history:?}");
    }
}

/// adv_moments (every minibatch's advantage mean and scale, read through
/// the permutations, for the fused row step) against the gather + adv_norm
/// it replaces: (adv - mean) * scale is bitwise adv_norm's output for every
/// (epoch, minibatch, agent), and the moments match the f64 reference. The
/// output is NaN-poisoned first; shapes hit partial workgroups.
#[test]
fn adv_moments_equal_gather_and_adv_norm_bitwise() {
    let Some(ctx) = ctx() else { return };
    // (num_steps, envs_per_agent, minibatch_size, minibatches, epochs)
    let shapes = [
        (1, 2, 2, 1, 1),
        (16, 3, 12, 4, 3),
        (128, 4, 128, 4, 4),
        (5, 13, 65, 1, 2),
        (7, 10, 35, 2, 2),
    ];
    let mut seed = 9900;
    for &num_agents in AGENT_COUNTS {
        for &(num_steps, envs_per_agent, minibatch_size, minibatches, epochs) in &shapes {
            seed += 1;
            let shape = BatchShape {
                num_agents,
                num_steps,
                envs_per_agent,
                obs_dim: 1,
                minibatch_size,
                epochs,
            };
            let batch = shape.batch_per_agent();
            let settings = UpdateSettings {
                num_minibatches: minibatches,
                update_epochs: epochs,
                ..common::cleanrl_settings(num_agents, num_steps, envs_per_agent)
            };
            let perm = permutations(seed, 2, &settings);
            let rows = num_agents * batch;
            let records = random_records(seed, rows);
            let perm_gpu = upload(ctx, "perm", &perm);
            let obs_gpu = upload(ctx, "obs", &vec![0.0f32; rows]);
            let records_gpu = upload(ctx, "records", &records);
            let entries = epochs * minibatches;
            let stats_gpu = poisoned(ctx, "adv_stats", entries * num_agents * 2);
            let moments = adv_moments(
                ctx,
                &shape,
                minibatches,
                &AdvMomentsBuffers {
                    perm: &perm_gpu,
                    records: &records_gpu,
                    adv_stats: &stats_gpu,
                },
            )
            .unwrap();
            ctx.run("adv_moments", &[&moments]);
            let got = stats_gpu.read(ctx).unwrap();

            let (gather, _mb_obs, mb_records_gpu) =
                gather_plan(ctx, &shape, &perm_gpu, &obs_gpu, &records_gpu);
            let norm = adv_norm(ctx, num_agents, minibatch_size, &mb_records_gpu).unwrap();
            for epoch in 0..epochs {
                for minibatch in 0..minibatches {
                    let entry = epoch * minibatches + minibatch;
                    let what = format!(
                        "adv_moments P={num_agents} T={num_steps} N={envs_per_agent} M={minibatch_size} entry {entry}"
                    );
                    // The raw advantages of the minibatch, then adv_norm's output.
                    ctx.run("gather", &[gather.dispatch(epoch, minibatch)]);
                    let raw = field(&mb_records_gpu.read(ctx).unwrap(), record::ADVANTAGE);
                    ctx.run("adv_norm", &[&norm]);
                    let normed = field(&mb_records_gpu.read(ctx).unwrap(), record::ADVANTAGE);
                    for p in 0..num_agents {
                        let at = (entry * num_agents + p) * 2;
                        let (mean, scale) = (got[at], got[at + 1]);
                        let rows = p * minibatch_size..(p + 1) * minibatch_size;
                        let ours: Vec<f32> = raw[rows.clone()]
                            .iter()
                            .map(|a| (a - mean) * scale)
                            .collect();
                        assert_bitwise(&format!("{what} agent {p}"), &normed[rows.clone()], &ours);
                        // The moments themselves against f64.
                        let adv = to_f64(&raw[rows]);
                        let m = adv.len() as f64;
                        let want_mean = adv.iter().sum::<f64>() / m;
                        let var = adv.iter().map(|a| (a - want_mean).powi(2)).sum::<f64>()
                            / (m - 1.0).max(1.0);
                        let want_scale = 1.0 / (var.sqrt() + 1e-8);
                        assert_close(
                            &format!("{what} agent {p} moments"),
                            &[want_mean, want_scale],
                            &[mean, scale],
                            1e-5,
                            1e-5,
                        );
                    }
                }
            }
        }
    }
}
