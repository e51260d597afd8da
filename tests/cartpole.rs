//! CartPole against Gymnasium's recordings and definitions, determinism,
//! per-env physics, episode statistics and input validation.

mod common;

use std::path::PathBuf;

use ppo_wgpu::env::golden::replay_file;
use ppo_wgpu::env::{
    CartPole, CartPoleConfig, CartPoleParams, EpisodeStats, StepOut, VecEnv, OBS_DIM,
};
use ppo_wgpu::Error;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Makes one field of a valid value invalid.
type Spoil<T> = fn(&mut T);

fn cartpole(num_agents: usize, envs_per_agent: usize) -> CartPole {
    CartPole::new(CartPoleConfig::new(num_agents, envs_per_agent)).unwrap()
}

fn random_actions(rng: &mut StdRng, num_envs: usize) -> Vec<u32> {
    (0..num_envs).map(|_| rng.random_range(0..2)).collect()
}

fn assert_reset_obs(obs: &[f32]) {
    for &v in obs {
        assert!(
            (-0.05..0.05).contains(&v),
            "reset observation {v} outside U(-0.05, 0.05)"
        );
    }
}

/// Asserts an `InvalidEnv` for `index` and `field` whose message shows `value`.
fn assert_invalid_env(
    result: ppo_wgpu::Result<impl std::fmt::Debug>,
    index: usize,
    field: &str,
    value: &str,
) {
    match result {
        Err(error @ Error::InvalidEnv { .. }) => {
            let message = error.to_string();
            let Error::InvalidEnv {
                index: i,
                field: f,
                value: v,
                ..
            } = error
            else {
                unreachable!()
            };
            assert_eq!((i, f.as_str(), v.as_str()), (index, field, value));
            assert!(
                message.contains(field) && message.contains(value),
                "{message}"
            );
        }
        other => panic!("expected InvalidEnv for env {index} field {field}, got {other:?}"),
    }
}

fn assert_shape_error(
    result: ppo_wgpu::Result<impl std::fmt::Debug>,
    tensor: &str,
    expected: usize,
    got: usize,
) {
    match result {
        Err(Error::ShapeMismatch {
            tensor: t,
            expected: e,
            got: g,
            ..
        }) => {
            assert_eq!((t.as_str(), e, g), (tensor, expected, got));
        }
        other => panic!("expected ShapeMismatch for {tensor}, got {other:?}"),
    }
}

#[test]
fn golden_replay_matches_gymnasium() {
    // The recording exercises both ways an episode ends; the replay is
    // within tolerance (bit-exact on glibc), flags and rewards exact.
    common::check_replay("cartpole", "CartPole-v1", 20, 2);
}

#[test]
fn replay_reports_missing_and_malformed_files() {
    let missing = replay_file("tests/data/no_such_file.json");
    assert!(matches!(missing, Err(Error::Io { .. })), "{missing:?}");

    let dir = std::env::temp_dir();
    let write = |name: &str, text: &str| -> PathBuf {
        let path = dir.join(format!("ppo_wgpu_{}_{name}.json", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    };
    let not_json = write("not_json", "{\"trajectories\": [");
    let reset_missing = write(
        "reset_missing",
        r#"{"trajectories": [{"resets": [{"step": 0, "state64": ["0.0", "0.0", "0.0", "0.0"]}],
            "actions": [1, 1], "obs": [[0, 0, 0, 0], [0, 0, 0, 0]], "reward": [1, 1],
            "terminated": [true, false], "truncated": [false, false]}]}"#,
    );
    for (path, expected) in [(&not_json, "EOF"), (&reset_missing, "resets at steps [0]")] {
        match replay_file(path) {
            Err(error @ Error::Format { .. }) => {
                assert!(error.to_string().contains(expected), "{error}");
            }
            other => panic!(
                "expected a format error for {}, got {other:?}",
                path.display()
            ),
        }
        std::fs::remove_file(path).unwrap();
    }
}

