//! Meta-learning: task families as parameter tensors, Reptile and
//! first-order MAML with PPO as the inner loop (a meta-batch of M tasks is a
//! population of M agents sharing every dispatch), the multi-task baseline,
//! and the adaptation evaluation against scratch and multi-task inits.

pub mod config;
pub mod eval;
pub mod inner;
pub mod outer;
pub mod tasks;
pub mod train;

pub use config::{MetaConfig, MetaInit, TargetKind, TaskFamily, META_FIELD_NAMES};
pub use outer::{context_outer_cpu, outer_step_cpu, MetaAdamState, MetaMethod, OuterStep};
pub use tasks::{sample_tasks, Target, Task};
