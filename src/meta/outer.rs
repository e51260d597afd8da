//! The meta-learning outer step on the GPU: Reptile or first-order MAML moves
//! the meta-parameters θ from M adapted agents, then broadcasts θ back to
//! every agent (shaders/meta.wgsl).

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::gpu::{Dispatch, GpuBuffer, GpuContext, Kernel};
use crate::ops::fits_u32;

/// How the outer step uses the adapted agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetaMethod {
    /// θ ← θ + ε · mean_m(θ_m − θ) (Nichol et al. 2018).
    Reptile,
    /// θ ← θ − β · mean_m(∇L_m(θ_m)), the loss gradient at each adapted
    /// agent's parameters on fresh data (first-order MAML, Finn et al. 2017).
    Fomaml,
}

impl MetaMethod {
    pub const NAMES: [&'static str; 2] = ["reptile", "fomaml"];

    pub fn name(self) -> &'static str {
        match self {
            MetaMethod::Reptile => "reptile",
            MetaMethod::Fomaml => "fomaml",
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct MetaDims {
    num_agents: u32,
    params_per_agent: u32,
    meta_lr: f32,
    _pad: u32,
}

/// θ on the GPU and the outer-step dispatch bound to the agents' buffers.
#[derive(Debug)]
pub struct OuterStep {
    pub theta: GpuBuffer<f32>,
    method: MetaMethod,
    dims: MetaDims,
    dispatch: Dispatch,
}

impl OuterStep {
    /// `params` and `grads` are the agents' [M][K] buffers; `theta` starts as `initial` [K].
    pub fn new(
        ctx: &GpuContext,
        method: MetaMethod,
        initial: &[f32],
        num_agents: usize,
        params: &GpuBuffer<f32>,
        grads: &GpuBuffer<f32>,
        meta_lr: f64,
    ) -> Result<Self> {
        const OP: &str = "meta outer step";
        let k = initial.len();
        params.expect_len(OP, num_agents * k)?;
        grads.expect_len(OP, num_agents * k)?;
        let theta = GpuBuffer::from_slice(ctx, "meta theta", initial)?;
        let dims = MetaDims {
            num_agents: fits_u32(OP, "num_agents", num_agents)?,
            params_per_agent: fits_u32(OP, "params_per_agent", k)?,
            meta_lr: meta_lr as f32,
            _pad: 0,
        };
        let dispatch = match method {
            MetaMethod::Reptile => Dispatch::with_uniform(
                ctx,
                Kernel::ReptileOuter,
                &dims,
                &[theta.binding(), params.binding()],
                k as u64,
            )?,
            MetaMethod::Fomaml => Dispatch::with_uniform(
                ctx,
                Kernel::FomamlOuter,
                &dims,
                &[grads.binding(), theta.binding(), params.binding()],
                k as u64,
            )?,
        };
        Ok(OuterStep {
            theta,
            method,
            dims,
            dispatch,
        })
    }

    pub fn method(&self) -> MetaMethod {
        self.method
    }

    /// Changes the meta learning rate of later steps (annealing).
    pub fn set_meta_lr(&mut self, ctx: &GpuContext, meta_lr: f64) {
        self.dims.meta_lr = meta_lr as f32;
        self.dispatch.write_uniform(ctx, &self.dims);
    }

    /// One outer step and the broadcast, as its own submission.
    pub fn run(&self, ctx: &GpuContext) {
        ctx.run("meta outer step", &[&self.dispatch]);
    }

    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }
}

/// CPU reference of the outer step (same f32 summation order as the kernel):
/// returns the new θ; every agent's parameters become that θ.
pub fn outer_step_cpu(
    method: MetaMethod,
    theta: &[f32],
    params: &[f32],
    grads: &[f32],
    num_agents: usize,
    meta_lr: f32,
) -> Vec<f32> {
    let k_count = theta.len();
    (0..k_count)
        .map(|k| {
            let column = |source: &[f32], m: usize| source[m * k_count + k];
            match method {
                MetaMethod::Reptile => {
                    let sum =
                        (0..num_agents).fold(0.0f32, |s, m| s + (column(params, m) - theta[k]));
                    theta[k] + meta_lr * (sum / num_agents as f32)
                }
                MetaMethod::Fomaml => {
                    let sum = (0..num_agents).fold(0.0f32, |s, m| s + column(grads, m));
                    theta[k] - meta_lr * (sum / num_agents as f32)
                }
            }
        })
        .collect()
}
