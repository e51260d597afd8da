// context: first-order CAVIA's task context (Zintgraf et al. 2019), shared
// by the actor and the critic. Each agent p holds a context phi[p] of C
// numbers that shifts J "slots" of its parameters through weights [J][C]:
//   slot[p][j] = base[p][j] + sum_c weights[j][c] * phi[p][c],
// where base is the slot's value with phi = 0. The slots are the actor's
// first-layer biases (the context is an extra input of the policy's first
// layer, whose columns of weights these are) and then the critic's
// last-layer weights (the value gains a term phi^T U h(s) on its last hidden
// features h, so fitting phi to the returns is a linear regression: a convex
// problem, whatever the weights). The networks and their kernels stay as
// they are; dL/dphi comes from the slots' gradients.
//   context_accumulate: acc[p][c] += policy_weight * sum_{j actor}
//                  weights[j][c] * grads[p][slot j] + the same sum over the
//                  critic's slots: dL/dphi of one minibatch, after its
//                  backward pass, with the policy loss's part weighted.
//   context_step:  phi[p][c] = clamp(phi[p][c] - lr * acc[p][c] / minibatches,
//                  -bound, bound), then acc = 0: one step of projected SGD
//                  on the box [-bound, bound]^C along the mean gradient of
//                  the update's first epoch (taken at the rollout's
//                  parameters: its minibatches cover the batch once), for
//                  agents still updating.
//   context_apply: writes slot[p][j] into params from base, weights and phi.
//   context_reset: base[p][j] = params[p][slot j]; phi[p] = 0 (a new task).
//   context_collect: the outer gradient's sums over the minibatches of the
//                  updates whose losses count (MAML++'s multi-step loss, in
//                  first order): theta_acc[p][k] += collect_weight *
//                  grads[p][k], and weight_acc[p][j][c] += collect_weight *
//                  grads[p][slot j] * phi[p][c] (the context the rollout was
//                  collected with; the step comes after the epoch).
// The outer step of the context weights is meta.wgsl's fomaml_outer over
// weight_acc (as theta's is over theta_acc).
// Sums run in index order in f32, so the CPU references match to rounding.
//
// Bindings (group 0): 0 uniform Dims, 1 grads [P][K] (read), 2 agent_state
//   [P] (read), 3 params [P][K], 4 weights [J][C], 5 base [P][J], 6 phi
//   [P][C], 7 acc [P][C], 8 theta_acc [P][K], 9 weight_acc [P][J][C]
//   (read-write).
// Dispatch: one invocation per item, 1-D workgroups of WORKGROUP_SIZE, grids
//   folded into (x, y): context_accumulate and context_step P*C,
//   context_apply P*J, context_reset P*max(J, C), context_collect
//   P*(K + J*C). Each invocation writes its own element.
// CPU reference: ops::context::{context_grad_cpu, context_step_cpu,
//   context_apply_cpu, context_collect_cpu}.

struct Dims {
    num_agents: u32,
    params_per_agent: u32,
    context_dim: u32,
    actor_units: u32,
    critic_units: u32,
    // Where the actor's and the critic's slots start in an agent's slice.
    actor_offset: u32,
    critic_offset: u32,
    // Minibatches whose gradients acc sums before a step.
    minibatches: u32,
    lr: f32,
    bound: f32,
    collect_weight: f32,
    // Weight of the policy's slots in dL/dphi (1: the PPO loss's gradient;
    // 0: the value loss's alone).
    policy_weight: f32,
}

struct AgentState {
    learning_rate: f32,
    updating: u32,
    adam_step: u32,
    clip_scale: f32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> grads: array<f32>;
@group(0) @binding(2) var<storage, read> agent_state: array<AgentState>;
@group(0) @binding(3) var<storage, read_write> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> weights: array<f32>;
@group(0) @binding(5) var<storage, read_write> base: array<f32>;
@group(0) @binding(6) var<storage, read_write> phi: array<f32>;
@group(0) @binding(7) var<storage, read_write> acc: array<f32>;
@group(0) @binding(8) var<storage, read_write> theta_acc: array<f32>;
@group(0) @binding(9) var<storage, read_write> weight_acc: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;

fn index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WORKGROUP_SIZE;
}

fn units() -> u32 {
    return dims.actor_units + dims.critic_units;
}

// Where slot j (the actor's first) sits in an agent's parameter slice.
fn slot_index(j: u32) -> u32 {
    if (j < dims.actor_units) {
        return dims.actor_offset + j;
    }
    return dims.critic_offset + (j - dims.actor_units);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn context_accumulate(@builtin(global_invocation_id) gid: vec3<u32>,
                      @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(gid, groups);
    if (i >= dims.num_agents * dims.context_dim) {
        return;
    }
    let p = i / dims.context_dim;
    let c = i % dims.context_dim;
    let row = p * dims.params_per_agent;
    var g_policy = 0.0;
    for (var j = 0u; j < dims.actor_units; j++) {
        g_policy += weights[j * dims.context_dim + c] * grads[row + slot_index(j)];
    }
    var g_value = 0.0;
    for (var j = dims.actor_units; j < units(); j++) {
        g_value += weights[j * dims.context_dim + c] * grads[row + slot_index(j)];
    }
    acc[i] += dims.policy_weight * g_policy + g_value;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn context_step(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(gid, groups);
    if (i >= dims.num_agents * dims.context_dim) {
        return;
    }
    let g = acc[i] / f32(dims.minibatches);
    acc[i] = 0.0;
    if (agent_state[i / dims.context_dim].updating == 0u) {
        return;
    }
    phi[i] = clamp(phi[i] - dims.lr * g, -dims.bound, dims.bound);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn context_apply(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(gid, groups);
    let j_count = units();
    if (i >= dims.num_agents * j_count) {
        return;
    }
    let p = i / j_count;
    let j = i % j_count;
    var b = base[i];
    for (var c = 0u; c < dims.context_dim; c++) {
        b += weights[j * dims.context_dim + c] * phi[p * dims.context_dim + c];
    }
    params[p * dims.params_per_agent + slot_index(j)] = b;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn context_reset(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(gid, groups);
    let j_count = units();
    let width = max(j_count, dims.context_dim);
    if (i >= dims.num_agents * width) {
        return;
    }
    let p = i / width;
    let j = i % width;
    if (j < j_count) {
        base[p * j_count + j] = params[p * dims.params_per_agent + slot_index(j)];
    }
    if (j < dims.context_dim) {
        phi[p * dims.context_dim + j] = 0.0;
        acc[p * dims.context_dim + j] = 0.0;
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn context_collect(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(gid, groups);
    let k_count = dims.params_per_agent;
    let wc = units() * dims.context_dim;
    let width = k_count + wc;
    if (i >= dims.num_agents * width) {
        return;
    }
    let p = i / width;
    let e = i % width;
    if (e < k_count) {
        theta_acc[p * k_count + e] += dims.collect_weight * grads[p * k_count + e];
        return;
    }
    let w = e - k_count;
    let j = w / dims.context_dim;
    let c = w % dims.context_dim;
    let g = grads[p * k_count + slot_index(j)] * phi[p * dims.context_dim + c];
    weight_acc[p * wc + w] += dims.collect_weight * g;
}
