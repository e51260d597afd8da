// optim: global gradient-norm clipping per agent, then Adam (PyTorch's
// single-tensor algorithm) with a per-agent learning rate.
//   grad_norm:      norm = ||grads[p]||_2 over all the agent's parameters;
//                   clip_scale = min(1, max_grad_norm / (norm + 1e-6))
//                   (torch.nn.utils.clip_grad_norm_); counts an Adam step
//                   for every agent still updating.
//   adam:           g = grads * clip_scale; m += (1 - beta1) * (g - m);
//                   v = beta2 * v + (1 - beta2) * g^2;
//                   param -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
//                   Agents that stopped (target_kl) are left untouched.
//   optimizer_step: the fused update's last dispatch per minibatch: for one
//                   agent per workgroup, grad_norm, then adam over the
//                   agent's parameters (lane-strided), then stats.wgsl's
//                   row_stats_mean (the row means into history and the
//                   target-KL stop). The same operations in the same order
//                   as those three dispatches, so bitwise equal to them.
//
// Bindings (group 0): 0 uniform Dims, 1 grads [P][K] (read),
//   2 agent_state [P] (read-write), 3 params [P][K], 4 adam_m [P][K],
//   5 adam_v [P][K] (read-write), 6 row_stats [P][M][ROW_STATS] (read),
//   7 history [..][P][HISTORY_STATS] (read-write; optimizer_step only).
// Dispatch: grad_norm and optimizer_step, one 64-lane workgroup per agent;
//   adam, one invocation per parameter (P * K), 1-D workgroups of
//   WORKGROUP_SIZE. Grids fold into (x, y).
// AgentState, workgroup_sum and record_row_means are agent_lanes.wgsl's.
// CPU reference: ops::optim::{clip_grad_norm_cpu, adam_cpu}, ops::stats::row_stats_mean_cpu.

struct Dims {
    num_agents: u32,
    params_per_agent: u32,
    max_grad_norm: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    // 1 - beta, rounded once from double precision as PyTorch does.
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    // optimizer_step's row statistics (row_stats_mean's).
    rows_per_agent: u32,
    history_index: u32,
    check_kl: u32,
    target_kl: f32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> grads: array<f32>;
@group(0) @binding(2) var<storage, read_write> agent_state: array<AgentState>;
@group(0) @binding(3) var<storage, read_write> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> adam_m: array<f32>;
@group(0) @binding(5) var<storage, read_write> adam_v: array<f32>;
@group(0) @binding(6) var<storage, read> row_stats: array<f32>;
@group(0) @binding(7) var<storage, read_write> history: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;

// Agent p's clip factor and Adam step count (lane 0 writes them); call in
// uniform control flow.
fn clip_and_count(lane: u32, p: u32, in_range: bool) {
    let k_count = select(0u, dims.params_per_agent, in_range);
    let base = p * dims.params_per_agent;
    var squares = 0.0;
    for (var k = lane; k < k_count; k += LANES) {
        let g = grads[base + k];
        squares += g * g;
    }
    let norm = sqrt(workgroup_sum(lane, squares));
    if (in_range && lane == 0u) {
        agent_state[p].clip_scale = min(1.0, dims.max_grad_norm / (norm + 1e-6));
        if (agent_state[p].updating != 0u) {
            agent_state[p].adam_step += 1u;
        }
    }
}

// One Adam step of parameter i of an agent in `state` (which is updating).
fn adam_param(i: u32, state: AgentState) {
    let g = grads[i] * state.clip_scale;
    let m = adam_m[i] + dims.one_minus_beta1 * (g - adam_m[i]);
    let v = dims.beta2 * adam_v[i] + dims.one_minus_beta2 * g * g;
    adam_m[i] = m;
    adam_v[i] = v;
    let t = f32(state.adam_step);
    let step_size = state.learning_rate / (1.0 - pow(dims.beta1, t));
    let denom = sqrt(v) / sqrt(1.0 - pow(dims.beta2, t)) + dims.eps;
    params[i] = params[i] - step_size * m / denom;
}

@compute @workgroup_size(64)
fn grad_norm(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(local_invocation_index) lane: u32,
             @builtin(num_workgroups) groups: vec3<u32>) {
    let p = wid.x + wid.y * groups.x;
    clip_and_count(lane, p, p < dims.num_agents);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WORKGROUP_SIZE;
    if (i >= dims.num_agents * dims.params_per_agent) {
        return;
    }
    let state = agent_state[i / dims.params_per_agent];
    if (state.updating == 0u) {
        return;
    }
    adam_param(i, state);
}

@compute @workgroup_size(64)
fn optimizer_step(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_index) lane: u32,
                  @builtin(num_workgroups) groups: vec3<u32>) {
    let p = wid.x + wid.y * groups.x;
    let in_range = p < dims.num_agents;
    clip_and_count(lane, p, in_range);
    // Lane 0's writes to agent_state are visible after this barrier.
    storageBarrier();
    workgroupBarrier();
    if (in_range) {
        let state = agent_state[p];
        if (state.updating != 0u) {
            let base = p * dims.params_per_agent;
            for (var k = lane; k < dims.params_per_agent; k += LANES) {
                adam_param(base + k, state);
            }
        }
    }
    // Every lane has read agent_state before lane 0 may stop the agent.
    storageBarrier();
    workgroupBarrier();
    record_row_means(lane, p, in_range, dims.rows_per_agent, dims.num_agents,
                     dims.history_index, dims.check_kl, dims.target_kl);
}
