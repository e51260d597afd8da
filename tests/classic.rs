//! Acrobot-v1, MountainCar-v0, MountainCarContinuous-v0 and Pendulum-v1
//! against Gymnasium's recordings (`scripts/gen_golden.py`), and the
//! batch's auto-reset, determinism and input validation.

mod common;

use std::path::PathBuf;

use ppo_wgpu::env::golden::{self, replay_file, GoldenAction};
use ppo_wgpu::env::{
    Acrobot, AcrobotParams, EpisodeStats, MountainCar, MountainCarContinuous, MountainCarParams,
    Pendulum, PendulumParams, StepOut, VecEnv,
};
use ppo_wgpu::Error;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[test]
fn acrobot_replays_gymnasium() {
    common::check_replay("acrobot", "Acrobot-v1", 20, 2);
}

#[test]
fn mountain_car_replays_gymnasium() {
    common::check_replay("mountain_car", "MountainCar-v0", 5, 2);
}

#[test]
fn mountain_car_continuous_replays_gymnasium() {
    common::check_replay("mountain_car_continuous", "MountainCarContinuous-v0", 5, 2);
    // The recording clips actions (beyond ±1) and hits the left wall.
    let recording = golden::load(common::golden_data("mountain_car_continuous")).unwrap();
    let beyond = recording
        .trajectories
        .iter()
        .flat_map(|t| &t.actions)
        .any(|a| matches!(a, GoldenAction::Continuous(v) if v[0].abs() > 1.0));
    assert!(beyond, "no out-of-bound action recorded");
    let at_wall = recording
        .trajectories
        .iter()
        .flat_map(|t| &t.obs)
        .any(|o| o[0] as f32 == -1.2);
    assert!(at_wall, "the left wall is never reached");
}

#[test]
fn pendulum_replays_gymnasium() {
    common::check_replay("pendulum", "Pendulum-v1", 0, 8);
    let recording = golden::load(common::golden_data("pendulum")).unwrap();
    let at_max_speed = recording
        .trajectories
        .iter()
        .flat_map(|t| &t.obs)
        .any(|o| o[2].abs() == 8.0);
    assert!(at_max_speed, "the speed limit is never reached");
}

fn write_temp(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "ppo_wgpu_classic_{}_{name}.json",
        std::process::id()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn replay_accepts_numbers_strings_and_a_trailing_reset() {
    // Two MountainCar steps at the goal's edge: the first ends the episode,
    // and the recorder's reset after it has no steps after it.
    let reset = |step: usize, state: &str| format!(r#"{{"step": {step}, "state64": {state}}}"#);
    let mut env = MountainCar::new(1).unwrap();
    env.set_state(0, &[0.49, 0.02]).unwrap();
    let mut out = StepOut::new(1, 2);
    env.step(&[2], &mut out).unwrap();
    assert_eq!(out.terminated, [1]);
    let obs = format!("[{}, {}]", out.final_obs[0], out.final_obs[1]);
    for state in ["[0.49, 0.02]", r#"["0.49", "0.02"]"#] {
        let text = format!(
            r#"{{"env_id": "MountainCar-v0", "trajectories": [{{"resets": [{}, {}],
              "actions": [2], "obs": [{obs}], "reward": [-1.0],
              "terminated": [true], "truncated": [false]}}]}}"#,
            reset(0, state),
            reset(1, "[-0.5, 0.0]"),
        );
        let path = write_temp("trailing", &text);
        let report = replay_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(report.passed(), "{report:?}");
        assert_eq!((report.steps, report.episodes), (1, 1));
    }
}

#[test]
fn replay_refuses_unknown_envs_and_mismatched_recordings() {
    let cases = [
        (
            r#"{"env_id": "LunarLander-v3", "trajectories": []}"#,
            "known: CartPole-v1, Acrobot-v1, MountainCar-v0, MountainCarContinuous-v0, Pendulum-v1",
        ),
        (
            r#"{"env_id": "Pendulum-v1", "trajectories": [{"resets": [{"step": 0, "state64": [0.1, 0.0]}],
               "actions": [1], "obs": [[1, 0, 0]], "reward": [0], "terminated": [false], "truncated": [false]}]}"#,
            "this env's actions are lists of 1 floats",
        ),
        (
            r#"{"env_id": "Acrobot-v1", "trajectories": [{"resets": [{"step": 0, "state64": [0.1, 0.0]}],
               "actions": [1], "obs": [[1, 0, 1, 0, 0, 0]], "reward": [-1], "terminated": [false], "truncated": [false]}]}"#,
            "expected 4",
        ),
        (
            r#"{"env_id": "MountainCar-v0", "trajectories": [{"resets": [{"step": 0, "state64": [-0.5, 0.0]}],
               "actions": [1], "obs": [[1, 0, 1]], "reward": [-1], "terminated": [false], "truncated": [false]}]}"#,
            "obs at step 0 has 3 components, the env has 2",
        ),
        (
            r#"{"env_id": "MountainCar-v0", "trajectories": [{"resets": [{"step": 0, "state64": [-0.5, 0.0]}],
               "actions": [3], "obs": [[1, 0]], "reward": [-1], "terminated": [false], "truncated": [false]}]}"#,
            "must be below 3",
        ),
    ];
    for (index, (text, expected)) in cases.iter().enumerate() {
        let path = write_temp(&format!("bad{index}"), text);
        let result = replay_file(&path);
        std::fs::remove_file(&path).unwrap();
        match result {
            Err(error @ Error::Format { .. }) => {
                assert!(
                    error.to_string().contains(expected),
                    "case {index}: {error}"
                );
            }
            other => panic!("case {index}: expected a format error, got {other:?}"),
        }
    }
}

