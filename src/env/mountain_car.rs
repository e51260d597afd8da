//! Gymnasium's MountainCar-v0 (three discrete pushes) and
//! MountainCarContinuous-v0 (a force in [−1, 1]).
//!
//! MountainCar-v0 computes in float64 throughout. MountainCarContinuous-v0
//! stores its state as float32 after the first step and mixes numpy float32
//! scalars with Python floats, so its step here tracks each value's numpy
//! type ([`Np`]) and rounds where numpy 2 rounds.

use super::classic::{
    check_positive, invalid_env, pow2, Classic, ContinuousDynamics, DiscreteDynamics, Dynamics,
};
use crate::Result;

const MIN_POSITION: f64 = -1.2;
const MAX_POSITION: f64 = 0.6;
const MAX_SPEED: f64 = 0.07;

/// MountainCar-v0's per-env physics; `Default` is Gymnasium's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MountainCarParams {
    /// Velocity change of a push (action 0 pushes left, 2 right).
    pub force: f64,
    /// The slope's pull, scaled by `cos(3 x)`.
    pub gravity: f64,
    /// Least velocity at the goal for the episode to end.
    pub goal_velocity: f64,
}

impl Default for MountainCarParams {
    fn default() -> Self {
        Self {
            force: 0.001,
            gravity: 0.0025,
            goal_velocity: 0.0,
        }
    }
}

/// MountainCar-v0's dynamics; [`MountainCar`] is the batch.
#[derive(Debug, Clone, Copy)]
pub struct MountainCarDynamics;

/// `num_envs` MountainCar-v0 envs. Observation: position, velocity.
/// Actions: push left, no push, push right. Reward −1 per step.
pub type MountainCar = Classic<MountainCarDynamics>;

fn validate_goal(index: usize, goal_velocity: f64) -> Result<()> {
    if goal_velocity.is_finite() {
        Ok(())
    } else {
        Err(invalid_env(
            index,
            "goal_velocity",
            goal_velocity,
            "must be finite",
        ))
    }
}

/// Both cars' reset: position `U(-0.6, -0.4)`, velocity 0, as float64.
fn reset_car(state: &mut [f64], unit: &mut dyn FnMut(usize) -> f64) {
    state[0] = -0.6 + (-0.4 - -0.6) * unit(0);
    state[1] = 0.0;
}

impl Dynamics for MountainCarDynamics {
    const ID: &'static str = "MountainCar-v0";
    const GYM_STATE_DIM: usize = 2;
    const STATE_DIM: usize = 2;
    const OBS_DIM: usize = 2;
    const MAX_EPISODE_STEPS: u32 = 200;
    type Params = MountainCarParams;

    fn validate(p: &MountainCarParams, index: usize) -> Result<()> {
        check_positive(index, &[("force", p.force), ("gravity", p.gravity)])?;
        validate_goal(index, p.goal_velocity)
    }

    fn reset(_: &MountainCarParams, state: &mut [f64], unit: &mut dyn FnMut(usize) -> f64) {
        reset_car(state, unit);
    }

    fn observe(s: &[f64], obs: &mut [f32]) {
        obs[0] = s[0] as f32;
        obs[1] = s[1] as f32;
    }
}

impl DiscreteDynamics for MountainCarDynamics {
    const NUM_ACTIONS: usize = 3;

    fn step(p: &MountainCarParams, s: &mut [f64], action: u32) -> (f64, bool) {
        let (mut position, mut velocity) = (s[0], s[1]);
        velocity += (f64::from(action) - 1.0) * p.force + (3.0 * position).cos() * -p.gravity;
        velocity = velocity.clamp(-MAX_SPEED, MAX_SPEED);
        position += velocity;
        position = position.clamp(MIN_POSITION, MAX_POSITION);
        if position == MIN_POSITION && velocity < 0.0 {
            velocity = 0.0;
        }
        let terminal = position >= 0.5 && velocity >= p.goal_velocity;
        s[0] = position;
        s[1] = velocity;
        (-1.0, terminal)
    }
}

/// MountainCarContinuous-v0's per-env physics; `Default` is Gymnasium's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MountainCarContinuousParams {
    /// Velocity change per unit of force.
    pub power: f64,
    /// Least velocity at the goal for the episode to end.
    pub goal_velocity: f64,
}

impl Default for MountainCarContinuousParams {
    fn default() -> Self {
        Self {
            power: 0.0015,
            goal_velocity: 0.0,
        }
    }
}

/// MountainCarContinuous-v0's dynamics; [`MountainCarContinuous`] is the batch.
#[derive(Debug, Clone, Copy)]
pub struct MountainCarContinuousDynamics;

/// `num_envs` MountainCarContinuous-v0 envs. Observation: position,
/// velocity. Action: one force, clipped to [−1, 1]. Reward 100 at the goal
/// minus 0.1 a² (the unclipped action) every step.
pub type MountainCarContinuous = Classic<MountainCarContinuousDynamics>;

/// A numpy scalar's value and type, for numpy 2's promotion rules (NEP 50):
/// a Python float is weak and takes a float32 operand's type; float64 and
/// float32 give float64.
#[derive(Debug, Clone, Copy)]
enum Np {
    Py(f64),
    F64(f64),
    F32(f32),
}

