//! Vectorized environments on the host: the [`VecEnv`] interface the trainer
//! steps, [`CartPole`], Gymnasium's CartPole-v1 over P × N envs, and
//! [`Nav`], discrete 2-D point navigation for meta-learning.

mod cartpole;
pub mod golden;
mod nav;
mod vec_env;

pub use cartpole::{CartPole, CartPoleConfig, CartPoleParams, NUM_ACTIONS, OBS_DIM};
pub use nav::{Nav, NavConfig, NAV_NUM_ACTIONS, NAV_OBS_DIM};
pub use vec_env::{EpisodeStats, EpisodeTracker, StepOut, VecEnv};
