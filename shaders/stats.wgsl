// stats: per-agent reductions of the PPO update, each by one 64-lane
// workgroup per agent (lane-strided sums, then a fixed tree: deterministic).
//   adv_norm:            minibatch advantages -> (adv - mean) / (std + 1e-8),
//                        std with Bessel's correction (torch.std), in place.
//   adv_moments:         for the fused row step, which normalizes as it reads:
//                        adv_norm's mean and 1 / (std + 1e-8) of every
//                        (epoch, minibatch, agent) read through the
//                        permutations (bitwise adv_norm's), into adv_stats.
//   row_stats_mean:      means of the per-row loss statistics into
//                        history[index][p][HISTORY_STATS] (slot 6: whether the
//                        agent was still updating); at the end of an epoch,
//                        stops an agent whose approx_kl exceeds target_kl.
//   explained_variance:  1 - var(returns - values) / var(returns) over the
//                        agent's whole batch (population variances, as numpy;
//                        NaN when var(returns) is 0).
//
// Bindings (group 0): 0 uniform Dims, 1 row_stats [P][M][ROW_STATS] (read),
//   2 agent_state [P] (read-write), 3 history [..][P][HISTORY_STATS] (write),
//   4 records [T][P][N][RECORD] (read), 5 explained_var [P] (write),
//   6 mb_records [P][M][RECORD] (read-write), 7 perm [epochs][P][B] (read),
//   8 adv_stats [entries][P][2] (write).
// Dispatch: one workgroup of 64 lanes per agent (adv_moments: per entry and
//   agent), the grid folded into (x, y).
// The explained variance itself is explained_variance.wgsl's; the row means
// and AgentState are agent_lanes.wgsl's.
// CPU references: ops::stats::{adv_norm_cpu, row_stats_mean_cpu, explained_variance_cpu}.

struct Dims {
    num_agents: u32,
    rows_per_agent: u32,
    envs_per_agent: u32,
    history_index: u32,
    check_kl: u32,
    target_kl: f32,
    // adv_moments only (which takes history_index as the entry count).
    batch_per_agent: u32,
    num_minibatches: u32,
}

const RECORD: u32 = 5u;

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> row_stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> agent_state: array<AgentState>;
@group(0) @binding(3) var<storage, read_write> history: array<f32>;
@group(0) @binding(4) var<storage, read> records: array<f32>;
@group(0) @binding(5) var<storage, read_write> explained_var: array<f32>;
@group(0) @binding(6) var<storage, read_write> mb_records: array<f32>;
@group(0) @binding(7) var<storage, read> perm: array<u32>;
@group(0) @binding(8) var<storage, read_write> adv_stats: array<f32>;

fn agent_index(wid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return wid.x + wid.y * groups.x;
}

// The mean of m advantages from each lane's partial sum; uniform control flow.
fn adv_mean(lane: u32, sum: f32, m: u32) -> f32 {
    return workgroup_sum(lane, sum) / f32(max(m, 1u));
}

// 1 / (std + 1e-8) of m advantages (Bessel's correction, torch.std) from
// each lane's partial sum of squared deviations; uniform control flow.
fn adv_scale(lane: u32, squares: f32, m: u32) -> f32 {
    let variance = workgroup_sum(lane, squares) / f32(max(m, 2u) - 1u);
    return 1.0 / (sqrt(variance) + 1e-8);
}

@compute @workgroup_size(64)
fn adv_norm(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(local_invocation_index) lane: u32,
            @builtin(num_workgroups) groups: vec3<u32>) {
    let p = agent_index(wid, groups);
    let in_range = p < dims.num_agents;
    let m = select(0u, dims.rows_per_agent, in_range);
    let base = p * dims.rows_per_agent;
    var sum = 0.0;
    for (var j = lane; j < m; j += LANES) {
        sum += mb_records[(base + j) * RECORD + 2u];
    }
    let mean = adv_mean(lane, sum, m);
    var squares = 0.0;
    for (var j = lane; j < m; j += LANES) {
        let d = mb_records[(base + j) * RECORD + 2u] - mean;
        squares += d * d;
    }
    let scale = adv_scale(lane, squares, m);
    for (var j = lane; j < m; j += LANES) {
        let at = (base + j) * RECORD + 2u;
        mb_records[at] = (mb_records[at] - mean) * scale;
    }
}

// Rollout record of minibatch row j of `entry` (epoch * minibatches +
// minibatch) for agent p, through the permutation (gather.wgsl's indexing).
fn permuted_record(entry: u32, p: u32, j: u32) -> u32 {
    let epoch = entry / dims.num_minibatches;
    let minibatch = entry % dims.num_minibatches;
    let b = perm[(epoch * dims.num_agents + p) * dims.batch_per_agent
                 + minibatch * dims.rows_per_agent + j];
    let n_env = dims.envs_per_agent;
    return ((b / n_env) * dims.num_agents + p) * n_env + b % n_env;
}

@compute @workgroup_size(64)
fn adv_moments(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(local_invocation_index) lane: u32,
               @builtin(num_workgroups) groups: vec3<u32>) {
    let g = agent_index(wid, groups);
    let in_range = g < dims.num_agents * dims.history_index;
    let entry = g / dims.num_agents;
    let p = g % dims.num_agents;
    let m = select(0u, dims.rows_per_agent, in_range);
    var sum = 0.0;
    for (var j = lane; j < m; j += LANES) {
        sum += records[permuted_record(entry, p, j) * RECORD + 2u];
    }
    let mean = adv_mean(lane, sum, m);
    var squares = 0.0;
    for (var j = lane; j < m; j += LANES) {
        let d = records[permuted_record(entry, p, j) * RECORD + 2u] - mean;
        squares += d * d;
    }
    let scale = adv_scale(lane, squares, m);
    if (in_range && lane == 0u) {
        adv_stats[g * 2u] = mean;
        adv_stats[g * 2u + 1u] = scale;
    }
}

@compute @workgroup_size(64)
fn row_stats_mean(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_index) lane: u32,
                  @builtin(num_workgroups) groups: vec3<u32>) {
    let p = agent_index(wid, groups);
    record_row_means(lane, p, p < dims.num_agents, dims.rows_per_agent, dims.num_agents,
                     dims.history_index, dims.check_kl, dims.target_kl);
}

@compute @workgroup_size(64)
fn explained_variance(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(local_invocation_index) lane: u32,
                      @builtin(num_workgroups) groups: vec3<u32>) {
    let p = agent_index(wid, groups);
    let in_range = p < dims.num_agents;
    let rows = select(0u, dims.rows_per_agent, in_range);
    let ev = batch_explained_variance(lane, p, rows, dims.num_agents, dims.envs_per_agent);
    if (in_range && lane == 0u) {
        // NaN when the returns do not vary, as CleanRL reports.
        explained_var[p] = ev;
    }
}
