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
// The env itself is env_cartpole.wgsl (composed as rng.wgsl + env_cartpole.wgsl +
// this file), the seam the fused rollout shares.
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

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> actions: array<u32>;
@group(0) @binding(2) var<storage, read> physics: array<EnvParams>;
@group(0) @binding(3) var<storage, read_write> states: array<EnvState>;
@group(0) @binding(4) var<storage, read_write> obs: array<f32>;
@group(0) @binding(5) var<storage, read_write> final_obs: array<f32>;
@group(0) @binding(6) var<storage, read_write> rewards: array<f32>;
@group(0) @binding(7) var<storage, read_write> flags: array<u32>;
@group(0) @binding(8) var<storage, read_write> episodes: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;

@compute @workgroup_size(WORKGROUP_SIZE)
fn cartpole_step(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let r = gid.x + gid.y * groups.x * WORKGROUP_SIZE;
    if (r >= dims.rows) {
        return;
    }
    let limits = EnvLimits(dims.max_episode_steps, dims.seed_lo, dims.seed_hi,
                           dims.x_threshold, dims.theta_threshold, dims.reset_bound);
    var s = states[r];
    let out = env_step(&s, actions[r], physics[r], limits, r);
    let next = env_observe(s);
    let o = r * ENV_OBS_DIM;
    for (var k = 0u; k < ENV_OBS_DIM; k++) {
        final_obs[o + k] = out.final_obs[k];
        obs[o + k] = next[k];
    }
    let at = dims.step * dims.rows + r;
    rewards[at] = out.reward;
    flags[at] = out.flags;
    episodes[at * 2u] = out.episode_return;
    episodes[at * 2u + 1u] = out.episode_length;
    states[r] = s;
}
