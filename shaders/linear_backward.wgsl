// linear_backward: gradients of y = act(x · Wᵀ + b), per agent.
//
// dz = dy * (1 - y²) when activation is tanh (y is the layer's output), else dy.
// linear_backward_data:    dx[r][i] = Σ_o dz[r][o] · W_p[o][i]   (p = agent of row r)
// linear_backward_weights + linear_grad_reduce:
//   dW_p[o][i] = Σ_n dz[p,n][o] · x[p,n][i], db_p[o] = Σ_n dz[p,n][o]: each chunk of
//   chunk_rows rows is summed in order into partials, then the chunks are summed in
//   order (deterministic, no atomics) and written (not added) at
//   grads[p * param_stride + w_offset / b_offset]. The bias is an extra input column
//   whose x is 1.
//
// Layout as in linear_forward.wgsl; Dims adds the row chunking.
// Bindings (group 0): 0 uniform Dims, 1 x [rows][in_dim], 2 params, 3 y [rows][out_dim],
//   4 dy [rows][out_dim], 5 dx [rows][in_dim] (write, data pass),
//   6 grads [num_agents][param_stride] (write, reduce pass),
//   7 partials [chunks][num_agents][out_dim * (in_dim + 1)] (weights pass writes,
//   reduce pass reads).
// Dispatch: data pass, one invocation per 4-row x 4-input block (8x8: 8 x 8);
//   weights pass, one per (chunk, agent, 4-output x 4-column block) over
//   in_dim + 1 columns (8x8: 8 x 8); reduce pass, one per (agent, parameter of
//   the layer). The 8x8 entry points sum in the same order as the 4x4 ones
//   (outputs ascending, rows ascending), so they give the same values. 1-D workgroups of
//   WORKGROUP_SIZE, grids folded into (x, y) when large.
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
    chunk_rows: u32,
    chunks: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(3) var<storage, read> y: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read_write> grads: array<f32>;
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;

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

// Weights pass: one invocation per (row chunk, agent, 4-output x 4-column block)
// sums its chunk's rows in order into partials[(chunk * P + p) * layer_size + e],
// e = o * in_dim + i for W and out_dim * in_dim + o for b. No workgroup memory
// or barriers: CPU adapters run those slowly, and chunks keep every backend busy.
@compute @workgroup_size(WORKGROUP_SIZE)
fn linear_backward_weights(@builtin(global_invocation_id) gid: vec3<u32>,
                           @builtin(num_workgroups) groups: vec3<u32>) {
    let id = gid.x + gid.y * groups.x * WORKGROUP_SIZE;
    // Columns 0..in_dim are inputs, column in_dim is the bias (x = 1).
    let cols = dims.in_dim + 1u;
    let col_blocks = (cols + 3u) / 4u;
    let out_blocks = (dims.out_dim + 3u) / 4u;
    let per_agent = col_blocks * out_blocks;
    if (id >= per_agent * dims.num_agents * dims.chunks) {
        return;
    }
    let local = id % per_agent;
    let p = (id / per_agent) % dims.num_agents;
    let chunk = id / (per_agent * dims.num_agents);
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
    let n_begin = chunk * dims.chunk_rows;
    let n_end = min(n_begin + dims.chunk_rows, dims.rows_per_agent);
    for (var n = n_begin; n < n_end; n++) {
        let r = row0 + n;
        let xr = r * in_dim;
        let xv = select(vec4<f32>(x[xr + ca], x[xr + cb], x[xr + cc], x[xr + cd]), vec4<f32>(1.0), is_bias);
        let g = dz4(r * out_dim + oa, r * out_dim + ob, r * out_dim + oc, r * out_dim + od);
        acc_a += g.x * xv;
        acc_b += g.y * xv;
        acc_c += g.z * xv;
        acc_d += g.w * xv;
    }

    let layer_size = out_dim * cols;
    let base = (chunk * dims.num_agents + p) * layer_size;
    let accs = array<vec4<f32>, 4>(acc_a, acc_b, acc_c, acc_d);
    for (var oo = 0u; oo < 4u; oo++) {
        let o = o0 + oo;
        if (o < out_dim) {
            let v = accs[oo];
            let vals = array<f32, 4>(v.x, v.y, v.z, v.w);
            for (var k = 0u; k < 4u; k++) {
                let c = c0 + k;
                if (c < in_dim) {
                    partials[base + o * in_dim + c] = vals[k];
                } else if (c == in_dim) {
                    partials[base + out_dim * in_dim + o] = vals[k];
                }
            }
        }
    }
}

