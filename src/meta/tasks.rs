//! Task families as parameter tensors: sampling tasks, and building the
//! vectorized env where agent `p`'s envs all run task `p`.

use rand::{Rng, SeedableRng};

use super::config::{GoalShape, MetaConfig, TaskFamily};
use crate::env::{
    CartPole, CartPoleConfig, CartPoleParams, Nav, NavConfig, VecEnv, NAV_NUM_ACTIONS, NAV_OBS_DIM,
    NUM_ACTIONS, OBS_DIM,
};
use crate::error::Result;
use crate::ppo::ActorCriticSpec;

/// One task of a family.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Task {
    Cartpole(CartPoleParams),
    /// The goal of a navigation task.
    Nav([f64; 2]),
}

/// `count` tasks drawn from `config`'s distribution by a generator seeded
/// with `seed`: the same seed gives the same tasks.
pub fn sample_tasks(config: &MetaConfig, seed: u64, count: usize) -> Vec<Task> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut draw = |range: &[f64]| match range {
        &[low, high] if high > low => rng.random_range(low..=high),
        &[low, ..] => low,
        [] => f64::NAN,
    };
    (0..count)
        .map(|_| match config.family {
            TaskFamily::Cartpole => {
                let gravity = draw(&config.gravity);
                let masscart = draw(&config.masscart);
                let masspole = draw(&config.masspole);
                let length = draw(&config.length);
                let force_mag = draw(&config.force_mag);
                let tau = draw(&config.tau);
                let flip = draw(&[0.0, 1.0]) < config.flip_probability;
                Task::Cartpole(CartPoleParams {
                    gravity,
                    masscart,
                    masspole,
                    length,
                    force_mag,
                    tau,
                    polarity: if flip { -1.0 } else { 1.0 },
                })
            }
            TaskFamily::Nav => match config.goal_shape {
                GoalShape::Square => {
                    Task::Nav([draw(&config.goal_range), draw(&config.goal_range)])
                }
                GoalShape::Circle => {
                    let radius = draw(&config.goal_radius);
                    let angle = draw(&[0.0, std::f64::consts::TAU]);
                    Task::Nav([radius * angle.cos(), radius * angle.sin()])
                }
            },
        })
        .collect()
}

/// The actor-critic of a family's observations and actions.
pub fn family_spec(family: TaskFamily, hidden: &[usize]) -> Result<ActorCriticSpec> {
    match family {
        TaskFamily::Cartpole => ActorCriticSpec::new(OBS_DIM, NUM_ACTIONS, hidden),
        TaskFamily::Nav => ActorCriticSpec::new(NAV_OBS_DIM, NAV_NUM_ACTIONS, hidden),
    }
}

/// `num_agents × envs_per_agent` envs where env `e` runs `env_tasks[e]`
/// (all of one family); CartPole episodes are truncated at
/// `cartpole_max_steps`, navigation at its horizon of 100.
pub fn make_env(
    family: TaskFamily,
    env_tasks: &[Task],
    num_agents: usize,
    envs_per_agent: usize,
    cartpole_max_steps: u32,
) -> Result<Box<dyn VecEnv>> {
    match family {
        TaskFamily::Cartpole => {
            let physics: Vec<CartPoleParams> = env_tasks
                .iter()
                .map(|t| match t {
                    Task::Cartpole(p) => *p,
                    Task::Nav(_) => CartPoleParams {
                        gravity: f64::NAN,
                        ..CartPoleParams::GYMNASIUM
                    },
                })
                .collect();
            let config = CartPoleConfig {
                max_episode_steps: cartpole_max_steps,
                ..CartPoleConfig::new(num_agents, envs_per_agent)
            };
            Ok(Box::new(CartPole::with_physics(config, &physics)?))
        }
        TaskFamily::Nav => {
            let goals: Vec<[f64; 2]> = env_tasks
                .iter()
                .map(|t| match t {
                    Task::Nav(g) => *g,
                    Task::Cartpole(_) => [f64::NAN; 2],
                })
                .collect();
            Ok(Box::new(Nav::new(
                NavConfig::new(num_agents, envs_per_agent),
                &goals,
            )?))
        }
    }
}

/// Each of `tasks` repeated `copies` times in order: per-agent tasks to per-env tasks.
pub fn repeat_tasks(tasks: &[Task], copies: usize) -> Vec<Task> {
    tasks
        .iter()
        .flat_map(|t| std::iter::repeat_n(*t, copies))
        .collect()
}
