//! The meta-learning outer step on the GPU: Reptile or first-order MAML moves
//! the meta-parameters θ from M adapted agents, then broadcasts θ back to
//! every agent (shaders/meta.wgsl).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuBuffer, GpuContext, Kernel};
use crate::ops::context::ContextStep;
use crate::ops::fits_u32;
use crate::ops::optim::{ADAM_BETA1, ADAM_BETA2};

/// How the outer step uses the adapted agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetaMethod {
    /// θ ← θ + ε · mean_m(θ_m − θ) (Nichol et al. 2018).
    Reptile,
    /// An Adam step (learning rate β) on θ along mean_m(∇L_m(θ_m)), the loss
    /// gradient at each adapted agent's parameters on fresh data
    /// (first-order MAML, Finn et al. 2017; Adam as MAML's meta-optimizer).
    Fomaml,
    /// First-order CAVIA (Zintgraf et al. 2019): the inner loops adapt only
    /// a task context of `context_dim` numbers that starts at 0 for every
    /// task, an input of the policy's first layer and a linear term of the
    /// value (see [`crate::ops::context`]); the outer step is first-order MAML's Adam
    /// step on θ, plus one on the context weights along
    /// mean_m(∂L_m/∂s ⊗ φ_m), both summed over the losses of the inner
    /// loop's rollouts that count
    /// ([`MetaConfig::context_collect_weight`](crate::meta::MetaConfig::context_collect_weight)).
    Cavia,
}

impl MetaMethod {
    pub const NAMES: [&'static str; 3] = ["reptile", "fomaml", "cavia"];

    pub fn name(self) -> &'static str {
        match self {
            MetaMethod::Reptile => "reptile",
            MetaMethod::Fomaml => "fomaml",
            MetaMethod::Cavia => "cavia",
        }
    }

    /// Whether the outer step needs the gradient at the adapted parameters
    /// on a fresh rollout (first-order MAML and CAVIA).
    pub fn needs_gradient(self) -> bool {
        matches!(self, MetaMethod::Fomaml | MetaMethod::Cavia)
    }
}

/// The meta-optimizer's Adam moments for first-order MAML: β₁, β₂ as the
/// inner Adam; ε = 1e-8 (PyTorch's default, as MAML's meta-optimizer).
pub const META_ADAM_EPS: f64 = 1e-8;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct MetaDims {
    num_agents: u32,
    params_per_agent: u32,
    meta_lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    bias1: f32,
    bias2_sqrt: f32,
}

/// Adam state of the first-order MAML outer step (unused by Reptile).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetaAdamState {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    /// Outer steps taken.
    pub step: u32,
}

/// θ on the GPU and the outer-step dispatch bound to the agents' buffers.
#[derive(Debug)]
pub struct OuterStep {
    pub theta: GpuBuffer<f32>,
    adam_m: GpuBuffer<f32>,
    adam_v: GpuBuffer<f32>,
    step: u32,
    method: MetaMethod,
    dims: MetaDims,
    dispatch: Dispatch,
    /// CAVIA's step on the context weights (which live in the agents'
    /// [`ContextStep`]).
    context: Option<ContextOuter>,
}

/// The outer step of the context weights: `fomaml_outer` on them along the
/// mean over agents of the collected ∂L/∂s ⊗ φ, its broadcast going to a
/// scratch buffer nobody reads.
#[derive(Debug)]
struct ContextOuter {
    adam_m: GpuBuffer<f32>,
    adam_v: GpuBuffer<f32>,
    _broadcast: GpuBuffer<f32>,
    /// The context weights' count, the dims' `params_per_agent`.
    len: u32,
    dispatch: Dispatch,
}

/// `1 - β₁^t` and `sqrt(1 - β₂^t)` in double precision, then rounded.
fn bias_corrections(step: u32) -> (f32, f32) {
    let t = step.max(1) as i32;
    (
        (1.0 - ADAM_BETA1.powi(t)) as f32,
        (1.0 - ADAM_BETA2.powi(t)).sqrt() as f32,
    )
}

