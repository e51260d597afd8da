//! Multi-layer perceptrons built from the linear kernels: tanh hidden layers,
//! identity output. No hidden layer is the plain linear layer of the seed design.

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuBuffer, GpuContext};
use crate::ops::linear::{
    linear_backward_cpu, linear_forward_cpu, Activation, LinearBackward, LinearBackwardBuffers,
    LinearForward, LinearSpec, RegisterBlock,
};

/// Sizes of a network: input, hidden layers (tanh), output (identity).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MlpSpec {
    pub in_dim: usize,
    pub hidden: Vec<usize>,
    pub out_dim: usize,
}

/// Where one layer sits inside an agent's parameter slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerLayout {
    pub in_dim: usize,
    pub out_dim: usize,
    pub w_offset: usize,
    pub b_offset: usize,
    pub activation: Activation,
}

impl MlpSpec {
    pub fn new(in_dim: usize, hidden: &[usize], out_dim: usize) -> Result<Self> {
        if in_dim == 0 {
            return Err(Error::config("mlp.in_dim", in_dim, "must be at least 1"));
        }
        if out_dim == 0 {
            return Err(Error::config("mlp.out_dim", out_dim, "must be at least 1"));
        }
        if let Some(i) = hidden.iter().position(|&h| h == 0) {
            return Err(Error::config(
                format!("hidden[{i}]"),
                0,
                "hidden sizes must be at least 1",
            ));
        }
        Ok(MlpSpec {
            in_dim,
            hidden: hidden.to_vec(),
            out_dim,
        })
    }

    /// The layers in order, with parameters laid out from `base`:
    /// each layer's W[out][in] then b[out].
    pub fn layers(&self, base: usize) -> Vec<LayerLayout> {
        let mut sizes = vec![self.in_dim];
        sizes.extend(&self.hidden);
        sizes.push(self.out_dim);
        let mut offset = base;
        let last = sizes.len() - 2;
        sizes
            .windows(2)
            .enumerate()
            .map(|(i, pair)| {
                let layout = LayerLayout {
                    in_dim: pair[0],
                    out_dim: pair[1],
                    w_offset: offset,
                    b_offset: offset + pair[0] * pair[1],
                    activation: if i == last {
                        Activation::Identity
                    } else {
                        Activation::Tanh
                    },
                };
                offset += pair[1] * (pair[0] + 1);
                layout
            })
            .collect()
    }

    /// Number of parameters of one network.
    pub fn param_count(&self) -> usize {
        self.layers(0)
            .iter()
            .map(|l| l.out_dim * (l.in_dim + 1))
            .sum()
    }
}

/// How a network is placed in a population's parameter buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub num_agents: usize,
    pub rows_per_agent: usize,
    /// Parameters per agent (the whole actor-critic, say).
    pub param_stride: usize,
    /// Where this network's first layer starts in an agent's slice.
    pub base: usize,
}

impl Placement {
    fn linear(&self, layer: &LayerLayout) -> LinearSpec {
        LinearSpec {
            num_agents: self.num_agents,
            rows_per_agent: self.rows_per_agent,
            in_dim: layer.in_dim,
            out_dim: layer.out_dim,
            param_stride: self.param_stride,
            w_offset: layer.w_offset,
            b_offset: layer.b_offset,
            activation: layer.activation,
        }
    }
}

/// A network bound to its buffers: forward and backward dispatch lists and
/// the activations they share. Built once per run.
#[derive(Debug)]
pub struct MlpPlan {
    /// Output of every layer, the last being the network's output [rows][out_dim].
    pub activations: Vec<GpuBuffer<f32>>,
    /// Gradient of the loss with respect to each layer's output; the caller
    /// writes the last one (dLoss/dOutput) before the backward pass.
    pub grad_activations: Vec<GpuBuffer<f32>>,
    forward: Vec<LinearForward>,
    backward: Vec<LinearBackward>,
}

