// rollout_lanes: steps t_begin..t_end of a whole PPO rollout of P × N device
// envs in one dispatch, one env's hidden units spread across the lanes of a
// workgroup (template; composed like rollout_fused.wgsl, with the generated
// constants LANES_WG and LANES_E, the workgroup arrays xs [E][obs], heads
// [E][NUM_ACTIONS + 1], lane_truncated and any_truncated, and the generated
// function lanes_forward, see ppo::fused).
//
// One workgroup of LANES_WG invocations runs LANES_E envs of one agent
// (lanes_agent / lanes_block: from the group index where the weights come
// from storage; from the agent's uniform block where each agent has its
// own dispatch). Per step:
//   lanes_forward: every lane computes its hidden units (unit o = lane +
//   k * LANES_WG of every layer, both networks) for all LANES_E envs, each
//   weight loaded once for them, activations in workgroup memory with a
//   barrier between layers; then the output rows (logits and value) of
//   every env, one per lane, into heads [E][NUM_ACTIONS + 1];
//   lane e < LANES_E (env e): the observation into obs, sample_and_record,
//   step_and_record, the final observation into xs;
//   where any env of the workgroup needs V(final obs) (truncated, not
//   terminated), lanes_forward runs again on xs with final_pass (the
//   critic alone) for the value of the final observations;
//   lane e: the next observation into xs.
// Sums keep the layered linear_forward's order (bias, then inputs
// ascending), so the outputs equal the layered path's to float rounding.
// Lanes whose env is past N compute on a clamped env and write nothing.
//
// Bindings: rollout_common.wgsl.
// Dispatch: total_groups workgroups (all agents', or one agent's with
//   uniform weights) folded into (x, y) when large; the host
//   splits T into several dispatches where an adapter caps the loop
//   iterations of one invocation (llvmpipe).
// CPU reference: ppo::fused::fused_rollout_cpu, and the layered device
//   rollout it must equal (tests/fused_rollout.rs).

@compute @workgroup_size(LANES_WG)
fn rollout_lanes(@builtin(local_invocation_index) lid: u32,
                 @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let g = wid.x + wid.y * groups.x;
    if (g >= dims.total_groups) {
        return;
    }
    let row = lanes_row(lid, g);
    let e = row.e;
    let r = row.r;
    let live = row.live;
    let base = row.base;
    let p = physics[r];
    var s = states[r];
    if (lid < LANES_E) {
        let x = env_observe(s);
        for (var k = 0u; k < ENV_OBS_DIM; k++) {
            xs[e * ENV_OBS_DIM + k] = x[k];
        }
    }
    workgroupBarrier();
    // Each step is one pass of lanes_forward, or two where an env of the
    // workgroup needs V(final obs): one call site, so the forward's code is
    // compiled once (llvmpipe's first compile grows with code size).
    var t = dims.t_begin;
    var final_pass = false;
    var truncated = false;
    loop {
        if (t >= dims.t_end) {
            break;
        }
        let at = t * dims.rows + r;
        lanes_forward(lid, base, final_pass);
        var again = false;
        if (final_pass) {
            if (truncated) {
                final_values[at] = heads[e * (NUM_ACTIONS + 1u) + NUM_ACTIONS];
            }
        } else {
            truncated = false;
            if (live) {
                write_obs(at, env_observe(s));
                var logits: array<f32, NUM_ACTIONS>;
                for (var k = 0u; k < NUM_ACTIONS; k++) {
                    logits[k] = heads[e * (NUM_ACTIONS + 1u) + k];
                }
                let value = heads[e * (NUM_ACTIONS + 1u) + NUM_ACTIONS];
                let action = sample_and_record(r, t, at, logits, value);
                let out = step_and_record(&s, r, at, action, p);
                truncated = needs_final_value(out.flags);
                // The forward has read xs: it holds the final observations now.
                for (var k = 0u; k < ENV_OBS_DIM; k++) {
                    xs[e * ENV_OBS_DIM + k] = out.final_obs[k];
                }
            }
            if (lid < LANES_E) {
                lane_truncated[e] = select(0u, 1u, truncated);
            }
            workgroupBarrier();
            if (lid == 0u) {
                var any = 0u;
                for (var k = 0u; k < LANES_E; k++) {
                    any |= lane_truncated[k];
                }
                any_truncated = any;
            }
            again = workgroupUniformLoad(&any_truncated) != 0u;
        }
        if (!again) {
            if (live) {
                let x = env_observe(s);
                for (var k = 0u; k < ENV_OBS_DIM; k++) {
                    xs[e * ENV_OBS_DIM + k] = x[k];
                }
            }
            t++;
        }
        final_pass = again;
        workgroupBarrier();
    }
    if (live) {
        finish_env(r, s);
    }
}
