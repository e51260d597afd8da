// update_rows: the fused update's row pass, the first of its dispatches per
// minibatch (template; ppo::fused_update composes it with the generated
// constants LANES_E, NUM_ACTIONS, POLICY_OBS, STRIDE, DZ_ACTOR, DZ_CRITIC,
// the arrays heads and dheads, the function pw and the entry point
// update_rows of one of two layouts).
//
// Lanes (ppo::fused_update): one workgroup of LANES_WG invocations runs
// LANES_E minibatch rows of one agent (the layout of rollout_lanes.wgsl:
// every lane owns hidden units lane + k * LANES_WG of every layer of both
// networks, activations in workgroup memory, a barrier between layers):
//   lanes_load: the rows' observations (through the permutation) into xs;
//   lanes_forward: actor and critic forward, logits and value into heads;
//   row_loss (lane e < LANES_E, row e): the loss below, the output
//     gradients into dheads;
//   lanes_backward: every hidden layer's delta dz = (Σ_o dz_next[o] ·
//     W_next[o][i]) · (1 - y²), top layer first.
// Rows (ppo::row_pass): one invocation runs LANES_E rows alone, every
// layer's activations and deltas in its private arrays, a loop over each
// layer's outputs whose index is the same in every invocation (so a
// uniform-block weight is one load for all lanes), no barriers.
// Each phase also writes what it computes for the live rows (observations,
// activations, deltas) into scratch [P * M][STRIDE] for update_grads.
// Sums keep the layered kernels' order (forward: bias, then inputs
// ascending; backward: outputs ascending), so the deltas equal the layered
// path's to float rounding. Rows past M are computed on a clamped row and
// write nothing.
//
// The minibatch is read from the rollout through the permutation (the
// layered path's gather) and its advantages normalized as they are read
// (adv_norm, with stats.wgsl's adv_moments computed once per update).
//
// Bindings (group 0): 0 uniform Dims (one per epoch and minibatch),
//   1 params [P][K] (read; generated: storage, or for one agent a uniform
//   block of vec4), 2 obs [T][P][N][obs] (read), 3 records [T][P][N][RECORD]
//   (read), 4 scratch [P * M][stride] (write), 5 row_stats
//   [P * M][ROW_STATS] (write), 6 perm [epochs][P][B] (read), 7 adv_stats
//   [epochs * minibatches][P][2] (read).
// Dispatch: total_groups = P * blocks_per_agent workgroups, folded into
//   (x, y) when large; blocks_per_agent = ceil(M / LANES_E) (lanes) or
//   ceil(M / (LANES_E * ROWS_WG)) (rows: one agent per workgroup, so the
//   weights' addresses are the same in all its lanes).
// CPU reference: the layered update it replaces (linear_forward, ppo_loss,
//   linear_backward) and the f64 reference update (tests/update.rs).

struct Dims {
    rows: u32,
    minibatch_size: u32,
    param_stride: u32,
    blocks_per_agent: u32,
    total_groups: u32,
    clip_vloss: u32,
    clip_coef: f32,
    ent_coef: f32,
    vf_coef: f32,
    // 0: added to generated loop bounds so the compiler cannot unroll them.
    pad: u32,
    num_agents: u32,
    envs_per_agent: u32,
    batch_per_agent: u32,
    // perm index of this step's row 0 of agent 0: epoch * P * B + minibatch * M.
    perm_base: u32,
    // adv_stats entry of this step's agent 0: (epoch * minibatches + minibatch) * P.
    adv_base: u32,
    _pad1: u32,
}

const RECORD: u32 = 5u;
const ROW_STATS: u32 = 6u;

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(2) var<storage, read> obs: array<f32>;
@group(0) @binding(3) var<storage, read> records: array<f32>;
@group(0) @binding(4) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(5) var<storage, read_write> row_stats: array<f32>;
@group(0) @binding(6) var<storage, read> perm: array<u32>;
@group(0) @binding(7) var<storage, read> adv_stats: array<f32>;

// The rollout row of this step's minibatch row m of `agent`, through the
// permutation (gather.wgsl's indexing).
fn source_row(agent: u32, m: u32) -> u32 {
    let b = perm[dims.perm_base + agent * dims.batch_per_agent + m];
    let n_env = dims.envs_per_agent;
    return ((b / n_env) * dims.num_agents + agent) * n_env + b % n_env;
}

fn stable_tanh(z: f32) -> f32 {
    let e = exp(-2.0 * abs(z));
    return sign(z) * (1.0 - e) / (1.0 + e);
}

// ppo_loss.wgsl's loss (ppo_loss_terms.wgsl) of minibatch row m of `agent`
// from heads[e] (logits, value), its record read through the permutation
// and its advantage normalized with adv_stats (adv_norm's mean and scale,
// or 0 and 1): its output gradients (divided by M) into dheads[e], its
// statistics into row_stats.
fn row_loss(e: u32, agent: u32, m: u32) {
    let r = agent * dims.minibatch_size + m;
    let rec = source_row(agent, m) * RECORD;
    let old_logp = records[rec];
    let old_value = records[rec + 1u];
    let moments = (dims.adv_base + agent) * 2u;
    let adv = (records[rec + 2u] - adv_stats[moments]) * adv_stats[moments + 1u];
    let ret = records[rec + 3u];
    let action = u32(records[rec + 4u]);

    let base = e * (NUM_ACTIONS + 1u);
    var max_logit = heads[base];
    for (var i = 1u; i < NUM_ACTIONS; i++) {
        max_logit = max(max_logit, heads[base + i]);
    }
    var sum = 0.0;
    for (var i = 0u; i < NUM_ACTIONS; i++) {
        sum += exp(heads[base + i] - max_logit);
    }
    let log_norm = max_logit + log(sum);
    var entropy = 0.0;
    for (var i = 0u; i < NUM_ACTIONS; i++) {
        let logp_i = heads[base + i] - log_norm;
        entropy -= exp(logp_i) * logp_i;
    }

    let terms = ppo_loss_terms(heads[base + action] - log_norm, old_logp, adv,
                               heads[base + NUM_ACTIONS], old_value, ret, dims.clip_coef,
                               dims.clip_vloss != 0u);
    let inv_m = 1.0 / f32(dims.minibatch_size);
    for (var i = 0u; i < NUM_ACTIONS; i++) {
        let logp_i = heads[base + i] - log_norm;
        let dlogit = inv_m * ppo_dlogit(logp_i, i == action, entropy, terms.dpg_dlogp,
                                        dims.ent_coef);
        dheads[base + i] = dlogit;
        scratch[r * STRIDE + DZ_ACTOR + i] = dlogit;
    }
    let dvalue = inv_m * dims.vf_coef * terms.dv;
    dheads[base + NUM_ACTIONS] = dvalue;
    scratch[r * STRIDE + DZ_CRITIC] = dvalue;

    let st = r * ROW_STATS;
    row_stats[st] = terms.pg;
    row_stats[st + 1u] = terms.v_loss;
    row_stats[st + 2u] = entropy;
    row_stats[st + 3u] = -terms.logratio;
    row_stats[st + 4u] = (terms.ratio - 1.0) - terms.logratio;
    row_stats[st + 5u] = terms.clipped;
}
