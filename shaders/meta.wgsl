// meta: the meta-learning outer step over M agents that adapted from the
// shared initialization theta [K], then the broadcast of the new theta back
// to every agent's parameters.
//   reptile_outer: theta += meta_lr * mean_m(params[m] - theta)
//                  (Nichol et al. 2018, the batched form).
//   fomaml_outer:  g = mean_m(grads[m]), where grads[m] is the loss gradient
//                  at agent m's adapted parameters on fresh data (first-order
//                  MAML, Finn et al. 2017); then an Adam step on theta with
//                  learning rate meta_lr (the meta-optimizer of MAML's
//                  reference code): m += (1 - b1)(g - m); v = b2 v + (1 - b2) g^2;
//                  theta -= meta_lr / bias1 * m / (sqrt(v) / bias2_sqrt + eps),
//                  with the bias corrections computed on the host.
//   Both then set params[m] = theta for every m. The mean sums m = 0..M-1 in
//   order, in f32, so the CPU reference matches to rounding.
//
// Bindings (group 0): 0 uniform Dims, 1 grads [M][K] (read, fomaml only),
//   2 theta [K] (read-write), 3 params [M][K] (read-write),
//   4 adam_m [K], 5 adam_v [K] (read-write, fomaml only).
// Dispatch: one invocation per parameter index k (K), 1-D workgroups of
//   WORKGROUP_SIZE; grids fold into (x, y). Invocation k owns column k of
//   params and theta[k], so there are no races and no barriers.
// CPU reference: meta::outer::outer_step_cpu.

struct Dims {
    num_agents: u32,
    params_per_agent: u32,
    meta_lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    // 1 - beta1^t and sqrt(1 - beta2^t) for this step t.
    bias1: f32,
    bias2_sqrt: f32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> grads: array<f32>;
@group(0) @binding(2) var<storage, read_write> theta: array<f32>;
@group(0) @binding(3) var<storage, read_write> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> adam_m: array<f32>;
@group(0) @binding(5) var<storage, read_write> adam_v: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;

fn index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WORKGROUP_SIZE;
}

fn broadcast(k: u32, value: f32) {
    theta[k] = value;
    for (var m = 0u; m < dims.num_agents; m++) {
        params[m * dims.params_per_agent + k] = value;
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn reptile_outer(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let k = index(gid, groups);
    if (k >= dims.params_per_agent) {
        return;
    }
    let start = theta[k];
    var sum = 0.0;
    for (var m = 0u; m < dims.num_agents; m++) {
        sum += params[m * dims.params_per_agent + k] - start;
    }
    broadcast(k, start + dims.meta_lr * (sum / f32(dims.num_agents)));
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn fomaml_outer(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) groups: vec3<u32>) {
    let k = index(gid, groups);
    if (k >= dims.params_per_agent) {
        return;
    }
    var sum = 0.0;
    for (var m = 0u; m < dims.num_agents; m++) {
        sum += grads[m * dims.params_per_agent + k];
    }
    let g = sum / f32(dims.num_agents);
    let first = adam_m[k] + (1.0 - dims.beta1) * (g - adam_m[k]);
    let second = dims.beta2 * adam_v[k] + (1.0 - dims.beta2) * g * g;
    adam_m[k] = first;
    adam_v[k] = second;
    let step = dims.meta_lr / dims.bias1 * first / (sqrt(second) / dims.bias2_sqrt + dims.eps);
    broadcast(k, theta[k] - step);
}
