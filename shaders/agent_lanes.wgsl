// agent_lanes: what the per-agent reductions share, each run by one
// workgroup of LANES lanes per agent (library, used by stats.wgsl and
// optim.wgsl): the agent's optimizer state, a fixed-order workgroup sum, and
// the means of a minibatch's row statistics with the target-KL stop. The
// including shader declares row_stats [P][M][ROW_STATS] (read), agent_state
// [P] (read-write) and history [..][P][HISTORY_STATS] (read-write).

struct AgentState {
    learning_rate: f32,
    updating: u32,
    adam_step: u32,
    clip_scale: f32,
}

const ROW_STATS: u32 = 6u;
const HISTORY_STATS: u32 = 7u;
const LANES: u32 = 64u;

var<workgroup> partial: array<f32, 64>;

// Sum of `value` over the workgroup's lanes in a fixed order; call in uniform control flow.
fn workgroup_sum(lane: u32, value: f32) -> f32 {
    partial[lane] = value;
    workgroupBarrier();
    for (var stride = LANES / 2u; stride > 0u; stride = stride / 2u) {
        if (lane < stride) {
            partial[lane] += partial[lane + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

// Means of agent p's `rows` row statistics into history[history_index][p]
// (slot ROW_STATS: whether the agent was still updating); with check_kl,
// stops the agent when its mean approx_kl exceeds target_kl (CleanRL checks
// after each epoch's last minibatch). Call in uniform control flow.
fn record_row_means(lane: u32, p: u32, in_range: bool, rows: u32, num_agents: u32,
                    history_index: u32, check_kl: u32, target_kl: f32) {
    let m = select(0u, rows, in_range);
    let base = p * rows;
    var means: array<f32, 6>;
    for (var k = 0u; k < ROW_STATS; k++) {
        var sum = 0.0;
        for (var j = lane; j < m; j += LANES) {
            sum += row_stats[(base + j) * ROW_STATS + k];
        }
        means[k] = workgroup_sum(lane, sum) / f32(max(m, 1u));
    }
    if (in_range && lane == 0u) {
        let out = (history_index * num_agents + p) * HISTORY_STATS;
        for (var k = 0u; k < ROW_STATS; k++) {
            history[out + k] = means[k];
        }
        let updating = agent_state[p].updating;
        history[out + ROW_STATS] = f32(updating);
        // means[4] is approx_kl.
        if (check_kl != 0u && updating != 0u && means[4] > target_kl) {
            agent_state[p].updating = 0u;
        }
    }
}
