// policy_lanes: one rollout step of P × N envs stepped on the host, in one
// dispatch: the actor and critic forward, the categorical sample and the
// rollout's records (template; composed like rollout_lanes.wgsl, whose
// generated lanes_forward, workgroup arrays and constants it shares, with
// POLICY_OBS, the policy's observation size). Per env (row r = p*N + n)
// at step t = dims.t_begin:
//   its observation cur_obs[r] (written by the host) into xs and obs[t][r];
//   lanes_forward (hidden units across the workgroup's lanes, as in
//   rollout_lanes.wgsl);
//   sample_and_record: records[t][r] = (log-prob, value, ., ., action);
//   actions[r] = the action (read back by the host, which steps the env).
// Sums keep the layered linear_forward's order, so the outputs equal the
// layered rollout step's to float rounding and the actions are the same.
//
// Bindings: rollout_common.wgsl's 0 (Dims), 1 (params), 4 (cur_obs), 5
//   (obs), 6 (records), 11 (uniform weights, where one agent's fit), and
//   12 actions [rows] u32.
// Dispatch: total_groups workgroups (all agents', or one agent's with
//   uniform weights) folded into (x, y) when large.
// CPU reference: the layered rollout step (tests/fused_rollout.rs).

@group(0) @binding(12) var<storage, read_write> actions: array<u32>;

@compute @workgroup_size(LANES_WG)
fn policy_lanes(@builtin(local_invocation_index) lid: u32,
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
    let t = dims.t_begin;
    let at = t * dims.rows + r;
    if (lid < LANES_E) {
        for (var k = 0u; k < POLICY_OBS; k++) {
            xs[e * POLICY_OBS + k] = cur_obs[r * POLICY_OBS + k];
        }
    }
    workgroupBarrier();
    lanes_forward(lid, base, false);
    if (live) {
        for (var k = 0u; k < POLICY_OBS; k++) {
            obs[at * POLICY_OBS + k] = xs[e * POLICY_OBS + k];
        }
        var logits: array<f32, NUM_ACTIONS>;
        for (var k = 0u; k < NUM_ACTIONS; k++) {
            logits[k] = heads[e * (NUM_ACTIONS + 1u) + k];
        }
        let value = heads[e * (NUM_ACTIONS + 1u) + NUM_ACTIONS];
        actions[r] = sample_and_record(r, t, at, logits, value);
    }
}
