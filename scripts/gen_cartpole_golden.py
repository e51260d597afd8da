#!/usr/bin/env python3
"""Record golden CartPole-v1 trajectories from Gymnasium for the Rust replay test.

Writes JSON with a top-level `trajectories` list. Each trajectory has
`resets` ({step, state64}: the float64 internal state right after each reset,
as four decimal strings that round-trip exactly, at the index of the first
step of that episode), `actions`, and per step
`obs` (float32 after the step; the terminal observation when the episode
ended there), `reward`, `terminated`, `truncated`. The environment is reset
after every terminated or truncated step.

Two policies: seeded uniform random actions (short episodes, many
terminations) and a linear balancing controller (episodes reach the
500-step truncation).

Usage: python3 scripts/gen_cartpole_golden.py [OUT.json]
       (default tests/data/cartpole_golden.json)
"""

import json
import sys

import gymnasium as gym
import numpy as np

ENV_ID = "CartPole-v1"


def random_policy(seed):
    rng = np.random.default_rng(seed)
    return lambda obs: int(rng.integers(2))


def balancing_policy(_seed):
    # Push towards where the pole falls, with a little cart centering so the
    # cart stays inside +-2.4 for 500 steps.
    def act(obs):
        x, x_dot, theta, theta_dot = (float(v) for v in obs)
        return int(theta + 0.5 * theta_dot + 0.05 * x + 0.1 * x_dot > 0.0)

    return act


def state64(env):
    # repr of a float64 round-trips. It is written as a string because JSON
    # readers need not parse numbers to the nearest double (serde_json's
    # default parser can be one ulp off), and one ulp in the start state grows
    # to about 5e-2 over a 500-step open-loop replay.
    return [repr(float(v)) for v in env.unwrapped.state]


def obs32(obs):
    # Shortest decimal that reads back as the same float32.
    return [float(str(np.float32(v))) for v in obs]


def record(policy_name, make_policy, seed, num_steps):
    env = gym.make(ENV_ID)
    policy = make_policy(seed)
    obs, _ = env.reset(seed=seed)
    trajectory = {
        "policy": policy_name,
        "seed": seed,
        "resets": [{"step": 0, "state64": state64(env)}],
        "actions": [],
        "obs": [],
        "reward": [],
        "terminated": [],
        "truncated": [],
    }
    for step in range(num_steps):
        action = policy(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        trajectory["actions"].append(action)
        trajectory["obs"].append(obs32(obs))
        trajectory["reward"].append(float(reward))
        trajectory["terminated"].append(bool(terminated))
        trajectory["truncated"].append(bool(truncated))
        if (terminated or truncated) and step + 1 < num_steps:
            obs, _ = env.reset()
            trajectory["resets"].append({"step": step + 1, "state64": state64(env)})
    env.close()
    return trajectory


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else "tests/data/cartpole_golden.json"
    trajectories = [record("random", random_policy, seed, 300) for seed in (1, 2, 3, 4)]
    trajectories += [record("balancing", balancing_policy, seed, 1100) for seed in (5, 6)]
    golden = {
        "env_id": ENV_ID,
        "gymnasium_version": gym.__version__,
        "numpy_version": np.__version__,
        "max_episode_steps": gym.spec(ENV_ID).max_episode_steps,
        "trajectories": trajectories,
    }
    with open(out_path, "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")
    truncations = sum(sum(t["truncated"]) for t in trajectories)
    terminations = sum(sum(t["terminated"]) for t in trajectories)
    print(f"{out_path}: {len(trajectories)} trajectories, "
          f"{terminations} terminations, {truncations} truncations")


if __name__ == "__main__":
    main()