impl OuterStep {
    /// `params` and `grads` are the agents' [M][K] buffers; `theta` starts as
    /// `initial` [K]. CAVIA also steps the weights of `context` (the agents'
    /// contexts, which it needs; the other methods ignore it).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &GpuContext,
        method: MetaMethod,
        initial: &[f32],
        num_agents: usize,
        params: &GpuBuffer<f32>,
        grads: &GpuBuffer<f32>,
        context: Option<&ContextStep>,
        meta_lr: f64,
    ) -> Result<Self> {
        const OP: &str = "meta outer step";
        let k = initial.len();
        params.expect_len(OP, num_agents * k)?;
        grads.expect_len(OP, num_agents * k)?;
        let theta = GpuBuffer::from_slice(ctx, "meta theta", initial)?;
        let adam_m = GpuBuffer::zeros(ctx, "meta adam m", k)?;
        let adam_v = GpuBuffer::zeros(ctx, "meta adam v", k)?;
        let (bias1, bias2_sqrt) = bias_corrections(1);
        let dims = MetaDims {
            num_agents: fits_u32(OP, "num_agents", num_agents)?,
            params_per_agent: fits_u32(OP, "params_per_agent", k)?,
            meta_lr: meta_lr as f32,
            beta1: ADAM_BETA1 as f32,
            beta2: ADAM_BETA2 as f32,
            eps: META_ADAM_EPS as f32,
            bias1,
            bias2_sqrt,
        };
        // CAVIA's θ gradient is the collected multi-step sum.
        let theta_grads = match (method, context) {
            (MetaMethod::Cavia, Some(c)) => &c.theta_acc,
            _ => grads,
        };
        let dispatch = match method {
            MetaMethod::Reptile => Dispatch::with_uniform(
                ctx,
                Kernel::ReptileOuter,
                &dims,
                &[theta.binding(), params.binding()],
                k as u64,
            )?,
            MetaMethod::Fomaml | MetaMethod::Cavia => Dispatch::with_uniform(
                ctx,
                Kernel::FomamlOuter,
                &dims,
                &[
                    theta_grads.binding(),
                    theta.binding(),
                    params.binding(),
                    adam_m.binding(),
                    adam_v.binding(),
                ],
                k as u64,
            )?,
        };
        let context = match (method, context) {
            (MetaMethod::Cavia, Some(context)) => {
                Some(ContextOuter::new(ctx, context, num_agents, &dims)?)
            }
            (MetaMethod::Cavia, None) => {
                return Err(Error::config(
                    "method",
                    "cavia",
                    "the outer step needs the agents' task contexts (PpoGpu::enable_context)",
                ))
            }
            _ => None,
        };
        Ok(OuterStep {
            theta,
            adam_m,
            adam_v,
            step: 0,
            method,
            dims,
            dispatch,
            context,
        })
    }

    pub fn method(&self) -> MetaMethod {
        self.method
    }

    /// Changes the meta learning rate of later steps (annealing).
    pub fn set_meta_lr(&mut self, meta_lr: f64) {
        self.dims.meta_lr = meta_lr as f32;
    }

    /// One outer step and the broadcast, as its own submission. Under CAVIA
    /// the context weights step too, with the same Adam settings and step
    /// count; the agents' contexts still hold their adapted values
    /// afterwards, so the caller restarts them
    /// ([`PpoGpu::reset_context`](crate::ppo::PpoGpu::reset_context)) from
    /// the broadcast θ.
    pub fn run(&mut self, ctx: &GpuContext) {
        self.step += 1;
        (self.dims.bias1, self.dims.bias2_sqrt) = bias_corrections(self.step);
        self.dispatch.write_uniform(ctx, &self.dims);
        match &self.context {
            Some(context) => {
                let dims = MetaDims {
                    params_per_agent: context.len,
                    ..self.dims
                };
                context.dispatch.write_uniform(ctx, &dims);
                ctx.run("meta outer step", &[&context.dispatch, &self.dispatch]);
            }
            None => ctx.run("meta outer step", &[&self.dispatch]),
        }
    }

    /// The context weights' Adam state (CAVIA only).
    pub fn read_context_adam(&self, ctx: &GpuContext) -> Result<Option<MetaAdamState>> {
        self.context
            .as_ref()
            .map(|c| {
                Ok(MetaAdamState {
                    m: c.adam_m.read(ctx)?,
                    v: c.adam_v.read(ctx)?,
                    step: self.step,
                })
            })
            .transpose()
    }

    /// The meta-optimizer's state (first-order MAML's Adam moments).
    pub fn read_adam(&self, ctx: &GpuContext) -> Result<MetaAdamState> {
        Ok(MetaAdamState {
            m: self.adam_m.read(ctx)?,
            v: self.adam_v.read(ctx)?,
            step: self.step,
        })
    }

    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }
}

