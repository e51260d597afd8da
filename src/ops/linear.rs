//! Linear layers with a population dimension: forward (optional fused tanh)
//! and backward (dX; dW, db reduced over each agent's rows), on the GPU and
//! as f64 CPU references.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuBuffer, GpuContext, Kernel, UniformBuffer};

/// The nonlinearity fused into a linear layer's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Tanh,
}

/// Shape and parameter placement of one linear layer applied to every agent.
///
/// Rows are `r = p * rows_per_agent + n`; agent `p`'s weights are
/// `params[p * param_stride + w_offset ..][out_dim][in_dim]` (row-major) and its
/// bias `params[p * param_stride + b_offset ..][out_dim]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearSpec {
    pub num_agents: usize,
    pub rows_per_agent: usize,
    pub in_dim: usize,
    pub out_dim: usize,
    pub param_stride: usize,
    pub w_offset: usize,
    pub b_offset: usize,
    pub activation: Activation,
}

/// The uniform block both linear shaders read (`struct Dims`).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct LinearDims {
    rows_per_agent: u32,
    num_agents: u32,
    in_dim: u32,
    out_dim: u32,
    param_stride: u32,
    w_offset: u32,
    b_offset: u32,
    activation: u32,
}

impl LinearSpec {
    /// Total rows over all agents.
    pub fn rows(&self) -> usize {
        self.num_agents * self.rows_per_agent
    }

    /// Checks the spec is self-consistent and fits 32-bit kernel indices.
    pub fn validate(&self, op: &str) -> Result<()> {
        let positive = [
            ("num_agents", self.num_agents),
            ("rows_per_agent", self.rows_per_agent),
            ("in_dim", self.in_dim),
            ("out_dim", self.out_dim),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(Error::config(
                    format!("{op}.{field}"),
                    value,
                    "must be at least 1",
                ));
            }
        }
        let weights_end = self.w_offset + self.in_dim * self.out_dim;
        let bias_end = self.b_offset + self.out_dim;
        if weights_end.max(bias_end) > self.param_stride {
            return Err(Error::config(
                format!("{op}.param_stride"),
                self.param_stride,
                format!("layer parameters end at {}", weights_end.max(bias_end)),
            ));
        }
        let largest = [
            self.num_agents * self.param_stride,
            self.rows() * self.in_dim.max(self.out_dim),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        if largest > u32::MAX as usize {
            return Err(Error::config(
                op,
                largest,
                "tensor larger than 2^32 elements; split the population",
            ));
        }
        Ok(())
    }

    fn dims(&self) -> LinearDims {
        LinearDims {
            rows_per_agent: self.rows_per_agent as u32,
            num_agents: self.num_agents as u32,
            in_dim: self.in_dim as u32,
            out_dim: self.out_dim as u32,
            param_stride: self.param_stride as u32,
            w_offset: self.w_offset as u32,
            b_offset: self.b_offset as u32,
            activation: match self.activation {
                Activation::Identity => 0,
                Activation::Tanh => 1,
            },
        }
    }
}

/// How many rows and outputs (or inputs, or columns) one invocation of a
/// layer's forward or backward pass computes. Both blocks sum every value in
/// the same order, so they give the same values; only their speed differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RegisterBlock {
    /// 4 rows × 4 outputs (`linear_forward`): more invocations, for small
    /// layers.
    #[default]
    B4x4,
    /// 8 rows × 8 outputs (`linear_forward_8x8`): each load feeds 4 times as
    /// many multiply-adds.
    B8x8,
}

impl RegisterBlock {
    fn forward(self) -> Kernel {
        match self {
            RegisterBlock::B4x4 => Kernel::LinearForward,
            RegisterBlock::B8x8 => Kernel::LinearForward8x8,
        }
    }

    fn backward_data(self) -> Kernel {
        match self {
            RegisterBlock::B4x4 => Kernel::LinearBackwardData,
            RegisterBlock::B8x8 => Kernel::LinearBackwardData8x8,
        }
    }

    fn backward_weights(self) -> Kernel {
        match self {
            RegisterBlock::B4x4 => Kernel::LinearBackwardWeights,
            RegisterBlock::B8x8 => Kernel::LinearBackwardWeights8x8,
        }
    }