#[test]
fn defaults_are_gymnasium_cartpole_v1() {
    let params = CartPoleParams::default();
    assert_eq!(params, CartPoleParams::GYMNASIUM);
    assert_eq!(params.gravity, 9.8);
    assert_eq!(params.masscart, 1.0);
    assert_eq!(params.masspole, 0.1);
    assert_eq!(params.length, 0.5);
    assert_eq!(params.force_mag, 10.0);
    assert_eq!(params.tau, 0.02);
    assert_eq!(params.polarity, 1.0);

    let config = CartPoleConfig::new(3, 5);
    assert_eq!(config.max_episode_steps, 500);
    assert_eq!(config.x_threshold, 2.4);
    assert_eq!(
        config.theta_threshold_radians,
        12.0 * 2.0 * std::f64::consts::PI / 360.0
    );
    assert_eq!(config.reset_bound, 0.05);

    let cartpole = CartPole::new(config).unwrap();
    assert_eq!(cartpole.num_envs(), 15);
    assert_eq!((cartpole.num_agents(), cartpole.envs_per_agent()), (3, 5));
    assert_eq!((cartpole.obs_dim(), cartpole.num_actions()), (4, 2));
    assert!(cartpole
        .physics()
        .iter()
        .all(|p| *p == CartPoleParams::GYMNASIUM));
}

#[test]
fn terminal_step_rewards_one_and_resets() {
    let mut cartpole = cartpole(1, 3);
    let mut out = StepOut::new(3, OBS_DIM);
    // Env 1 leaves the track to the right, env 2 drops the pole to the left.
    cartpole.set_state(1, [2.39, 1.0, 0.0, 0.0]).unwrap();
    cartpole.set_state(2, [0.0, 0.0, -0.2, -1.0]).unwrap();
    cartpole.set_elapsed_steps(1, 41).unwrap();
    cartpole.step(&[0, 1, 0], &mut out).unwrap();

    assert_eq!(out.terminated, [0, 1, 1]);
    assert_eq!(out.truncated, [0, 0, 0]);
    assert_eq!(out.reward, [1.0, 1.0, 1.0]);
    assert_eq!(out.final_obs[OBS_DIM], (2.39 + 0.02 * 1.0) as f32);
    assert_eq!(out.final_obs[2 * OBS_DIM + 2], (-0.2 - 0.02) as f32);
    for env in [1, 2] {
        let obs = &out.obs[env * OBS_DIM..(env + 1) * OBS_DIM];
        assert_reset_obs(obs);
        let state = cartpole.state(env).unwrap();
        assert_eq!(obs, state.map(|v| v as f32));
        assert_eq!(cartpole.elapsed_steps(env).unwrap(), 0);
    }
    assert_eq!(cartpole.elapsed_steps(0).unwrap(), 1);

    let mut episodes = Vec::new();
    cartpole.drain_episodes(&mut episodes);
    let expected = [(1, 42), (2, 1)].map(|(env, length)| EpisodeStats {
        env,
        episode_return: f64::from(length),
        length,
    });
    assert_eq!(episodes, expected);
}

#[test]
fn truncation_at_max_episode_steps() {
    let max_episode_steps = 10;
    let mut config = CartPoleConfig::new(1, 1);
    config.max_episode_steps = max_episode_steps;
    let mut limited = CartPole::new(config).unwrap();
    let mut unlimited = cartpole(1, 1);
    let start = [0.01, -0.02, 0.03, -0.04];
    limited.set_state(0, start).unwrap();
    unlimited.set_state(0, start).unwrap();
    let (mut out, mut reference) = (StepOut::new(1, OBS_DIM), StepOut::new(1, OBS_DIM));

    for step in 1..=max_episode_steps {
        let action = [step % 2];
        limited.step(&action, &mut out).unwrap();
        unlimited.step(&action, &mut reference).unwrap();
        assert_eq!(out.terminated, [0]);
        assert_eq!(reference.truncated, [0]);
        if step < max_episode_steps {
            assert_eq!(out.truncated, [0], "truncated early at step {step}");
            assert_eq!(out.obs, reference.obs);
        }
    }
    assert_eq!(out.truncated, [1]);
    assert_eq!(out.reward, [1.0]);
    // The final observation is where the episode got to; obs starts the next one.
    assert_eq!(out.final_obs, reference.obs);
    assert_reset_obs(&out.obs);
    assert_eq!(limited.elapsed_steps(0).unwrap(), 0);

    let mut episodes = Vec::new();
    limited.drain_episodes(&mut episodes);
    let length = max_episode_steps;
    let expected = EpisodeStats {
        env: 0,
        episode_return: f64::from(length),
        length,
    };
    assert_eq!(episodes, [expected]);
}

