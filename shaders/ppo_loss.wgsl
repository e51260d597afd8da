// ppo_loss: CleanRL's PPO loss for one minibatch, per row, with its gradients.
//   logp = log_softmax(logits)[action], ratio = exp(logp - old_logp)
//   pg   = max(-adv * ratio, -adv * clamp(ratio, 1 - clip, 1 + clip))
//   v    = 0.5 * max((V - R)^2, (old_V + clamp(V - old_V, -clip, clip) - R)^2)
//          (clip_vloss), else 0.5 * (V - R)^2
//   loss = mean(pg) - ent_coef * mean(entropy) + vf_coef * mean(v)
// Gradients follow PyTorch's rules: max() splits a tie evenly between its
// arguments, clamp() passes the gradient on its closed interval.
// Writes dloss/dlogits and dloss/dvalue (already divided by the minibatch
// size M) and per-row statistics [rows][ROW_STATS]: pg, v, entropy,
// -logratio (old_approx_kl), (ratio - 1) - logratio (approx_kl, k3), clipped.
// mb_records rows are [RECORD]: old log-prob, old value, advantage
// (normalized if norm_adv), return, action.
//
// Bindings (group 0): 0 uniform Dims, 1 mb_records [rows][RECORD] (read),
//   2 logits [rows][num_actions] (read), 3 values [rows] (read),
//   4 dlogits [rows][num_actions] (write), 5 dvalues [rows] (write),
//   6 row_stats [rows][ROW_STATS] (write).
// Dispatch: one invocation per row (P * M), 1-D workgroups of WORKGROUP_SIZE.
// The scalar terms and the logit gradient are ppo_loss_terms.wgsl's.
// CPU reference: ops::ppo_loss::ppo_loss_cpu.

struct Dims {
    rows: u32,
    minibatch_size: u32,
    num_actions: u32,
    clip_vloss: u32,
    clip_coef: f32,
    ent_coef: f32,
    vf_coef: f32,
    _pad: u32,
}

const RECORD: u32 = 5u;
const ROW_STATS: u32 = 6u;

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> mb_records: array<f32>;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read> values: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(5) var<storage, read_write> dvalues: array<f32>;
@group(0) @binding(6) var<storage, read_write> row_stats: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;

@compute @workgroup_size(WORKGROUP_SIZE)
fn ppo_loss(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) groups: vec3<u32>) {
    let r = gid.x + gid.y * groups.x * WORKGROUP_SIZE;
    if (r >= dims.rows) {
        return;
    }
    let rec = r * RECORD;
    let old_logp = mb_records[rec];
    let old_value = mb_records[rec + 1u];
    let adv = mb_records[rec + 2u];
    let ret = mb_records[rec + 3u];
    let action = u32(mb_records[rec + 4u]);

    let a_count = dims.num_actions;
    let base = r * a_count;
    var max_logit = logits[base];
    for (var i = 1u; i < a_count; i++) {
        max_logit = max(max_logit, logits[base + i]);
    }
    var sum = 0.0;
    for (var i = 0u; i < a_count; i++) {
        sum += exp(logits[base + i] - max_logit);
    }
    let log_norm = max_logit + log(sum);
    var entropy = 0.0;
    for (var i = 0u; i < a_count; i++) {
        let logp_i = logits[base + i] - log_norm;
        entropy -= exp(logp_i) * logp_i;
    }

    let terms = ppo_loss_terms(logits[base + action] - log_norm, old_logp, adv, values[r],
                               old_value, ret, dims.clip_coef, dims.clip_vloss != 0u);
    let inv_m = 1.0 / f32(dims.minibatch_size);
    for (var i = 0u; i < a_count; i++) {
        let logp_i = logits[base + i] - log_norm;
        dlogits[base + i] = inv_m * ppo_dlogit(logp_i, i == action, entropy, terms.dpg_dlogp,
                                               dims.ent_coef);
    }
    dvalues[r] = inv_m * dims.vf_coef * terms.dv;

    let st = r * ROW_STATS;
    row_stats[st] = terms.pg;
    row_stats[st + 1u] = terms.v_loss;
    row_stats[st + 2u] = entropy;
    row_stats[st + 3u] = -terms.logratio;
    row_stats[st + 4u] = (terms.ratio - 1.0) - terms.logratio;
    row_stats[st + 5u] = terms.clipped;
}
