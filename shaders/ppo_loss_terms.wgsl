// ppo_loss_terms: the per-row scalar part of CleanRL's PPO loss and the
// gradient of one logit (library, no bindings; used by ppo_loss.wgsl,
// update_rows.wgsl and update_linear.wgsl, each of which runs the softmax
// over its row's logits where they live: max, log normalizer, entropy).
//   ratio = exp(logp[action] - old_logp)
//   pg    = max(-adv * ratio, -adv * clamp(ratio, 1 - clip, 1 + clip))
//   v     = 0.5 * max((V - R)^2, (old_V + clamp(V - old_V, -clip, clip) - R)^2)
//           (clip_vloss), else 0.5 * (V - R)^2
// Gradients follow PyTorch's rules: max() splits a tie evenly between its
// arguments, clamp() passes the gradient on its closed interval.

struct LossTerms {
    // d pg / d logp[action].
    dpg_dlogp: f32,
    // d v / d V (before vf_coef and 1 / M).
    dv: f32,
    pg: f32,
    v_loss: f32,
    logratio: f32,
    ratio: f32,
    // 1 where |ratio - 1| > clip.
    clipped: f32,
}

// d max(a, b) / d a in PyTorch: 1 if a > b, 0.5 on a tie, else 0.
fn max_grad_weight(a: f32, b: f32) -> f32 {
    return select(select(0.0, 0.5, a == b), 1.0, a > b);
}

fn ppo_loss_terms(logp_action: f32, old_logp: f32, adv: f32, value: f32, old_value: f32,
                  ret: f32, clip: f32, clip_vloss: bool) -> LossTerms {
    let logratio = logp_action - old_logp;
    let ratio = exp(logratio);
    let pg_unclipped = -adv * ratio;
    let pg_clipped = -adv * clamp(ratio, 1.0 - clip, 1.0 + clip);
    let ratio_in_range = select(0.0, 1.0, ratio >= 1.0 - clip && ratio <= 1.0 + clip);
    let w_unclipped = max_grad_weight(pg_unclipped, pg_clipped);
    let w_clipped = max_grad_weight(pg_clipped, pg_unclipped) * ratio_in_range;
    // d pg / d logp (d ratio / d logp = ratio).
    let dpg_dlogp = -adv * ratio * (w_unclipped + w_clipped);

    var v_loss = 0.5 * (value - ret) * (value - ret);
    var dv = value - ret;
    if (clip_vloss) {
        let diff = value - old_value;
        let v_clipped = old_value + clamp(diff, -clip, clip);
        let loss_unclipped = (value - ret) * (value - ret);
        let loss_clipped = (v_clipped - ret) * (v_clipped - ret);
        v_loss = 0.5 * max(loss_unclipped, loss_clipped);
        let diff_in_range = select(0.0, 1.0, diff >= -clip && diff <= clip);
        dv = max_grad_weight(loss_unclipped, loss_clipped) * (value - ret)
           + max_grad_weight(loss_clipped, loss_unclipped) * diff_in_range * (v_clipped - ret);
    }
    return LossTerms(dpg_dlogp, dv, max(pg_unclipped, pg_clipped), v_loss, logratio, ratio,
                     select(0.0, 1.0, abs(ratio - 1.0) > clip));
}

// d loss / d logit_i before the 1 / M of the minibatch mean, for logit i of
// log-probability logp_i: the policy term and the entropy bonus
// (d entropy / d logit_i = -p_i * (logp_i + entropy)).
fn ppo_dlogit(logp_i: f32, is_action: bool, entropy: f32, dpg_dlogp: f32, ent_coef: f32) -> f32 {
    let p_i = exp(logp_i);
    let onehot = select(0.0, 1.0, is_action);
    let dentropy = -p_i * (logp_i + entropy);
    return dpg_dlogp * (onehot - p_i) - ent_coef * dentropy;
}
