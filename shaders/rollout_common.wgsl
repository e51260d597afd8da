// rollout_common: what both fused rollout kernels share (library, no entry
// point): the uniform Dims, the bindings, and the per-env pieces of a step.
// Composed after the kernel's own file (rollout_fused.wgsl: one env per
// invocation; rollout_lanes.wgsl: one env's hidden units across a
// workgroup's lanes) with rng.wgsl, a device env module such as
// env_cartpole.wgsl, and the policy's functions generated for its sizes by
// ppo::fused (NUM_ACTIONS among them).
//
// Bindings (group 0): 0 uniform Dims, 1 params [P][K] (read), 2 physics
//   [rows] EnvParams (read), 3 states [rows] EnvState, 4 cur_obs
//   [rows][ENV_OBS_DIM], 5 obs [T][rows][ENV_OBS_DIM], 6 records [T][rows][5],
//   7 rewards [T][rows], 8 flags [T][rows] u32, 9 final_values [T][rows],
//   10 episodes [T][rows][2].
// CPU reference: ppo::fused::fused_rollout_cpu, and the layered device
// rollout both kernels must equal (tests/fused_rollout.rs).

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
    // 0: added to loop bounds the compiler must not see (llvmpipe's JIT
    // time grows with unrolled code).
    pad: u32,
    // The lanes kernels: workgroups per agent (ceil(N / LANES_E)) and per
    // dispatch.
    blocks_per_agent: u32,
    total_groups: u32,
    pad1: u32,
    pad2: u32,
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

// The env's observation x into obs[at].
fn write_obs(at: u32, x: array<f32, ENV_OBS_DIM>) {
    for (var k = 0u; k < ENV_OBS_DIM; k++) {
        obs[at * ENV_OBS_DIM + k] = x[k];
    }
}

// categorical.wgsl's sampling, bit for bit: max-first log-softmax and an
// inverse-CDF draw keyed by (seed, iteration, step t, row r) (or the
// greedy action); records[at] = (log-prob, value, ., ., action). Returns
// the action.
fn sample_and_record(r: u32, t: u32, at: u32, logits: array<f32, NUM_ACTIONS>,
                     value: f32) -> u32 {
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
    return action;
}

// Row r's env step with `action` (auto-reset included): rewards[at],
// flags[at] and episodes[at] = (return, length) of an episode that ended,
// else (0, 0). Returns the step (its final observation for the bootstrap).
fn step_and_record(state: ptr<function, EnvState>, r: u32, at: u32, action: u32,
                   p: EnvParams) -> EnvStep {
    let limits = EnvLimits(dims.max_episode_steps, dims.env_seed_lo, dims.env_seed_hi,
                           dims.x_threshold, dims.theta_threshold, dims.reset_bound);
    let out = env_step(state, action, p, limits, r);
    rewards[at] = out.reward;
    flags[at] = out.flags;
    episodes[at * 2u] = out.episode_return;
    episodes[at * 2u + 1u] = out.episode_length;
    return out;
}

// Whether the step's final observation needs V (truncated, not terminated);
// final_values elsewhere are left as they were (GAE reads them only there).
fn needs_final_value(step_flags: u32) -> bool {
    return (step_flags & ENV_TRUNCATED) != 0u && (step_flags & ENV_TERMINATED) == 0u;
}

// After the last step: the state back to states[r] and its observation to
// cur_obs[r] (the update's bootstrap input and the next rollout's start).
fn finish_env(r: u32, s: EnvState) {
    states[r] = s;
    let next = env_observe(s);
    for (var k = 0u; k < ENV_OBS_DIM; k++) {
        cur_obs[r * ENV_OBS_DIM + k] = next[k];
    }
}
