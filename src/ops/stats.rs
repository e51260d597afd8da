//! Per-agent reductions of the update: minibatch advantage normalization,
//! means of the loss statistics (with the target_kl stop), explained variance.

use crate::error::Result;
use crate::gpu::{Dispatch, GpuBuffer, GpuContext, Kernel};
use crate::ops::gather::BatchShape;
use crate::ops::optim::AgentState;
use crate::ops::ppo_loss::ROW_STATS;
use crate::ops::{fits_u32, RECORD};

/// Floats per (minibatch, agent) entry of the statistics history: the
/// [`ROW_STATS`] means, then 1.0 if the agent was still updating.
pub const HISTORY_STATS: usize = ROW_STATS + 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct StatsDims {
    num_agents: u32,
    rows_per_agent: u32,
    envs_per_agent: u32,
    history_index: u32,
    check_kl: u32,
    target_kl: f32,
    batch_per_agent: u32,
    num_minibatches: u32,
}

impl StatsDims {
    fn new(op: &str, num_agents: usize, rows_per_agent: usize) -> Result<Self> {
        Ok(StatsDims {
            num_agents: fits_u32(op, "num_agents", num_agents)?,
            rows_per_agent: fits_u32(op, "rows_per_agent", rows_per_agent)?,
            envs_per_agent: 1,
            history_index: 0,
            check_kl: 0,
            target_kl: 0.0,
            batch_per_agent: 0,
            num_minibatches: 0,
        })
    }
}

/// Normalizes the advantage field of minibatch records [P][M][RECORD] in place.
pub fn adv_norm(
    ctx: &GpuContext,
    num_agents: usize,
    minibatch_size: usize,
    mb_records: &GpuBuffer<f32>,
) -> Result<Dispatch> {
    const OP: &str = "adv_norm";
    mb_records.expect_len(OP, num_agents * minibatch_size * RECORD)?;
    let dims = StatsDims::new(OP, num_agents, minibatch_size)?;
    Dispatch::with_uniform(
        ctx,
        Kernel::AdvNorm,
        &dims,
        &[mb_records.binding()],
        num_agents as u64,
    )
}

/// The buffers [`adv_moments`] reads and writes.
pub struct AdvMomentsBuffers<'a> {
    /// [epochs][P][B] (`ppo::permutations`).
    pub perm: &'a GpuBuffer<u32>,
    /// The rollout's records [T][P][N][RECORD], advantages written by GAE.
    pub records: &'a GpuBuffer<f32>,
    /// [epochs × minibatches][P][2]: each minibatch's advantage mean and
    /// 1 / (std + 1e-8).
    pub adv_stats: &'a GpuBuffer<f32>,
}

/// [`adv_norm`]'s mean and scale of every (epoch, minibatch, agent) at
/// once, read through the permutations instead of from a gathered
/// minibatch (the fused row step normalizes as it reads): bitwise what
/// `adv_norm` computes for the same rows.
pub fn adv_moments(
    ctx: &GpuContext,
    shape: &BatchShape,
    num_minibatches: usize,
    buffers: &AdvMomentsBuffers<'_>,
) -> Result<Dispatch> {
    const OP: &str = "adv_moments";
    let p = shape.num_agents;
    let batch = shape.num_steps * shape.envs_per_agent;
    let entries = shape.epochs * num_minibatches;
    buffers.perm.expect_len(OP, shape.epochs * p * batch)?;
    buffers.records.expect_len(OP, p * batch * RECORD)?;
    buffers.adv_stats.expect_len(OP, entries * p * 2)?;
    if shape.minibatch_size * num_minibatches > batch {
        return Err(crate::Error::shape(
            OP,
            "minibatch rows",
            batch,
            shape.minibatch_size * num_minibatches,
        ));
    }
    let dims = StatsDims {
        envs_per_agent: fits_u32(OP, "envs_per_agent", shape.envs_per_agent)?,
        // The kernel reads history_index as the number of entries.
        history_index: fits_u32(OP, "entries", entries)?,
        batch_per_agent: fits_u32(OP, "batch_per_agent", batch)?,
        num_minibatches: fits_u32(OP, "num_minibatches", num_minibatches)?,
        ..StatsDims::new(OP, p, shape.minibatch_size)?
    };
    Dispatch::with_uniform(
        ctx,
        Kernel::AdvMoments,
        &dims,
        &[
            buffers.records.binding(),
            buffers.perm.binding(),
            buffers.adv_stats.binding(),
        ],
        (entries * p) as u64,
    )
}

