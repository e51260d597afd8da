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

// d max(a, b) / d a in PyTorch: 1 if a > b, 0.5 on a tie, else 0.
fn max_grad_weight(a: f32, b: f32) -> f32 {
    return select(select(0.0, 0.5, a == b), 1.0, a > b);
}

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

    let clip = dims.clip_coef;
    let logratio = (logits[base + action] - log_norm) - old_logp;
    let ratio = exp(logratio);
    let pg_unclipped = -adv * ratio;
    let pg_clipped = -adv * clamp(ratio, 1.0 - clip, 1.0 + clip);
    let ratio_in_range = select(0.0, 1.0, ratio >= 1.0 - clip && ratio <= 1.0 + clip);
    let w_unclipped = max_grad_weight(pg_unclipped, pg_clipped);
    let w_clipped = max_grad_weight(pg_clipped, pg_unclipped) * ratio_in_range;
    // d pg / d logp (d ratio / d logp = ratio).
    let dpg_dlogp = -adv * ratio * (w_unclipped + w_clipped);

    let inv_m = 1.0 / f32(dims.minibatch_size);
    for (var i = 0u; i < a_count; i++) {
        let logp_i = logits[base + i] - log_norm;
        let p_i = exp(logp_i);
        let onehot = select(0.0, 1.0, i == action);
        // d entropy / d logit_i = -p_i * (logp_i + entropy)
        let dentropy = -p_i * (logp_i + entropy);
        dlogits[base + i] = inv_m * (dpg_dlogp * (onehot - p_i) - dims.ent_coef * dentropy);
    }

    let value = values[r];
    var v_loss = 0.5 * (value - ret) * (value - ret);
    var dv = value - ret;
    if (dims.clip_vloss != 0u) {
        let diff = value - old_value;
        let v_clipped = old_value + clamp(diff, -clip, clip);
        let loss_unclipped = (value - ret) * (value - ret);
        let loss_clipped = (v_clipped - ret) * (v_clipped - ret);
        v_loss = 0.5 * max(loss_unclipped, loss_clipped);
        let diff_in_range = select(0.0, 1.0, diff >= -clip && diff <= clip);
        dv = max_grad_weight(loss_unclipped, loss_clipped) * (value - ret)
           + max_grad_weight(loss_clipped, loss_unclipped) * diff_in_range * (v_clipped - ret);
    }
    dvalues[r] = inv_m * dims.vf_coef * dv;

    let st = r * ROW_STATS;
    row_stats[st] = max(pg_unclipped, pg_clipped);
    row_stats[st + 1u] = v_loss;
    row_stats[st + 2u] = entropy;
    row_stats[st + 3u] = -logratio;
    row_stats[st + 4u] = (ratio - 1.0) - logratio;
    row_stats[st + 5u] = select(0.0, 1.0, abs(ratio - 1.0) > clip);
}
