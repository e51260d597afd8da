//! Vectorized environments: the [`VecEnv`] interface the trainer steps on
//! the host, [`CartPole`], Gymnasium's CartPole-v1 over P × N envs,
//! [`GpuCartPole`], the same physics in f32 on the device, and [`Nav`],
//! discrete 2-D point navigation for meta-learning.

mod cartpole;
pub mod golden;
pub mod gpu_cartpole;
mod nav;
mod vec_env;

pub use cartpole::{CartPole, CartPoleConfig, CartPoleParams, NUM_ACTIONS, OBS_DIM};
pub use gpu_cartpole::{CartPoleState32, GpuCartPole};
pub use nav::{Nav, NavConfig, NAV_NUM_ACTIONS, NAV_OBS_DIM};
pub use vec_env::{EpisodeStats, EpisodeTracker, StepOut, VecEnv};
