// gae_map: one step of generalized advantage estimation as an affine map,
// adv[t] = delta + carry * adv[t+1] (library, used by gae.wgsl and
// update_linear.wgsl; needs the including shader's rewards, flags (u32),
// final_values and records [..][RECORD] with the value in field 1, and the
// constants RECORD, TERMINATED and TRUNCATED).
//   terminated: next value 0; truncated: V(final observation);
//   otherwise V(s[t+1]): records[next] where the rollout goes on, else
//   last_value (the bootstrap after the final step).
//   delta = r + gamma * next_value - V(s[t]); carry = gamma * lambda unless
//   the step ended an episode.

fn gae_map(i: u32, next: u32, has_next: bool, last_value: f32, gamma: f32, lambda: f32) -> vec2<f32> {
    let f = flags[i];
    var next_value = 0.0;
    if ((f & TRUNCATED) != 0u && (f & TERMINATED) == 0u) {
        next_value = final_values[i];
    } else if ((f & TERMINATED) == 0u) {
        if (has_next) {
            next_value = records[next * RECORD + 1u];
        } else {
            next_value = last_value;
        }
    }
    let value = records[i * RECORD + 1u];
    let delta = rewards[i] + gamma * next_value - value;
    let carry = select(gamma * lambda, 0.0, f != 0u);
    return vec2<f32>(delta, carry);
}
