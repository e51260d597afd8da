//! The envs `train --env ID` knows, by Gymnasium id: their spaces, time
//! limits and "solved" returns, and host batches of them behind one trait.

use super::cartpole::{CartPole, CartPoleConfig, CartPoleSnapshot};
use super::classic::{Classic, ClassicSnapshot, DiscreteDynamics};
use super::vec_env::VecEnv;
use super::{AcrobotDynamics, MountainCarDynamics};
use crate::{Error, Result};

/// What the trainer and the command line need to know of an env.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnvInfo {
    /// Gymnasium's id.
    pub id: &'static str,
    /// Observation components.
    pub obs_dim: usize,
    /// Discrete actions; `None` for a continuous (box) action space.
    pub num_actions: Option<usize>,
    /// Gymnasium's `TimeLimit` for the id.
    pub max_episode_steps: u32,
    /// The mean return that counts as solved: Gymnasium's `reward_threshold`
    /// (for Pendulum-v1, which has none, the usual −200).
    pub solved_return: f64,
    /// What the observation components are, for messages.
    pub observation: &'static str,
    /// What the actions are, for messages.
    pub actions: &'static str,
}

/// Every env this crate has, in the order they are listed to users.
pub const ENVS: [EnvInfo; 5] = [
    EnvInfo {
        id: "CartPole-v1",
        obs_dim: 4,
        num_actions: Some(2),
        max_episode_steps: 500,
        solved_return: 475.0,
        observation: "cart position, cart velocity, pole angle, pole angular velocity",
        actions: "push left, push right",
    },
    EnvInfo {
        id: "Acrobot-v1",
        obs_dim: 6,
        num_actions: Some(3),
        max_episode_steps: 500,
        solved_return: -100.0,
        observation: "cos and sin of both joint angles, both angular velocities",
        actions: "torque -1, 0, +1",
    },
    EnvInfo {
        id: "MountainCar-v0",
        obs_dim: 2,
        num_actions: Some(3),
        max_episode_steps: 200,
        solved_return: -110.0,
        observation: "position, velocity",
        actions: "push left, no push, push right",
    },
    EnvInfo {
        id: "MountainCarContinuous-v0",
        obs_dim: 2,
        num_actions: None,
        max_episode_steps: 999,
        solved_return: 90.0,
        observation: "position, velocity",
        actions: "one force in [-1, 1]",
    },
    EnvInfo {
        id: "Pendulum-v1",
        obs_dim: 3,
        num_actions: None,
        max_episode_steps: 200,
        solved_return: -200.0,
        observation: "cos and sin of the angle, angular velocity",
        actions: "one torque in [-2, 2]",
    },
];

/// The ids of [`ENVS`], comma-separated, for messages.
pub fn known_ids() -> String {
    ENVS.iter().map(|e| e.id).collect::<Vec<_>>().join(", ")
}

/// The env `id` names; an error naming `field` and listing the known ids
/// otherwise.
pub fn env_info(field: &str, id: &str) -> Result<&'static EnvInfo> {
    ENVS.iter().find(|e| e.id == id).ok_or_else(|| {
        Error::config(
            field,
            format!("{id:?}"),
            format!("unknown env; known: {}", known_ids()),
        )
    })
}

/// The env `id` names if `train` can train it (discrete actions), else an
/// error naming `field` that says why not.
pub fn trainable_env(field: &str, id: &str) -> Result<&'static EnvInfo> {
    let info = env_info(field, id)?;
    if info.num_actions.is_none() {
        return Err(Error::config(
            field,
            id,
            "has continuous actions, which need a Gaussian policy head; the policy head is categorical only for now",
        ));
    }
    Ok(info)
}

/// A host batch the trainer steps and checkpoints: a [`VecEnv`] whose
/// evolving state round-trips through JSON for exact resume.
pub trait HostEnv: VecEnv {
    /// The evolving state (env states, step counters, episode returns, the
    /// reset generator's position) as JSON.
    fn snapshot_json(&self) -> Result<String>;
    /// Restores [`HostEnv::snapshot_json`] of a batch of the same env and size.
    fn restore_json(&mut self, json: &str) -> Result<()>;
    /// The observations the policy reads next.
    fn current_observations(&self) -> Vec<f32>;
    /// Per env, the observation normalization's statistics, where the
    /// batch normalizes observations.
    fn obs_stats(&self) -> Option<&[super::normalize::ObsStats]> {
        None
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Format {
        path: "env snapshot".into(),
        reason: e.to_string(),
    })
}

fn from_json<T: serde::de::DeserializeOwned>(id: &str, json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| Error::Format {
        path: "env snapshot".into(),
        reason: format!("not a {id} batch's state: {e}"),
    })
}

impl HostEnv for CartPole {
    fn snapshot_json(&self) -> Result<String> {
        to_json(&self.snapshot())
    }

    fn restore_json(&mut self, json: &str) -> Result<()> {
        let snapshot: CartPoleSnapshot = from_json("CartPole-v1", json)?;
        self.restore(&snapshot)
    }

    fn current_observations(&self) -> Vec<f32> {
        self.observations()
    }
}

impl<D: DiscreteDynamics> HostEnv for Classic<D> {
    fn snapshot_json(&self) -> Result<String> {
        to_json(&self.snapshot())
    }

    fn restore_json(&mut self, json: &str) -> Result<()> {
        let snapshot: ClassicSnapshot = from_json(self.id(), json)?;
        self.restore(&snapshot)
    }

    fn current_observations(&self) -> Vec<f32> {
        self.observations()
    }
}

/// `num_agents × envs_per_agent` host envs of the trainable env `id`
/// (env `p * N + n` belongs to agent `p`), truncated after
/// `max_episode_steps`.
pub fn make_host_env(
    id: &str,
    num_agents: usize,
    envs_per_agent: usize,
    max_episode_steps: u32,
) -> Result<Box<dyn HostEnv>> {
    trainable_env("env_id", id)?;
    let num_envs = num_agents.checked_mul(envs_per_agent).ok_or_else(|| {
        let value = format!("{num_agents} × {envs_per_agent}");
        Error::config("num_agents × envs_per_agent", value, "overflows usize")
    })?;
    fn classic<D: DiscreteDynamics + 'static>(n: usize, limit: u32) -> Result<Box<dyn HostEnv>>
    where
        Classic<D>: HostEnv,
    {
        let mut env = Classic::<D>::new(n)?;
        env.set_max_episode_steps(limit)?;
        Ok(Box::new(env))
    }
    match id {
        "CartPole-v1" => {
            let config = CartPoleConfig {
                max_episode_steps,
                ..CartPoleConfig::new(num_agents, envs_per_agent)
            };
            Ok(Box::new(CartPole::new(config)?))
        }
        "Acrobot-v1" => classic::<AcrobotDynamics>(num_envs, max_episode_steps),
        "MountainCar-v0" => classic::<MountainCarDynamics>(num_envs, max_episode_steps),
        other => Err(Error::config("env_id", other, "has no host batch")),
    }
}
