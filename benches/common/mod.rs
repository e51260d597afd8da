//! What the benches share: timing and deterministic filler data.
#![allow(dead_code)]

use std::time::Instant;

use ppo_wgpu::gpu::GpuBuffer;
use ppo_wgpu::ops::linear::{Activation, LinearSpec};
use ppo_wgpu::GpuContext;

/// Median wall time in seconds of `reps` runs of `f` (after one warm-up run).
pub fn median_seconds(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// `len` values in [-0.5, 0.5), a different sequence per `salt`.
pub fn filler(len: usize, salt: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (((i + salt) * 7919 % 1000) as f32 / 1000.0) - 0.5)
        .collect()
}

/// A buffer of [`filler`] values (salt 0).
pub fn filled(ctx: &GpuContext, name: &str, len: usize) -> GpuBuffer<f32> {
    GpuBuffer::from_slice(ctx, name, &filler(len, 0)).expect("buffer")
}

/// One agent's 64 → 64 layer over `rows` rows, weights then bias.
pub fn layer_64(rows: usize, activation: Activation) -> LinearSpec {
    LinearSpec {
        num_agents: 1,
        rows_per_agent: rows,
        in_dim: 64,
        out_dim: 64,
        param_stride: 64 * 65,
        w_offset: 0,
        b_offset: 64 * 64,
        activation,
    }
}
