//! Gymnasium's Acrobot-v1: the `book` dynamics integrated by RK4 over one
//! 0.2 s step, no torque noise, velocities clipped to 4π and 9π, reward −1
//! per step until the free end rises a link's length above the pivot.

use std::f64::consts::PI;

use super::classic::{check_positive, pow2, Classic, DiscreteDynamics, Dynamics};
use crate::Result;

/// Per-env physics; `Default` is Acrobot-v1's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AcrobotParams {
    /// Length of the first link (m).
    pub link_length_1: f64,
    /// Mass of the first link (kg).
    pub link_mass_1: f64,
    /// Mass of the second link (kg).
    pub link_mass_2: f64,
    /// Position of the first link's centre of mass (m).
    pub link_com_pos_1: f64,
    /// Position of the second link's centre of mass (m).
    pub link_com_pos_2: f64,
    /// Moment of inertia of either link.
    pub link_moi: f64,
    /// Gravitational acceleration (m/s²).
    pub gravity: f64,
    /// Integration step (s).
    pub dt: f64,
}

impl Default for AcrobotParams {
    fn default() -> Self {
        Self {
            link_length_1: 1.0,
            link_mass_1: 1.0,
            link_mass_2: 1.0,
            link_com_pos_1: 0.5,
            link_com_pos_2: 0.5,
            link_moi: 1.0,
            gravity: 9.8,
            dt: 0.2,
        }
    }
}

/// Acrobot-v1's dynamics; [`Acrobot`] is the batch.
#[derive(Debug, Clone, Copy)]
pub struct AcrobotDynamics;

/// `num_envs` Acrobot-v1 envs. Observation: cos θ1, sin θ1, cos θ2, sin θ2,
/// θ̇1, θ̇2. Actions: torque −1, 0, +1.
pub type Acrobot = Classic<AcrobotDynamics>;

const MAX_VEL_1: f64 = 4.0 * PI;
const MAX_VEL_2: f64 = 9.0 * PI;
const AVAIL_TORQUE: [f64; 3] = [-1.0, 0.0, 1.0];

impl Dynamics for AcrobotDynamics {
    const ID: &'static str = "Acrobot-v1";
    const GYM_STATE_DIM: usize = 4;
    const STATE_DIM: usize = 4;
    const OBS_DIM: usize = 6;
    const MAX_EPISODE_STEPS: u32 = 500;
    type Params = AcrobotParams;

    fn validate(p: &AcrobotParams, index: usize) -> Result<()> {
        check_positive(
            index,
            &[
                ("link_length_1", p.link_length_1),
                ("link_mass_1", p.link_mass_1),
                ("link_mass_2", p.link_mass_2),
                ("link_com_pos_1", p.link_com_pos_1),
                ("link_com_pos_2", p.link_com_pos_2),
                ("link_moi", p.link_moi),
                ("gravity", p.gravity),
                ("dt", p.dt),
            ],
        )
    }

    fn reset(_: &AcrobotParams, state: &mut [f64], unit: &mut dyn FnMut(usize) -> f64) {
        // `uniform(-0.1, 0.1, size=4).astype(np.float32)`.
        for (k, s) in state.iter_mut().enumerate() {
            *s = (-0.1 + (0.1 - -0.1) * unit(k)) as f32 as f64;
        }
    }

    fn observe(s: &[f64], obs: &mut [f32]) {
        let values = [s[0].cos(), s[0].sin(), s[1].cos(), s[1].sin(), s[2], s[3]];
        for (o, v) in obs.iter_mut().zip(values) {
            *o = v as f32;
        }
    }
}

impl DiscreteDynamics for AcrobotDynamics {
    const NUM_ACTIONS: usize = 3;

    fn step(p: &AcrobotParams, s: &mut [f64], action: u32) -> (f64, bool) {
        let torque = AVAIL_TORQUE[action as usize];
        let y0 = [s[0], s[1], s[2], s[3], torque];
        let ns = rk4(p, y0);
        s[0] = wrap(ns[0], -PI, PI);
        s[1] = wrap(ns[1], -PI, PI);
        s[2] = bound(ns[2], -MAX_VEL_1, MAX_VEL_1);
        s[3] = bound(ns[3], -MAX_VEL_2, MAX_VEL_2);
        let terminal = -s[0].cos() - (s[1] + s[0]).cos() > 1.0;
        (if terminal { 0.0 } else { -1.0 }, terminal)
    }
}

/// Gymnasium's `rk4` over `t = [0, dt]`, on the state augmented with the torque.
fn rk4(p: &AcrobotParams, y0: [f64; 5]) -> [f64; 5] {
    let dt = p.dt - 0.0;
    let dt2 = dt / 2.0;
    let axpy = |y: &[f64; 5], h: f64, k: &[f64; 5]| std::array::from_fn(|i| y[i] + h * k[i]);
    let k1 = dsdt(p, &y0);
    let k2 = dsdt(p, &axpy(&y0, dt2, &k1));
    let k3 = dsdt(p, &axpy(&y0, dt2, &k2));
    let k4 = dsdt(p, &axpy(&y0, dt, &k3));
    let h = dt / 6.0;
    std::array::from_fn(|i| y0[i] + h * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]))
}

/// Gymnasium's `_dsdt` with `book_or_nips = "book"`, same operations in the
/// same order.
fn dsdt(p: &AcrobotParams, y: &[f64; 5]) -> [f64; 5] {
    let (m1, m2) = (p.link_mass_1, p.link_mass_2);
    let l1 = p.link_length_1;
    let (lc1, lc2) = (p.link_com_pos_1, p.link_com_pos_2);
    let (i1, i2) = (p.link_moi, p.link_moi);
    let g = p.gravity;
    let a = y[4];
    let [theta1, theta2, dtheta1, dtheta2] = [y[0], y[1], y[2], y[3]];
    let d1 = m1 * pow2(lc1) + m2 * (pow2(l1) + pow2(lc2) + 2.0 * l1 * lc2 * theta2.cos()) + i1 + i2;
    let d2 = m2 * (pow2(lc2) + l1 * lc2 * theta2.cos()) + i2;
    let phi2 = m2 * lc2 * g * (theta1 + theta2 - PI / 2.0).cos();
    let phi1 = -m2 * l1 * lc2 * pow2(dtheta2) * theta2.sin()
        - 2.0 * m2 * l1 * lc2 * dtheta2 * dtheta1 * theta2.sin()
        + (m1 * lc1 + m2 * l1) * g * (theta1 - PI / 2.0).cos()
        + phi2;
    let ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * pow2(dtheta1) * theta2.sin() - phi2)
        / (m2 * pow2(lc2) + i2 - pow2(d2) / d1);
    let ddtheta1 = -(d2 * ddtheta2 + phi1) / d1;
    [dtheta1, dtheta2, ddtheta1, ddtheta2, 0.0]
}

/// Gymnasium's `wrap`: shifts `x` by whole turns into `[m, M]`.
fn wrap(mut x: f64, m: f64, big_m: f64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    let diff = big_m - m;
    while x > big_m {
        x -= diff;
    }
    while x < m {
        x += diff;
    }
    x
}

/// Gymnasium's `bound`: Python's `min(max(x, m), M)`.
fn bound(x: f64, m: f64, big_m: f64) -> f64 {
    let low = if m > x { m } else { x };
    if big_m < low {
        big_m
    } else {
        low
    }
}
