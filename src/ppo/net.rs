//! The actor-critic of one agent: separate actor and critic MLPs sharing one
//! flat parameter slice (actor layers, then critic layers).

use crate::error::Result;
use crate::nn::{MlpSpec, Placement};

/// Sizes of an actor-critic: tanh hidden layers (empty = the plain linear
/// policy and value of the seed design), categorical actions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActorCriticSpec {
    pub obs_dim: usize,
    pub num_actions: usize,
    pub hidden: Vec<usize>,
}

impl ActorCriticSpec {
    pub fn new(obs_dim: usize, num_actions: usize, hidden: &[usize]) -> Result<Self> {
        // Validates the sizes through the MLP constructors.
        MlpSpec::new(obs_dim, hidden, num_actions)?;
        Ok(ActorCriticSpec {
            obs_dim,
            num_actions,
            hidden: hidden.to_vec(),
        })
    }

    pub fn actor(&self) -> MlpSpec {
        MlpSpec {
            in_dim: self.obs_dim,
            hidden: self.hidden.clone(),
            out_dim: self.num_actions,
        }
    }

    pub fn critic(&self) -> MlpSpec {
        MlpSpec {
            in_dim: self.obs_dim,
            hidden: self.hidden.clone(),
            out_dim: 1,
        }
    }

    /// Where the critic's parameters start in an agent's slice.
    pub fn critic_base(&self) -> usize {
        self.actor().param_count()
    }

    /// Parameters per agent, K.
    pub fn param_count(&self) -> usize {
        self.actor().param_count() + self.critic().param_count()
    }

    /// Placement of the actor and of the critic for `num_agents` × `rows_per_agent` rows.
    pub fn placements(&self, num_agents: usize, rows_per_agent: usize) -> (Placement, Placement) {
        let actor = Placement {
            num_agents,
            rows_per_agent,
            param_stride: self.param_count(),
            base: 0,
        };
        let critic = Placement {
            base: self.critic_base(),
            ..actor
        };
        (actor, critic)
    }
}
