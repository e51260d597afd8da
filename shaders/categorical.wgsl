// categorical: the policy head at rollout time. For each row: a numerically
// stable log-softmax of the logits, an action (sampled by inverse CDF with a
// counter-based RNG keyed by (seed, iteration, step, row), or the argmax when
// greedy), its log-probability, and the row's value copied from the critic.
//
// Writes, for row r, record (record_offset + r) of the rollout records
// [rows][RECORD]: field 0 log-prob, field 1 value, field 4 action (as f32, exact below 2^24);
// and actions[r] (u32) for the host to read back.
//
// Bindings (group 0): 0 uniform Dims, 1 logits [rows][num_actions] (read),
//   2 values [rows] (read), 3 records (write), 4 actions [rows] u32 (write).
// Dispatch: one invocation per row, 1-D workgroups of WORKGROUP_SIZE, folded
//   into (x, y) when large.
// CPU reference: ops::categorical::categorical_sample_cpu.

struct Dims {
    rows: u32,
    num_actions: u32,
    greedy: u32,
    seed_lo: u32,
    seed_hi: u32,
    iteration: u32,
    step: u32,
    record_offset: u32,
}

const RECORD: u32 = 5u;

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> values: array<f32>;
@group(0) @binding(3) var<storage, read_write> records: array<f32>;
@group(0) @binding(4) var<storage, read_write> actions: array<u32>;

override WORKGROUP_SIZE: u32 = 64u;

// PCG hash (Jarzynski & Olano 2020): a good 32-bit mix, cheap on every backend.
fn pcg_hash(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// Uniform in [0, 1) from (seed, iteration, step, row): the same on every adapter.
fn uniform01(row: u32) -> f32 {
    var h = pcg_hash(row);
    h = pcg_hash(h ^ dims.step);
    h = pcg_hash(h ^ dims.iteration);
    h = pcg_hash(h ^ dims.seed_hi);
    h = pcg_hash(h ^ dims.seed_lo);
    return f32(h >> 8u) * (1.0 / 16777216.0);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn categorical_sample(@builtin(global_invocation_id) gid: vec3<u32>,
                      @builtin(num_workgroups) groups: vec3<u32>) {
    let r = gid.x + gid.y * groups.x * WORKGROUP_SIZE;
    if (r >= dims.rows) {
        return;
    }
    let a_count = dims.num_actions;
    let base = r * a_count;
    var best = 0u;
    var max_logit = logits[base];
    for (var i = 1u; i < a_count; i++) {
        let l = logits[base + i];
        if (l > max_logit) {
            max_logit = l;
            best = i;
        }
    }
    var sum = 0.0;
    for (var i = 0u; i < a_count; i++) {
        sum += exp(logits[base + i] - max_logit);
    }
    let log_norm = max_logit + log(sum);

    var action = best;
    if (dims.greedy == 0u) {
        let u = uniform01(r);
        var cumulative = 0.0;
        action = a_count - 1u;
        for (var i = 0u; i < a_count; i++) {
            cumulative += exp(logits[base + i] - log_norm);
            if (u < cumulative) {
                action = i;
                break;
            }
        }
    }
    let rec = (dims.record_offset + r) * RECORD;
    records[rec] = logits[base + action] - log_norm;
    records[rec + 1u] = values[r];
    records[rec + 4u] = f32(action);
    actions[r] = action;
}
