#!/usr/bin/env python3
"""rejax PPO on gymnax CartPole-v1: the figures benches/compare/compare.sh sets
beside ppo-wgpu's.

Three measurements, each a jitted rejax `train` compiled ahead of time
(`jit(...).lower(...).compile()`), so compile time is reported apart:

1. time to 475: one seed, `train` with an evaluation callback (rejax's own
   `evaluate`: mean return of `--eval-episodes` episodes, greedy or rejax's
   sampling policy, every `--eval-freq` env steps). A host callback stamps
   the wall clock after each evaluation, so the first evaluation with mean
   >= 475 gives seconds since launch (imports and compile included), seconds
   since the train call started, and the evaluation time spent until then.
2. steady SPS: one seed, `train` with a no-op evaluation callback; the second
   call of the compiled function is timed.
3. population: `jax.vmap` of (2) over `--pop` seeds, second call timed; then
   the same population once more with evaluation on, for steps to 475 per
   seed.

Prints one JSON object (also written to `--json`).
"""

import time

T_IMPORT = time.time()  # before importing jax: start-up counts

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

# rejax's own CartPole PPO settings: configs/gymnax/cartpole.yaml, section
# `ppo`, of github.com/keraJLi/rejax (commit 4954fbf6; the older
# configs/cartpole.yaml has the same values). The PyPI wheel does not ship
# the configs folder, so they are copied here; `--yaml` reads the file itself.
REJAX_CARTPOLE = {
    "env": "CartPole-v1",
    "agent_kwargs": {"activation": "tanh"},  # hidden_layer_sizes: default (64, 64)
    "num_envs": 5,
    "num_steps": 100,
    "num_epochs": 5,
    "num_minibatches": 5,
    "learning_rate": 0.00075,
    "max_grad_norm": 0.5,
    "total_timesteps": 100_000,
    "eval_freq": 1000,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "clip_eps": 0.2,
    "ent_coef": 0.01,
    "vf_coef": 0.5,
}

# CleanRL ppo.py's CartPole settings in rejax's names. anneal_lr is not a
# rejax option: a linear optax schedule over the run's updates stands in.
CLEANRL = {
    "env": "CartPole-v1",
    "agent_kwargs": {"activation": "tanh", "hidden_layer_sizes": [64, 64]},
    "num_envs": 4,
    "num_steps": 128,
    "num_epochs": 4,
    "num_minibatches": 4,
    "learning_rate": 2.5e-4,
    "anneal_lr": True,
    "max_grad_norm": 0.5,
    "total_timesteps": 500_000,
    "eval_freq": 2048,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "clip_eps": 0.2,
    "ent_coef": 0.01,
    "vf_coef": 0.5,
}

# ppo-wgpu's `default` preset (the seed design's linear policy and value):
# CleanRL's loop with 8 envs, lr 0.02 annealed, lambda 1, no entropy bonus,
# 100k steps; rejax with no hidden layers.
LINEAR = {
    "env": "CartPole-v1",
    "agent_kwargs": {"activation": "tanh", "hidden_layer_sizes": []},
    "num_envs": 8,
    "num_steps": 128,
    "num_epochs": 4,
    "num_minibatches": 4,
    "learning_rate": 0.02,
    "anneal_lr": True,
    "max_grad_norm": 0.5,
    "total_timesteps": 100_000,
    "eval_freq": 2048,
    "gamma": 0.99,
    "gae_lambda": 1.0,
    "clip_eps": 0.2,
    "ent_coef": 0.0,
    "vf_coef": 0.5,
}

CONFIGS = {"cleanrl": CLEANRL, "rejax": REJAX_CARTPOLE, "linear": LINEAR}
SOLVED = 475.0


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), required=True)
    ap.add_argument("--yaml", help="read the `ppo` section of this rejax config file instead")
    ap.add_argument("--steps", type=int, help="total_timesteps (default: the config's)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pop", type=int, default=8, help="seeds in the vmapped population run (0: skip)")
    ap.add_argument("--eval-freq", type=int, help="env steps between evaluations (default: the config's)")
    ap.add_argument("--eval-episodes", type=int, default=20,
                    help="episodes per evaluation (default 20 as ppo-wgpu's periodic evaluation; rejax's own: 128)")
    ap.add_argument("--eval-policy", choices=["greedy", "stochastic"], default="greedy",
                    help="greedy (argmax, as ppo-wgpu) or rejax's own sampling act")
    ap.add_argument("--launch-time", type=float, help="epoch seconds the process was launched (default: before `import jax`)")
    ap.add_argument("--json", help="also write the result here")
    return ap.parse_args()


