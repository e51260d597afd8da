//! Task families as parameter tensors: sampling tasks, and building the
//! vectorized env where agent `p`'s envs all run task `p`.

use rand::{Rng, SeedableRng};

use super::config::{GoalShape, MetaConfig, TargetKind, TaskFamily};
use crate::env::{
    CartPole, CartPoleConfig, CartPoleParams, EpisodeStats, EpisodeTracker, Nav, NavConfig,
    StepOut, VecEnv, NAV_NUM_ACTIONS, NAV_OBS_DIM, NUM_ACTIONS, OBS_DIM,
};
use crate::error::{Error, Result};
use crate::ppo::ActorCriticSpec;

/// The reward of a CartPole task with a target (a cart position or a cart
/// velocity) and a preferred action, per step:
/// `(1 - preference) * on_goal + preference * [action == preferred]`, where
/// `on_goal = (1 - weight) + weight * max(0, 1 - |v - goal| / scale)` and
/// `v` is the cart's position `x` or its velocity `x_dot` after the step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Target {
    /// Which quantity `goal` is for.
    pub kind: TargetKind,
    /// Where the cart should balance (m), or how fast it should move (m/s,
    /// signed: negative is to the left).
    pub goal: f64,
    /// Share of the goal term that depends on the goal; the rest is
    /// CartPole's reward for staying up.
    pub weight: f64,
    /// Distance from the goal at which the goal reward reaches 0 (m or m/s).
    pub scale: f64,
    /// The action the task rewards using.
    pub preferred_action: u32,
    /// Share of the reward paid for using `preferred_action` (0: none).
    pub preference: f64,
}

impl Target {
    /// CartPole's own reward: 1 per step.
    pub const NONE: Target = Target {
        kind: TargetKind::Position,
        goal: 0.0,
        weight: 0.0,
        scale: 1.0,
        preferred_action: 0,
        preference: 0.0,
    };

    /// The reward of a step that took `action` and left the cart with
    /// observation `obs` (`[x, x_dot, theta, theta_dot]`).
    pub fn reward(&self, obs: &[f32], action: u32) -> f64 {
        let v = f64::from(match self.kind {
            TargetKind::Position => obs[0],
            TargetKind::Velocity => obs[1],
        });
        let on_goal =
            (1.0 - self.weight) + self.weight * (1.0 - (v - self.goal).abs() / self.scale).max(0.0);
        let preferred = if action == self.preferred_action {
            1.0
        } else {
            0.0
        };
        (1.0 - self.preference) * on_goal + self.preference * preferred
    }
}

