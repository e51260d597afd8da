// update_linear: minibatch steps index_begin..index_end (index = epoch *
// minibatches + minibatch) of the PPO update of the linear policy and value
// (no hidden layers), one workgroup of LANES invocations per agent: the
// whole update in one dispatch where the loop budget allows.
//
// With `prologue` (the first dispatch of an update), first the bootstrap
// value, GAE and the explained variance (the function prologue).
// Per minibatch, as the layered kernels do it:
//   gather.wgsl:   rows b = perm[epoch][p][minibatch * M + j] of the rollout;
//   adv_norm:      (adv - mean) / (std + 1e-8), std with Bessel's correction;
//   forward:       logits = b + W x, value = b_c + w_c · x (bias, then inputs
//                  ascending, as linear_forward);
//   ppo_loss:      the clipped loss's output gradients (divided by M) and
//                  per-row statistics;
//   backward:      dW = Σ_rows dz xᵀ, db = Σ_rows dz into grads [P][K];
//   grad_norm:     clip_scale = min(1, max_grad_norm / (‖g‖ + 1e-6)), an Adam
//                  step counted while the agent updates;
//   adam:          optim.wgsl's update of every parameter while updating;
//   row_stats_mean: the statistics' means into history[index][p], slot 6 the
//                  updating flag; at an epoch's end a target_kl stop.
// Sums over rows run lane-strided, then over lanes in order: deterministic,
// no atomics. The agent's parameters live in workgroup memory between steps
// and go back to storage after each step; agent_state is read at the start
// and written at the end of the dispatch.
//
// Bindings (group 0): 0 uniform Dims, 1 perm [epochs][P][B] (u32, read),
//   2 obs [T][P][N][obs_dim] (read), 3 records [T][P][N][RECORD] (read),
//   4 params [P][K], 5 adam_m [P][K], 6 adam_v [P][K],
//   7 agent_state [P], 8 history [..][P][HISTORY_STATS], 9 grads [P][K]
//   (read-write; records too, where the prologue writes advantages and
//   returns), 10 rewards [T][P][N], 11 flags [T][P][N] (u32), 12
//   final_values [T][P][N], 13 cur_obs [P][N][obs_dim] (read), 14
//   explained_var [P] (write).
// Dispatch: one workgroup per agent (grid folded into (x, y)); the host
//   splits the minibatch steps over several dispatches where an adapter caps
//   an invocation's loop iterations (llvmpipe).
// CPU reference: the layered update (gather, stats, ppo_loss, linear,
//   optim) and the f64 reference update (tests/update.rs).

struct Dims {
    num_steps: u32,
    prologue: u32,
    gamma: f32,
    lambda: f32,
    num_agents: u32,
    envs_per_agent: u32,
    minibatch_size: u32,
    batch_per_agent: u32,
    minibatches: u32,
    index_begin: u32,
    index_end: u32,
    clip_vloss: u32,
    norm_adv: u32,
    check_kl: u32,
    clip_coef: f32,
    ent_coef: f32,
    vf_coef: f32,
    target_kl: f32,
    max_grad_norm: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
}

struct AgentState {
    learning_rate: f32,
    updating: u32,
    adam_step: u32,
    clip_scale: f32,
}

const RECORD: u32 = 5u;
const ROW_STATS: u32 = 6u;
const HISTORY_STATS: u32 = 7u;
const LANES: u32 = 32u;
// Limits the host checks: observations, actions, and parameters + row
// statistics (the columns every lane sums).
const MAX_OBS: u32 = 16u;
const MAX_ACTIONS: u32 = 16u;
const MAX_COLS: u32 = 64u;

// The network's sizes and parameter offsets, set when the pipeline is
// built, so the compiler unrolls the loops over them and keeps the
// accumulators in registers.
override OBS_DIM: u32 = 4u;
override NUM_ACTIONS: u32 = 2u;
override PARAMS: u32 = 15u;
override ACTOR_W: u32 = 0u;
override ACTOR_B: u32 = 8u;
override CRITIC_W: u32 = 10u;
override CRITIC_B: u32 = 14u;

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> perm: array<u32>;
@group(0) @binding(2) var<storage, read> obs: array<f32>;
@group(0) @binding(3) var<storage, read_write> records: array<f32>;
@group(0) @binding(4) var<storage, read_write> params: array<f32>;
@group(0) @binding(5) var<storage, read_write> adam_m: array<f32>;
@group(0) @binding(6) var<storage, read_write> adam_v: array<f32>;
@group(0) @binding(7) var<storage, read_write> agent_state: array<AgentState>;
@group(0) @binding(8) var<storage, read_write> history: array<f32>;
@group(0) @binding(9) var<storage, read_write> grads: array<f32>;
@group(0) @binding(10) var<storage, read> rewards: array<f32>;
@group(0) @binding(11) var<storage, read> flags: array<u32>;
@group(0) @binding(12) var<storage, read> final_values: array<f32>;
@group(0) @binding(13) var<storage, read> cur_obs: array<f32>;
@group(0) @binding(14) var<storage, read_write> explained_var: array<f32>;