/// Steps `env` with seeded random actions; returns every buffer of every step.
fn discrete_run<E: VecEnv>(env: &mut E, seed: u64, steps: usize) -> Vec<StepOut> {
    let n = env.num_envs();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = StepOut::new(n, env.obs_dim());
    env.reset(seed, &mut out.obs).unwrap();
    (0..steps)
        .map(|_| {
            let actions: Vec<u32> = (0..n)
                .map(|_| rng.random_range(0..env.num_actions() as u32))
                .collect();
            env.step(&actions, &mut out).unwrap();
            out.clone()
        })
        .collect()
}

#[test]
fn discrete_batches_are_deterministic_and_auto_reset() {
    let mut a = MountainCar::new(5).unwrap();
    let mut b = MountainCar::new(5).unwrap();
    let run_a = discrete_run(&mut a, 7, 450);
    assert_eq!(run_a, discrete_run(&mut b, 7, 450));
    assert_ne!(
        run_a,
        discrete_run(&mut b, 8, 450),
        "the seed changes the resets"
    );

    // Random pushes never reach the goal: every episode is truncated at 200
    // steps with a return of -200, and the next starts at rest in [-0.6, -0.4).
    let mut episodes = Vec::new();
    a.drain_episodes(&mut episodes);
    assert_eq!(episodes.len(), 10);
    for e in &episodes {
        assert_eq!((e.length, e.episode_return), (200, -200.0), "{e:?}");
    }
    let end = &run_a[199];
    assert!(end.truncated.iter().all(|&t| t == 1));
    for env in 0..5 {
        assert_ne!(end.final_obs[2 * env], end.obs[2 * env]);
        assert!((-0.6..-0.4).contains(&end.obs[2 * env]), "{:?}", end.obs);
        assert_eq!(end.obs[2 * env + 1], 0.0);
    }

    // Acrobot: reward -1 per step; reset states in [-0.1, 0.1) are float32.
    let mut acrobot = Acrobot::new(3).unwrap();
    let run = discrete_run(&mut acrobot, 3, 10);
    assert!(run.iter().all(|o| o.reward.iter().all(|&r| r == -1.0)));
    for env in 0..3 {
        let state = Acrobot::new(3).unwrap().state(env).unwrap();
        for s in state {
            assert!((-0.1..0.1).contains(&s) && s == f64::from(s as f32), "{s}");
        }
    }
}

