//! Vectorized environments: the [`VecEnv`] interface the trainer steps on
//! the host, [`CartPole`], Gymnasium's CartPole-v1 over P × N envs,
//! [`GpuCartPole`], the same physics in f32 on the device, the other
//! classic-control tasks on the host ([`Acrobot`], [`MountainCar`],
//! [`MountainCarContinuous`], [`Pendulum`], batches of [`Classic`]), and
//! [`Nav`], discrete 2-D point navigation for meta-learning.

mod acrobot;
mod cartpole;
mod classic;
pub mod golden;
pub mod gpu_cartpole;
mod mountain_car;
mod nav;
pub mod normalize;
mod pendulum;
pub mod registry;
mod vec_env;

pub use acrobot::{Acrobot, AcrobotDynamics, AcrobotParams};
pub use cartpole::{
    CartPole, CartPoleConfig, CartPoleParams, CartPoleSnapshot, NUM_ACTIONS, OBS_DIM,
};
pub use classic::{Classic, ClassicSnapshot, ContinuousDynamics, DiscreteDynamics, Dynamics};
pub use gpu_cartpole::{CartPoleState32, GpuCartPole};
pub use mountain_car::{
    MountainCar, MountainCarContinuous, MountainCarContinuousDynamics, MountainCarContinuousParams,
    MountainCarDynamics, MountainCarParams,
};
pub use nav::{Nav, NavConfig, NAV_NUM_ACTIONS, NAV_OBS_DIM};
pub use normalize::{NormalizeSettings, Normalized};
pub use pendulum::{Pendulum, PendulumDynamics, PendulumParams};
pub use registry::{env_info, make_host_env, trainable_env, EnvInfo, HostEnv, ENVS};
pub use vec_env::{EpisodeStats, EpisodeTracker, StepOut, VecEnv};
