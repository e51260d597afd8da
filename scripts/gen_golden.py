#!/usr/bin/env python3
"""Record golden trajectories of Gymnasium's classic-control envs
(CartPole-v1, Acrobot-v1, MountainCar-v0, MountainCarContinuous-v0,
Pendulum-v1) for the Rust replay tests.

`env_id` names the env; each trajectory has `resets` ({step, state64}:
`env.unwrapped.state` right after each reset, as JSON numbers, which Python
writes with `repr` and so exactly), `actions` (integers, or lists of float32
values for continuous envs), and per step `obs` (float32, the terminal one
where the episode ended), `reward` (float64, exact), `terminated`,
`truncated`. The env is reset after every episode end.

Policies per env: seeded random actions (for the continuous envs drawn
beyond the action bounds, so Gymnasium's clipping is recorded), and scripted
controllers that balance CartPole to its 500-step truncation, reach the
goals, hit the walls or the speed limits.

Usage: python3 scripts/gen_golden.py [OUT_DIR]  (default tests/data)
Writes OUT_DIR/<name>_golden.json for each env.
"""

import json
import math
import os
import sys

import gymnasium as gym
import numpy as np


def discrete_random(n):
    def make(seed):
        rng = np.random.default_rng(seed)
        return lambda obs: int(rng.integers(n))

    return make


def continuous_random(low, high):
    def make(seed):
        rng = np.random.default_rng(seed)
        return lambda obs: [float(np.float32(rng.uniform(low, high)))]

    return make


def constant(action):
    return lambda seed: (lambda obs: action)


def cartpole_balancing(seed):
    # Push towards where the pole falls, with a little cart centering so the
    # cart stays inside +-2.4 for 500 steps.
    def act(obs):
        x, x_dot, theta, theta_dot = (float(v) for v in obs)
        return int(theta + 0.5 * theta_dot + 0.05 * x + 0.1 * x_dot > 0.0)

    return act


def acrobot_pump(seed):
    # Torque with the second link's angular velocity pumps energy in: the
    # tip rises above the bar in 65-125 steps.
    return lambda obs: 2 if obs[5] > 0.0 else 0


def car_pump(seed):
    # Push the way the car moves: reaches the goal in about 100 steps.
    return lambda obs: 2 if obs[1] >= 0.0 else 0


def car_continuous_pump(force):
    def make(seed):
        return lambda obs: [float(np.float32(force if obs[1] >= 0.0 else -force))]

    return make


def pendulum_swing(seed):
    # Pump energy with full torque, then a PD hold near the top.
    def act(obs):
        cos_th, sin_th, thdot = (float(v) for v in obs)
        th = math.atan2(sin_th, cos_th)
        if cos_th > 0.8:
            u = -(10.0 * th + 2.0 * thdot)
        else:
            u = 2.5 if thdot >= 0.0 else -2.5
        return [float(np.float32(u))]

    return act


ENVS = [
    ("cartpole", "CartPole-v1", [
        ("random", discrete_random(2), (1, 2, 3, 4), 300),
        ("balancing", cartpole_balancing, (5, 6), 1100),
    ]),
    ("acrobot", "Acrobot-v1", [
        ("random", discrete_random(3), (1, 2), 1100),
        ("pump", acrobot_pump, (3, 4, 5), 700),
    ]),
    ("mountain_car", "MountainCar-v0", [
        ("random", discrete_random(3), (1, 2), 450),
        ("pump", car_pump, (3, 4), 450),
        ("left", constant(0), (5,), 250),
    ]),
    ("mountain_car_continuous", "MountainCarContinuous-v0", [
        ("random", continuous_random(-1.5, 1.5), (1, 2), 1100),
        ("pump", car_continuous_pump(1.3), (3,), 500),
        ("pump", car_continuous_pump(0.7), (4,), 500),
        ("left", constant([-1.0]), (5,), 300),
    ]),
    ("pendulum", "Pendulum-v1", [
        ("random", continuous_random(-3.0, 3.0), (1, 2), 450),
        ("swing", pendulum_swing, (3, 4), 450),
    ]),
]


def state64(env):
    return [float(v) for v in env.unwrapped.state]


def obs32(obs):
    # Shortest decimal that reads back as the same float32.
    return [float(str(np.float32(v))) for v in obs]


def record(env_id, policy_name, make_policy, seed, num_steps):
    env = gym.make(env_id)
    continuous = isinstance(env.action_space, gym.spaces.Box)
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
        stepped = np.array(action, dtype=np.float32) if continuous else action
        obs, reward, terminated, truncated, _ = env.step(stepped)
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
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/data"
    for name, env_id, policies in ENVS:
        trajectories = [
            record(env_id, policy_name, make_policy, seed, steps)
            for policy_name, make_policy, seeds, steps in policies
            for seed in seeds
        ]
        golden = {
            "env_id": env_id,
            "gymnasium_version": gym.__version__,
            "numpy_version": np.__version__,
            "max_episode_steps": gym.spec(env_id).max_episode_steps,
            "trajectories": trajectories,
        }
        out_path = os.path.join(out_dir, f"{name}_golden.json")
        with open(out_path, "w") as f:
            json.dump(golden, f, separators=(",", ":"))
            f.write("\n")
        steps = sum(len(t["actions"]) for t in trajectories)
        truncations = sum(sum(t["truncated"]) for t in trajectories)
        terminations = sum(sum(t["terminated"]) for t in trajectories)
        print(f"{out_path}: {len(trajectories)} trajectories, {steps} steps, "
              f"{terminations} terminations, {truncations} truncations")


if __name__ == "__main__":
    main()