const TERMINATED: u32 = 1u;
const TRUNCATED: u32 = 2u;

var<workgroup> partial: array<f32, 2048>; // LANES * MAX_COLS
var<workgroup> totals: array<f32, MAX_COLS>;
var<workgroup> weights: array<f32, MAX_COLS>;

// Sum of `value` over the lanes in lane order (every lane gets it); call in
// uniform control flow.
fn workgroup_sum(lane: u32, value: f32) -> f32 {
    partial[lane] = value;
    workgroupBarrier();
    var total = 0.0;
    for (var l = 0u; l < LANES; l++) {
        total += partial[l];
    }
    workgroupBarrier();
    return total;
}

// The rollout row of agent p's minibatch row j.
fn source_row(p: u32, epoch: u32, minibatch: u32, j: u32) -> u32 {
    let m = dims.minibatch_size;
    let b = perm[(epoch * dims.num_agents + p) * dims.batch_per_agent + minibatch * m + j];
    let n_env = dims.envs_per_agent;
    return ((b / n_env) * dims.num_agents + p) * n_env + b % n_env;
}

// The update's first passes for agent p, as gae.wgsl's gae_sequential and
// stats.wgsl's explained_variance do them: V(next observations) for the
// bootstrap (linear_forward's order), GAE per env over T (advantages and
// returns into records), then the explained variance of the batch.
fn prologue(lane: u32, p: u32) {
    let n_env = dims.envs_per_agent;
    let sequences = dims.num_agents * n_env;
    for (var n = lane; n < n_env; n += LANES) {
        let s = p * n_env + n;
        var last_value = weights[CRITIC_B];
        for (var i = 0u; i < OBS_DIM; i++) {
            last_value += cur_obs[s * OBS_DIM + i] * weights[CRITIC_W + i];
        }
        var adv = 0.0;
        for (var k = 0u; k < dims.num_steps; k++) {
            let t = dims.num_steps - 1u - k;
            let i = t * sequences + s;
            let map = gae_map(i, i + sequences, t + 1u < dims.num_steps, last_value,
                              dims.gamma, dims.lambda);
            let value = records[i * RECORD + 1u];
            adv = map.x + map.y * adv;
            records[i * RECORD + 2u] = adv;
            records[i * RECORD + 3u] = adv + value;
        }
    }
    storageBarrier();
    workgroupBarrier();
    let ev = batch_explained_variance(lane, p, dims.batch_per_agent, dims.num_agents, n_env);
    if (lane == 0u) {
        explained_var[p] = ev;
    }
}