/// One task of a family.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Task {
    /// CartPole physics, and the cart position or velocity the reward asks for (None:
    /// CartPole's reward of 1 per step).
    Cartpole {
        physics: CartPoleParams,
        target: Option<Target>,
    },
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
                let goal = match config.target_kind {
                    TargetKind::Position => draw(&config.target_distance),
                    TargetKind::Velocity => draw(&config.target_speed),
                };
                let side = if draw(&[0.0, 1.0]) < 0.5 { -1.0 } else { 1.0 };
                // Drawn only when used, so other settings keep their task sequences.
                let preferred_action = if config.action_preference > 0.0 {
                    u32::from(draw(&[0.0, 1.0]) < 0.5)
                } else {
                    0
                };
                Task::Cartpole {
                    physics: CartPoleParams {
                        gravity,
                        masscart,
                        masspole,
                        length,
                        force_mag,
                        tau,
                        polarity: if flip { -1.0 } else { 1.0 },
                    },
                    target: (config.target_reward || config.action_preference > 0.0).then_some(
                        Target {
                            kind: config.target_kind,
                            goal: side * goal,
                            weight: if config.target_reward {
                                config.target_weight
                            } else {
                                0.0
                            },
                            scale: config.target_scale,
                            preferred_action,
                            preference: config.action_preference,
                        },
                    ),
                }
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
/// (all of `meta`'s family); CartPole episodes are truncated at
/// `cartpole_max_steps` and end when the cart leaves `±meta.x_threshold`,
/// navigation episodes at their horizon of 100.
pub fn make_env(
    meta: &MetaConfig,
    env_tasks: &[Task],
    num_agents: usize,
    envs_per_agent: usize,
    cartpole_max_steps: u32,
) -> Result<Box<dyn VecEnv>> {
    match meta.family {
        TaskFamily::Cartpole => {
            let (physics, targets): (Vec<CartPoleParams>, Vec<Option<Target>>) = env_tasks
                .iter()
                .map(|t| match t {
                    Task::Cartpole { physics, target } => (*physics, *target),
                    Task::Nav(_) => (
                        CartPoleParams {
                            gravity: f64::NAN,
                            ..CartPoleParams::GYMNASIUM
                        },
                        None,
                    ),
                })
                .unzip();
            let config = CartPoleConfig {
                max_episode_steps: cartpole_max_steps,
                x_threshold: meta.x_threshold,
                ..CartPoleConfig::new(num_agents, envs_per_agent)
            };
            let env = CartPole::with_physics(config, &physics)?;
            if targets.iter().all(Option::is_none) {
                Ok(Box::new(env))
            } else {
                let targets = targets.iter().map(|t| t.unwrap_or(Target::NONE)).collect();
                Ok(Box::new(CartPoleTarget::new(env, targets)?))
            }
        }
        TaskFamily::Nav => {
            let goals: Vec<[f64; 2]> = env_tasks
                .iter()
                .map(|t| match t {
                    Task::Nav(g) => *g,
                    Task::Cartpole { .. } => [f64::NAN; 2],
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

/// CartPole whose reward asks the cart to balance at a target position or
/// to move at a target velocity: each step pays [`Target::reward`] of the
/// cart's state after the step
/// instead of 1. Termination, truncation and auto-reset are
/// CartPole's. The target is not observed: like the navigation goal, it is
/// learnt from rewards, so no single policy serves targets on both sides.
pub struct CartPoleTarget {
    env: CartPole,
    targets: Vec<Target>,
    episodes: EpisodeTracker,
    discarded: Vec<EpisodeStats>,
}

impl CartPoleTarget {
    pub fn new(env: CartPole, targets: Vec<Target>) -> Result<Self> {
        if targets.len() != env.num_envs() {
            return Err(Error::shape(
                "CartPoleTarget::new",
                "targets",
                env.num_envs(),
                targets.len(),
            ));
        }
        let valid = |t: &Target| {
            t.goal.is_finite()
                && (0.0..=1.0).contains(&t.weight)
                && t.scale.is_finite()
                && t.scale > 0.0
                && (0.0..=1.0).contains(&t.preference)
                && (t.preferred_action as usize) < NUM_ACTIONS
        };
        if let Some(e) = targets.iter().position(|t| !valid(t)) {
            return Err(Error::InvalidEnv {
                index: e,
                field: "target".into(),
                value: format!("{:?}", targets[e]),
                reason: "goal must be finite, weight and preference in [0, 1], scale positive, preferred_action 0 or 1".into(),
            });
        }
        Ok(CartPoleTarget {
            episodes: EpisodeTracker::new(env.num_envs()),
            env,
            targets,
            discarded: Vec::new(),
        })
    }
}

impl VecEnv for CartPoleTarget {
    fn num_envs(&self) -> usize {
        self.env.num_envs()
    }

    fn obs_dim(&self) -> usize {
        OBS_DIM
    }

    fn num_actions(&self) -> usize {
        NUM_ACTIONS
    }

    fn reset(&mut self, seed: u64, obs: &mut [f32]) -> Result<()> {
        self.env.reset(seed, obs)?;
        self.episodes.clear();
        Ok(())
    }

    fn step(&mut self, actions: &[u32], out: &mut StepOut) -> Result<()> {
        self.env.step(actions, out)?;
        self.env.drain_episodes(&mut self.discarded);
        self.discarded.clear();
        for (e, &target) in self.targets.iter().enumerate() {
            // After an episode end, obs already holds the next episode's start.
            let obs = if out.is_done(e) {
                &out.final_obs[e * OBS_DIM..][..OBS_DIM]
            } else {
                &out.obs[e * OBS_DIM..][..OBS_DIM]
            };
            out.reward[e] = target.reward(obs, actions[e]) as f32;
        }
        self.episodes
            .record(&out.reward, &out.terminated, &out.truncated);
        Ok(())
    }

    fn drain_episodes(&mut self, into: &mut Vec<EpisodeStats>) {
        self.episodes.drain_into(into);
    }
}