impl Np {
    fn value(self) -> f64 {
        match self {
            Np::Py(v) | Np::F64(v) => v,
            Np::F32(v) => f64::from(v),
        }
    }

    /// Whether the operation of `self` with `other` runs in float32.
    fn in_f32(self, other: Np) -> bool {
        matches!(
            (self, other),
            (Np::F32(_), Np::F32(_) | Np::Py(_)) | (Np::Py(_), Np::F32(_))
        )
    }

    fn f32(self) -> f32 {
        match self {
            Np::Py(v) | Np::F64(v) => v as f32,
            Np::F32(v) => v,
        }
    }

    fn op(self, other: Np, f32op: fn(f32, f32) -> f32, f64op: fn(f64, f64) -> f64) -> Np {
        if self.in_f32(other) {
            Np::F32(f32op(self.f32(), other.f32()))
        } else if matches!((self, other), (Np::Py(_), Np::Py(_))) {
            Np::Py(f64op(self.value(), other.value()))
        } else {
            Np::F64(f64op(self.value(), other.value()))
        }
    }

    fn add(self, other: Np) -> Np {
        self.op(other, |a, b| a + b, |a, b| a + b)
    }

    fn sub(self, other: Np) -> Np {
        self.op(other, |a, b| a - b, |a, b| a - b)
    }

    fn mul(self, other: Np) -> Np {
        self.op(other, |a, b| a * b, |a, b| a * b)
    }

    /// `self > other` as numpy compares them.
    fn gt(self, other: Np) -> bool {
        if self.in_f32(other) {
            self.f32() > other.f32()
        } else {
            self.value() > other.value()
        }
    }

    fn lt(self, other: Np) -> bool {
        other.gt(self)
    }

    fn ge(self, other: Np) -> bool {
        if self.in_f32(other) {
            self.f32() >= other.f32()
        } else {
            self.value() >= other.value()
        }
    }

    fn eq(self, other: Np) -> bool {
        if self.in_f32(other) {
            self.f32() == other.f32()
        } else {
            self.value() == other.value()
        }
    }
}

impl Dynamics for MountainCarContinuousDynamics {
    const ID: &'static str = "MountainCarContinuous-v0";
    const GYM_STATE_DIM: usize = 2;
    /// Position, velocity, and 1 once the state is float32 (after the first
    /// step of an episode; Gymnasium's reset state is float64).
    const STATE_DIM: usize = 3;
    const OBS_DIM: usize = 2;
    const MAX_EPISODE_STEPS: u32 = 999;
    type Params = MountainCarContinuousParams;

    fn validate(p: &MountainCarContinuousParams, index: usize) -> Result<()> {
        check_positive(index, &[("power", p.power)])?;
        validate_goal(index, p.goal_velocity)
    }

    fn reset(
        _: &MountainCarContinuousParams,
        state: &mut [f64],
        unit: &mut dyn FnMut(usize) -> f64,
    ) {
        reset_car(state, unit);
    }

    fn observe(s: &[f64], obs: &mut [f32]) {
        obs[0] = s[0] as f32;
        obs[1] = s[1] as f32;
    }
}

impl ContinuousDynamics for MountainCarContinuousDynamics {
    const ACTION_DIM: usize = 1;
    const ACTION_BOUNDS: (f32, f32) = (-1.0, 1.0);

    fn step(p: &MountainCarContinuousParams, s: &mut [f64], action: &[f32]) -> (f64, bool) {
        let stored = |v: f64| {
            if s[2] != 0.0 {
                Np::F32(v as f32)
            } else {
                Np::F64(v)
            }
        };
        let (mut position, mut velocity) = (stored(s[0]), stored(s[1]));
        let a = Np::F32(action[0]);
        // `min(max(action[0], -1.0), 1.0)`: Python's max and min keep the
        // first argument unless the second is strictly beyond it.
        let low = Np::Py(-1.0);
        let force = if low.gt(a) { low } else { a };
        let high = Np::Py(1.0);
        let force = if high.lt(force) { high } else { force };
        let slope = 0.0025 * Np::Py(3.0).mul(position).value().cos();
        velocity = velocity.add(force.mul(Np::Py(p.power)).sub(Np::Py(slope)));
        if velocity.gt(Np::Py(MAX_SPEED)) {
            velocity = Np::Py(MAX_SPEED);
        }
        if velocity.lt(Np::Py(-MAX_SPEED)) {
            velocity = Np::Py(-MAX_SPEED);
        }
        position = position.add(velocity);
        if position.gt(Np::Py(MAX_POSITION)) {
            position = Np::Py(MAX_POSITION);
        }
        if position.lt(Np::Py(MIN_POSITION)) {
            position = Np::Py(MIN_POSITION);
        }
        if position.eq(Np::Py(MIN_POSITION)) && velocity.lt(Np::Py(0.0)) {
            velocity = Np::Py(0.0);
        }
        let terminal = position.ge(Np::Py(0.45)) && velocity.ge(Np::Py(p.goal_velocity));
        let reward = (if terminal { 100.0 } else { 0.0 }) - pow2(f64::from(action[0])) * 0.1;
        s[0] = f64::from(position.f32());
        s[1] = f64::from(velocity.f32());
        s[2] = 1.0;
        (reward, terminal)
    }
}
