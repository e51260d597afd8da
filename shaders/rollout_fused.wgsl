// rollout_fused: steps t_begin..t_end of a whole PPO rollout of P × N device
// envs in one dispatch (template; the host composes it with rng.wgsl, a
// device env module such as env_cartpole.wgsl, and the generated functions
// actor_forward / critic_forward of the policy's MLP, see ppo::fused). Per env
// (row r = p*N + n, agent p) and step t, in order:
//   the observation env_observe(state) into obs[t][r];
//   the actor and critic forward with agent p's parameters (the layered
//   linear_forward's accumulation order: bias, then inputs ascending; tanh
//   hidden layers via exp(-2|z|));
//   categorical.wgsl's sampling, bit for bit: max-first log-softmax, an
//   inverse-CDF draw keyed by (seed, iteration, step t, row r), and
//   records[t][r] = (log-prob, value, ., ., action);
//   env_step (auto-reset included): rewards[t][r], flags[t][r],
//   episodes[t][r] = (return, length) of an episode that ended, else (0, 0);
//   where truncated and not terminated, final_values[t][r] = V(final obs).
// After the last step the state goes back to states[r] and its observation
// to cur_obs[r] (the update's bootstrap input and the next rollout's start).
// Entries of final_values where no truncation happened are left as they were
// (GAE reads them only where truncated and not terminated).
//
// Bindings (group 0): 0 uniform Dims, 1 params [P][K] (read), 2 physics
//   [rows] EnvParams (read), 3 states [rows] EnvState, 4 cur_obs
//   [rows][ENV_OBS_DIM], 5 obs [T][rows][ENV_OBS_DIM], 6 records [T][rows][5],
//   7 rewards [T][rows], 8 flags [T][rows] u32, 9 final_values [T][rows],
//   10 episodes [T][rows][2].
// Dispatch: one invocation per env, 1-D workgroups of WORKGROUP_SIZE folded
//   into (x, y) when large; the host splits T into several dispatches where an
//   adapter caps the loop iterations of one invocation (llvmpipe).
// CPU reference: ppo::fused::fused_rollout_cpu, and the layered device
//   rollout it must equal (tests/fused_rollout.rs).

struct Dims {
    rows: u32,
    envs_per_agent: u32,
    param_stride: u32,
    t_begin: u32,
    t_end: u32,
    greedy: u32,
    sample_seed_lo: u32,
    sample_seed_hi: u32,
    iteration: u32,
    max_episode_steps: u32,
    env_seed_lo: u32,
    env_seed_hi: u32,
    x_threshold: f32,
    theta_threshold: f32,
    reset_bound: f32,
    pad: u32,
}

const RECORD: u32 = 5u;

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read> physics: array<EnvParams>;
@group(0) @binding(3) var<storage, read_write> states: array<EnvState>;
@group(0) @binding(4) var<storage, read_write> cur_obs: array<f32>;
@group(0) @binding(5) var<storage, read_write> obs: array<f32>;
@group(0) @binding(6) var<storage, read_write> records: array<f32>;
@group(0) @binding(7) var<storage, read_write> rewards: array<f32>;
@group(0) @binding(8) var<storage, read_write> flags: array<u32>;
@group(0) @binding(9) var<storage, read_write> final_values: array<f32>;
@group(0) @binding(10) var<storage, read_write> episodes: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;

// tanh via exp(-2|z|): finite for every input (some GL drivers overflow in tanh).
fn stable_tanh(z: f32) -> f32 {
    let e = exp(-2.0 * abs(z));
    return sign(z) * (1.0 - e) / (1.0 + e);
}

// categorical.wgsl's uniform01: in [0, 1) from (seed, iteration, step, row).
fn sample_uniform01(row: u32, step: u32) -> f32 {
    var h = pcg_hash(row);
    h = pcg_hash(h ^ step);
    h = pcg_hash(h ^ dims.iteration);
    h = pcg_hash(h ^ dims.sample_seed_hi);
    h = pcg_hash(h ^ dims.sample_seed_lo);
    return f32(h >> 8u) * (1.0 / 16777216.0);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn rollout_fused(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let r = gid.x + gid.y * groups.x * WORKGROUP_SIZE;
    if (r >= dims.rows) {
        return;
    }
    let rows = dims.rows;
    let base = (r / dims.envs_per_agent) * dims.param_stride;
    let limits = EnvLimits(dims.max_episode_steps, dims.env_seed_lo, dims.env_seed_hi,
                           dims.x_threshold, dims.theta_threshold, dims.reset_bound);
    let p = physics[r];
    var s = states[r];
    for (var t = dims.t_begin; t < dims.t_end; t++) {
        let at = t * rows + r;
        let x = env_observe(s);
        for (var k = 0u; k < ENV_OBS_DIM; k++) {
            obs[at * ENV_OBS_DIM + k] = x[k];
        }
        let logits = actor_forward(base, x);
        let value = critic_forward(base, x);

        var best = 0u;
        var max_logit = logits[0];
        for (var i = 1u; i < NUM_ACTIONS; i++) {
            if (logits[i] > max_logit) {
                max_logit = logits[i];
                best = i;
            }
        }
        var sum = 0.0;
        for (var i = 0u; i < NUM_ACTIONS; i++) {
            sum += exp(logits[i] - max_logit);
        }
        let log_norm = max_logit + log(sum);
        var action = best;
        if (dims.greedy == 0u) {
            let u = sample_uniform01(r, t);
            var cumulative = 0.0;
            action = NUM_ACTIONS - 1u;
            for (var i = 0u; i < NUM_ACTIONS; i++) {
                cumulative += exp(logits[i] - log_norm);
                if (u < cumulative) {
                    action = i;
                    break;
                }
            }
        }
        records[at * RECORD] = logits[action] - log_norm;
        records[at * RECORD + 1u] = value;
        records[at * RECORD + 4u] = f32(action);

        let out = env_step(&s, action, p, limits, r);
        rewards[at] = out.reward;
        flags[at] = out.flags;
        episodes[at * 2u] = out.episode_return;
        episodes[at * 2u + 1u] = out.episode_length;
        if ((out.flags & ENV_TRUNCATED) != 0u && (out.flags & ENV_TERMINATED) == 0u) {
            final_values[at] = critic_forward(base, out.final_obs);
        }
    }
    states[r] = s;
    let next = env_observe(s);
    for (var k = 0u; k < ENV_OBS_DIM; k++) {
        cur_obs[r * ENV_OBS_DIM + k] = next[k];
    }
}
