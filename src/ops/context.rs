//! First-order CAVIA's task context (shaders/context.wgsl): C numbers per
//! agent that shift, through meta-learned weights, the actor's first-layer
//! biases (the context is an extra input of the policy) and the critic's
//! last-layer weights (the value gains a term linear in the context, so
//! fitting the context to the returns is a linear regression). During an
//! adaptation, each PPO update moves the context alone, by one step of
//! projected SGD along the loss gradient of the update's first epoch (at
//! the rollout's parameters, so the policy term is the plain policy gradient
//! and the value term unclipped, as in CAVIA's one gradient step per
//! rollout), with the policy's part weighted by
//! [`ContextStep::set_policy_weight`] (meta-training's default: 0, the
//! value loss alone), instead of running Adam on the network.

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuBuffer, GpuContext, Kernel};
use crate::ops::fits_u32;
use crate::ops::optim::AgentState;
use crate::ppo::ActorCriticSpec;

/// Largest context the config accepts.
pub const MAX_CONTEXT_DIM: usize = 64;

/// Where the context acts inside an agent's parameter slice: the slots are
/// the actor's first-layer biases (`actor_units` of them from
/// `actor_offset`), then the critic's last-layer weights (`critic_units`
/// from `critic_offset`: one per last hidden feature, or per observation
/// without hidden layers). Context weight row `j` belongs to slot `j`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextLayout {
    pub dim: usize,
    pub params_per_agent: usize,
    pub actor_offset: usize,
    pub actor_units: usize,
    pub critic_offset: usize,
    pub critic_units: usize,
}

impl ContextLayout {
    /// A context of `dim` numbers for `spec`'s actor-critic.
    pub fn new(spec: &ActorCriticSpec, dim: usize) -> Result<Self> {
        if dim == 0 || dim > MAX_CONTEXT_DIM {
            return Err(Error::config(
                "context_dim",
                dim,
                format!("must be in 1..={MAX_CONTEXT_DIM}"),
            ));
        }
        let actor = spec.actor().layers(0)[0];
        let critic = *spec
            .critic()
            .layers(spec.critic_base())
            .last()
            .expect("an MLP has at least one layer");
        Ok(ContextLayout {
            dim,
            params_per_agent: spec.param_count(),
            actor_offset: actor.b_offset,
            actor_units: actor.out_dim,
            critic_offset: critic.w_offset,
            // The value network has one output: its last W is [1][in].
            critic_units: critic.in_dim * critic.out_dim,
        })
    }

    /// J: the slots the context shifts (actor's, then critic's).
    pub fn units(&self) -> usize {
        self.actor_units + self.critic_units
    }

    /// Length of the weights [J][C].
    pub fn weight_len(&self) -> usize {
        self.units() * self.dim
    }

    /// Where slot `j` sits in an agent's parameter slice.
    pub fn slot_index(&self, j: usize) -> usize {
        if j < self.actor_units {
            self.actor_offset + j
        } else {
            self.critic_offset + (j - self.actor_units)
        }
    }
}

/// The uniform block of shaders/context.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct ContextDims {
    num_agents: u32,
    params_per_agent: u32,
    context_dim: u32,
    actor_units: u32,
    critic_units: u32,
    actor_offset: u32,
    critic_offset: u32,
    minibatches: u32,
    lr: f32,
    bound: f32,
    collect_weight: f32,
    policy_weight: f32,
}

impl ContextDims {
    fn new(layout: &ContextLayout, num_agents: usize) -> Result<Self> {
        const OP: &str = "context";
        fits_u32(OP, "params", num_agents * layout.params_per_agent)?;
        Ok(ContextDims {
            num_agents: fits_u32(OP, "num_agents", num_agents)?,
            params_per_agent: fits_u32(OP, "params_per_agent", layout.params_per_agent)?,
            context_dim: layout.dim as u32,
            actor_units: fits_u32(OP, "actor_units", layout.actor_units)?,
            critic_units: fits_u32(OP, "critic_units", layout.critic_units)?,
            actor_offset: fits_u32(OP, "actor_offset", layout.actor_offset)?,
            critic_offset: fits_u32(OP, "critic_offset", layout.critic_offset)?,
            minibatches: 1,
            lr: 0.0,
            bound: 0.0,
            collect_weight: 0.0,
            policy_weight: 1.0,
        })
    }
}

