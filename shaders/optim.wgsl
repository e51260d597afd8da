// optim: global gradient-norm clipping per agent, then Adam (PyTorch's
// single-tensor algorithm) with a per-agent learning rate.
//   grad_norm: norm = ||grads[p]||_2 over all the agent's parameters;
//              clip_scale = min(1, max_grad_norm / (norm + 1e-6))
//              (torch.nn.utils.clip_grad_norm_); counts an Adam step for
//              every agent still updating.
//   adam:      g = grads * clip_scale; m += (1 - beta1) * (g - m);
//              v = beta2 * v + (1 - beta2) * g^2;
//              param -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
//              Agents that stopped (target_kl) are left untouched.
//
// Bindings (group 0): 0 uniform Dims, 1 grads [P][K] (read),
//   2 agent_state [P] (read-write), 3 params [P][K], 4 adam_m [P][K],
//   5 adam_v [P][K] (read-write).
// Dispatch: grad_norm, one 64-lane workgroup per agent; adam, one invocation
//   per parameter (P * K), 1-D workgroups of WORKGROUP_SIZE. Grids fold into (x, y).
// CPU reference: ops::optim::{clip_grad_norm_cpu, adam_cpu}.

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
}

struct AgentState {
    learning_rate: f32,
    updating: u32,
    adam_step: u32,
    clip_scale: f32,
}

const LANES: u32 = 64u;

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> grads: array<f32>;
@group(0) @binding(2) var<storage, read_write> agent_state: array<AgentState>;
@group(0) @binding(3) var<storage, read_write> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> adam_m: array<f32>;
@group(0) @binding(5) var<storage, read_write> adam_v: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;

var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn grad_norm(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(local_invocation_index) lane: u32,
             @builtin(num_workgroups) groups: vec3<u32>) {
    let p = wid.x + wid.y * groups.x;
    let in_range = p < dims.num_agents;
    let k_count = select(0u, dims.params_per_agent, in_range);
    let base = p * dims.params_per_agent;
    var squares = 0.0;
    for (var k = lane; k < k_count; k += LANES) {
        let g = grads[base + k];
        squares += g * g;
    }
    partial[lane] = squares;
    workgroupBarrier();
    for (var stride = LANES / 2u; stride > 0u; stride = stride / 2u) {
        if (lane < stride) {
            partial[lane] += partial[lane + stride];
        }
        workgroupBarrier();
    }
    if (in_range && lane == 0u) {
        let norm = sqrt(partial[0]);
        agent_state[p].clip_scale = min(1.0, dims.max_grad_norm / (norm + 1e-6));
        if (agent_state[p].updating != 0u) {
            agent_state[p].adam_step += 1u;
        }
    }
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
