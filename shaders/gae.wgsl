// gae: generalized advantage estimation over a rollout, per (agent, env)
// sequence, with termination and truncation told apart:
//   terminated[t]: next value 0, and the recursion stops at the boundary;
//   truncated[t]:  next value V(final observation before auto-reset), and the
//                  recursion stops at the boundary;
//   otherwise:     next value V(s[t+1]) (last_values after the final step).
//   delta[t] = r[t] + gamma * next_value - V(s[t])
//   adv[t]   = delta[t] + gamma * lambda * (1 - done[t]) * adv[t+1],  adv[T] = 0
//   returns  = adv + V.
// Rollout tensors are [T][P][N]; records are [T][P][N][RECORD] with field 1 the
// value (read), field 2 the advantage and field 3 the return (written).
// flags: bit 0 terminated, bit 1 truncated.
//
// Bindings (group 0): 0 uniform Dims, 1 rewards, 2 flags (u32), 3 final_values
//   (V of the final observation where truncated), 4 last_values [P][N],
//   5 records (read-write).
// gae_sequential: one invocation per sequence, a reverse loop over T.
// gae_scan: one 256-lane workgroup per sequence; chunks of 256 steps from the
//   end, each an associative suffix scan of the affine maps x -> delta + c * x
//   (Hillis-Steele, in workgroup memory), for long T and few sequences.
// The step map itself is gae_map.wgsl's.
// CPU reference: ops::gae::gae_cpu.

struct Dims {
    num_steps: u32,
    sequences: u32,
    gamma: f32,
    lambda: f32,
}

const RECORD: u32 = 5u;
const TERMINATED: u32 = 1u;
const TRUNCATED: u32 = 2u;

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> rewards: array<f32>;
@group(0) @binding(2) var<storage, read> flags: array<u32>;
@group(0) @binding(3) var<storage, read> final_values: array<f32>;
@group(0) @binding(4) var<storage, read> last_values: array<f32>;
@group(0) @binding(5) var<storage, read_write> records: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;

// The affine map of step t of sequence s: adv[t] = delta + c * adv[t+1].
fn step_map(t: u32, s: u32) -> vec2<f32> {
    let i = t * dims.sequences + s;
    return gae_map(i, i + dims.sequences, t + 1u < dims.num_steps, last_values[s],
                   dims.gamma, dims.lambda);
}

fn store(t: u32, s: u32, adv: f32) {
    let i = t * dims.sequences + s;
    records[i * RECORD + 2u] = adv;
    records[i * RECORD + 3u] = adv + records[i * RECORD + 1u];
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn gae_sequential(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(num_workgroups) groups: vec3<u32>) {
    let s = gid.x + gid.y * groups.x * WORKGROUP_SIZE;
    if (s >= dims.sequences) {
        return;
    }
    var adv = 0.0;
    for (var k = 0u; k < dims.num_steps; k++) {
        let t = dims.num_steps - 1u - k;
        let m = step_map(t, s);
        adv = m.x + m.y * adv;
        store(t, s, adv);
    }
}

const SCAN_LANES: u32 = 256u;
var<workgroup> maps: array<vec2<f32>, 256>;
var<workgroup> carry_in: f32;

@compute @workgroup_size(256)
fn gae_scan(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(local_invocation_index) lane: u32,
            @builtin(num_workgroups) groups: vec3<u32>) {
    let s = wid.x + wid.y * groups.x;
    // Uniform per workgroup: out-of-range groups run the loop but store nothing.
    let in_range = s < dims.sequences;
    let seq = min(s, dims.sequences - 1u);
    if (lane == 0u) {
        carry_in = 0.0;
    }
    let chunks = (dims.num_steps + SCAN_LANES - 1u) / SCAN_LANES;
    for (var c = 0u; c < chunks; c++) {
        // This chunk covers t in [start, end), processed after the chunk above it.
        let end = dims.num_steps - c * SCAN_LANES;
        let start = select(0u, end - SCAN_LANES, end > SCAN_LANES);
        let len = end - start;
        let t = start + lane;
        var m = vec2<f32>(0.0, 1.0); // identity map past the chunk's end
        if (lane < len) {
            m = step_map(t, seq);
        }
        maps[lane] = m;
        workgroupBarrier();
        // Suffix scan: maps[l] becomes the composition maps[l] ∘ maps[l+1] ∘ ... ∘ maps[len-1].
        for (var offset = 1u; offset < SCAN_LANES; offset = offset * 2u) {
            var composed = maps[lane];
            if (lane + offset < SCAN_LANES) {
                let next = maps[lane + offset];
                composed = vec2<f32>(composed.x + composed.y * next.x, composed.y * next.y);
            }
            workgroupBarrier();
            maps[lane] = composed;
            workgroupBarrier();
        }
        let incoming = carry_in;
        let adv = maps[lane].x + maps[lane].y * incoming;
        if (in_range && lane < len) {
            store(t, seq, adv);
        }
        workgroupBarrier();
        if (lane == 0u) {
            carry_in = adv;
        }
        workgroupBarrier();
    }
}
