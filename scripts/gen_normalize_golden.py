#!/usr/bin/env python3
"""Record Gymnasium's NormalizeObservation and NormalizeReward, with
CleanRL's clipping to +-10 after each (`ppo_continuous_action.py`'s
`make_env`), for the Rust normalization test.

Each sequence is one env's wrapped stream: at every reset (the first and
after every episode end) the raw observation the env returned and the
wrapped one; at every step the raw observation, reward and flags and the
wrapped observation and reward. Numbers are written with `repr`, so
exactly; observations are float32 values.

Usage: python3 scripts/gen_normalize_golden.py [OUT.json]
       (default tests/data/normalize_golden.json)
"""

import json
import sys

import gymnasium as gym
import numpy as np

GAMMA = 0.99
CLIP = 10.0


class Tap(gym.Wrapper):
    """Keeps what the env itself returned, inside the normalization."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.raw_obs = obs
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.raw = (obs, reward, terminated, truncated)
        return obs, reward, terminated, truncated, info


def wrapped(env_id):
    tap = Tap(gym.make(env_id))
    env = gym.wrappers.NormalizeObservation(tap)
    env = gym.wrappers.TransformObservation(
        env, lambda obs: np.clip(obs, -CLIP, CLIP), env.observation_space)
    env = gym.wrappers.NormalizeReward(env, gamma=GAMMA)
    env = gym.wrappers.TransformReward(env, lambda r: np.clip(r, -CLIP, CLIP))
    return tap, env


def floats(values):
    return [float(v) for v in values]


def record(env_id, policy, seed, num_steps):
    tap, env = wrapped(env_id)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    tap.raw_obs_last = tap.raw_obs
    sequence = {"env_id": env_id, "seed": seed, "policy": policy,
                "resets": [{"step": 0, "raw_obs": floats(tap.raw_obs), "obs": floats(obs)}],
                "raw_obs": [], "raw_reward": [], "terminated": [], "truncated": [],
                "obs": [], "reward": []}
    n = env.action_space.n
    for step in range(num_steps):
        if policy == "random":
            action = int(rng.integers(n))
        else:  # push the way the car moves (MountainCar)
            action = 2 if tap.raw_obs_last[1] >= 0 else 0
        obs, reward, terminated, truncated, _ = env.step(action)
        raw_obs, raw_reward, raw_term, raw_trunc = tap.raw
        tap.raw_obs_last = raw_obs
        sequence["raw_obs"].append(floats(raw_obs))
        sequence["raw_reward"].append(float(raw_reward))
        sequence["terminated"].append(bool(terminated))
        sequence["truncated"].append(bool(truncated))
        sequence["obs"].append(floats(obs))
        sequence["reward"].append(float(reward))
        if terminated or truncated:
            obs, _ = env.reset()
            tap.raw_obs_last = tap.raw_obs
            sequence["resets"].append({"step": step + 1, "raw_obs": floats(tap.raw_obs),
                                       "obs": floats(obs)})
    return sequence


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else "tests/data/normalize_golden.json"
    sequences = []
    for env_id, policy, seed, steps in [
        ("CartPole-v1", "random", 1, 600),
        ("MountainCar-v0", "random", 2, 450),
        ("MountainCar-v0", "pump", 3, 600),
        ("Acrobot-v1", "random", 4, 600),
    ]:
        sequences.append(record(env_id, policy, seed, steps))
    golden = {"gymnasium_version": gym.__version__, "numpy_version": np.__version__,
              "gamma": GAMMA, "clip": CLIP, "sequences": sequences}
    with open(out_path, "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")
    for s in sequences:
        print(f"{s['env_id']} {s['policy']}: {len(s['obs'])} steps, "
              f"{sum(s['terminated'])} terminations, {sum(s['truncated'])} truncations")


if __name__ == "__main__":
    main()