// Reduce pass: grads = the sum of the chunks' partials, chunk 0 first (fixed
// order: deterministic), written at the layer's W and b slots of each agent.
@compute @workgroup_size(WORKGROUP_SIZE)
fn linear_grad_reduce(@builtin(global_invocation_id) gid: vec3<u32>,
                      @builtin(num_workgroups) groups: vec3<u32>) {
    let id = gid.x + gid.y * groups.x * WORKGROUP_SIZE;
    let weights = dims.out_dim * dims.in_dim;
    let layer_size = weights + dims.out_dim;
    if (id >= layer_size * dims.num_agents) {
        return;
    }
    let p = id / layer_size;
    let e = id % layer_size;
    var sum = 0.0;
    for (var chunk = 0u; chunk < dims.chunks; chunk++) {
        sum += partials[(chunk * dims.num_agents + p) * layer_size + e];
    }
    let slot = select(dims.b_offset + (e - weights), dims.w_offset + e, e < weights);
    grads[p * dims.param_stride + slot] = sum;
}

// dz of 8 rows (element indices at[k] + o) at output o, as dz4 computes it.
fn dz8(at: array<u32, 8>, o: u32) -> array<f32, 8> {
    var g: array<f32, 8>;
    for (var k = 0u; k < 8u; k++) {
        g[k] = dy[at[k] + o];
        if (dims.activation == 1u) {
            let v = y[at[k] + o];
            g[k] = g[k] * (1.0 - v * v);
        }
    }
    return g;
}

// Data pass, 8 rows x 8 inputs per invocation.
@compute @workgroup_size(WORKGROUP_SIZE)
fn linear_backward_data_8x8(@builtin(global_invocation_id) gid: vec3<u32>,
                            @builtin(num_workgroups) groups: vec3<u32>) {
    let id = gid.x + gid.y * groups.x * WORKGROUP_SIZE;
    let in_blocks = (dims.in_dim + 7u) / 8u;
    let row_blocks = (dims.rows_per_agent + 7u) / 8u;
    if (id >= in_blocks * row_blocks * dims.num_agents) {
        return;
    }
    let ib = id % in_blocks;
    let agent_block = id / in_blocks;
    let p = agent_block / row_blocks;
    let n0 = (agent_block % row_blocks) * 8u;
    let i0 = ib * 8u;

    let in_dim = dims.in_dim;
    let out_dim = dims.out_dim;
    let last_i = in_dim - 1u;
    let last_n = dims.rows_per_agent - 1u;
    let wbase = p * dims.param_stride + dims.w_offset;
    let row0 = p * dims.rows_per_agent;
    var col: array<u32, 8>;
    var at: array<u32, 8>;
    for (var k = 0u; k < 8u; k++) {
        col[k] = min(i0 + k, last_i);
        at[k] = (row0 + min(n0 + k, last_n)) * out_dim;
    }
    var lo: array<vec4<f32>, 8>;
    var hi: array<vec4<f32>, 8>;
    for (var r = 0u; r < 8u; r++) {
        lo[r] = vec4<f32>(0.0);
        hi[r] = vec4<f32>(0.0);
    }
    for (var o = 0u; o < out_dim; o++) {
        let wrow = wbase + o * in_dim;
        let wl = vec4<f32>(params[wrow + col[0]], params[wrow + col[1]], params[wrow + col[2]], params[wrow + col[3]]);
        let wh = vec4<f32>(params[wrow + col[4]], params[wrow + col[5]], params[wrow + col[6]], params[wrow + col[7]]);
        let g = dz8(at, o);
        for (var r = 0u; r < 8u; r++) {
            lo[r] += g[r] * wl;
            hi[r] += g[r] * wh;
        }
    }

    for (var r = 0u; r < 8u; r++) {
        let n = n0 + r;
        if (n < dims.rows_per_agent) {
            let out = (row0 + n) * in_dim + i0;
            let v = lo[r];
            dx[out] = v.x;
            if (i0 + 1u < in_dim) { dx[out + 1u] = v.y; }
            if (i0 + 2u < in_dim) { dx[out + 2u] = v.z; }
            if (i0 + 3u < in_dim) { dx[out + 3u] = v.w; }
            let u = hi[r];
            if (i0 + 4u < in_dim) { dx[out + 4u] = u.x; }
            if (i0 + 5u < in_dim) { dx[out + 5u] = u.y; }
            if (i0 + 6u < in_dim) { dx[out + 6u] = u.z; }
            if (i0 + 7u < in_dim) { dx[out + 7u] = u.w; }
        }
    }
}