/// The buffers [`row_stats_mean`] reads and writes.
pub struct RowStatsBuffers<'a> {
    /// [P][M][ROW_STATS]
    pub row_stats: &'a GpuBuffer<f32>,
    pub agent_state: &'a GpuBuffer<AgentState>,
    /// [entries][P][HISTORY_STATS]
    pub history: &'a GpuBuffer<f32>,
}

impl RowStatsBuffers<'_> {
    /// Errors naming `op` unless the buffers hold `num_agents` ×
    /// `minibatch_size` rows and history entry `history_index`.
    pub(crate) fn check(
        &self,
        op: &str,
        num_agents: usize,
        minibatch_size: usize,
        history_index: usize,
    ) -> Result<()> {
        self.row_stats
            .expect_len(op, num_agents * minibatch_size * ROW_STATS)?;
        self.agent_state.expect_len(op, num_agents)?;
        let needed = (history_index + 1) * num_agents * HISTORY_STATS;
        if self.history.len() < needed {
            return Err(crate::Error::shape(
                op,
                self.history.name(),
                needed,
                self.history.len(),
            ));
        }
        Ok(())
    }
}

/// Means of row statistics into `history[history_index]`; with `target_kl`,
/// stops agents whose mean approx_kl exceeds it.
pub fn row_stats_mean(
    ctx: &GpuContext,
    num_agents: usize,
    minibatch_size: usize,
    history_index: usize,
    target_kl: Option<f64>,
    buffers: &RowStatsBuffers<'_>,
) -> Result<Dispatch> {
    const OP: &str = "row_stats_mean";
    buffers.check(OP, num_agents, minibatch_size, history_index)?;
    let RowStatsBuffers {
        row_stats,
        agent_state,
        history,
    } = buffers;
    let dims = StatsDims {
        history_index: fits_u32(OP, "history_index", history_index)?,
        check_kl: target_kl.is_some() as u32,
        target_kl: target_kl.unwrap_or(0.0) as f32,
        ..StatsDims::new(OP, num_agents, minibatch_size)?
    };
    Dispatch::with_uniform(
        ctx,
        Kernel::RowStatsMean,
        &dims,
        &[
            row_stats.binding(),
            agent_state.binding(),
            history.binding(),
        ],
        num_agents as u64,
    )
}

/// Explained variance of the values against the returns over each agent's
/// batch of records [T][P][N][RECORD], into `explained_var` [P].
pub fn explained_variance(
    ctx: &GpuContext,
    num_agents: usize,
    num_steps: usize,
    envs_per_agent: usize,
    records: &GpuBuffer<f32>,
    explained_var: &GpuBuffer<f32>,
) -> Result<Dispatch> {
    const OP: &str = "explained_variance";
    records.expect_len(OP, num_steps * num_agents * envs_per_agent * RECORD)?;
    explained_var.expect_len(OP, num_agents)?;
    let dims = StatsDims {
        envs_per_agent: fits_u32(OP, "envs_per_agent", envs_per_agent)?,
        ..StatsDims::new(OP, num_agents, num_steps * envs_per_agent)?
    };
    Dispatch::with_uniform(
        ctx,
        Kernel::ExplainedVariance,
        &dims,
        &[records.binding(), explained_var.binding()],
        num_agents as u64,
    )
}

/// CPU reference: (adv - mean) / (std + 1e-8), std with Bessel's correction.
pub fn adv_norm_cpu(advantages: &[f64]) -> Vec<f64> {
    let n = advantages.len() as f64;
    let mean = advantages.iter().sum::<f64>() / n;
    let variance = advantages.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let scale = 1.0 / (variance.sqrt() + 1e-8);
    advantages.iter().map(|a| (a - mean) * scale).collect()
}

/// CPU reference: mean of each statistic over rows [M][ROW_STATS].
pub fn row_stats_mean_cpu(row_stats: &[f64]) -> [f64; ROW_STATS] {
    let rows = (row_stats.len() / ROW_STATS) as f64;
    let mut means = [0.0; ROW_STATS];
    for row in row_stats.chunks(ROW_STATS) {
        for (m, v) in means.iter_mut().zip(row) {
            *m += v;
        }
    }
    means.map(|m| m / rows)
}

/// CPU reference: 1 - var(y - pred) / var(y) with population variances, NaN if var(y) = 0.
pub fn explained_variance_cpu(values: &[f64], returns: &[f64]) -> f64 {
    let n = returns.len() as f64;
    let variance = |xs: &mut dyn Iterator<Item = f64>| {
        let xs: Vec<f64> = xs.collect();
        let mean = xs.iter().sum::<f64>() / n;
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n
    };
    let var_y = variance(&mut returns.iter().copied());
    if var_y == 0.0 {
        return f64::NAN;
    }
    1.0 - variance(&mut returns.iter().zip(values).map(|(y, v)| y - v)) / var_y
}
