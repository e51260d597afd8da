//! Vectorized environments on the host: the [`VecEnv`] interface the trainer
//! steps, and [`CartPole`], Gymnasium's CartPole-v1 over P × N envs.

mod cartpole;
pub mod golden;
mod vec_env;

pub use cartpole::{CartPole, CartPoleConfig, CartPoleParams, NUM_ACTIONS, OBS_DIM};
pub use vec_env::{EpisodeStats, EpisodeTracker, StepOut, VecEnv};
