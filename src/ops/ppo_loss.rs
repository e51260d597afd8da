//! CleanRL's clipped PPO loss per minibatch row, with its gradients with
//! respect to the logits and the value, and per-row statistics.

use crate::error::Result;
use crate::gpu::{Dispatch, GpuBuffer, GpuContext, Kernel};
use crate::ops::categorical::log_softmax;
use crate::ops::{fits_u32, record, RECORD};

/// Per-row statistics written by the loss, in this order.
pub const ROW_STATS: usize = 6;
/// Indices into a row's (and an agent's mean) statistics.
pub mod stat {
    pub const POLICY_LOSS: usize = 0;
    pub const VALUE_LOSS: usize = 1;
    pub const ENTROPY: usize = 2;
    pub const OLD_APPROX_KL: usize = 3;
    pub const APPROX_KL: usize = 4;
    pub const CLIPFRAC: usize = 5;
}

/// The loss's coefficients (CleanRL names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossCoefs {
    pub clip_coef: f64,
    pub ent_coef: f64,
    pub vf_coef: f64,
    pub clip_vloss: bool,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct LossDims {
    rows: u32,
    minibatch_size: u32,
    num_actions: u32,
    clip_vloss: u32,
    clip_coef: f32,
    ent_coef: f32,
    vf_coef: f32,
    _pad: u32,
}

/// The buffers the loss reads and writes (rows = P · M).
pub struct LossBuffers<'a> {
    pub mb_records: &'a GpuBuffer<f32>,
    pub logits: &'a GpuBuffer<f32>,
    pub values: &'a GpuBuffer<f32>,
    pub dlogits: &'a GpuBuffer<f32>,
    pub dvalues: &'a GpuBuffer<f32>,
    pub row_stats: &'a GpuBuffer<f32>,
}

#[derive(Debug)]
pub struct PpoLoss {
    dispatch: Dispatch,
}

impl PpoLoss {
    pub fn new(
        ctx: &GpuContext,
        rows: usize,
        minibatch_size: usize,
        num_actions: usize,
        coefs: LossCoefs,
        buffers: &LossBuffers<'_>,
    ) -> Result<Self> {
        const OP: &str = "ppo_loss";
        buffers.mb_records.expect_len(OP, rows * RECORD)?;
        buffers.logits.expect_len(OP, rows * num_actions)?;
        buffers.values.expect_len(OP, rows)?;
        buffers.dlogits.expect_len(OP, rows * num_actions)?;
        buffers.dvalues.expect_len(OP, rows)?;
        buffers.row_stats.expect_len(OP, rows * ROW_STATS)?;
        let dims = LossDims {
            rows: fits_u32(OP, "rows", rows)?,
            minibatch_size: fits_u32(OP, "minibatch_size", minibatch_size)?,
            num_actions: fits_u32(OP, "num_actions", num_actions)?,
            clip_vloss: coefs.clip_vloss as u32,
            clip_coef: coefs.clip_coef as f32,
            ent_coef: coefs.ent_coef as f32,
            vf_coef: coefs.vf_coef as f32,
            _pad: 0,
        };
        let dispatch = Dispatch::with_uniform(
            ctx,
            Kernel::PpoLoss,
            &dims,
            &[
                buffers.mb_records.binding(),
                buffers.logits.binding(),
                buffers.values.binding(),
                buffers.dlogits.binding(),
                buffers.dvalues.binding(),
                buffers.row_stats.binding(),
            ],
            rows as u64,
        )?;
        Ok(PpoLoss { dispatch })
    }

    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }
}

/// d max(a, b) / d a as PyTorch computes it: 1 if a > b, ½ on a tie, else 0.
fn max_grad_weight(a: f64, b: f64) -> f64 {
    if a > b {
        1.0
    } else if a == b {
        0.5
    } else {
        0.0
    }
}

/// The CPU reference's output for a minibatch.
#[derive(Clone, Debug)]
pub struct LossOutput {
    pub dlogits: Vec<f64>,
    pub dvalues: Vec<f64>,
    pub row_stats: Vec<f64>,
}

/// CPU reference (f64), row by row as the kernel; `minibatch_size` is the
/// divisor of the means (rows of one agent).
pub fn ppo_loss_cpu(
    mb_records: &[f64],
    logits: &[f64],
    values: &[f64],
    num_actions: usize,
    minibatch_size: usize,
    coefs: LossCoefs,
) -> LossOutput {
    let rows = values.len();
    let mut out = LossOutput {
        dlogits: vec![0.0; rows * num_actions],
        dvalues: vec![0.0; rows],
        row_stats: vec![0.0; rows * ROW_STATS],
    };
    let clip = coefs.clip_coef;
    let inv_m = 1.0 / minibatch_size as f64;
    for r in 0..rows {
        let rec = &mb_records[r * RECORD..(r + 1) * RECORD];
        let action = rec[record::ACTION] as usize;
        let (adv, ret, old_value) = (
            rec[record::ADVANTAGE],
            rec[record::RETURN],
            rec[record::VALUE],
        );
        let logp = log_softmax(&logits[r * num_actions..(r + 1) * num_actions]);
        let entropy: f64 = -logp.iter().map(|l| l.exp() * l).sum::<f64>();
        let logratio = logp[action] - rec[record::LOGPROB];
        let ratio = logratio.exp();
        let pg_unclipped = -adv * ratio;
        let pg_clipped = -adv * ratio.clamp(1.0 - clip, 1.0 + clip);
        let in_range = (1.0 - clip..=1.0 + clip).contains(&ratio) as u8 as f64;
        let weight = max_grad_weight(pg_unclipped, pg_clipped)
            + max_grad_weight(pg_clipped, pg_unclipped) * in_range;
        let dpg_dlogp = -adv * ratio * weight;
        for (i, lp) in logp.iter().enumerate() {
            let p_i = lp.exp();
            let onehot = (i == action) as u8 as f64;
            let dentropy = -p_i * (lp + entropy);
            out.dlogits[r * num_actions + i] =
                inv_m * (dpg_dlogp * (onehot - p_i) - coefs.ent_coef * dentropy);
        }
        let value = values[r];
        let (v_loss, dv) = if coefs.clip_vloss {
            let diff = value - old_value;
            let v_clipped = old_value + diff.clamp(-clip, clip);
            let unclipped = (value - ret).powi(2);
            let clipped = (v_clipped - ret).powi(2);
            let diff_in_range = (-clip..=clip).contains(&diff) as u8 as f64;
            (
                0.5 * unclipped.max(clipped),
                max_grad_weight(unclipped, clipped) * (value - ret)
                    + max_grad_weight(clipped, unclipped) * diff_in_range * (v_clipped - ret),
            )
        } else {
            (0.5 * (value - ret).powi(2), value - ret)
        };
        out.dvalues[r] = inv_m * coefs.vf_coef * dv;
        let stats = &mut out.row_stats[r * ROW_STATS..(r + 1) * ROW_STATS];
        stats[stat::POLICY_LOSS] = pg_unclipped.max(pg_clipped);
        stats[stat::VALUE_LOSS] = v_loss;
        stats[stat::ENTROPY] = entropy;
        stats[stat::OLD_APPROX_KL] = -logratio;
        stats[stat::APPROX_KL] = (ratio - 1.0) - logratio;
        stats[stat::CLIPFRAC] = ((ratio - 1.0).abs() > clip) as u8 as f64;
    }
    out
}