#[test]
fn truncation_can_coincide_with_termination() {
    let mut config = CartPoleConfig::new(1, 1);
    config.max_episode_steps = 10;
    let mut cartpole = CartPole::new(config).unwrap();
    cartpole.set_state(0, [-2.39, -1.0, 0.0, 0.0]).unwrap();
    cartpole.set_elapsed_steps(0, 9).unwrap();
    let mut out = StepOut::new(1, OBS_DIM);
    cartpole.step(&[0], &mut out).unwrap();
    assert_eq!((out.terminated[0], out.truncated[0]), (1, 1));
}

#[test]
fn same_seed_same_trajectories_whatever_the_batch_layout() {
    let run = |num_agents: usize, envs_per_agent: usize, seed: u64| {
        let mut cartpole = cartpole(num_agents, envs_per_agent);
        let num_envs = cartpole.num_envs();
        let mut out = StepOut::new(num_envs, OBS_DIM);
        cartpole.reset(seed, &mut out.obs).unwrap();
        let mut history = vec![out.clone()];
        let mut episodes = Vec::new();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..300 {
            cartpole
                .step(&random_actions(&mut rng, num_envs), &mut out)
                .unwrap();
            history.push(out.clone());
        }
        cartpole.drain_episodes(&mut episodes);
        (history, episodes)
    };
    let (history, episodes) = run(2, 8, 42);
    assert!(
        episodes.len() > 100,
        "random actions should end many episodes"
    );
    assert_eq!(run(2, 8, 42), (history.clone(), episodes));
    // Env e's resets depend on (seed, e, episode), not on P and N.
    assert_eq!(run(1, 16, 42).0, history);
    assert_ne!(run(2, 8, 43).0[0].obs, history[0].obs);
}

#[test]
fn reset_draws_from_the_reset_distribution_and_forgets_episodes() {
    let mut cartpole = cartpole(4, 256);
    let mut out = StepOut::new(cartpole.num_envs(), OBS_DIM);
    cartpole
        .step(&vec![1; cartpole.num_envs()], &mut out)
        .unwrap();
    cartpole.set_elapsed_steps(5, 499).unwrap();
    cartpole
        .step(&vec![1; cartpole.num_envs()], &mut out)
        .unwrap();

    cartpole.reset(9, &mut out.obs).unwrap();
    assert_reset_obs(&out.obs);
    let mean = out.obs.iter().map(|&v| f64::from(v)).sum::<f64>() / out.obs.len() as f64;
    assert!(mean.abs() < 0.005, "reset mean {mean} is not centred");
    let min = out.obs.iter().copied().fold(f32::INFINITY, f32::min);
    let max = out.obs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert!(
        min < -0.049 && max > 0.049,
        "reset range [{min}, {max}] does not span the bound"
    );
    for env in 0..cartpole.num_envs() {
        assert_eq!(cartpole.elapsed_steps(env).unwrap(), 0);
    }
    let mut episodes = Vec::new();
    cartpole.drain_episodes(&mut episodes);
    assert!(
        episodes.is_empty(),
        "reset keeps the undrained episode {episodes:?}"
    );
}

