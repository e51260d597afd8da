//! Gymnasium's Pendulum-v1: swing a pendulum up and hold it, torque in
//! [−2, 2], reward −(θ² + 0.1 θ̇² + 0.001 u²) with θ normalized to [−π, π).
//!
//! The state is float64; the torque is a float32 scalar, so `0.001 * u**2`
//! and `3 / (m l²) * u` are float32 products, as numpy 2 computes them.

use std::f64::consts::PI;

use super::classic::{check_positive, pow2, pow2_f32, Classic, ContinuousDynamics, Dynamics};
use crate::Result;

/// Per-env physics; `Default` is Pendulum-v1's (`g = 10`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PendulumParams {
    /// Gravitational acceleration (m/s²).
    pub g: f64,
    /// Mass (kg).
    pub m: f64,
    /// Length (m).
    pub l: f64,
    /// Integration step (s).
    pub dt: f64,
    /// Angular velocities are clipped to ±this.
    pub max_speed: f64,
    /// Torques are clipped to ±this.
    pub max_torque: f64,
}

impl Default for PendulumParams {
    fn default() -> Self {
        Self {
            g: 10.0,
            m: 1.0,
            l: 1.0,
            dt: 0.05,
            max_speed: 8.0,
            max_torque: 2.0,
        }
    }
}

/// Pendulum-v1's dynamics; [`Pendulum`] is the batch.
#[derive(Debug, Clone, Copy)]
pub struct PendulumDynamics;

/// `num_envs` Pendulum-v1 envs. Observation: cos θ, sin θ, θ̇. Action: one
/// torque. Episodes never terminate; they are truncated after 200 steps.
pub type Pendulum = Classic<PendulumDynamics>;

/// numpy's float64 `x % y` (floor modulo, the result takes `y`'s sign).
fn py_mod(x: f64, y: f64) -> f64 {
    let m = x % y;
    if m != 0.0 {
        if (y < 0.0) != (m < 0.0) {
            m + y
        } else {
            m
        }
    } else {
        0.0f64.copysign(y)
    }
}

/// Gymnasium's `angle_normalize`.
fn angle_normalize(x: f64) -> f64 {
    py_mod(x + PI, 2.0 * PI) - PI
}

impl Dynamics for PendulumDynamics {
    const ID: &'static str = "Pendulum-v1";
    const GYM_STATE_DIM: usize = 2;
    const STATE_DIM: usize = 2;
    const OBS_DIM: usize = 3;
    const MAX_EPISODE_STEPS: u32 = 200;
    type Params = PendulumParams;

    fn validate(p: &PendulumParams, index: usize) -> Result<()> {
        check_positive(
            index,
            &[
                ("g", p.g),
                ("m", p.m),
                ("l", p.l),
                ("dt", p.dt),
                ("max_speed", p.max_speed),
                ("max_torque", p.max_torque),
            ],
        )
    }

    fn reset(_: &PendulumParams, state: &mut [f64], unit: &mut dyn FnMut(usize) -> f64) {
        // `uniform(low=[-pi, -1], high=[pi, 1])`.
        for (k, high) in [PI, 1.0].into_iter().enumerate() {
            let low = -high;
            state[k] = low + (high - low) * unit(k);
        }
    }

    fn observe(s: &[f64], obs: &mut [f32]) {
        obs[0] = s[0].cos() as f32;
        obs[1] = s[0].sin() as f32;
        obs[2] = s[1] as f32;
    }
}

impl ContinuousDynamics for PendulumDynamics {
    const ACTION_DIM: usize = 1;
    const ACTION_BOUNDS: (f32, f32) = (-2.0, 2.0);

    fn step(p: &PendulumParams, s: &mut [f64], action: &[f32]) -> (f64, bool) {
        let (th, thdot) = (s[0], s[1]);
        // `np.clip(u, -max_torque, max_torque)[0]` on a float32 array.
        let bound = p.max_torque as f32;
        let u = action[0].max(-bound).min(bound);
        let costs =
            pow2(angle_normalize(th)) + 0.1 * pow2(thdot) + f64::from(0.001f32 * pow2_f32(u));
        let push = (3.0 / (p.m * pow2(p.l))) as f32 * u;
        let newthdot = thdot + (3.0 * p.g / (2.0 * p.l) * th.sin() + f64::from(push)) * p.dt;
        let newthdot = newthdot.clamp(-p.max_speed, p.max_speed);
        let newth = th + newthdot * p.dt;
        s[0] = newth;
        s[1] = newthdot;
        (-costs, false)
    }
}