/// The context of P agents on the GPU: weights [J][C] (shared), base
/// slot values [P][J], contexts [P][C] and their gradient sums [P][C], with the
/// accumulate, step, apply and reset dispatches bound to a
/// [`PpoGpu`](crate::ppo::PpoGpu)'s buffers.
#[derive(Debug)]
pub struct ContextStep {
    layout: ContextLayout,
    num_agents: usize,
    dims: ContextDims,
    pub weights: GpuBuffer<f32>,
    pub base: GpuBuffer<f32>,
    pub phi: GpuBuffer<f32>,
    pub acc: GpuBuffer<f32>,
    /// The outer gradient's sums (meta-training): θ's [P][K] and the
    /// context weights' [P][J][C]; see `context_collect`.
    pub theta_acc: GpuBuffer<f32>,
    pub weight_acc: GpuBuffer<f32>,
    /// Whether updates add their gradients to the outer sums.
    collecting: bool,
    accumulate: Dispatch,
    step: Dispatch,
    apply: Dispatch,
    reset: Dispatch,
    collect: Dispatch,
}

/// The agents' buffers a [`ContextStep`] reads and writes.
pub struct ContextBuffers<'a> {
    pub grads: &'a GpuBuffer<f32>,
    pub agent_state: &'a GpuBuffer<AgentState>,
    pub params: &'a GpuBuffer<f32>,
}

/// Refuses a context step size or bound that is not finite and positive.
pub fn check_context_step(lr: f64, bound: f64) -> Result<()> {
    for (field, value) in [("context_lr", lr), ("context_bound", bound)] {
        if !(value.is_finite() && value > 0.0 && value <= f32::MAX as f64) {
            return Err(Error::config(field, value, "must be finite and > 0"));
        }
    }
    Ok(())
}

/// Refuses a policy weight (`context_policy_weight`) that is not finite
/// and >= 0.
pub fn check_context_policy_weight(weight: f64) -> Result<()> {
    if !(weight.is_finite() && weight >= 0.0 && weight <= f32::MAX as f64) {
        return Err(Error::config(
            "context_policy_weight",
            weight,
            "must be finite and >= 0",
        ));
    }
    Ok(())
}