impl ContextOuter {
    fn new(
        ctx: &GpuContext,
        context: &ContextStep,
        num_agents: usize,
        dims: &MetaDims,
    ) -> Result<Self> {
        const OP: &str = "context outer step";
        if context.num_agents() != num_agents {
            return Err(Error::shape(
                OP,
                "context agents",
                num_agents,
                context.num_agents(),
            ));
        }
        let len = context.layout().weight_len();
        let adam_m = GpuBuffer::zeros(ctx, "context weights adam m", len)?;
        let adam_v = GpuBuffer::zeros(ctx, "context weights adam v", len)?;
        let broadcast = GpuBuffer::zeros(ctx, "context weights broadcast", num_agents * len)?;
        let len_u32 = fits_u32(OP, "context weights", len)?;
        let dims = MetaDims {
            params_per_agent: len_u32,
            ..*dims
        };
        let dispatch = Dispatch::with_uniform(
            ctx,
            Kernel::FomamlOuter,
            &dims,
            &[
                context.weight_acc.binding(),
                context.weights.binding(),
                broadcast.binding(),
                adam_m.binding(),
                adam_v.binding(),
            ],
            len as u64,
        )?;
        Ok(ContextOuter {
            adam_m,
            adam_v,
            _broadcast: broadcast,
            len: len_u32,
            dispatch,
        })
    }
}

/// CPU reference of the context weights' outer step: the new weights [J][C]
/// after first-order MAML's Adam step along the mean over agents of
/// `weight_acc` [M][J][C] (the collected ∂L/∂s_j · φ[c], s the slots);
/// advances `adam`.
pub fn context_outer_cpu(
    weights: &[f32],
    weight_acc: &[f32],
    num_agents: usize,
    meta_lr: f32,
    adam: &mut MetaAdamState,
) -> Vec<f32> {
    outer_step_cpu(
        MetaMethod::Fomaml,
        weights,
        &[],
        weight_acc,
        num_agents,
        meta_lr,
        adam,
    )
}

/// CPU reference of the outer step (the kernel's f32 operations in the
/// same order): returns the new θ, which every agent's parameters become.
/// First-order MAML advances `adam` (moments sized like θ, zero at first).
pub fn outer_step_cpu(
    method: MetaMethod,
    theta: &[f32],
    params: &[f32],
    grads: &[f32],
    num_agents: usize,
    meta_lr: f32,
    adam: &mut MetaAdamState,
) -> Vec<f32> {
    let k_count = theta.len();
    let column = |source: &[f32], m: usize, k: usize| source[m * k_count + k];
    match method {
        MetaMethod::Reptile => (0..k_count)
            .map(|k| {
                let sum =
                    (0..num_agents).fold(0.0f32, |s, m| s + (column(params, m, k) - theta[k]));
                theta[k] + meta_lr * (sum / num_agents as f32)
            })
            .collect(),
        MetaMethod::Fomaml | MetaMethod::Cavia => {
            adam.m.resize(k_count, 0.0);
            adam.v.resize(k_count, 0.0);
            adam.step += 1;
            let (bias1, bias2_sqrt) = bias_corrections(adam.step);
            let (beta1, beta2) = (ADAM_BETA1 as f32, ADAM_BETA2 as f32);
            let eps = META_ADAM_EPS as f32;
            (0..k_count)
                .map(|k| {
                    let sum = (0..num_agents).fold(0.0f32, |s, m| s + column(grads, m, k));
                    let g = sum / num_agents as f32;
                    let m = adam.m[k] + (1.0 - beta1) * (g - adam.m[k]);
                    let v = beta2 * adam.v[k] + (1.0 - beta2) * g * g;
                    adam.m[k] = m;
                    adam.v[k] = v;
                    theta[k] - meta_lr / bias1 * m / (v.sqrt() / bias2_sqrt + eps)
                })
                .collect()
        }
    }
}