def main():
    args = parse_args()
    t_launch = args.launch_time if args.launch_time else T_IMPORT

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.experimental import io_callback

    import rejax
    from rejax.evaluate import evaluate

    if args.yaml:
        import yaml

        with open(args.yaml) as f:
            config = dict(yaml.safe_load(f)["ppo"])
    else:
        config = json.loads(json.dumps(CONFIGS[args.config]))  # deep copy
    if args.steps:
        config["total_timesteps"] = args.steps
    if args.eval_freq:
        config["eval_freq"] = args.eval_freq
    anneal = bool(config.pop("anneal_lr", False))

    batch = config["num_envs"] * config["num_steps"]
    # rejax runs ceil(total / eval_freq) evaluation blocks of
    # ceil(eval_freq / batch) iterations each.
    iters_per_eval = math.ceil(config["eval_freq"] / batch)
    num_evals = math.ceil(config["total_timesteps"] / config["eval_freq"])
    num_iterations = num_evals * iters_per_eval
    lr0 = config["learning_rate"]
    if anneal:
        # CleanRL: lr = lr0 * (1 - (iteration - 1) / num_iterations), fixed
        # within an iteration. optax counts updates (epochs x minibatches per
        # iteration, per network).
        updates_per_iter = config["num_epochs"] * config["num_minibatches"]

        def schedule(count):
            it = count // updates_per_iter
            return lr0 * (1.0 - it / num_iterations)

        config["learning_rate"] = schedule

    algo = rejax.PPO.create(**config)
    key = jax.random.PRNGKey(args.seed)
    env, env_params = algo.env, algo.env_params
    max_steps = int(env_params.max_steps_in_episode)

    # --- evaluation -----------------------------------------------------------
    # rejax's own `evaluate` (a vmapped while-loop over episodes); the policy
    # is greedy (argmax, as ppo-wgpu evaluates) or rejax's stochastic `act`.
    def make_act(a, ts):
        if args.eval_policy == "stochastic":
            return a.make_act(ts)

        def act(obs, rng):
            obs = jnp.expand_dims(obs, 0)
            dist = a.actor.apply(ts.actor_ts.params, obs, method="_action_dist")
            return jnp.squeeze(dist.mode())

        return act

    def plain_eval(a, ts, rng):
        _, returns = evaluate(make_act(a, ts), rng, env, env_params, args.eval_episodes, max_steps)
        return returns.mean()

    # --- 1. time to 475, one seed ---------------------------------------------
    records = []
    clock = {}

    def before_eval(step):
        clock["t"] = time.time()
        return np.int32(0)

    def after_eval(step, mean_return, dummy):
        t = time.time()
        records.append((int(step), float(mean_return), t, t - clock["t"]))

    def stamped_eval(a, ts, rng):
        # ts.global_step is an output of the training loop, so the stamp
        # cannot be taken before that loop ends; the token feeds the
        # evaluation's rng, so the evaluation cannot start before the stamp.
        tok = io_callback(
            before_eval, jax.ShapeDtypeStruct((), jnp.int32), ts.global_step, ordered=True
        )
        mean_return = plain_eval(a, ts, jax.random.fold_in(rng, tok))
        jax.debug.callback(after_eval, ts.global_step, mean_return, tok, ordered=True)
        return mean_return

    algo_eval = algo.replace(eval_callback=stamped_eval)
    t = time.time()
    train_eval = jax.jit(algo_eval.train).lower(key).compile()
    compile_eval_s = time.time() - t
    t_train = time.time()
    ts, curve = train_eval(key)
    jax.block_until_ready((ts, curve))
    eval_run_s = time.time() - t_train
    eval_total_s = sum(r[3] for r in records)
    hit = next((i for i, r in enumerate(records) if r[1] >= SOLVED), None)
    to475 = {
        "steps_to_475": None,
        "seconds_to_475_incl_startup": None,
        "seconds_to_475": None,
        "eval_s_before_475": None,
        "seconds_to_475_excl_eval": None,
    }
    if hit is not None:
        step, ret, t_hit, _ = records[hit]
        eval_before = sum(r[3] for r in records[: hit + 1])
        to475 = {
            "steps_to_475": step,
            "seconds_to_475_incl_startup": t_hit - t_launch,
            "seconds_to_475": t_hit - t_train,
            "eval_s_before_475": eval_before,
            "seconds_to_475_excl_eval": t_hit - t_train - eval_before,
        }

    # --- 2. steady-state SPS, evaluation off -------------------------------
    algo_fast = algo.replace(eval_callback=lambda a, ts, rng: (), skip_initial_evaluation=True)
    t = time.time()
    train_fast = jax.jit(algo_fast.train).lower(key).compile()
    compile_fast_s = time.time() - t
    ts = jax.block_until_ready(train_fast(key))[0]  # warm call
    t = time.time()
    ts = jax.block_until_ready(train_fast(key))[0]
    fast_s = time.time() - t
    steps = int(ts.global_step)

    # --- 3. population: vmap over seeds --------------------------------------
    pop = None
    if args.pop > 0:
        keys = jax.random.split(jax.random.PRNGKey(args.seed), args.pop)
        t = time.time()
        train_pop = jax.jit(jax.vmap(algo_fast.train)).lower(keys).compile()
        compile_pop_s = time.time() - t
        jax.block_until_ready(train_pop(keys))
        t = time.time()
        ts_pop = jax.block_until_ready(train_pop(keys))[0]
        pop_s = time.time() - t
        pop_steps = int(np.sum(np.asarray(ts_pop.global_step)))
        # steps to 475 per seed: the same population with evaluation on
        # (train returns the evaluation curve, initial evaluation first).
        algo_pop_eval = algo.replace(eval_callback=plain_eval)
        _, pop_curve = jax.jit(jax.vmap(algo_pop_eval.train))(keys)
        pop_curve = np.asarray(pop_curve)  # [agents, 1 + num_evals]
        eval_steps = [0] + [(k + 1) * iters_per_eval * batch for k in range(num_evals)]
        pop_to475 = []
        for row in pop_curve:
            idx = np.flatnonzero(row >= SOLVED)
            pop_to475.append(int(eval_steps[idx[0]]) if idx.size else None)
        pop = {
            "agents": args.pop,
            "env_steps": pop_steps,
            "seconds": pop_s,
            "sps": pop_steps / pop_s,
            "compile_s": compile_pop_s,
            "steps_to_475": pop_to475,
            "final_eval_mean": [float(x) for x in pop_curve[:, -1]],
        }

    shown = {k: (v if not callable(v) else f"linear schedule from {lr0}") for k, v in config.items()}
    shown["anneal_lr"] = anneal
    result = {
        "system": "rejax",
        "config": args.config,
        "rejax_version": getattr(rejax, "__version__", None) or _dist_version("rejax"),
        "jax_version": jax.__version__,
        "jax_devices": [str(d) for d in jax.devices()],
        "settings": shown,
        "seed": args.seed,
        "iterations": num_iterations,
        "env_steps": steps,
        "steady_seconds": fast_s,
        "steady_sps": steps / fast_s,
        "compile_s": compile_fast_s,
        "eval_run": {
            "compile_s": compile_eval_s,
            "train_call_s": eval_run_s,
            "evaluations": len(records),
            "eval_episodes": args.eval_episodes,
            "eval_policy": args.eval_policy,
            "eval_freq": config["eval_freq"],
            "eval_s_total": eval_total_s,
            "final_eval_mean": records[-1][1] if records else None,
            "startup_s": t_train - t_launch,
        },
        "to_475": to475,
        "population": pop,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


def _dist_version(name):
    from importlib.metadata import version

    try:
        return version(name)
    except Exception:  # noqa: BLE001
        return None


if __name__ == "__main__":
    sys.exit(main())