impl ContextStep {
    /// Zero weights and contexts; `lr` and `bound` as in `context_step`,
    /// whose gradient is the mean over `minibatches` accumulated ones.
    pub fn new(
        ctx: &GpuContext,
        layout: ContextLayout,
        num_agents: usize,
        minibatches: usize,
        lr: f64,
        bound: f64,
        buffers: &ContextBuffers<'_>,
    ) -> Result<Self> {
        const OP: &str = "context";
        check_context_step(lr, bound)?;
        let k = layout.params_per_agent;
        buffers.grads.expect_len(OP, num_agents * k)?;
        buffers.params.expect_len(OP, num_agents * k)?;
        buffers.agent_state.expect_len(OP, num_agents)?;
        let mut dims = ContextDims::new(&layout, num_agents)?;
        dims.lr = lr as f32;
        dims.bound = bound as f32;
        dims.minibatches = fits_u32(OP, "minibatches", minibatches.max(1))?;
        let j = layout.units();
        let weights = GpuBuffer::zeros(ctx, "context weights", layout.weight_len())?;
        let base = GpuBuffer::zeros(ctx, "context base slots", num_agents * j)?;
        let phi = GpuBuffer::zeros(ctx, "contexts", num_agents * layout.dim)?;
        let acc = GpuBuffer::zeros(ctx, "context gradient sums", num_agents * layout.dim)?;
        let theta_acc = GpuBuffer::zeros(ctx, "outer gradient sums", num_agents * k)?;
        let weight_acc = GpuBuffer::zeros(
            ctx,
            "context weight gradient sums",
            num_agents * layout.weight_len(),
        )?;
        let collect = Dispatch::with_uniform(
            ctx,
            Kernel::ContextCollect,
            &dims,
            &[
                buffers.grads.binding(),
                phi.binding(),
                theta_acc.binding(),
                weight_acc.binding(),
            ],
            (num_agents * (k + layout.weight_len())) as u64,
        )?;
        let accumulate = Dispatch::with_uniform(
            ctx,
            Kernel::ContextAccumulate,
            &dims,
            &[buffers.grads.binding(), weights.binding(), acc.binding()],
            (num_agents * layout.dim) as u64,
        )?;
        let step = Dispatch::with_uniform(
            ctx,
            Kernel::ContextStep,
            &dims,
            &[buffers.agent_state.binding(), phi.binding(), acc.binding()],
            (num_agents * layout.dim) as u64,
        )?;
        let apply = Dispatch::with_uniform(
            ctx,
            Kernel::ContextApply,
            &dims,
            &[
                buffers.params.binding(),
                weights.binding(),
                base.binding(),
                phi.binding(),
            ],
            (num_agents * j) as u64,
        )?;
        let reset = Dispatch::with_uniform(
            ctx,
            Kernel::ContextReset,
            &dims,
            &[
                buffers.params.binding(),
                base.binding(),
                phi.binding(),
                acc.binding(),
            ],
            (num_agents * j.max(layout.dim)) as u64,
        )?;
        Ok(ContextStep {
            layout,
            num_agents,
            dims,
            weights,
            base,
            phi,
            acc,
            theta_acc,
            weight_acc,
            collecting: false,
            accumulate,
            step,
            apply,
            reset,
            collect,
        })
    }

    pub fn layout(&self) -> &ContextLayout {
        &self.layout
    }

    pub fn num_agents(&self) -> usize {
        self.num_agents
    }

    /// Recorded after each minibatch's backward pass of the first epoch:
    /// adds its dL/dphi to the sums.
    pub fn accumulate_dispatch(&self) -> &Dispatch {
        &self.accumulate
    }

    /// Recorded after the first epoch: the step along the mean of the sums
    /// (which it clears), then the slots rewritten from the new contexts.
    pub fn step_dispatches(&self) -> [&Dispatch; 2] {
        [&self.step, &self.apply]
    }

    /// A new task for every agent: the reset dispatch, and the outer
    /// gradient's sums cleared; one submission.
    pub fn reset(&self, ctx: &GpuContext) {
        ctx.submit("context reset", |encoder| {
            encoder.clear_buffer(&self.theta_acc.buffer, 0, None);
            encoder.clear_buffer(&self.weight_acc.buffer, 0, None);
            let mut pass = encoder.begin_compute_pass(&Default::default());
            self.reset.record(&mut pass);
        });
    }

    /// While `Some(weight)`, every minibatch of an update (or of
    /// [`PpoGpu::gradient`](crate::ppo::PpoGpu::gradient)) adds `weight`
    /// times its gradient to the outer sums (`context_collect`); `None`
    /// stops that.
    pub fn set_collect(&mut self, ctx: &GpuContext, weight: Option<f64>) {
        self.collecting = weight.is_some();
        if let Some(weight) = weight {
            self.dims.collect_weight = weight as f32;
            self.collect.write_uniform(ctx, &self.dims);
        }
    }

    /// The collect dispatch, when collecting.
    pub fn collect_dispatch(&self) -> Option<&Dispatch> {
        self.collecting.then_some(&self.collect)
    }

    /// Weights the policy's slots in later gradient sums
    /// (`context_accumulate`): 1, the default, steps along the PPO loss's
    /// gradient; 0 along the value loss's alone.
    pub fn set_policy_weight(&mut self, ctx: &GpuContext, weight: f64) -> Result<()> {
        check_context_policy_weight(weight)?;
        self.dims.policy_weight = weight as f32;
        self.accumulate.write_uniform(ctx, &self.dims);
        Ok(())
    }

