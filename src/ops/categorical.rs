//! The categorical policy head at rollout time: stable log-softmax, sampling
//! with a counter-based RNG (or argmax), log-prob of the chosen action.

use crate::error::Result;
use crate::gpu::{Dispatch, GpuBuffer, GpuContext, Kernel};
use crate::ops::{fits_u32, RECORD};

/// What the RNG of one rollout step is keyed by; with the row it fixes the sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleKey {
    pub seed: u64,
    pub iteration: u32,
    pub step: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct CategoricalDims {
    rows: u32,
    num_actions: u32,
    greedy: u32,
    seed_lo: u32,
    seed_hi: u32,
    iteration: u32,
    step: u32,
    record_offset: u32,
}

/// PCG hash (Jarzynski & Olano 2020), as in categorical.wgsl.
pub fn pcg_hash(v: u32) -> u32 {
    let state = v.wrapping_mul(747796405).wrapping_add(2891336453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277803737);
    (word >> 22) ^ word
}

/// The uniform in [0, 1) the GPU draws for `row` under `key` (bit-identical).
pub fn uniform01(key: SampleKey, row: u32) -> f32 {
    let mut h = pcg_hash(row);
    h = pcg_hash(h ^ key.step);
    h = pcg_hash(h ^ key.iteration);
    h = pcg_hash(h ^ (key.seed >> 32) as u32);
    h = pcg_hash(h ^ key.seed as u32);
    (h >> 8) as f32 * (1.0 / 16777216.0)
}

/// The head bound to its buffers: `logits` [rows][num_actions] and `values`
/// [rows] in; records (log-prob, value, action at `record_offset + row`) and
/// `actions` [rows] out.
#[derive(Debug)]
pub struct CategoricalSample {
    dispatch: Dispatch,
    dims: CategoricalDims,
}

impl CategoricalSample {
    pub fn new(
        ctx: &GpuContext,
        num_actions: usize,
        logits: &GpuBuffer<f32>,
        values: &GpuBuffer<f32>,
        records: &GpuBuffer<f32>,
        actions: &GpuBuffer<u32>,
    ) -> Result<Self> {
        const OP: &str = "categorical_sample";
        let rows = actions.len();
        logits.expect_len(OP, rows * num_actions)?;
        values.expect_len(OP, rows)?;
        if records.len() < rows * RECORD || !records.len().is_multiple_of(rows * RECORD) {
            return Err(crate::Error::shape(
                OP,
                records.name(),
                rows * RECORD,
                records.len(),
            ));
        }
        let dims = CategoricalDims {
            rows: fits_u32(OP, "rows", rows)?,
            num_actions: fits_u32(OP, "num_actions", num_actions)?,
            greedy: 0,
            seed_lo: 0,
            seed_hi: 0,
            iteration: 0,
            step: 0,
            record_offset: 0,
        };
        let dispatch = Dispatch::with_uniform(
            ctx,
            Kernel::CategoricalSample,
            &dims,
            &[
                logits.binding(),
                values.binding(),
                records.binding(),
                actions.binding(),
            ],
            rows as u64,
        )?;
        Ok(CategoricalSample { dispatch, dims })
    }

    /// Sets the RNG key and where in the records this step's rows go
    /// (`record_block` whole blocks of `rows` records from the start).
    /// `key = None` selects the argmax (greedy evaluation).
    pub fn set_step(&mut self, ctx: &GpuContext, key: Option<SampleKey>, record_block: u32) {
        let key_or_zero = key.unwrap_or(SampleKey {
            seed: 0,
            iteration: 0,
            step: 0,
        });
        self.dims = CategoricalDims {
            greedy: key.is_none() as u32,
            seed_lo: key_or_zero.seed as u32,
            seed_hi: (key_or_zero.seed >> 32) as u32,
            iteration: key_or_zero.iteration,
            step: key_or_zero.step,
            record_offset: record_block * self.dims.rows,
            ..self.dims
        };
        self.dispatch.write_uniform(ctx, &self.dims);
    }

    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }
}

/// Log-softmax of one row of logits, max-shifted for stability.
pub fn log_softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let log_norm = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
    logits.iter().map(|l| l - log_norm).collect()
}

/// One row's result from the CPU reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampled {
    pub action: u32,
    pub logprob: f64,
    /// Distance of the drawn uniform from the nearest CDF boundary: where it
    /// is below float rounding, f32 and f64 may legitimately pick differently.
    pub margin: f64,
}

/// CPU reference of the head: per row the action (inverse CDF of the same
/// uniform, or argmax with the first maximum winning when `key` is None).
pub fn categorical_sample_cpu(
    logits: &[f64],
    num_actions: usize,
    key: Option<SampleKey>,
) -> Vec<Sampled> {
    logits
        .chunks(num_actions)
        .enumerate()
        .map(|(row, l)| {
            let logp = log_softmax(l);
            match key {
                None => {
                    let mut best = 0;
                    for (i, v) in l.iter().enumerate() {
                        if *v > l[best] {
                            best = i;
                        }
                    }
                    Sampled {
                        action: best as u32,
                        logprob: logp[best],
                        margin: f64::INFINITY,
                    }
                }
                Some(key) => {
                    let u = uniform01(key, row as u32) as f64;
                    let mut cumulative = 0.0;
                    let mut action = num_actions - 1;
                    let mut margin = f64::INFINITY;
                    for (i, lp) in logp.iter().enumerate() {
                        cumulative += lp.exp();
                        margin = margin.min((u - cumulative).abs());
                        if u < cumulative {
                            action = i;
                            break;
                        }
                    }
                    Sampled {
                        action: action as u32,
                        logprob: logp[action],
                        margin,
                    }
                }
            }
        })
        .collect()
}
