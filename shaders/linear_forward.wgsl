// linear_forward: y = act(x · Wᵀ + b) for every row, each row with its own
// agent's parameters (population dimension first).
//
// Rows are r = p * rows_per_agent + n. Agent p's layer lives in
// params[p * param_stride + w_offset ..] as W[out_dim][in_dim] row-major and
// params[p * param_stride + b_offset ..] as b[out_dim].
// activation: 0 = identity, 1 = tanh.
//
// Bindings (group 0): 0 uniform Dims, 1 x [rows][in_dim] (read),
//   2 params [num_agents][param_stride] (read), 3 y [rows][out_dim] (write).
// Dispatch: linear_forward, one invocation per 4-row x 4-output block
//   (8 loads feed 16 multiply-adds); linear_forward_8x8, one per 8-row x
//   8-output block (16 loads feed 64: CPU adapters pay per load). Blocks
//   never span two agents; 1-D workgroups of WORKGROUP_SIZE folded into
//   (x, y) when large. Both sum each output in the same order (bias, then
//   the inputs ascending), so they give the same values.
// CPU reference: ops::linear::linear_forward_cpu.

struct Dims {
    rows_per_agent: u32,
    num_agents: u32,
    in_dim: u32,
    out_dim: u32,
    param_stride: u32,
    w_offset: u32,
    b_offset: u32,
    activation: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;

// tanh via exp(-2|z|): finite for every input (some GL drivers overflow in tanh).
fn stable_tanh(z: f32) -> f32 {
    let e = exp(-2.0 * abs(z));
    return sign(z) * (1.0 - e) / (1.0 + e);
}

fn activate(z: vec4<f32>) -> vec4<f32> {
    if (dims.activation == 1u) {
        return vec4<f32>(stable_tanh(z.x), stable_tanh(z.y), stable_tanh(z.z), stable_tanh(z.w));
    }
    return z;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn linear_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(num_workgroups) groups: vec3<u32>) {
    let id = gid.x + gid.y * groups.x * WORKGROUP_SIZE;
    let out_blocks = (dims.out_dim + 3u) / 4u;
    let row_blocks = (dims.rows_per_agent + 3u) / 4u;
    if (id >= out_blocks * row_blocks * dims.num_agents) {
        return;
    }
    let ob = id % out_blocks;
    let agent_block = id / out_blocks;
    let p = agent_block / row_blocks;
    let n0 = (agent_block % row_blocks) * 4u;
    let o0 = ob * 4u;

    // Clamp out-of-range rows/outputs to valid ones; their results are not stored.
    let last_o = dims.out_dim - 1u;
    let last_n = dims.rows_per_agent - 1u;
    let in_dim = dims.in_dim;
    let base = p * dims.param_stride;
    let w0 = base + dims.w_offset + min(o0, last_o) * in_dim;
    let w1 = base + dims.w_offset + min(o0 + 1u, last_o) * in_dim;
    let w2 = base + dims.w_offset + min(o0 + 2u, last_o) * in_dim;
    let w3 = base + dims.w_offset + min(o0 + 3u, last_o) * in_dim;
    let row0 = p * dims.rows_per_agent;
    let x0 = (row0 + min(n0, last_n)) * in_dim;
    let x1 = (row0 + min(n0 + 1u, last_n)) * in_dim;
    let x2 = (row0 + min(n0 + 2u, last_n)) * in_dim;
    let x3 = (row0 + min(n0 + 3u, last_n)) * in_dim;

    let bias = base + dims.b_offset;
    let b = vec4<f32>(params[bias + min(o0, last_o)], params[bias + min(o0 + 1u, last_o)],
                      params[bias + min(o0 + 2u, last_o)], params[bias + min(o0 + 3u, last_o)]);
    var acc0 = b;
    var acc1 = b;
    var acc2 = b;
    var acc3 = b;
    for (var i = 0u; i < in_dim; i++) {
        let w = vec4<f32>(params[w0 + i], params[w1 + i], params[w2 + i], params[w3 + i]);
        acc0 += x[x0 + i] * w;
        acc1 += x[x1 + i] * w;
        acc2 += x[x2 + i] * w;
        acc3 += x[x3 + i] * w;
    }

    let out_dim = dims.out_dim;
    let rows = array<vec4<f32>, 4>(activate(acc0), activate(acc1), activate(acc2), activate(acc3));
    for (var rr = 0u; rr < 4u; rr++) {
        let n = n0 + rr;
        if (n < dims.rows_per_agent) {
            let out = (row0 + n) * out_dim + o0;
            let v = rows[rr];
            y[out] = v.x;
            if (o0 + 1u < out_dim) { y[out + 1u] = v.y; }
            if (o0 + 2u < out_dim) { y[out + 2u] = v.z; }
            if (o0 + 3u < out_dim) { y[out + 3u] = v.w; }
        }
    }
}

// 8 rows x 8 outputs per invocation: the same sums as linear_forward, in the
// same order, with each loaded weight used for 8 rows and each input for 8
// outputs. The loops have constant bounds, so the compiler unrolls them and
// keeps the blocks in registers.
@compute @workgroup_size(WORKGROUP_SIZE)
fn linear_forward_8x8(@builtin(global_invocation_id) gid: vec3<u32>,
                      @builtin(num_workgroups) groups: vec3<u32>) {
    let id = gid.x + gid.y * groups.x * WORKGROUP_SIZE;
    let out_blocks = (dims.out_dim + 7u) / 8u;
    let row_blocks = (dims.rows_per_agent + 7u) / 8u;
    if (id >= out_blocks * row_blocks * dims.num_agents) {
        return;
    }
    let ob = id % out_blocks;
    let agent_block = id / out_blocks;
    let p = agent_block / row_blocks;
    let n0 = (agent_block % row_blocks) * 8u;
    let o0 = ob * 8u;

    // Clamp out-of-range rows/outputs to valid ones; their results are not stored.
    let last_o = dims.out_dim - 1u;
    let last_n = dims.rows_per_agent - 1u;
    let in_dim = dims.in_dim;
    let base = p * dims.param_stride;
    let row0 = p * dims.rows_per_agent;
    var w: array<u32, 8>;
    var xr: array<u32, 8>;
    for (var k = 0u; k < 8u; k++) {
        w[k] = base + dims.w_offset + min(o0 + k, last_o) * in_dim;
        xr[k] = (row0 + min(n0 + k, last_n)) * in_dim;
    }
    let bias = base + dims.b_offset;
    let b_lo = vec4<f32>(params[bias + min(o0, last_o)], params[bias + min(o0 + 1u, last_o)],
                         params[bias + min(o0 + 2u, last_o)], params[bias + min(o0 + 3u, last_o)]);
    let b_hi = vec4<f32>(params[bias + min(o0 + 4u, last_o)], params[bias + min(o0 + 5u, last_o)],
                         params[bias + min(o0 + 6u, last_o)], params[bias + min(o0 + 7u, last_o)]);
    var lo: array<vec4<f32>, 8>;
    var hi: array<vec4<f32>, 8>;
    for (var r = 0u; r < 8u; r++) {
        lo[r] = b_lo;
        hi[r] = b_hi;
    }
    for (var i = 0u; i < in_dim; i++) {
        let wl = vec4<f32>(params[w[0] + i], params[w[1] + i], params[w[2] + i], params[w[3] + i]);
        let wh = vec4<f32>(params[w[4] + i], params[w[5] + i], params[w[6] + i], params[w[7] + i]);
        for (var r = 0u; r < 8u; r++) {
            let xv = x[xr[r] + i];
            lo[r] += xv * wl;
            hi[r] += xv * wh;
        }
    }

    let out_dim = dims.out_dim;
    for (var r = 0u; r < 8u; r++) {
        let n = n0 + r;
        if (n < dims.rows_per_agent) {
            let out = (row0 + n) * out_dim + o0;
            let v = activate(lo[r]);
            y[out] = v.x;
            if (o0 + 1u < out_dim) { y[out + 1u] = v.y; }
            if (o0 + 2u < out_dim) { y[out + 2u] = v.z; }
            if (o0 + 3u < out_dim) { y[out + 3u] = v.w; }
            let u = activate(hi[r]);
            if (o0 + 4u < out_dim) { y[out + 4u] = u.x; }
            if (o0 + 5u < out_dim) { y[out + 5u] = u.y; }
            if (o0 + 6u < out_dim) { y[out + 6u] = u.z; }
            if (o0 + 7u < out_dim) { y[out + 7u] = u.w; }
        }
    }
}