    /// Changes the step size and bound of later steps.
    pub fn set_step(&mut self, ctx: &GpuContext, lr: f64, bound: f64) -> Result<()> {
        check_context_step(lr, bound)?;
        self.dims.lr = lr as f32;
        self.dims.bound = bound as f32;
        self.step.write_uniform(ctx, &self.dims);
        Ok(())
    }

    /// Uploads the weights [J][C] and rewrites the slots from them.
    pub fn set_weights(&self, ctx: &GpuContext, weights: &[f32]) -> Result<()> {
        self.weights.write(ctx, weights)?;
        ctx.run("context apply", &[&self.apply]);
        Ok(())
    }

    /// Every agent's context, [P][C].
    pub fn read_phi(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        self.phi.read(ctx)
    }
}

/// CPU reference of `context_accumulate`'s term: dL/dphi [P][C] from the
/// slots' gradients in `grads` [P][K]: `policy_weight * sum_{j actor}
/// weights[j][c] * grads[p][slot j]` plus the same sum over the critic's
/// slots.
pub fn context_grad_cpu(
    layout: &ContextLayout,
    weights: &[f32],
    grads: &[f32],
    policy_weight: f32,
) -> Vec<f32> {
    let (c_count, k) = (layout.dim, layout.params_per_agent);
    let num_agents = grads.len() / k;
    (0..num_agents * c_count)
        .map(|i| {
            let (p, c) = (i / c_count, i % c_count);
            let sum = |js: std::ops::Range<usize>| {
                js.fold(0.0f32, |g, j| {
                    g + weights[j * c_count + c] * grads[p * k + layout.slot_index(j)]
                })
            };
            policy_weight * sum(0..layout.actor_units) + sum(layout.actor_units..layout.units())
        })
        .collect()
}

/// CPU reference of `context_step`: each context of an agent still
/// `updating` moves by `-lr * acc / minibatches`, clamped to
/// `[-bound, bound]`.
pub fn context_step_cpu(
    phi: &mut [f32],
    acc: &[f32],
    updating: &[bool],
    minibatches: usize,
    lr: f32,
    bound: f32,
) {
    let c_count = phi.len() / updating.len().max(1);
    for (i, value) in phi.iter_mut().enumerate() {
        if updating[i / c_count] {
            let g = acc[i] / minibatches as f32;
            *value = (*value - lr * g).clamp(-bound, bound);
        }
    }
}

/// CPU reference of `context_collect`: adds `weight` times `grads` [P][K]
/// to `theta_acc` and `weight` times `grads[p][slot j] * phi[p][c]` to
/// `weight_acc` [P][J][C].
pub fn context_collect_cpu(
    layout: &ContextLayout,
    grads: &[f32],
    phi: &[f32],
    weight: f32,
    theta_acc: &mut [f32],
    weight_acc: &mut [f32],
) {
    let (c_count, k, wc) = (layout.dim, layout.params_per_agent, layout.weight_len());
    for (acc, g) in theta_acc.iter_mut().zip(grads) {
        *acc += weight * g;
    }
    for (i, acc) in weight_acc.iter_mut().enumerate() {
        let (p, w) = (i / wc, i % wc);
        let (j, c) = (w / c_count, w % c_count);
        *acc += weight * (grads[p * k + layout.slot_index(j)] * phi[p * c_count + c]);
    }
}

/// CPU reference of `context_apply`: writes `base + W phi` into each
/// agent's slots.
pub fn context_apply_cpu(
    layout: &ContextLayout,
    weights: &[f32],
    base: &[f32],
    phi: &[f32],
    params: &mut [f32],
) {
    let (c_count, j_count, k) = (layout.dim, layout.units(), layout.params_per_agent);
    for (p, agent_base) in base.chunks(j_count).enumerate() {
        for (j, &b) in agent_base.iter().enumerate() {
            let shifted = (0..c_count).fold(b, |s, c| {
                s + weights[j * c_count + c] * phi[p * c_count + c]
            });
            params[p * k + layout.slot_index(j)] = shifted;
        }
    }
}
