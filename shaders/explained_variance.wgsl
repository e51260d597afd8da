// explained_variance: 1 - var(returns - values) / var(returns) over agent
// p's batch of `rows` rollout rows (population variances, as numpy; NaN when
// var(returns) is 0), summed lane-strided over LANES lanes (library, used by
// stats.wgsl and update_linear.wgsl; needs the including shader's records
// [T][P][N][RECORD] with the value in field 1 and the return in field 3,
// RECORD, LANES, and a fixed-order workgroup_sum(lane, value)). Call in
// uniform control flow; every lane gets the result.

fn batch_explained_variance(lane: u32, p: u32, rows: u32, num_agents: u32, n_env: u32) -> f32 {
    var sum_y = 0.0;
    var sum_e = 0.0;
    for (var b = lane; b < rows; b += LANES) {
        let at = (((b / n_env) * num_agents + p) * n_env + b % n_env) * RECORD;
        let y = records[at + 3u];
        sum_y += y;
        sum_e += y - records[at + 1u];
    }
    let count = f32(max(rows, 1u));
    let mean_y = workgroup_sum(lane, sum_y) / count;
    let mean_e = workgroup_sum(lane, sum_e) / count;
    var ss_y = 0.0;
    var ss_e = 0.0;
    for (var b = lane; b < rows; b += LANES) {
        let at = (((b / n_env) * num_agents + p) * n_env + b % n_env) * RECORD;
        let y = records[at + 3u];
        let dy = y - mean_y;
        let de = (y - records[at + 1u]) - mean_e;
        ss_y += dy * dy;
        ss_e += de * de;
    }
    let var_y = workgroup_sum(lane, ss_y) / count;
    let var_e = workgroup_sum(lane, ss_e) / count;
    let nan = bitcast<f32>(0x7fc00000u);
    return select(1.0 - var_e / var_y, nan, var_y == 0.0);
}
