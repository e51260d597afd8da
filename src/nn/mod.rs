//! Networks and their parameter layout.

pub mod init;
pub mod mlp;

pub use mlp::{mlp_backward_cpu, mlp_forward_cpu, LayerLayout, MlpPlan, MlpSpec, Placement};