    /// The block for a layer of `spec`'s shape on `ctx`'s adapter, unless
    /// [`force_register_block`] says otherwise. Measured side by side
    /// (`cargo bench --bench kernels`, Mesa 25 llvmpipe GL, 2 cores, a
    /// 64 -> 64 tanh layer, the machine noisy, so ranges): at 1024 rows in
    /// all (8 agents × 128) the forward a tie, the input gradient 0.7-1.5×
    /// and the weight gradient 1.2-2×; at 4096 (8 × 512, 1 × 4096) and 8192
    /// (64 × 128) the forward 1.3-2×, the input gradient 1.5-2.6×, the
    /// weight gradient 1.2-1.7×; at 128 rows 4×4 wins the forward. Hardware adapters keep 4×4 (more invocations; not
    /// measured here), as do layers narrower than a block.
    pub fn choose(ctx: &GpuContext, spec: &LinearSpec) -> RegisterBlock {
        match FORCED_BLOCK.load(Ordering::Relaxed) {
            1 => return RegisterBlock::B4x4,
            2 => return RegisterBlock::B8x8,
            _ => {}
        }
        let wide = spec.in_dim >= 8 && spec.out_dim >= 8;
        if ctx.adapter.is_software && wide && spec.rows() >= 1024 {
            RegisterBlock::B8x8
        } else {
            RegisterBlock::B4x4
        }
    }

    /// Rows (and outputs) per invocation.
    pub fn size(self) -> usize {
        match self {
            RegisterBlock::B4x4 => 4,
            RegisterBlock::B8x8 => 8,
        }
    }
}

/// 0: [`RegisterBlock::choose`] decides; 1: 4×4; 2: 8×8.
static FORCED_BLOCK: AtomicU8 = AtomicU8::new(0);

/// Makes every layer built from now on in this process use `block`
/// (None: [`RegisterBlock::choose`] decides again). For benches that time
/// both blocks side by side; the values are the same either way.
pub fn force_register_block(block: Option<RegisterBlock>) {
    let code = match block {
        None => 0,
        Some(RegisterBlock::B4x4) => 1,
        Some(RegisterBlock::B8x8) => 2,
    };
    FORCED_BLOCK.store(code, Ordering::Relaxed);
}

/// The forward pass of one layer, bound to its buffers once.
#[derive(Debug)]
pub struct LinearForward {
    dispatch: Dispatch,
    _dims: UniformBuffer<LinearDims>,
}

impl LinearForward {
    /// Binds `x` [rows][in_dim], `params` [num_agents][param_stride] and `y` [rows][out_dim].
    pub fn new(
        ctx: &GpuContext,
        spec: &LinearSpec,
        x: &GpuBuffer<f32>,
        params: &GpuBuffer<f32>,
        y: &GpuBuffer<f32>,
    ) -> Result<Self> {
        Self::with_block(ctx, spec, x, params, y, RegisterBlock::default())
    }

    /// As [`LinearForward::new`], with `block` rows × outputs per invocation.
    pub fn with_block(
        ctx: &GpuContext,
        spec: &LinearSpec,
        x: &GpuBuffer<f32>,
        params: &GpuBuffer<f32>,
        y: &GpuBuffer<f32>,
        block: RegisterBlock,
    ) -> Result<Self> {
        const OP: &str = "linear_forward";
        spec.validate(OP)?;
        x.expect_len(OP, spec.rows() * spec.in_dim)?;
        params.expect_len(OP, spec.num_agents * spec.param_stride)?;
        y.expect_len(OP, spec.rows() * spec.out_dim)?;
        let dims = UniformBuffer::new(ctx, "linear_forward dims", &spec.dims());
        let b = block.size();
        let blocks = spec.num_agents * spec.rows_per_agent.div_ceil(b) * spec.out_dim.div_ceil(b);
        let dispatch = Dispatch::new(
            ctx,
            block.forward(),
            &[dims.binding(), x.binding(), params.binding(), y.binding()],
            blocks as u64,
        )?;
        Ok(LinearForward {
            dispatch,
            _dims: dims,
        })
    }

    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }
}