#[test]
fn per_env_physics() {
    let gym = CartPoleParams::GYMNASIUM;
    let flipped = CartPoleParams {
        polarity: -1.0,
        ..gym
    };
    let strong = CartPoleParams {
        force_mag: 20.0,
        ..gym
    };
    let light_gravity = CartPoleParams {
        gravity: 1.62,
        ..gym
    };
    let physics = [gym, flipped, strong, gym, light_gravity, gym];
    let mut cartpole = CartPole::with_physics(CartPoleConfig::new(2, 3), &physics).unwrap();
    assert_eq!(cartpole.physics(), physics);
    for env in 0..physics.len() {
        cartpole.set_state(env, [0.0, 0.0, 0.1, 0.0]).unwrap();
    }
    let mut out = StepOut::new(physics.len(), OBS_DIM);
    for _ in 0..2 {
        cartpole.step(&[1, 1, 1, 0, 0, 1], &mut out).unwrap();
    }
    let [normal, flipped, strong, earth, moon, _] =
        std::array::from_fn(|env| cartpole.state(env).unwrap());

    // Action 1 pushes right unless the motor is flipped.
    assert!(
        normal[1] > 0.0 && flipped[1] < 0.0,
        "{normal:?} {flipped:?}"
    );
    // A stronger push moves the cart faster and swings the pole back harder.
    assert!(
        strong[1] > normal[1] && strong[3] < normal[3],
        "{strong:?} {normal:?}"
    );
    // Pushed the way it leans, the pole falls slower under lower gravity.
    assert!(0.0 < moon[3] && moon[3] < earth[3], "{moon:?} {earth:?}");
    // Envs with the same physics, state and actions stay identical.
    assert_eq!(cartpole.state(5).unwrap(), normal);
}

#[test]
fn flipped_polarity_mirrors_the_cart_from_rest() {
    let flipped = CartPoleParams {
        polarity: -1.0,
        ..CartPoleParams::GYMNASIUM
    };
    let physics = [CartPoleParams::GYMNASIUM, flipped];
    let mut cartpole = CartPole::with_physics(CartPoleConfig::new(1, 2), &physics).unwrap();
    cartpole.set_state(0, [0.0; 4]).unwrap();
    cartpole.set_state(1, [0.0; 4]).unwrap();
    let mut out = StepOut::new(2, OBS_DIM);
    cartpole.step(&[1, 1], &mut out).unwrap();
    let [normal, flipped] = [0, 1].map(|env| cartpole.state(env).unwrap());
    assert!(normal[1] > 0.0);
    assert_eq!(flipped, normal.map(|v| -v));
}

#[test]
fn episode_stats_match_observed_episodes() {
    let mut cartpole = cartpole(2, 4);
    let num_envs = cartpole.num_envs();
    let mut out = StepOut::new(num_envs, OBS_DIM);
    cartpole.reset(3, &mut out.obs).unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let mut running = vec![0u32; num_envs];
    let mut observed = Vec::new();
    let mut reported = Vec::new();
    for step in 0..2000 {
        cartpole
            .step(&random_actions(&mut rng, num_envs), &mut out)
            .unwrap();
        for (env, length) in running.iter_mut().enumerate() {
            *length += 1;
            if out.is_done(env) {
                observed.push((env, *length));
                *length = 0;
            }
        }
        if step % 97 == 0 {
            cartpole.drain_episodes(&mut reported);
        }
    }
    cartpole.drain_episodes(&mut reported);

    assert!(observed.len() > 500);
    let reported_lengths: Vec<(usize, u32)> = reported.iter().map(|e| (e.env, e.length)).collect();
    assert_eq!(reported_lengths, observed);
    // CartPole pays 1 per step, so an episode's return is its length.
    assert!(reported
        .iter()
        .all(|e| e.episode_return == f64::from(e.length)));
    for (env, &length) in running.iter().enumerate() {
        assert_eq!(cartpole.elapsed_steps(env).unwrap(), length);
    }
}

#[test]
fn bad_actions_are_refused_without_stepping() {
    let mut cartpole = cartpole(2, 2);
    let mut out = StepOut::new(4, OBS_DIM);
    let before: Vec<[f64; 4]> = (0..4).map(|env| cartpole.state(env).unwrap()).collect();
    assert_invalid_env(cartpole.step(&[0, 1, 1, 2], &mut out), 3, "action", "2");
    assert_invalid_env(
        cartpole.step(&[u32::MAX, 1, 1, 0], &mut out),
        0,
        "action",
        &u32::MAX.to_string(),
    );
    let after: Vec<[f64; 4]> = (0..4).map(|env| cartpole.state(env).unwrap()).collect();
    assert_eq!(before, after);
    assert_eq!(cartpole.elapsed_steps(0).unwrap(), 0);
}