impl MlpPlan {
    /// Binds the network to input `x` [rows][in_dim], `params` and `grads`
    /// ([num_agents][param_stride] each), allocating activations.
    pub fn new(
        ctx: &GpuContext,
        name: &str,
        spec: &MlpSpec,
        placement: Placement,
        x: &GpuBuffer<f32>,
        params: &GpuBuffer<f32>,
        grads: &GpuBuffer<f32>,
    ) -> Result<Self> {
        let layers = spec.layers(placement.base);
        let rows = placement.num_agents * placement.rows_per_agent;
        let mut activations = Vec::with_capacity(layers.len());
        let mut grad_activations = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            activations.push(GpuBuffer::zeros(
                ctx,
                &format!("{name}.{i}.out"),
                rows * layer.out_dim,
            )?);
            grad_activations.push(GpuBuffer::zeros(
                ctx,
                &format!("{name}.{i}.grad_out"),
                rows * layer.out_dim,
            )?);
        }
        let mut forward = Vec::with_capacity(layers.len());
        let mut backward = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            let linear = placement.linear(layer);
            let input = if i == 0 { x } else { &activations[i - 1] };
            let block = RegisterBlock::choose(ctx, &linear);
            forward.push(LinearForward::with_block(
                ctx,
                &linear,
                input,
                params,
                &activations[i],
                block,
            )?);
            backward.push(LinearBackward::with_block(
                ctx,
                &linear,
                &LinearBackwardBuffers {
                    x: input,
                    params,
                    y: &activations[i],
                    dy: &grad_activations[i],
                    dx: if i == 0 {
                        None
                    } else {
                        Some(&grad_activations[i - 1])
                    },
                    grads,
                },
                block,
            )?);
        }
        Ok(MlpPlan {
            activations,
            grad_activations,
            forward,
            backward,
        })
    }

    pub fn output(&self) -> &GpuBuffer<f32> {
        self.activations
            .last()
            .expect("an MLP has at least one layer")
    }

    /// The buffer the loss writes dLoss/dOutput into.
    pub fn grad_output(&self) -> &GpuBuffer<f32> {
        self.grad_activations
            .last()
            .expect("an MLP has at least one layer")
    }

    /// Forward dispatches, first layer first.
    pub fn forward_dispatches(&self) -> impl Iterator<Item = &Dispatch> {
        self.forward.iter().map(LinearForward::dispatch)
    }

    /// Backward dispatches, last layer first.
    pub fn backward_dispatches(&self) -> impl Iterator<Item = &Dispatch> {
        self.backward
            .iter()
            .rev()
            .flat_map(LinearBackward::dispatches)
    }
}

/// CPU reference forward: every layer's output, last = network output.
pub fn mlp_forward_cpu(
    spec: &MlpSpec,
    placement: Placement,
    x: &[f64],
    params: &[f64],
) -> Vec<Vec<f64>> {
    let mut outputs: Vec<Vec<f64>> = Vec::new();
    for layer in spec.layers(placement.base) {
        let input = outputs.last().map(Vec::as_slice).unwrap_or(x);
        let y = linear_forward_cpu(&placement.linear(&layer), input, params);
        outputs.push(y);
    }
    outputs
}

/// CPU reference backward: adds this network's parameter gradients into
/// `grads` ([num_agents][param_stride]) given dLoss/dOutput.
pub fn mlp_backward_cpu(
    spec: &MlpSpec,
    placement: Placement,
    x: &[f64],
    params: &[f64],
    outputs: &[Vec<f64>],
    grad_output: &[f64],
    grads: &mut [f64],
) {
    let layers = spec.layers(placement.base);
    let mut upstream = grad_output.to_vec();
    for (i, layer) in layers.iter().enumerate().rev() {
        let linear = placement.linear(layer);
        let input = if i == 0 { x } else { &outputs[i - 1] };
        let g = linear_backward_cpu(&linear, input, params, &outputs[i], &upstream);
        for p in 0..placement.num_agents {
            let base = p * placement.param_stride;
            let weights = layer.in_dim * layer.out_dim;
            for (k, v) in g.dw[p * weights..(p + 1) * weights].iter().enumerate() {
                grads[base + layer.w_offset + k] += v;
            }
            for (k, v) in g.db[p * layer.out_dim..(p + 1) * layer.out_dim]
                .iter()
                .enumerate()
            {
                grads[base + layer.b_offset + k] += v;
            }
        }
        upstream = g.dx;
    }
}