@compute @workgroup_size(LANES)
fn update_linear(@builtin(local_invocation_index) lane: u32,
                 @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let p = wid.x + wid.y * groups.x;
    if (p >= dims.num_agents) {
        return;
    }
    let k_count = PARAMS;
    let base = p * k_count;
    let cols = k_count + ROW_STATS;
    let m = dims.minibatch_size;
    let d = OBS_DIM;
    let a_count = NUM_ACTIONS;
    let clip = dims.clip_coef;
    let inv_m = 1.0 / f32(m);
    for (var k = lane; k < k_count; k += LANES) {
        weights[k] = params[base + k];
    }
    var state = agent_state[p];
    workgroupBarrier();
    if (dims.prologue != 0u) {
        prologue(lane, p);
    }

    for (var index = dims.index_begin; index < dims.index_end; index++) {
        let epoch = index / dims.minibatches;
        let minibatch = index % dims.minibatches;
        var mean = 0.0;
        var scale = 1.0;
        if (dims.norm_adv != 0u) {
            var sum = 0.0;
            for (var j = lane; j < m; j += LANES) {
                sum += records[source_row(p, epoch, minibatch, j) * RECORD + 2u];
            }
            mean = workgroup_sum(lane, sum) / f32(max(m, 1u));
            var squares = 0.0;
            for (var j = lane; j < m; j += LANES) {
                let dv = records[source_row(p, epoch, minibatch, j) * RECORD + 2u] - mean;
                squares += dv * dv;
            }
            let variance = workgroup_sum(lane, squares) / f32(max(m, 2u) - 1u);
            scale = 1.0 / (sqrt(variance) + 1e-8);
        }

        var acc: array<f32, MAX_COLS>;
        for (var c = 0u; c < cols; c++) {
            acc[c] = 0.0;
        }
        for (var j = lane; j < m; j += LANES) {
            let src = source_row(p, epoch, minibatch, j);
            var x: array<f32, MAX_OBS>;
            for (var i = 0u; i < d; i++) {
                x[i] = obs[src * d + i];
            }
            let rec = src * RECORD;
            let old_logp = records[rec];
            let old_value = records[rec + 1u];
            let adv = (records[rec + 2u] - mean) * scale;
            let ret = records[rec + 3u];
            let action = u32(records[rec + 4u]);

            var logits: array<f32, MAX_ACTIONS>;
            for (var a = 0u; a < a_count; a++) {
                var z = weights[ACTOR_B + a];
                for (var i = 0u; i < d; i++) {
                    z += x[i] * weights[ACTOR_W + a * d + i];
                }
                logits[a] = z;
            }
            var value = weights[CRITIC_B];
            for (var i = 0u; i < d; i++) {
                value += x[i] * weights[CRITIC_W + i];
            }

            // ppo_loss.wgsl, row by row (ppo_loss_terms.wgsl).
            var max_logit = logits[0];
            for (var a = 1u; a < a_count; a++) {
                max_logit = max(max_logit, logits[a]);
            }
            var sum = 0.0;
            for (var a = 0u; a < a_count; a++) {
                sum += exp(logits[a] - max_logit);
            }
            let log_norm = max_logit + log(sum);
            var entropy = 0.0;
            for (var a = 0u; a < a_count; a++) {
                let logp_a = logits[a] - log_norm;
                entropy -= exp(logp_a) * logp_a;
            }
            let terms = ppo_loss_terms(logits[action] - log_norm, old_logp, adv, value,
                                       old_value, ret, clip, dims.clip_vloss != 0u);
            for (var a = 0u; a < a_count; a++) {
                let logp_a = logits[a] - log_norm;
                let dlogit = inv_m * ppo_dlogit(logp_a, a == action, entropy, terms.dpg_dlogp,
                                                dims.ent_coef);
                acc[ACTOR_B + a] += dlogit;
                for (var i = 0u; i < d; i++) {
                    acc[ACTOR_W + a * d + i] += dlogit * x[i];
                }
            }
            let dvalue = inv_m * dims.vf_coef * terms.dv;
            acc[CRITIC_B] += dvalue;
            for (var i = 0u; i < d; i++) {
                acc[CRITIC_W + i] += dvalue * x[i];
            }
            acc[k_count] += terms.pg;
            acc[k_count + 1u] += terms.v_loss;
            acc[k_count + 2u] += entropy;
            acc[k_count + 3u] += -terms.logratio;
            acc[k_count + 4u] += (terms.ratio - 1.0) - terms.logratio;
            acc[k_count + 5u] += terms.clipped;
        }

        // Column sums over the lanes, in lane order.
        for (var c = 0u; c < cols; c++) {
            partial[lane * MAX_COLS + c] = acc[c];
        }
        workgroupBarrier();
        for (var c = lane; c < cols; c += LANES) {
            var total = 0.0;
            for (var l = 0u; l < LANES; l++) {
                total += partial[l * MAX_COLS + c];
            }
            totals[c] = total;
        }
        workgroupBarrier();

        // grad_norm, then Adam on the lane's parameters.
        var squares = 0.0;
        for (var k = 0u; k < k_count; k++) {
            squares += totals[k] * totals[k];
        }
        state.clip_scale = min(1.0, dims.max_grad_norm / (sqrt(squares) + 1e-6));
        let updating = state.updating != 0u;
        if (updating) {
            state.adam_step += 1u;
        }
        let t = f32(state.adam_step);
        for (var k = lane; k < k_count; k += LANES) {
            let g_raw = totals[k];
            grads[base + k] = g_raw;
            if (updating) {
                let at = base + k;
                let g = g_raw * state.clip_scale;
                let m1 = adam_m[at] + dims.one_minus_beta1 * (g - adam_m[at]);
                let v1 = dims.beta2 * adam_v[at] + dims.one_minus_beta2 * g * g;
                adam_m[at] = m1;
                adam_v[at] = v1;
                let step_size = state.learning_rate / (1.0 - pow(dims.beta1, t));
                let denom = sqrt(v1) / sqrt(1.0 - pow(dims.beta2, t)) + dims.eps;
                let w = weights[k] - step_size * m1 / denom;
                weights[k] = w;
                params[at] = w;
            }
        }

        // row_stats_mean.
        let out = (index * dims.num_agents + p) * HISTORY_STATS;
        let approx_kl = totals[k_count + 4u] / f32(max(m, 1u));
        if (lane == 0u) {
            for (var s = 0u; s < ROW_STATS; s++) {
                history[out + s] = totals[k_count + s] / f32(max(m, 1u));
            }
            history[out + ROW_STATS] = f32(state.updating);
        }
        let epoch_end = minibatch + 1u == dims.minibatches;
        if (dims.check_kl != 0u && epoch_end && updating && approx_kl > dims.target_kl) {
            state.updating = 0u;
        }
        workgroupBarrier();
    }
    if (lane == 0u) {
        agent_state[p] = state;
    }
}
