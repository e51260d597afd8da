//! Generalized advantage estimation with termination and truncation told
//! apart, as a sequential reverse scan per (agent, env) or, for long
//! horizons with few sequences, an associative parallel scan.

use crate::error::Result;
use crate::gpu::{Dispatch, GpuBuffer, GpuContext, Kernel};
use crate::ops::{fits_u32, RECORD};

/// `flags` bit: the episode ended in a terminal state (no bootstrap).
pub const TERMINATED: u32 = 1;
/// `flags` bit: the episode was cut by the time limit (bootstrap from V(final obs)).
pub const TRUNCATED: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct GaeDims {
    num_steps: u32,
    sequences: u32,
    gamma: f32,
    lambda: f32,
}

/// Which GAE kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GaeVariant {
    /// One invocation per sequence, a loop over T.
    Sequential,
    /// One 256-lane workgroup per sequence, a parallel scan over T.
    Scan,
}

impl GaeVariant {
    /// The scan pays off when there are too few sequences to fill the adapter
    /// and each is long enough to keep a workgroup busy.
    pub fn for_shape(num_steps: usize, sequences: usize) -> Self {
        if sequences <= 32 && num_steps >= 256 {
            GaeVariant::Scan
        } else {
            GaeVariant::Sequential
        }
    }
}

/// GAE over rollout tensors [T][S] (S = P·N sequences), writing advantage
/// and return into the records.
#[derive(Debug)]
pub struct Gae {
    dispatch: Dispatch,
    variant: GaeVariant,
}

/// The rollout tensors GAE reads, [T][S] each unless noted.
pub struct GaeInputs<'a> {
    pub rewards: &'a GpuBuffer<f32>,
    /// [`TERMINATED`] / [`TRUNCATED`] bits.
    pub flags: &'a GpuBuffer<u32>,
    /// V(final observation before auto-reset), read where truncated.
    pub final_values: &'a GpuBuffer<f32>,
    /// V(observation after the last step), [S].
    pub last_values: &'a GpuBuffer<f32>,
    /// [T][S][RECORD]: value read, advantage and return written.
    pub records: &'a GpuBuffer<f32>,
}

impl Gae {
    pub fn new(
        ctx: &GpuContext,
        num_steps: usize,
        sequences: usize,
        gamma: f32,
        lambda: f32,
        variant: GaeVariant,
        inputs: &GaeInputs<'_>,
    ) -> Result<Self> {
        const OP: &str = "gae";
        let n = num_steps * sequences;
        inputs.rewards.expect_len(OP, n)?;
        inputs.flags.expect_len(OP, n)?;
        inputs.final_values.expect_len(OP, n)?;
        inputs.last_values.expect_len(OP, sequences)?;
        inputs.records.expect_len(OP, n * RECORD)?;
        let dims = GaeDims {
            num_steps: fits_u32(OP, "num_steps", num_steps)?,
            sequences: fits_u32(OP, "sequences", sequences)?,
            gamma,
            lambda,
        };
        let kernel = match variant {
            GaeVariant::Sequential => Kernel::GaeSequential,
            GaeVariant::Scan => Kernel::GaeScan,
        };
        let dispatch = Dispatch::with_uniform(
            ctx,
            kernel,
            &dims,
            &[
                inputs.rewards.binding(),
                inputs.flags.binding(),
                inputs.final_values.binding(),
                inputs.last_values.binding(),
                inputs.records.binding(),
            ],
            sequences as u64,
        )?;
        Ok(Gae { dispatch, variant })
    }

    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }

    pub fn variant(&self) -> GaeVariant {
        self.variant
    }
}

/// CPU reference (f64): advantages and returns, [T][S] each.
#[allow(clippy::too_many_arguments)]
pub fn gae_cpu(
    num_steps: usize,
    sequences: usize,
    gamma: f64,
    lambda: f64,
    rewards: &[f64],
    flags: &[u32],
    final_values: &[f64],
    last_values: &[f64],
    values: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let mut advantages = vec![0.0; num_steps * sequences];
    for (s, &last_value) in last_values.iter().enumerate().take(sequences) {
        let mut next_advantage = 0.0;
        for t in (0..num_steps).rev() {
            let i = t * sequences + s;
            let terminated = flags[i] & TERMINATED != 0;
            let truncated = flags[i] & TRUNCATED != 0;
            let next_value = if terminated {
                0.0
            } else if truncated {
                final_values[i]
            } else if t + 1 < num_steps {
                values[i + sequences]
            } else {
                last_value
            };
            let delta = rewards[i] + gamma * next_value - values[i];
            let carry = if terminated || truncated {
                0.0
            } else {
                gamma * lambda
            };
            next_advantage = delta + carry * next_advantage;
            advantages[i] = next_advantage;
        }
    }
    let returns = advantages.iter().zip(values).map(|(a, v)| a + v).collect();
    (advantages, returns)
}
