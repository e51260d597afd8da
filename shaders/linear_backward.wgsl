// linear_backward: gradients of y = act(x · Wᵀ + b), per agent.
//
// dz = dy * (1 - y²) when activation is tanh (y is the layer's output), else dy.
// linear_backward_data:    dx[r][i] = Σ_o dz[r][o] · W_p[o][i]   (p = agent of row r)
// linear_backward_weights: dW_p[o][i] = Σ_n dz[p,n][o] · x[p,n][i], db_p[o] = Σ_n dz[p,n][o],
//   summed over the agent's rows n = 0, 1, ... in that fixed order (deterministic,
//   no atomics), written (not added) at grads[p * param_stride + w_offset / b_offset].
//   The bias is handled as an extra input column whose x is 1.
//
// Layout and Dims as in linear_forward.wgsl.
// Bindings (group 0): 0 uniform Dims, 1 x [rows][in_dim], 2 params, 3 y [rows][out_dim],
//   4 dy [rows][out_dim], 5 dx [rows][in_dim] (write, data pass),
//   6 grads [num_agents][param_stride] (write, weights pass).
// Dispatch: data pass, one invocation per 4-row x 4-input block, 1-D workgroups of
//   WORKGROUP_SIZE; weights pass, one 64-lane workgroup per (agent, 4-output x
//   4-column block) over in_dim + 1 columns. Grids fold into (x, y) when large.
// CPU reference: ops::linear::linear_backward_cpu.

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
@group(0) @binding(3) var<storage, read> y: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read_write> grads: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;

// dz at four element indices of the dy / y arrays.
fn dz4(at0: u32, at1: u32, at2: u32, at3: u32) -> vec4<f32> {
    let g = vec4<f32>(dy[at0], dy[at1], dy[at2], dy[at3]);
    if (dims.activation == 1u) {
        let v = vec4<f32>(y[at0], y[at1], y[at2], y[at3]);
        return g * (1.0 - v * v);
    }
    return g;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn linear_backward_data(@builtin(global_invocation_id) gid: vec3<u32>,
                        @builtin(num_workgroups) groups: vec3<u32>) {
    let id = gid.x + gid.y * groups.x * WORKGROUP_SIZE;
    let in_blocks = (dims.in_dim + 3u) / 4u;
    let row_blocks = (dims.rows_per_agent + 3u) / 4u;
    if (id >= in_blocks * row_blocks * dims.num_agents) {
        return;
    }
    let ib = id % in_blocks;
    let agent_block = id / in_blocks;
    let p = agent_block / row_blocks;
    let n0 = (agent_block % row_blocks) * 4u;
    let i0 = ib * 4u;

    let in_dim = dims.in_dim;
    let out_dim = dims.out_dim;
    let last_i = in_dim - 1u;
    let last_n = dims.rows_per_agent - 1u;
    let wbase = p * dims.param_stride + dims.w_offset;
    let ia = min(i0, last_i);
    let ib1 = min(i0 + 1u, last_i);
    let ic = min(i0 + 2u, last_i);
    let id3 = min(i0 + 3u, last_i);
    let row0 = p * dims.rows_per_agent;
    let r0 = (row0 + min(n0, last_n)) * out_dim;
    let r1 = (row0 + min(n0 + 1u, last_n)) * out_dim;
    let r2 = (row0 + min(n0 + 2u, last_n)) * out_dim;
    let r3 = (row0 + min(n0 + 3u, last_n)) * out_dim;

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var o = 0u; o < out_dim; o++) {
        let wrow = wbase + o * in_dim;
        let w = vec4<f32>(params[wrow + ia], params[wrow + ib1], params[wrow + ic], params[wrow + id3]);
        let g = dz4(r0 + o, r1 + o, r2 + o, r3 + o);
        acc0 += g.x * w;
        acc1 += g.y * w;
        acc2 += g.z * w;
        acc3 += g.w * w;
    }

    let rows = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var rr = 0u; rr < 4u; rr++) {
        let n = n0 + rr;
        if (n < dims.rows_per_agent) {
            let out = (row0 + n) * in_dim + i0;
            let v = rows[rr];
            dx[out] = v.x;
            if (i0 + 1u < in_dim) { dx[out + 1u] = v.y; }
            if (i0 + 2u < in_dim) { dx[out + 2u] = v.z; }
            if (i0 + 3u < in_dim) { dx[out + 3u] = v.w; }
        }
    }
}

