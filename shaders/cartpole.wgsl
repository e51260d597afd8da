// cartpole: one step of P × N CartPole-v1 environments on the device, so a
// whole rollout runs without reading anything back. Per env (row r = p*N + n):
// Gymnasium's Euler step in f32 with the host's operation order and the env's
// own physics, termination when |x| > x_threshold or |theta| > theta_threshold,
// truncation once max_episode_steps steps have elapsed, reward 1 every step,
// and on either end an auto-reset to U[-reset_bound, reset_bound) drawn from a
// PCG hash keyed by (seed, env, episode index, component). The host env
// (env::CartPole) draws its resets from SplitMix64 in f64 instead, so reset
// states differ between the two; the physics does not.
//
// Writes, for rollout step dims.step = t:
//   obs[r]        the next observation (after the auto-reset where done), read
//                 by the policy at step t + 1;
//   final_obs[r]  the observation before any auto-reset (PPO bootstraps
//                 V(final_obs) where truncated);
//   rewards[t][r] = 1; flags[t][r] = TERMINATED (1) | TRUNCATED (2);
//   episodes[t][r] = (return, length) of the episode that ended, (0, 0) if none;
//   states[r]     the new state, step counter, running return, episode count.
//
// Bindings (group 0): 0 uniform Dims, 1 actions [rows] u32 (read; 1 pushes
//   right, anything else left), 2 physics [rows] Physics (read), 3 states
//   [rows] EnvState (read-write), 4 obs [rows][4], 5 final_obs [rows][4],
//   6 rewards [T][rows], 7 flags [T][rows] u32, 8 episodes [T][rows][2].
// Dispatch: one invocation per env, 1-D workgroups of WORKGROUP_SIZE, folded
//   into (x, y) when large.
// CPU reference: env::gpu_cartpole::cartpole_step_cpu.

struct Dims {
    rows: u32,
    step: u32,
    max_episode_steps: u32,
    seed_lo: u32,
    seed_hi: u32,
    x_threshold: f32,
    theta_threshold: f32,
    reset_bound: f32,
}

// Gymnasium's constants of one env with its precomputed sums and products;
// push_force = polarity * force_mag is the force of action 1.
struct Physics {
    gravity: f32,
    masspole: f32,
    total_mass: f32,
    length: f32,
    polemass_length: f32,
    push_force: f32,
    tau: f32,
    pad: f32,
}

struct EnvState {
    x: f32,
    x_dot: f32,
    theta: f32,
    theta_dot: f32,
    episode_return: f32,
    elapsed_steps: u32,
    episodes_started: u32,
    pad: u32,
}

const TERMINATED: u32 = 1u;
const TRUNCATED: u32 = 2u;

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> actions: array<u32>;
@group(0) @binding(2) var<storage, read> physics: array<Physics>;
@group(0) @binding(3) var<storage, read_write> states: array<EnvState>;
@group(0) @binding(4) var<storage, read_write> obs: array<f32>;
@group(0) @binding(5) var<storage, read_write> final_obs: array<f32>;
@group(0) @binding(6) var<storage, read_write> rewards: array<f32>;
@group(0) @binding(7) var<storage, read_write> flags: array<u32>;
@group(0) @binding(8) var<storage, read_write> episodes: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;

// PCG hash (Jarzynski & Olano 2020), as in categorical.wgsl.
fn pcg_hash(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// Component `component` of env `env`'s reset state for episode `episode`:
// reset_bound * (2u - 1) with u in [0, 1) on a 2^-24 grid; 2u - 1 is exact
// and the one rounding keeps the result in [-reset_bound, reset_bound).
fn reset_draw(env: u32, episode: u32, component: u32) -> f32 {
    var h = pcg_hash(env);
    h = pcg_hash(h ^ episode);
    h = pcg_hash(h ^ component);
    h = pcg_hash(h ^ dims.seed_hi);
    h = pcg_hash(h ^ dims.seed_lo);
    let u = f32(h >> 8u) * (1.0 / 16777216.0);
    return dims.reset_bound * (2.0 * u - 1.0);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn cartpole_step(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let r = gid.x + gid.y * groups.x * WORKGROUP_SIZE;
    if (r >= dims.rows) {
        return;
    }
    let p = physics[r];
    var s = states[r];

    // Gymnasium's step, same operations in the same order as CartPole::integrate.
    let force = select(-p.push_force, p.push_force, actions[r] == 1u);
    let costheta = cos(s.theta);
    let sintheta = sin(s.theta);
    let temp = (force + p.polemass_length * (s.theta_dot * s.theta_dot) * sintheta)
        / p.total_mass;
    let thetaacc = (p.gravity * sintheta - costheta * temp)
        / (p.length * (4.0 / 3.0 - p.masspole * (costheta * costheta) / p.total_mass));
    let xacc = temp - p.polemass_length * thetaacc * costheta / p.total_mass;
    let x = s.x + p.tau * s.x_dot;
    let x_dot = s.x_dot + p.tau * xacc;
    let theta = s.theta + p.tau * s.theta_dot;
    let theta_dot = s.theta_dot + p.tau * thetaacc;

    let steps = select(s.elapsed_steps + 1u, s.elapsed_steps, s.elapsed_steps == 0xffffffffu);
    let fell = x < -dims.x_threshold || x > dims.x_threshold
        || theta < -dims.theta_threshold || theta > dims.theta_threshold;
    let cut = steps >= dims.max_episode_steps;
    let episode_return = s.episode_return + 1.0;

    let o = r * 4u;
    final_obs[o] = x;
    final_obs[o + 1u] = x_dot;
    final_obs[o + 2u] = theta;
    final_obs[o + 3u] = theta_dot;
    let at = dims.step * dims.rows + r;
    rewards[at] = 1.0;
    flags[at] = select(0u, TERMINATED, fell) | select(0u, TRUNCATED, cut);

    if (fell || cut) {
        episodes[at * 2u] = episode_return;
        episodes[at * 2u + 1u] = f32(steps);
        let episode = s.episodes_started;
        s.x = reset_draw(r, episode, 0u);
        s.x_dot = reset_draw(r, episode, 1u);
        s.theta = reset_draw(r, episode, 2u);
        s.theta_dot = reset_draw(r, episode, 3u);
        s.episode_return = 0.0;
        s.elapsed_steps = 0u;
        s.episodes_started = episode + 1u;
    } else {
        episodes[at * 2u] = 0.0;
        episodes[at * 2u + 1u] = 0.0;
        s.x = x;
        s.x_dot = x_dot;
        s.theta = theta;
        s.theta_dot = theta_dot;
        s.episode_return = episode_return;
        s.elapsed_steps = steps;
    }
    obs[o] = s.x;
    obs[o + 1u] = s.x_dot;
    obs[o + 2u] = s.theta;
    obs[o + 3u] = s.theta_dot;
    states[r] = s;
}
