// rollout_fused: steps t_begin..t_end of a whole PPO rollout of P × N device
// envs in one dispatch, one env per invocation (template; the host composes
// it with rollout_common.wgsl, rng.wgsl, a device env module such as
// env_cartpole.wgsl, and the generated functions actor_forward /
// critic_forward of the policy's MLP, see ppo::fused). Per env (row
// r = p*N + n, agent p) and step t, in order:
//   the observation env_observe(state) into obs[t][r];
//   the actor and critic forward with agent p's parameters (the layered
//   linear_forward's accumulation order: bias, then inputs ascending; tanh
//   hidden layers via exp(-2|z|));
//   the categorical sample and records[t][r] (sample_and_record);
//   env_step (auto-reset included) and its writes (step_and_record);
//   where truncated and not terminated, final_values[t][r] = V(final obs).
// After the last step the state goes back to states[r] and its observation
// to cur_obs[r].
//
// Bindings: rollout_common.wgsl.
// Dispatch: one invocation per env, 1-D workgroups of WORKGROUP_SIZE folded
//   into (x, y) when large; the host splits T into several dispatches where an
//   adapter caps the loop iterations of one invocation (llvmpipe).
// CPU reference: ppo::fused::fused_rollout_cpu, and the layered device
//   rollout it must equal (tests/fused_rollout.rs).

override WORKGROUP_SIZE: u32 = 64u;

@compute @workgroup_size(WORKGROUP_SIZE)
fn rollout_fused(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let r = gid.x + gid.y * groups.x * WORKGROUP_SIZE;
    if (r >= dims.rows) {
        return;
    }
    let base = (r / dims.envs_per_agent) * dims.param_stride;
    let p = physics[r];
    var s = states[r];
    for (var t = dims.t_begin; t < dims.t_end; t++) {
        let at = t * dims.rows + r;
        let x = env_observe(s);
        write_obs(at, x);
        let logits = actor_forward(base, x);
        let value = critic_forward(base, x);
        let action = sample_and_record(r, t, at, logits, value);
        let out = step_and_record(&s, r, at, action, p);
        if (needs_final_value(out.flags)) {
            final_values[at] = critic_forward(base, out.final_obs);
        }
    }
    finish_env(r, s);
}