// Weights pass: one workgroup of LANES lanes per (agent, 4-output x 4-column block).
// Lane l sums rows n = l, l + LANES, ... in order; the lanes' partial sums are then
// added by a fixed tree in workgroup memory, so the result is deterministic.
const LANES: u32 = 64u;
var<workgroup> partial: array<vec4<f32>, 256>; // [LANES][4 outputs], 4 KiB

@compute @workgroup_size(64)
fn linear_backward_weights(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(local_invocation_index) lane: u32,
                           @builtin(num_workgroups) groups: vec3<u32>) {
    let block = wid.x + wid.y * groups.x;
    // Columns 0..in_dim are inputs, column in_dim is the bias (x = 1).
    let cols = dims.in_dim + 1u;
    let col_blocks = (cols + 3u) / 4u;
    let out_blocks = (dims.out_dim + 3u) / 4u;
    let per_agent = col_blocks * out_blocks;
    // Uniform across the workgroup, so the barriers below stay in uniform control flow.
    let in_range = block < per_agent * dims.num_agents;
    let p = select(0u, block / per_agent, in_range);
    let local = block % per_agent;
    let o0 = (local / col_blocks) * 4u;
    let c0 = (local % col_blocks) * 4u;

    let in_dim = dims.in_dim;
    let out_dim = dims.out_dim;
    let last_o = out_dim - 1u;
    let oa = min(o0, last_o);
    let ob = min(o0 + 1u, last_o);
    let oc = min(o0 + 2u, last_o);
    let od = min(o0 + 3u, last_o);
    // Input columns clamped into x; the bias column reads 1 instead.
    let last_i = in_dim - 1u;
    let ca = min(c0, last_i);
    let cb = min(c0 + 1u, last_i);
    let cc = min(c0 + 2u, last_i);
    let cd = min(c0 + 3u, last_i);
    let is_bias = vec4<bool>(c0 == in_dim, c0 + 1u == in_dim, c0 + 2u == in_dim, c0 + 3u == in_dim);

    var acc_a = vec4<f32>(0.0);
    var acc_b = vec4<f32>(0.0);
    var acc_c = vec4<f32>(0.0);
    var acc_d = vec4<f32>(0.0);
    let row0 = p * dims.rows_per_agent;
    let rows = select(0u, dims.rows_per_agent, in_range);
    for (var n = lane; n < rows; n += LANES) {
        let r = row0 + n;
        let xr = r * in_dim;
        let xv = select(vec4<f32>(x[xr + ca], x[xr + cb], x[xr + cc], x[xr + cd]), vec4<f32>(1.0), is_bias);
        let g = dz4(r * out_dim + oa, r * out_dim + ob, r * out_dim + oc, r * out_dim + od);
        acc_a += g.x * xv;
        acc_b += g.y * xv;
        acc_c += g.z * xv;
        acc_d += g.w * xv;
    }
    partial[lane * 4u] = acc_a;
    partial[lane * 4u + 1u] = acc_b;
    partial[lane * 4u + 2u] = acc_c;
    partial[lane * 4u + 3u] = acc_d;
    workgroupBarrier();
    for (var stride = LANES / 2u; stride > 0u; stride = stride / 2u) {
        if (lane < stride) {
            for (var k = 0u; k < 4u; k++) {
                partial[lane * 4u + k] += partial[(lane + stride) * 4u + k];
            }
        }
        workgroupBarrier();
    }

    // Lanes 0..15 each store one (output, column) of the block.
    let oo = lane / 4u;
    let ci = lane % 4u;
    let o = o0 + oo;
    let c = c0 + ci;
    if (in_range && lane < 16u && o < out_dim) {
        let v = partial[oo];
        let value = select(select(select(v.w, v.z, ci == 2u), v.y, ci == 1u), v.x, ci == 0u);
        let base = p * dims.param_stride;
        if (c < in_dim) {
            grads[base + dims.w_offset + o * in_dim + c] = value;
        } else if (c == in_dim) {
            grads[base + dims.b_offset + o] = value;
        }
    }
}