#[test]
fn bad_actions_are_refused_before_any_env_steps() {
    let mut env = Acrobot::new(2).unwrap();
    let before = env.observations();
    let mut out = StepOut::new(2, 6);
    match env.step(&[0, 3], &mut out) {
        Err(Error::InvalidEnv {
            index,
            field,
            value,
            reason,
        }) => {
            assert_eq!((index, field.as_str(), value.as_str()), (1, "action", "3"));
            assert_eq!(reason, "must be below 3");
        }
        other => panic!("expected InvalidEnv, got {other:?}"),
    }
    assert_eq!(env.observations(), before);

    let mut pendulum = Pendulum::new(2).unwrap();
    let before = pendulum.observations();
    let mut out = StepOut::new(2, 3);
    match pendulum.step_continuous(&[0.5, f32::NAN], &mut out) {
        Err(Error::InvalidEnv { index, field, .. }) => {
            assert_eq!((index, field.as_str()), (1, "action"))
        }
        other => panic!("expected InvalidEnv, got {other:?}"),
    }
    match pendulum.step_continuous(&[0.5], &mut out) {
        Err(Error::ShapeMismatch {
            tensor,
            expected,
            got,
            ..
        }) => {
            assert_eq!((tensor.as_str(), expected, got), ("actions", 2, 1));
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    assert_eq!(pendulum.observations(), before);
}

#[test]
fn continuous_actions_are_clipped_as_gymnasium_clips_them() {
    // Pendulum clips the torque to ±2 for the dynamics and the cost.
    let step = |torque: f32| {
        let mut env = Pendulum::new(1).unwrap();
        env.set_state(0, &[0.3, -0.2]).unwrap();
        let mut out = StepOut::new(1, 3);
        env.step_continuous(&[torque], &mut out).unwrap();
        out
    };
    assert_eq!(step(2.0), step(7.5));
    assert_eq!(step(-2.0), step(-100.0));
    assert_ne!(step(1.0), step(2.0));

    // MountainCarContinuous clips the force but charges the unclipped action.
    let step = |force: f32| {
        let mut env = MountainCarContinuous::new(1).unwrap();
        env.set_state(0, &[-0.5, 0.0]).unwrap();
        let mut out = StepOut::new(1, 2);
        env.step_continuous(&[force], &mut out).unwrap();
        out
    };
    let (clipped, unclipped) = (step(3.0), step(1.0));
    assert_eq!(clipped.obs, unclipped.obs);
    assert_eq!(clipped.reward[0], (-0.1 * 9.0f64) as f32);
    assert_eq!(unclipped.reward[0], -0.1f32);

    // Continuous episodes end at their time limits: 200 and 999 steps.
    let mut env = Pendulum::new(1).unwrap();
    let mut out = StepOut::new(1, 3);
    let mut episodes: Vec<EpisodeStats> = Vec::new();
    for _ in 0..200 {
        env.step_continuous(&[0.0], &mut out).unwrap();
    }
    env.drain_episodes_continuous(&mut episodes);
    assert_eq!(out.truncated, [1]);
    assert_eq!(episodes.len(), 1);
    assert_eq!(episodes[0].length, 200);
    assert!(episodes[0].episode_return < 0.0);
    assert_eq!(
        MountainCarContinuous::new(1).unwrap().max_episode_steps(),
        999
    );
}

#[test]
fn invalid_physics_is_refused_naming_the_field() {
    let bad_acrobot = AcrobotParams {
        link_mass_2: -1.0,
        ..AcrobotParams::default()
    };
    let bad_car = MountainCarParams {
        gravity: f64::NAN,
        ..MountainCarParams::default()
    };
    let bad_pendulum = PendulumParams {
        dt: 0.0,
        ..PendulumParams::default()
    };
    let errors = [
        Acrobot::with_params(&[AcrobotParams::default(), bad_acrobot]).unwrap_err(),
        MountainCar::with_params(&[bad_car]).unwrap_err(),
        Pendulum::with_params(&[bad_pendulum]).unwrap_err(),
    ];
    let expected = [(1, "link_mass_2"), (0, "gravity"), (0, "dt")];
    for (error, (index, name)) in errors.into_iter().zip(expected) {
        match error {
            Error::InvalidEnv {
                index: i, field, ..
            } => assert_eq!((i, field.as_str()), (index, name)),
            other => panic!("expected InvalidEnv, got {other:?}"),
        }
    }
    assert!(matches!(Acrobot::new(0), Err(Error::InvalidConfig { .. })));
}

#[derive(serde::Deserialize)]
struct NormalizeGolden {
    gamma: f64,
    clip: f64,
    sequences: Vec<NormalizeSequence>,
}

#[derive(serde::Deserialize)]
struct NormalizeReset {
    step: usize,
    raw_obs: Vec<f64>,
    obs: Vec<f64>,
}

#[derive(serde::Deserialize)]
struct NormalizeSequence {
    env_id: String,
    resets: Vec<NormalizeReset>,
    raw_obs: Vec<Vec<f64>>,
    raw_reward: Vec<f64>,
    terminated: Vec<bool>,
    obs: Vec<Vec<f64>>,
    reward: Vec<f64>,
}

fn as_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

/// Gymnasium's NormalizeObservation + clip and NormalizeReward + clip
/// (`scripts/gen_normalize_golden.py`) fed the same raw stream give the same
/// float32 observations and float64 rewards, bit for bit.
#[test]
fn normalization_replays_gymnasium_bit_for_bit() {
    use ppo_wgpu::env::normalize::{ObsStats, ReturnStats};
    let path = format!(
        "{}/tests/data/normalize_golden.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let golden: NormalizeGolden =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut clipped = 0;
    let mut reward_clips = 0;
    for sequence in &golden.sequences {
        let dim = sequence.raw_obs[0].len();
        let mut obs_stats = ObsStats::new(dim);
        let mut return_stats = ReturnStats::default();
        let mut check_obs = |raw: &[f64], recorded: &[f64], at: &str| {
            let mut obs = as_f32(raw);
            obs_stats.update(&obs);
            obs_stats.normalize(&mut obs, golden.clip as f32);
            clipped += obs.iter().filter(|v| v.abs() == golden.clip as f32).count();
            assert_eq!(obs, as_f32(recorded), "{} {at}", sequence.env_id);
        };
        let mut resets = sequence.resets.iter().peekable();
        for step in 0..sequence.obs.len() {
            if let Some(reset) = resets.next_if(|r| r.step == step) {
                check_obs(
                    &reset.raw_obs,
                    &reset.obs,
                    &format!("reset before step {step}"),
                );
            }
            check_obs(
                &sequence.raw_obs[step],
                &sequence.obs[step],
                &format!("step {step}"),
            );
            let reward = return_stats.normalize(
                sequence.raw_reward[step],
                sequence.terminated[step],
                golden.gamma,
                golden.clip,
            );
            reward_clips += usize::from(reward.abs() == golden.clip);
            assert_eq!(
                reward, sequence.reward[step],
                "{} reward at step {step}",
                sequence.env_id
            );
        }
    }
    // Early in a stream the return's variance is tiny and rewards hit the clip.
    assert!(reward_clips > 0, "the clip is never exercised");
    eprintln!("clipped: {clipped} observation components, {reward_clips} rewards");
}

/// The wrapper applies each env's statistics in Gymnasium's order: the
/// step's observation (the terminal one at an episode end), then the
/// reset's; its state round-trips through a snapshot, and frozen it leaves
/// the statistics alone.
#[test]
fn normalized_batches_follow_gymnasium_order_and_resume() {
    use ppo_wgpu::env::normalize::{ObsStats, ReturnStats};
    use ppo_wgpu::env::{make_host_env, HostEnv, NormalizeSettings, Normalized};
    let settings = NormalizeSettings {
        obs: true,
        reward: true,
        gamma: 0.99,
        clip: 10.0,
    };
    let make = || make_host_env("MountainCar-v0", 1, 3, 20).unwrap();
    let mut raw_env = make();
    let mut env = Normalized::new(make(), settings).unwrap();
    let mut raw = StepOut::new(3, 2);
    let mut out = StepOut::new(3, 2);
    raw_env.reset(5, &mut raw.obs).unwrap();
    env.reset(5, &mut out.obs).unwrap();
    let mut stats = vec![ObsStats::new(2); 3];
    let mut returns = vec![ReturnStats::default(); 3];
    let normalize = |stats: &mut ObsStats, obs: &[f32]| {
        let mut obs = obs.to_vec();
        stats.update(&obs);
        stats.normalize(&mut obs, 10.0);
        obs
    };
    for (e, stats) in stats.iter_mut().enumerate() {
        assert_eq!(
            out.obs[2 * e..2 * e + 2],
            normalize(stats, &raw.obs[2 * e..2 * e + 2])[..]
        );
    }
    let mut rng = StdRng::seed_from_u64(9);
    for step in 0..45 {
        let actions: Vec<u32> = (0..3).map(|_| rng.random_range(0..3)).collect();
        raw_env.step(&actions, &mut raw).unwrap();
        env.step(&actions, &mut out).unwrap();
        assert_eq!(
            (&out.terminated, &out.truncated),
            (&raw.terminated, &raw.truncated)
        );
        for e in 0..3 {
            let slot = 2 * e..2 * e + 2;
            if raw.is_done(e) {
                let terminal = normalize(&mut stats[e], &raw.final_obs[slot.clone()]);
                assert_eq!(out.final_obs[slot.clone()], terminal[..], "step {step}");
            }
            assert_eq!(
                out.obs[slot.clone()],
                normalize(&mut stats[e], &raw.obs[slot])[..],
                "step {step}"
            );
            let reward =
                returns[e].normalize(f64::from(raw.reward[e]), raw.terminated[e] != 0, 0.99, 10.0);
            assert_eq!(out.reward[e], reward as f32);
        }
    }
    assert_eq!(env.state().obs, stats);
    assert_eq!(env.current_observations(), out.obs);

    // Snapshot, restore into a fresh wrapper: both continue identically.
    let mut copy = Normalized::new(make(), settings).unwrap();
    copy.restore_json(&env.snapshot_json().unwrap()).unwrap();
    assert_eq!(copy.current_observations(), out.obs);
    let mut out_copy = out.clone();
    for _ in 0..10 {
        let actions: Vec<u32> = (0..3).map(|_| rng.random_range(0..3)).collect();
        env.step(&actions, &mut out).unwrap();
        copy.step(&actions, &mut out_copy).unwrap();
        // `final_obs` means something only where an episode ended.
        for o in [&mut out, &mut out_copy] {
            for e in 0..3 {
                if !o.is_done(e) {
                    o.final_obs[2 * e..2 * e + 2].fill(0.0);
                }
            }
        }
        assert_eq!(out, out_copy);
    }
    env.freeze(true);
    let before = env.state().clone();
    env.step(&[0, 1, 2], &mut out).unwrap();
    assert_eq!(env.state(), &before);
}
