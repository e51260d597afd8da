//! The wgpu runtime: adapter selection, kernel registry and pipeline cache, buffers.

pub mod buffers;
pub mod context;
pub mod dispatch;
pub mod kernels;
pub mod threads;

pub use buffers::{GpuBuffer, Readback, UniformBuffer};
pub use context::{list_adapters, AdapterOptions, AdapterSummary, GpuContext};
pub use dispatch::{Dispatch, WORKGROUP_SIZE};
pub use kernels::{Kernel, ALL_SHADERS};
