// env_cartpole: CartPole-v1 as a device env module (library, no entry point).
// A device env is this seam: the rollout kernels include the module after
// rng.wgsl and call only what it defines here:
//   ENV_OBS_DIM                     observation size
//   EnvParams                       one env's constants (read-only, per env)
//   EnvLimits                       constants shared by all envs (reset key, limits)
//   EnvState                        one env's evolving state (read-write, per env)
//   env_observe(state)              the observation the policy sees
//   env_step(&state, action, params, limits, env) -> EnvStep
//                                   one step with auto-reset: reward, flags
//                                   (ENV_TERMINATED | ENV_TRUNCATED), the
//                                   observation before any reset, and the
//                                   finished episode's return and length
//                                   (length 0 where none ended).
// Used by cartpole.wgsl (one step per dispatch) and by the fused rollout
// (T steps per dispatch, rollout_fused.wgsl), so both run the same operations.
//
// Gymnasium's Euler step in f32 with the host's operation order and the env's
// own physics, termination when |x| > x_threshold or |theta| > theta_threshold,
// truncation once max_episode_steps steps have elapsed, reward 1 every step,
// and on either end an auto-reset to U[-reset_bound, reset_bound) drawn from a
// PCG hash keyed by (seed, env, episode index, component).
// CPU reference: env::gpu_cartpole::cartpole_step_cpu.

const ENV_OBS_DIM: u32 = 4u;
const ENV_TERMINATED: u32 = 1u;
const ENV_TRUNCATED: u32 = 2u;

struct EnvLimits {
    max_episode_steps: u32,
    seed_lo: u32,
    seed_hi: u32,
    x_threshold: f32,
    theta_threshold: f32,
    reset_bound: f32,
}

// Gymnasium's constants of one env with its precomputed sums and products;
// push_force = polarity * force_mag is the force of action 1.
struct EnvParams {
    gravity: f32,
    masspole: f32,
    total_mass: f32,
    length: f32,
    polemass_length: f32,
    push_force: f32,
    tau: f32,
    pad: f32,
}

struct EnvState {
    x: f32,
    x_dot: f32,
    theta: f32,
    theta_dot: f32,
    episode_return: f32,
    elapsed_steps: u32,
    episodes_started: u32,
    pad: u32,
}

struct EnvStep {
    reward: f32,
    flags: u32,
    episode_return: f32,
    episode_length: f32,
    final_obs: array<f32, ENV_OBS_DIM>,
}

fn env_observe(s: EnvState) -> array<f32, ENV_OBS_DIM> {
    return array<f32, ENV_OBS_DIM>(s.x, s.x_dot, s.theta, s.theta_dot);
}

// Component `component` of env `env`'s reset state for episode `episode`:
// reset_bound * (2u - 1) with u in [0, 1) on a 2^-24 grid; 2u - 1 is exact
// and the one rounding keeps the result in [-reset_bound, reset_bound).
fn env_reset_draw(limits: EnvLimits, env: u32, episode: u32, component: u32) -> f32 {
    var h = pcg_hash(env);
    h = pcg_hash(h ^ episode);
    h = pcg_hash(h ^ component);
    h = pcg_hash(h ^ limits.seed_hi);
    h = pcg_hash(h ^ limits.seed_lo);
    let u = f32(h >> 8u) * (1.0 / 16777216.0);
    return limits.reset_bound * (2.0 * u - 1.0);
}

fn env_step(state: ptr<function, EnvState>, action: u32, p: EnvParams, limits: EnvLimits,
            env: u32) -> EnvStep {
    let s = *state;
    // Gymnasium's step, same operations in the same order as CartPole::integrate.
    let force = select(-p.push_force, p.push_force, action == 1u);
    let costheta = cos(s.theta);
    let sintheta = sin(s.theta);
    let temp = (force + p.polemass_length * (s.theta_dot * s.theta_dot) * sintheta)
        / p.total_mass;
    let thetaacc = (p.gravity * sintheta - costheta * temp)
        / (p.length * (4.0 / 3.0 - p.masspole * (costheta * costheta) / p.total_mass));
    let xacc = temp - p.polemass_length * thetaacc * costheta / p.total_mass;
    let x = s.x + p.tau * s.x_dot;
    let x_dot = s.x_dot + p.tau * xacc;
    let theta = s.theta + p.tau * s.theta_dot;
    let theta_dot = s.theta_dot + p.tau * thetaacc;

    let steps = select(s.elapsed_steps + 1u, s.elapsed_steps, s.elapsed_steps == 0xffffffffu);
    let fell = x < -limits.x_threshold || x > limits.x_threshold
        || theta < -limits.theta_threshold || theta > limits.theta_threshold;
    let cut = steps >= limits.max_episode_steps;
    let episode_return = s.episode_return + 1.0;

    var out: EnvStep;
    out.reward = 1.0;
    out.flags = select(0u, ENV_TERMINATED, fell) | select(0u, ENV_TRUNCATED, cut);
    out.final_obs = array<f32, ENV_OBS_DIM>(x, x_dot, theta, theta_dot);
    var next = s;
    if (fell || cut) {
        out.episode_return = episode_return;
        out.episode_length = f32(steps);
        let episode = s.episodes_started;
        next.x = env_reset_draw(limits, env, episode, 0u);
        next.x_dot = env_reset_draw(limits, env, episode, 1u);
        next.theta = env_reset_draw(limits, env, episode, 2u);
        next.theta_dot = env_reset_draw(limits, env, episode, 3u);
        next.episode_return = 0.0;
        next.elapsed_steps = 0u;
        next.episodes_started = episode + 1u;
    } else {
        out.episode_return = 0.0;
        out.episode_length = 0.0;
        next.x = x;
        next.x_dot = x_dot;
        next.theta = theta;
        next.theta_dot = theta_dot;
        next.episode_return = episode_return;
        next.elapsed_steps = steps;
    }
    *state = next;
    return out;
}
