// gather: copies one minibatch out of the rollout through a per-agent,
// per-epoch permutation. Minibatch row j of agent p takes the agent's batch
// row b = perm[epoch][p][minibatch * M + j], where b = t * N + n names step t
// and env n; in the rollout that is global row (t * P + p) * N + n.
//
// Bindings (group 0): 0 uniform Dims, 1 perm [epochs][P][B] (u32, read),
//   2 obs [T][P][N][obs_dim] (read), 3 records [T][P][N][RECORD] (read),
//   4 mb_obs [P][M][obs_dim] (write), 5 mb_records [P][M][RECORD] (write).
// Dispatch: one invocation per minibatch row (P * M), 1-D workgroups of
//   WORKGROUP_SIZE folded into (x, y) when large.
// CPU reference: ops::gather::minibatch_rows_cpu.

struct Dims {
    num_agents: u32,
    envs_per_agent: u32,
    minibatch_size: u32,
    obs_dim: u32,
    batch_per_agent: u32,
    epoch: u32,
    minibatch: u32,
    _pad: u32,
}

const RECORD: u32 = 5u;

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> perm: array<u32>;
@group(0) @binding(2) var<storage, read> obs: array<f32>;
@group(0) @binding(3) var<storage, read> records: array<f32>;
@group(0) @binding(4) var<storage, read_write> mb_obs: array<f32>;
@group(0) @binding(5) var<storage, read_write> mb_records: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;

@compute @workgroup_size(WORKGROUP_SIZE)
fn gather_minibatch(@builtin(global_invocation_id) gid: vec3<u32>,
                    @builtin(num_workgroups) groups: vec3<u32>) {
    let row = gid.x + gid.y * groups.x * WORKGROUP_SIZE;
    let m = dims.minibatch_size;
    if (row >= dims.num_agents * m) {
        return;
    }
    let p = row / m;
    let j = row % m;
    let b = perm[(dims.epoch * dims.num_agents + p) * dims.batch_per_agent + dims.minibatch * m + j];
    let n_env = dims.envs_per_agent;
    let src = ((b / n_env) * dims.num_agents + p) * n_env + b % n_env;
    for (var k = 0u; k < dims.obs_dim; k++) {
        mb_obs[row * dims.obs_dim + k] = obs[src * dims.obs_dim + k];
    }
    for (var k = 0u; k < RECORD; k++) {
        mb_records[row * RECORD + k] = records[src * RECORD + k];
    }
}