/// Rows each invocation of the weights pass sums (before the chunk cap).
const CHUNK_ROWS: usize = 32;
/// The partial-sum scratch of one layer stays below this many floats.
const MAX_PARTIALS: usize = 1 << 22;

/// The uniform block of linear_backward.wgsl: [`LinearDims`] plus row chunking.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct LinearBackwardDims {
    base: LinearDims,
    chunk_rows: u32,
    chunks: u32,
    _pad: [u32; 2],
}

/// The backward pass of one layer: parameter gradients (per-chunk partial
/// sums, then a fixed-order reduce), and the input gradient when `dx` is
/// given (the first layer of a network needs none).
#[derive(Debug)]
pub struct LinearBackward {
    data: Option<Dispatch>,
    weights: Dispatch,
    reduce: Dispatch,
    _dims: UniformBuffer<LinearBackwardDims>,
    _partials: GpuBuffer<f32>,
}

/// The buffers a layer's backward pass reads and writes.
pub struct LinearBackwardBuffers<'a> {
    /// The layer's input [rows][in_dim].
    pub x: &'a GpuBuffer<f32>,
    pub params: &'a GpuBuffer<f32>,
    /// The layer's output after activation [rows][out_dim].
    pub y: &'a GpuBuffer<f32>,
    /// Gradient of the loss with respect to `y`.
    pub dy: &'a GpuBuffer<f32>,
    /// Gradient with respect to `x`, written if present.
    pub dx: Option<&'a GpuBuffer<f32>>,
    /// Parameter gradients [num_agents][param_stride]; this layer's slots are overwritten.
    pub grads: &'a GpuBuffer<f32>,
}

impl LinearBackward {
    pub fn new(
        ctx: &GpuContext,
        spec: &LinearSpec,
        buffers: &LinearBackwardBuffers<'_>,
    ) -> Result<Self> {
        Self::with_block(ctx, spec, buffers, RegisterBlock::default())
    }

    /// As [`LinearBackward::new`], the data and weights passes in `block`s.
    pub fn with_block(
        ctx: &GpuContext,
        spec: &LinearSpec,
        buffers: &LinearBackwardBuffers<'_>,
        block: RegisterBlock,
    ) -> Result<Self> {
        const OP: &str = "linear_backward";
        let b = block.size();
        spec.validate(OP)?;
        let rows = spec.rows();
        buffers.x.expect_len(OP, rows * spec.in_dim)?;
        buffers
            .params
            .expect_len(OP, spec.num_agents * spec.param_stride)?;
        buffers.y.expect_len(OP, rows * spec.out_dim)?;
        buffers.dy.expect_len(OP, rows * spec.out_dim)?;
        buffers
            .grads
            .expect_len(OP, spec.num_agents * spec.param_stride)?;
        if let Some(dx) = buffers.dx {
            dx.expect_len(OP, rows * spec.in_dim)?;
        }
        let layer_size = spec.out_dim * (spec.in_dim + 1);
        let chunks = spec
            .rows_per_agent
            .div_ceil(CHUNK_ROWS)
            .min((MAX_PARTIALS / (spec.num_agents * layer_size)).max(1));
        let chunk_rows = spec.rows_per_agent.div_ceil(chunks);
        let partials = GpuBuffer::<f32>::zeros(
            ctx,
            "linear_backward partials",
            chunks * spec.num_agents * layer_size,
        )?;
        let dims = UniformBuffer::new(
            ctx,
            "linear_backward dims",
            &LinearBackwardDims {
                base: spec.dims(),
                chunk_rows: chunk_rows as u32,
                chunks: chunks as u32,
                _pad: [0; 2],
            },
        );
        let data = match buffers.dx {
            Some(dx) => Some(Dispatch::new(
                ctx,
                block.backward_data(),
                &[
                    dims.binding(),
                    buffers.params.binding(),
                    buffers.y.binding(),
                    buffers.dy.binding(),
                    dx.binding(),
                ],
                (spec.num_agents * spec.rows_per_agent.div_ceil(b) * spec.in_dim.div_ceil(b))
                    as u64,
            )?),
            None => None,
        };
        let blocks = spec.out_dim.div_ceil(b) * (spec.in_dim + 1).div_ceil(b);
        let weights = Dispatch::new(
            ctx,
            block.backward_weights(),
            &[
                dims.binding(),
                buffers.x.binding(),
                buffers.y.binding(),
                buffers.dy.binding(),
                partials.binding(),
            ],
            (chunks * spec.num_agents * blocks) as u64,
        )?;
        let reduce = Dispatch::new(
            ctx,
            Kernel::LinearGradReduce,
            &[dims.binding(), partials.binding(), buffers.grads.binding()],
            (spec.num_agents * layer_size) as u64,
        )?;
        Ok(LinearBackward {
            data,
            weights,
            reduce,
            _dims: dims,
            _partials: partials,
        })
    }

