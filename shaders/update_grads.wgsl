// update_grads: the fused update's parameter gradients (the second of its
// dispatches per minibatch, after update_rows; ppo::fused_update).
//   dW_p[o][i] = Σ_m dz[p,m][o] · a[p,m][i],   db_p[o] = Σ_m dz[p,m][o]
// for every layer of both networks. One invocation computes one block of
// 8 outputs × 8 columns of one layer for one agent over all of the agent's
// minibatch rows m, in ascending order (deterministic, no atomics, no
// partials), with the bias as an extra input column whose a is 1; it writes
// (not adds) grads[p * param_stride + w_offset / b_offset]. A job table
// lists the blocks, so every parameter is written exactly once.
// Rows come from scratch [P * M][stride], written by update_rows: a layer's
// input activations at act_offset (the observations for the first layer)
// and the layer's output delta dz at dz_offset (already divided by M, as
// ppo_loss's output gradients are). Loads past a layer's width are clamped
// and their sums not written.
//
// Bindings (group 0): 0 uniform Dims, 1 jobs [jobs] (read), 2 scratch
//   [P * M][stride] (read), 3 grads [P][param_stride] (write).
// Dispatch: one invocation per (agent, job), 1-D workgroups of
//   WORKGROUP_SIZE, folded into (x, y) when large. The row loop runs M
//   iterations: the host keeps M under llvmpipe's loop cap.
// CPU reference: ops::linear::linear_backward_cpu through the reference
//   update (tests/update.rs), and the layered linear_backward.

struct Dims {
    minibatch_size: u32,
    jobs: u32,
    num_agents: u32,
    param_stride: u32,
    stride: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct Job {
    act_offset: u32,
    in_dim: u32,
    dz_offset: u32,
    out_dim: u32,
    w_offset: u32,
    b_offset: u32,
    o0: u32,
    i0: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> jobs: array<Job>;
@group(0) @binding(2) var<storage, read> scratch: array<f32>;
@group(0) @binding(3) var<storage, read_write> grads: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;

// Writes the sums of output o0 + o for columns i0 + 4 * half .. + 3.
fn put(job: Job, gbase: u32, o: u32, half: u32, acc: vec4<f32>) {
    let out = job.o0 + o;
    if (out >= job.out_dim) {
        return;
    }
    for (var c = 0u; c < 4u; c++) {
        let i = job.i0 + half * 4u + c;
        if (i < job.in_dim) {
            grads[gbase + job.w_offset + out * job.in_dim + i] = acc[c];
        } else if (i == job.in_dim) {
            grads[gbase + job.b_offset + out] = acc[c];
        }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn update_grads(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) groups: vec3<u32>) {
    let id = gid.x + gid.y * groups.x * WORKGROUP_SIZE;
    if (id >= dims.jobs * dims.num_agents) {
        return;
    }
    let agent = id / dims.jobs;
    let job = jobs[id % dims.jobs];

    // Column and output indices, clamped into the layer; the bias column
    // (i == in_dim) reads a 1.
    let last_i = job.in_dim - 1u;
    let last_o = job.out_dim - 1u;
    let ia = job.act_offset + min(vec4<u32>(job.i0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(last_i));
    let ib = job.act_offset + min(vec4<u32>(job.i0) + vec4<u32>(4u, 5u, 6u, 7u), vec4<u32>(last_i));
    let bias_a = (vec4<u32>(job.i0) + vec4<u32>(0u, 1u, 2u, 3u)) == vec4<u32>(job.in_dim);
    let bias_b = (vec4<u32>(job.i0) + vec4<u32>(4u, 5u, 6u, 7u)) == vec4<u32>(job.in_dim);
    let oa = job.dz_offset + min(vec4<u32>(job.o0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(last_o));
    let ob = job.dz_offset + min(vec4<u32>(job.o0) + vec4<u32>(4u, 5u, 6u, 7u), vec4<u32>(last_o));

    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    var b0 = vec4<f32>(0.0);
    var b1 = vec4<f32>(0.0);
    var b2 = vec4<f32>(0.0);
    var b3 = vec4<f32>(0.0);
    var b4 = vec4<f32>(0.0);
    var b5 = vec4<f32>(0.0);
    var b6 = vec4<f32>(0.0);
    var b7 = vec4<f32>(0.0);
    let ones = vec4<f32>(1.0);
    var row = agent * dims.minibatch_size * dims.stride;
    for (var m = 0u; m < dims.minibatch_size; m++) {
        let xa = select(vec4<f32>(scratch[row + ia.x], scratch[row + ia.y],
                                  scratch[row + ia.z], scratch[row + ia.w]), ones, bias_a);
        let xb = select(vec4<f32>(scratch[row + ib.x], scratch[row + ib.y],
                                  scratch[row + ib.z], scratch[row + ib.w]), ones, bias_b);
        let da = vec4<f32>(scratch[row + oa.x], scratch[row + oa.y],
                           scratch[row + oa.z], scratch[row + oa.w]);
        let db = vec4<f32>(scratch[row + ob.x], scratch[row + ob.y],
                           scratch[row + ob.z], scratch[row + ob.w]);
        a0 += da.x * xa;
        b0 += da.x * xb;
        a1 += da.y * xa;
        b1 += da.y * xb;
        a2 += da.z * xa;
        b2 += da.z * xb;
        a3 += da.w * xa;
        b3 += da.w * xb;
        a4 += db.x * xa;
        b4 += db.x * xb;
        a5 += db.y * xa;
        b5 += db.y * xb;
        a6 += db.z * xa;
        b6 += db.z * xb;
        a7 += db.w * xa;
        b7 += db.w * xb;
        row += dims.stride;
    }
    let gbase = agent * dims.param_stride;
    put(job, gbase, 0u, 0u, a0);
    put(job, gbase, 0u, 1u, b0);
    put(job, gbase, 1u, 0u, a1);
    put(job, gbase, 1u, 1u, b1);
    put(job, gbase, 2u, 0u, a2);
    put(job, gbase, 2u, 1u, b2);
    put(job, gbase, 3u, 0u, a3);
    put(job, gbase, 3u, 1u, b3);
    put(job, gbase, 4u, 0u, a4);
    put(job, gbase, 4u, 1u, b4);
    put(job, gbase, 5u, 0u, a5);
    put(job, gbase, 5u, 1u, b5);
    put(job, gbase, 6u, 0u, a6);
    put(job, gbase, 6u, 1u, b6);
    put(job, gbase, 7u, 0u, a7);
    put(job, gbase, 7u, 1u, b7);
}