// Weights pass, 8 outputs x 8 columns per invocation (as
// linear_backward_weights: its chunk's rows in order into partials).
@compute @workgroup_size(WORKGROUP_SIZE)
fn linear_backward_weights_8x8(@builtin(global_invocation_id) gid: vec3<u32>,
                               @builtin(num_workgroups) groups: vec3<u32>) {
    let id = gid.x + gid.y * groups.x * WORKGROUP_SIZE;
    // Columns 0..in_dim are inputs, column in_dim is the bias (x = 1).
    let cols = dims.in_dim + 1u;
    let col_blocks = (cols + 7u) / 8u;
    let out_blocks = (dims.out_dim + 7u) / 8u;
    let per_agent = col_blocks * out_blocks;
    if (id >= per_agent * dims.num_agents * dims.chunks) {
        return;
    }
    let local = id % per_agent;
    let p = (id / per_agent) % dims.num_agents;
    let chunk = id / (per_agent * dims.num_agents);
    let o0 = (local / col_blocks) * 8u;
    let c0 = (local % col_blocks) * 8u;

    let in_dim = dims.in_dim;
    let out_dim = dims.out_dim;
    let last_o = out_dim - 1u;
    let last_i = in_dim - 1u;
    var oo: array<u32, 8>;
    var cc: array<u32, 8>;
    for (var k = 0u; k < 8u; k++) {
        oo[k] = min(o0 + k, last_o);
        cc[k] = min(c0 + k, last_i);
    }
    // Input columns clamped into x; the bias column reads 1 instead.
    let bias_lo = vec4<bool>(c0 == in_dim, c0 + 1u == in_dim, c0 + 2u == in_dim, c0 + 3u == in_dim);
    let bias_hi = vec4<bool>(c0 + 4u == in_dim, c0 + 5u == in_dim, c0 + 6u == in_dim, c0 + 7u == in_dim);

    var lo: array<vec4<f32>, 8>;
    var hi: array<vec4<f32>, 8>;
    for (var k = 0u; k < 8u; k++) {
        lo[k] = vec4<f32>(0.0);
        hi[k] = vec4<f32>(0.0);
    }
    let row0 = p * dims.rows_per_agent;
    let n_begin = chunk * dims.chunk_rows;
    let n_end = min(n_begin + dims.chunk_rows, dims.rows_per_agent);
    for (var n = n_begin; n < n_end; n++) {
        let r = row0 + n;
        let xr = r * in_dim;
        let xl = select(vec4<f32>(x[xr + cc[0]], x[xr + cc[1]], x[xr + cc[2]], x[xr + cc[3]]), vec4<f32>(1.0), bias_lo);
        let xh = select(vec4<f32>(x[xr + cc[4]], x[xr + cc[5]], x[xr + cc[6]], x[xr + cc[7]]), vec4<f32>(1.0), bias_hi);
        var at: array<u32, 8>;
        for (var k = 0u; k < 8u; k++) {
            at[k] = r * out_dim + oo[k];
        }
        let g = dz8(at, 0u);
        for (var k = 0u; k < 8u; k++) {
            lo[k] += g[k] * xl;
            hi[k] += g[k] * xh;
        }
    }

    let layer_size = out_dim * cols;
    let base = (chunk * dims.num_agents + p) * layer_size;
    for (var k = 0u; k < 8u; k++) {
        let o = o0 + k;
        if (o < out_dim) {
            let vals = array<f32, 8>(lo[k].x, lo[k].y, lo[k].z, lo[k].w, hi[k].x, hi[k].y, hi[k].z, hi[k].w);
            for (var j = 0u; j < 8u; j++) {
                let c = c0 + j;
                if (c < in_dim) {
                    partials[base + o * in_dim + c] = vals[j];
                } else if (c == in_dim) {
                    partials[base + out_dim * in_dim + o] = vals[j];
                }
            }
        }
    }
}