    /// The dispatches in order (input gradient first, if any).
    pub fn dispatches(&self) -> impl Iterator<Item = &Dispatch> {
        self.data.iter().chain([&self.weights, &self.reduce])
    }
}

fn agent_params<'a>(spec: &LinearSpec, params: &'a [f64], p: usize) -> (&'a [f64], &'a [f64]) {
    let base = p * spec.param_stride;
    (
        &params[base + spec.w_offset..base + spec.w_offset + spec.in_dim * spec.out_dim],
        &params[base + spec.b_offset..base + spec.b_offset + spec.out_dim],
    )
}

/// CPU reference of [`LinearForward`] in f64: returns y [rows][out_dim].
pub fn linear_forward_cpu(spec: &LinearSpec, x: &[f64], params: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; spec.rows() * spec.out_dim];
    for p in 0..spec.num_agents {
        let (w, b) = agent_params(spec, params, p);
        for n in 0..spec.rows_per_agent {
            let r = p * spec.rows_per_agent + n;
            let xr = &x[r * spec.in_dim..(r + 1) * spec.in_dim];
            for o in 0..spec.out_dim {
                let wo = &w[o * spec.in_dim..(o + 1) * spec.in_dim];
                let z = b[o] + xr.iter().zip(wo).map(|(a, c)| a * c).sum::<f64>();
                y[r * spec.out_dim + o] = match spec.activation {
                    Activation::Identity => z,
                    Activation::Tanh => z.tanh(),
                };
            }
        }
    }
    y
}

/// Gradients of one layer from the CPU reference.
#[derive(Clone, Debug)]
pub struct LinearGrads {
    /// [rows][in_dim]
    pub dx: Vec<f64>,
    /// [num_agents][out_dim][in_dim]
    pub dw: Vec<f64>,
    /// [num_agents][out_dim]
    pub db: Vec<f64>,
}

/// CPU reference of [`LinearBackward`] in f64, given the layer's input `x`,
/// output `y` (after activation) and upstream gradient `dy`.
pub fn linear_backward_cpu(
    spec: &LinearSpec,
    x: &[f64],
    params: &[f64],
    y: &[f64],
    dy: &[f64],
) -> LinearGrads {
    let (rows, in_dim, out_dim) = (spec.rows(), spec.in_dim, spec.out_dim);
    let dz: Vec<f64> = match spec.activation {
        Activation::Identity => dy.to_vec(),
        Activation::Tanh => dy.iter().zip(y).map(|(g, v)| g * (1.0 - v * v)).collect(),
    };
    let mut grads = LinearGrads {
        dx: vec![0.0; rows * in_dim],
        dw: vec![0.0; spec.num_agents * out_dim * in_dim],
        db: vec![0.0; spec.num_agents * out_dim],
    };
    for p in 0..spec.num_agents {
        let (w, _) = agent_params(spec, params, p);
        for n in 0..spec.rows_per_agent {
            let r = p * spec.rows_per_agent + n;
            for o in 0..out_dim {
                let g = dz[r * out_dim + o];
                grads.db[p * out_dim + o] += g;
                for i in 0..in_dim {
                    grads.dx[r * in_dim + i] += g * w[o * in_dim + i];
                    grads.dw[(p * out_dim + o) * in_dim + i] += g * x[r * in_dim + i];
                }
            }
        }
    }
    grads
}
