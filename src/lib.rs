//! PPO whose numeric work runs as WGSL compute kernels through wgpu, on any
//! GPU vendor and on CPU software adapters.
//!
//! Every kernel carries a leading agent (population) dimension: P independent
//! learners share one set of dispatches. See `DESIGN.md` in the repository.

pub mod config;
pub mod env;
pub mod error;
pub mod gpu;
pub mod meta;
pub mod nn;
pub mod ops;
pub mod ppo;
pub mod run;

pub use error::{Error, Result};
pub use gpu::{AdapterOptions, GpuContext};
