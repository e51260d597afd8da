// stats: per-agent reductions of the PPO update, each by one 64-lane
// workgroup per agent (lane-strided sums, then a fixed tree: deterministic).
//   adv_norm:            minibatch advantages -> (adv - mean) / (std + 1e-8),
//                        std with Bessel's correction (torch.std), in place.
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
//   6 mb_records [P][M][RECORD] (read-write).
// Dispatch: one workgroup of 64 lanes per agent (grid folded into (x, y)).
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
    _pad0: u32,
    _pad1: u32,
}

const RECORD: u32 = 5u;

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> row_stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> agent_state: array<AgentState>;
@group(0) @binding(3) var<storage, read_write> history: array<f32>;
@group(0) @binding(4) var<storage, read> records: array<f32>;
@group(0) @binding(5) var<storage, read_write> explained_var: array<f32>;
@group(0) @binding(6) var<storage, read_write> mb_records: array<f32>;

fn agent_index(wid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return wid.x + wid.y * groups.x;
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
    let mean = workgroup_sum(lane, sum) / f32(max(m, 1u));
    var squares = 0.0;
    for (var j = lane; j < m; j += LANES) {
        let d = mb_records[(base + j) * RECORD + 2u] - mean;
        squares += d * d;
    }
    let variance = workgroup_sum(lane, squares) / f32(max(m, 2u) - 1u);
    let scale = 1.0 / (sqrt(variance) + 1e-8);
    for (var j = lane; j < m; j += LANES) {
        let at = (base + j) * RECORD + 2u;
        mb_records[at] = (mb_records[at] - mean) * scale;
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