#[test]
fn bad_physics_is_refused_at_construction() {
    let config = CartPoleConfig::new(1, 3);
    let cases: [(&str, Spoil<CartPoleParams>, &str); 8] = [
        ("masscart", |p| p.masscart = f64::NAN, "NaN"),
        ("gravity", |p| p.gravity = f64::INFINITY, "inf"),
        ("masspole", |p| p.masspole = 0.0, "0"),
        ("length", |p| p.length = -0.5, "-0.5"),
        ("force_mag", |p| p.force_mag = f64::NEG_INFINITY, "-inf"),
        ("tau", |p| p.tau = 0.0, "0"),
        ("polarity", |p| p.polarity = 0.5, "0.5"),
        ("polarity", |p| p.polarity = f64::NAN, "NaN"),
    ];
    for (field, spoil, value) in cases {
        let mut physics = [CartPoleParams::GYMNASIUM; 3];
        spoil(&mut physics[2]);
        assert_invalid_env(
            CartPole::with_physics(config.clone(), &physics),
            2,
            field,
            value,
        );
    }
}

#[test]
fn bad_config_is_refused_at_construction() {
    let cases: [(&str, Spoil<CartPoleConfig>); 6] = [
        ("num_agents", |c| c.num_agents = 0),
        ("envs_per_agent", |c| c.envs_per_agent = 0),
        ("max_episode_steps", |c| c.max_episode_steps = 0),
        ("x_threshold", |c| c.x_threshold = f64::NAN),
        ("theta_threshold_radians", |c| {
            c.theta_threshold_radians = -1.0
        }),
        ("reset_bound", |c| c.reset_bound = f64::INFINITY),
    ];
    for (field, spoil) in cases {
        let mut config = CartPoleConfig::new(2, 2);
        spoil(&mut config);
        match CartPole::new(config) {
            Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected InvalidConfig for {field}, got {other:?}"),
        }
    }
}

#[test]
fn wrong_buffer_lengths_are_refused() {
    let mut cartpole = cartpole(1, 4);
    let mut out = StepOut::new(4, OBS_DIM);
    assert_shape_error(cartpole.step(&[0, 1, 0], &mut out), "actions", 4, 3);
    let cases: [(&str, Spoil<StepOut>, usize, usize); 5] = [
        ("obs", |o| o.obs.truncate(15), 16, 15),
        ("reward", |o| o.reward.push(0.0), 4, 5),
        ("terminated", |o| o.terminated.clear(), 4, 0),
        ("truncated", |o| o.truncated.push(0), 4, 5),
        ("final_obs", |o| o.final_obs.truncate(4), 16, 4),
    ];
    for (buffer, spoil, expected, got) in cases {
        let mut out = StepOut::new(4, OBS_DIM);
        spoil(&mut out);
        assert_shape_error(
            cartpole.step(&[0, 1, 0, 1], &mut out),
            buffer,
            expected,
            got,
        );
    }
    assert_shape_error(cartpole.reset(0, &mut [0.0; 12]), "obs", 16, 12);
    let physics = [CartPoleParams::GYMNASIUM; 3];
    assert_shape_error(
        CartPole::with_physics(CartPoleConfig::new(1, 4), &physics),
        "physics",
        4,
        3,
    );
}

#[test]
fn state_access_is_checked() {
    let mut cartpole = cartpole(1, 2);
    assert_invalid_env(cartpole.state(2), 2, "env", "2");
    assert_invalid_env(cartpole.set_elapsed_steps(5, 0), 5, "env", "5");
    assert_invalid_env(
        cartpole.set_state(1, [0.0, f64::NAN, 0.0, 0.0]),
        1,
        "state",
        "[0.0, NaN, 0.0, 0.0]",
    );
    let state = [0.1, -0.2, 0.03, -0.04];
    cartpole.set_state(1, state).unwrap();
    assert_eq!(cartpole.state(1).unwrap(), state);
}
