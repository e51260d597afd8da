//! Per-agent global gradient-norm clipping, then Adam (PyTorch's algorithm)
//! with a per-agent learning rate.

use crate::error::Result;
use crate::gpu::{Dispatch, GpuBuffer, GpuContext, Kernel};
use crate::ops::fits_u32;
use crate::ops::stats::RowStatsBuffers;

/// Adam's β₁, β₂ (PyTorch defaults) and CleanRL's ε.
pub const ADAM_BETA1: f64 = 0.9;
pub const ADAM_BETA2: f64 = 0.999;
pub const ADAM_EPS: f64 = 1e-5;

/// Per-agent optimizer state the kernels share (`struct AgentState` in WGSL).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AgentState {
    pub learning_rate: f32,
    /// 1 while the agent updates; 0 once target_kl stopped it for this update.
    pub updating: u32,
    /// Adam steps taken so far (t in the bias corrections).
    pub adam_step: u32,
    /// The last gradient-clip factor.
    pub clip_scale: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct OptimDims {
    num_agents: u32,
    params_per_agent: u32,
    max_grad_norm: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    rows_per_agent: u32,
    history_index: u32,
    check_kl: u32,
    target_kl: f32,
}

impl OptimDims {
    fn new(
        op: &str,
        num_agents: usize,
        params_per_agent: usize,
        max_grad_norm: f64,
        eps: f64,
    ) -> Result<Self> {
        fits_u32(op, "params", num_agents * params_per_agent)?;
        Ok(OptimDims {
            num_agents: fits_u32(op, "num_agents", num_agents)?,
            params_per_agent: fits_u32(op, "params_per_agent", params_per_agent)?,
            max_grad_norm: max_grad_norm as f32,
            beta1: ADAM_BETA1 as f32,
            beta2: ADAM_BETA2 as f32,
            eps: eps as f32,
            one_minus_beta1: (1.0 - ADAM_BETA1) as f32,
            one_minus_beta2: (1.0 - ADAM_BETA2) as f32,
            rows_per_agent: 0,
            history_index: 0,
            check_kl: 0,
            target_kl: 0.0,
        })
    }
}

/// The buffers of the optimizer, [P][K] each except `agent_state` [P].
pub struct OptimBuffers<'a> {
    pub grads: &'a GpuBuffer<f32>,
    pub agent_state: &'a GpuBuffer<AgentState>,
    pub params: &'a GpuBuffer<f32>,
    pub adam_m: &'a GpuBuffer<f32>,
    pub adam_v: &'a GpuBuffer<f32>,
}

impl OptimBuffers<'_> {
    /// Errors naming `op` unless every buffer holds `num_agents` agents of
    /// `params_per_agent` parameters.
    fn check(&self, op: &str, num_agents: usize, params_per_agent: usize) -> Result<()> {
        let total = num_agents * params_per_agent;
        for buffer in [self.grads, self.params, self.adam_m, self.adam_v] {
            buffer.expect_len(op, total)?;
        }
        self.agent_state.expect_len(op, num_agents)
    }

    /// Bindings 1-5 of optim.wgsl: grads, agent_state, params, adam_m, adam_v.
    fn bindings(&self) -> [wgpu::BindingResource<'_>; 5] {
        [
            self.grads.binding(),
            self.agent_state.binding(),
            self.params.binding(),
            self.adam_m.binding(),
            self.adam_v.binding(),
        ]
    }
}

/// Clip then Adam: two dispatches, built once.
#[derive(Debug)]
pub struct ClipAdam {
    grad_norm: Dispatch,
    adam: Dispatch,
}

impl ClipAdam {
    pub fn new(
        ctx: &GpuContext,
        num_agents: usize,
        params_per_agent: usize,
        max_grad_norm: f64,
        eps: f64,
        buffers: &OptimBuffers<'_>,
    ) -> Result<Self> {
        const OP: &str = "clip_adam";
        buffers.check(OP, num_agents, params_per_agent)?;
        let total = num_agents * params_per_agent;
        let dims = OptimDims::new(OP, num_agents, params_per_agent, max_grad_norm, eps)?;
        let grad_norm = Dispatch::with_uniform(
            ctx,
            Kernel::GradNorm,
            &dims,
            &[buffers.grads.binding(), buffers.agent_state.binding()],
            num_agents as u64,
        )?;
        let adam =
            Dispatch::with_uniform(ctx, Kernel::Adam, &dims, &buffers.bindings(), total as u64)?;
        Ok(ClipAdam { grad_norm, adam })
    }

    pub fn dispatches(&self) -> [&Dispatch; 2] {
        [&self.grad_norm, &self.adam]
    }
}

/// One minibatch's clip, Adam and row statistics in one dispatch (the fused
/// update's last): the same operations in the same order as [`ClipAdam`]'s
/// two dispatches followed by [`crate::ops::stats::row_stats_mean`], so
/// bitwise equal to them. `history_index` and `target_kl` as that one takes
/// them; the row statistics are [P][`minibatch_size`][ROW_STATS].
#[allow(clippy::too_many_arguments)]
pub fn optimizer_step(
    ctx: &GpuContext,
    num_agents: usize,
    params_per_agent: usize,
    max_grad_norm: f64,
    eps: f64,
    minibatch_size: usize,
    history_index: usize,
    target_kl: Option<f64>,
    buffers: &OptimBuffers<'_>,
    stats: &RowStatsBuffers<'_>,
) -> Result<Dispatch> {
    const OP: &str = "optimizer_step";
    buffers.check(OP, num_agents, params_per_agent)?;
    stats.check(OP, num_agents, minibatch_size, history_index)?;
    let dims = OptimDims {
        rows_per_agent: fits_u32(OP, "minibatch_size", minibatch_size)?,
        history_index: fits_u32(OP, "history_index", history_index)?,
        check_kl: target_kl.is_some() as u32,
        target_kl: target_kl.unwrap_or(0.0) as f32,
        ..OptimDims::new(OP, num_agents, params_per_agent, max_grad_norm, eps)?
    };
    Dispatch::with_uniform(
        ctx,
        Kernel::OptimizerStep,
        &dims,
        &[
            buffers.bindings().as_slice(),
            &[stats.row_stats.binding(), stats.history.binding()],
        ]
        .concat(),
        num_agents as u64,
    )
}

/// CPU reference of one agent's step: clips `grads` in place by the global
/// norm (torch.nn.utils.clip_grad_norm_) and returns the clip factor.
pub fn clip_grad_norm_cpu(grads: &mut [f64], max_grad_norm: f64) -> f64 {
    let norm = grads.iter().map(|g| g * g).sum::<f64>().sqrt();
    let scale = (max_grad_norm / (norm + 1e-6)).min(1.0);
    grads.iter_mut().for_each(|g| *g *= scale);
    scale
}

/// CPU reference of one Adam step (PyTorch's single-tensor Adam), `step` ≥ 1.
pub fn adam_cpu(
    params: &mut [f64],
    grads: &[f64],
    m: &mut [f64],
    v: &mut [f64],
    learning_rate: f64,
    eps: f64,
    step: u32,
) {
    let bias1 = 1.0 - ADAM_BETA1.powi(step as i32);
    let bias2_sqrt = (1.0 - ADAM_BETA2.powi(step as i32)).sqrt();
    for i in 0..params.len() {
        m[i] += (1.0 - ADAM_BETA1) * (grads[i] - m[i]);
        v[i] = ADAM_BETA2 * v[i] + (1.0 - ADAM_BETA2) * grads[i] * grads[i];
        params[i] -= learning_rate / bias1 * m[i] / (v[i].sqrt() / bias2_sqrt + eps);
    }
}
