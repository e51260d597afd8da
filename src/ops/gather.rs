//! Minibatch gather through per-agent, per-epoch permutations.

use crate::error::Result;
use crate::gpu::{Dispatch, GpuBuffer, GpuContext, Kernel};
use crate::ops::{fits_u32, RECORD};

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct GatherDims {
    num_agents: u32,
    envs_per_agent: u32,
    minibatch_size: u32,
    obs_dim: u32,
    batch_per_agent: u32,
    epoch: u32,
    minibatch: u32,
    _pad: u32,
}

/// Shapes of the rollout and its minibatches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchShape {
    pub num_agents: usize,
    pub num_steps: usize,
    pub envs_per_agent: usize,
    pub obs_dim: usize,
    pub minibatch_size: usize,
    pub epochs: usize,
}

impl BatchShape {
    /// Rows of one agent's batch (T · N).
    pub fn batch_per_agent(&self) -> usize {
        self.num_steps * self.envs_per_agent
    }

    /// The rollout row of agent `p`'s batch row `b` (= t · N + n): (t · P + p) · N + n.
    pub fn rollout_row(&self, p: usize, b: usize) -> usize {
        let n = self.envs_per_agent;
        ((b / n) * self.num_agents + p) * n + b % n
    }
}

/// One gather dispatch per (epoch, minibatch), all built once.
#[derive(Debug)]
pub struct GatherMinibatch {
    dispatches: Vec<Dispatch>,
    minibatches: usize,
}

/// What the gather reads and writes.
pub struct GatherBuffers<'a> {
    /// [epochs][P][T·N] permutations of each agent's batch rows.
    pub perm: &'a GpuBuffer<u32>,
    pub obs: &'a GpuBuffer<f32>,
    pub records: &'a GpuBuffer<f32>,
    pub mb_obs: &'a GpuBuffer<f32>,
    pub mb_records: &'a GpuBuffer<f32>,
}

impl GatherMinibatch {
    pub fn new(ctx: &GpuContext, shape: &BatchShape, buffers: &GatherBuffers<'_>) -> Result<Self> {
        const OP: &str = "gather_minibatch";
        let batch = shape.batch_per_agent();
        let minibatches = batch / shape.minibatch_size.max(1);
        if shape.minibatch_size == 0 || !batch.is_multiple_of(shape.minibatch_size) {
            return Err(crate::Error::config(
                "minibatch_size",
                shape.minibatch_size,
                format!("must divide the batch of {batch} rows per agent"),
            ));
        }
        let rows = shape.num_agents * batch;
        buffers.perm.expect_len(OP, shape.epochs * rows)?;
        buffers.obs.expect_len(OP, rows * shape.obs_dim)?;
        buffers.records.expect_len(OP, rows * RECORD)?;
        let mb_rows = shape.num_agents * shape.minibatch_size;
        buffers.mb_obs.expect_len(OP, mb_rows * shape.obs_dim)?;
        buffers.mb_records.expect_len(OP, mb_rows * RECORD)?;
        fits_u32(OP, "perm", shape.epochs * rows)?;
        fits_u32(OP, "obs", rows * shape.obs_dim)?;
        let mut dispatches = Vec::with_capacity(shape.epochs * minibatches);
        for epoch in 0..shape.epochs {
            for minibatch in 0..minibatches {
                let dims = GatherDims {
                    num_agents: shape.num_agents as u32,
                    envs_per_agent: shape.envs_per_agent as u32,
                    minibatch_size: shape.minibatch_size as u32,
                    obs_dim: shape.obs_dim as u32,
                    batch_per_agent: batch as u32,
                    epoch: epoch as u32,
                    minibatch: minibatch as u32,
                    _pad: 0,
                };
                dispatches.push(Dispatch::with_uniform(
                    ctx,
                    Kernel::GatherMinibatch,
                    &dims,
                    &[
                        buffers.perm.binding(),
                        buffers.obs.binding(),
                        buffers.records.binding(),
                        buffers.mb_obs.binding(),
                        buffers.mb_records.binding(),
                    ],
                    mb_rows as u64,
                )?);
            }
        }
        Ok(GatherMinibatch {
            dispatches,
            minibatches,
        })
    }

    /// The dispatch for `epoch`'s `minibatch`.
    pub fn dispatch(&self, epoch: usize, minibatch: usize) -> &Dispatch {
        &self.dispatches[epoch * self.minibatches + minibatch]
    }
}

/// CPU reference: the rollout rows (into [T][P][N]) making up agent `p`'s
/// minibatch `minibatch` of `epoch`.
pub fn minibatch_rows_cpu(
    shape: &BatchShape,
    perm: &[u32],
    epoch: usize,
    minibatch: usize,
    p: usize,
) -> Vec<usize> {
    let batch = shape.batch_per_agent();
    let start = (epoch * shape.num_agents + p) * batch + minibatch * shape.minibatch_size;
    perm[start..start + shape.minibatch_size]
        .iter()
        .map(|&b| shape.rollout_row(p, b as usize))
        .collect()
}
