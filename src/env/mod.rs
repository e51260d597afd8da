//! Vectorized environments: the [`VecEnv`] interface the trainer steps on
//! the host, [`CartPole`], Gymnasium's CartPole-v1 over P × N envs, and
//! [`GpuCartPole`], the same physics in f32 on the device.

mod cartpole;
pub mod golden;
pub mod gpu_cartpole;
mod vec_env;

pub use cartpole::{CartPole, CartPoleConfig, CartPoleParams, NUM_ACTIONS, OBS_DIM};
pub use gpu_cartpole::{CartPoleState32, GpuCartPole};
pub use vec_env::{EpisodeStats, EpisodeTracker, StepOut, VecEnv};
