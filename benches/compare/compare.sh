#!/usr/bin/env bash
# ppo-wgpu against rejax (JAX PPO) on CartPole-v1, same configs, one go.
# See README.md in this folder. Usage: benches/compare/compare.sh [--quick] [options]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$HERE/.venv"
OUT="$HERE/results"
BIN="$ROOT/target/release/ppo-wgpu"
CONFIGS="cleanrl,rejax,linear"
ENV_DEVICE=cpu
STEPS=""
POP=8
SEED=1
INSTALL=1
REPORT_ONLY=0
REJAX_EVAL=(--eval-episodes 20 --eval-policy greedy)
# rejax 0.1.3 unpacks five values from env.step; gymnax 1.0 returns six
# (terminated and truncated apart), so gymnax stays below 1.0.
REJAX_PIP=("rejax==0.1.3" "gymnax==0.0.9")

usage() {
    cat <<EOF
Usage: $0 [options]
  --quick           smoke test: 20000 steps per config, population of 2
  --steps N         total_timesteps for every config (default: each config's own:
                    cleanrl 500000, rejax 100000)
  --configs LIST    comma list of cleanrl,rejax,linear (default: all three;
                    linear: ppo-wgpu's default preset, the linear network)
  --env-device D    where ppo-wgpu steps its envs: cpu (default) or gpu
  --pop P           population size for the population rate (default 8; 0 skips)
  --seed S          seed of the single-seed runs (default 1)
  --bin PATH        ppo-wgpu binary (default: target/release/ppo-wgpu, built if missing)
  --rejax-native-eval  rejax evaluates as it does by default (128 episodes of its
                    sampling policy) instead of as ppo-wgpu does (20 greedy episodes)
  --no-install      use the existing .venv as it is
  --report-only     run nothing; print the table again from results/
Writes $OUT/ (run folders, per-system JSON) and $HERE/results.json.
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) STEPS=20000; POP=2 ;;
        --steps) STEPS="$2"; shift ;;
        --configs) CONFIGS="$2"; shift ;;
        --env-device) ENV_DEVICE="$2"; shift ;;
        --pop) POP="$2"; shift ;;
        --seed) SEED="$2"; shift ;;
        --bin) BIN="$2"; shift ;;
        --no-install) INSTALL=0 ;;
        --report-only) REPORT_ONLY=1; INSTALL=0 ;;
        --rejax-native-eval) REJAX_EVAL=(--eval-episodes 128 --eval-policy stochastic) ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

now() { date +%s.%N; }

# --- rejax in its own virtual environment ------------------------------------
if [ "$INSTALL" = 1 ]; then
    if [ ! -x "$VENV/bin/python" ]; then
        echo "== creating $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --upgrade pip
    fi
    if ! "$VENV/bin/python" - "${REJAX_PIP[@]}" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
for req in sys.argv[1:]:
    name, want = req.split("==")
    assert version(name) == want, req
EOF
    then
        echo "== pip install ${REJAX_PIP[*]} (pulls jax, flax, optax)"
        "$VENV/bin/pip" install -q "${REJAX_PIP[@]}"
    fi
fi
# CPU against CPU by default; set JAX_PLATFORMS yourself for a JAX GPU install.
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"

if [ "$REPORT_ONLY" = 0 ]; then
# --- ppo-wgpu -----------------------------------------------------------------
if [ ! -x "$BIN" ]; then
    echo "== building $BIN"
    (cd "$ROOT" && cargo build --release)
fi

mkdir -p "$OUT"

# Our flags per config (CleanRL key names). rejax's own CartPole config,
# mirrored: configs/gymnax/cartpole.yaml (ppo) of github.com/keraJLi/rejax.
ours_flags() {
    case "$1" in
        cleanrl) echo "--preset cleanrl" ;;
        rejax) echo "--preset cleanrl --set num_envs=5 --set num_steps=100 \
--set update_epochs=5 --set num_minibatches=5 --set learning_rate=0.00075 \
--set anneal_lr=false --set max_grad_norm=0.5 --set gamma=0.99 \
--set gae_lambda=0.95 --set clip_coef=0.2 --set clip_vloss=true \
--set norm_adv=true --set ent_coef=0.01 --set vf_coef=0.5 --set hidden=64,64" ;;
        linear) echo "--preset default" ;;
        *) echo "unknown config: $1" >&2; exit 2 ;;
    esac
}
default_steps() { case "$1" in cleanrl) echo 500000 ;; rejax) echo 100000 ;; linear) echo 100000 ;; esac; }
batch_of() { case "$1" in cleanrl) echo 512 ;; rejax) echo 500 ;; linear) echo 1024 ;; esac; }
# Evaluation interval, the same for both systems: rejax's eval_freq for
# its config; for CleanRL's and the linear one, every 2048 steps.
eval_every_of() { case "$1" in cleanrl) echo 2048 ;; rejax) echo 1000 ;; linear) echo 2048 ;; esac; }

# Does this binary know eval_every (periodic greedy evaluation)? Older ones
# judge 475 on the last 10 training episodes instead.
HAVE_EVAL_EVERY=1
if ! "$BIN" train --preset cleanrl --quiet --runs-dir "$OUT/probe" \
        --set total_timesteps=512 --set eval_episodes=1 --set eval_every=0 \
        >/dev/null 2>"$OUT/probe.err"; then
    if grep -q "eval_every" "$OUT/probe.err"; then
        HAVE_EVAL_EVERY=0
    else
        cat "$OUT/probe.err" >&2
        exit 1
    fi
fi

# run_ours NAME ARGS...: runs ppo-wgpu into results/runs/NAME, writes
# results/NAME.json with the run folder and the process wall time.
run_ours() {
    local name="$1"; shift
    local dir="$OUT/runs/$name"
    rm -rf "$dir"
    local t0 t1
    t0="$(now)"
    "$BIN" train --quiet --runs-dir "$dir" "$@" >"$OUT/$name.log" 2>&1 || {
        cat "$OUT/$name.log" >&2; exit 1; }
    t1="$(now)"
    local run
    run="$(ls -d "$dir"/*/ | head -n 1)"
    printf '{"run_dir": "%s", "launch": %s, "process_s": %s}\n' \
        "${run%/}" "$t0" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')" >"$OUT/$name.json"
}

IFS=',' read -r -a CONFIG_LIST <<<"$CONFIGS"
for cfg in "${CONFIG_LIST[@]}"; do
    steps="${STEPS:-$(default_steps "$cfg")}"
    batch="$(batch_of "$cfg")"
    every="$(eval_every_of "$cfg")"
    read -r -a flags <<<"$(ours_flags "$cfg") --env-device $ENV_DEVICE"
    evalflags=()
    [ "$HAVE_EVAL_EVERY" = 1 ] && evalflags=(--set "eval_every=$every")

    echo "== [$cfg] rejax: $steps steps, seed $SEED, population $POP"
    "$VENV/bin/python" "$HERE/rejax_cartpole.py" --config "$cfg" --steps "$steps" \
        --seed "$SEED" --pop "$POP" --eval-freq "$every" "${REJAX_EVAL[@]}" \
        --launch-time "$(now)" --json "$OUT/rejax_$cfg.json" >/dev/null

    echo "== [$cfg] ppo-wgpu: start-up probe (one iteration)"
    probe=(--set "total_timesteps=$batch" --set eval_episodes=1)
    [ "$HAVE_EVAL_EVERY" = 1 ] && probe+=(--set eval_every=0)
    run_ours "ours_${cfg}_startup" "${flags[@]}" --seed "$SEED" "${probe[@]}"

    echo "== [$cfg] ppo-wgpu: $steps steps, seed $SEED"
    run_ours "ours_${cfg}_p1" "${flags[@]}" --seed "$SEED" \
        --set "total_timesteps=$steps" "${evalflags[@]}"

    if [ "$POP" -gt 0 ]; then
        echo "== [$cfg] ppo-wgpu: population of $POP"
        run_ours "ours_${cfg}_pop" "${flags[@]}" --seed "$SEED" --num-agents "$POP" \
            --set "total_timesteps=$steps" "${evalflags[@]}"
    fi
done
fi  # REPORT_ONLY

# --- table and results.json ---------------------------------------------------
"$VENV/bin/python" - "$OUT" "$HERE/results.json" "$CONFIGS" "$POP" "$BIN" <<'EOF'
import json, os, statistics, sys

out, results_path, configs, pop, binary = sys.argv[1:]
pop = int(pop)

def load(path):
    with open(path) as f:
        return json.load(f)

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

rows, ratios = [], []
for cfg in configs.split(","):
    r = load(os.path.join(out, f"rejax_{cfg}.json"))
    probe = load(os.path.join(out, f"ours_{cfg}_startup.json"))
    probe_sum = load(os.path.join(probe["run_dir"], "summary.json"))
    startup = probe["process_s"] - probe_sum["wall_s"]
    p1 = load(os.path.join(out, f"ours_{cfg}_p1.json"))
    s1 = load(os.path.join(p1["run_dir"], "summary.json"))
    t475 = s1["seconds_to_475"][0]
    ours = {
        "system": "ppo-wgpu",
        "config": cfg,
        "adapter": s1["adapter"],
        "env_steps": s1["global_steps"],
        "steady_sps": s1["sps"],
        "startup_s": startup,
        "steps_to_475": s1["steps_to_475"][0],
        "seconds_to_475": t475,
        "seconds_to_475_incl_startup": None if t475 is None else t475 + startup,
        "wall_s": s1["wall_s"],
        "process_s": p1["process_s"],
        "criterion": ("first periodic greedy evaluation (20 episodes, every "
                      f'{s1["evaluations"][0][0] if s1["evaluations"] else "?"} steps) with mean >= 475'
                      if "evaluations" in s1 else
                      "mean of the last 10 training episodes >= 475"),
        "run_dir": p1["run_dir"],
        "population": None,
    }
    if pop > 0:
        pp = load(os.path.join(out, f"ours_{cfg}_pop.json"))
        sp = load(os.path.join(pp["run_dir"], "summary.json"))
        ours["population"] = {
            "agents": pop, "env_steps": sp["global_steps"], "sps": sp["sps"],
            "steps_to_475": sp["steps_to_475"], "run_dir": pp["run_dir"],
        }
    rej = {
        "system": "rejax " + str(r["rejax_version"]),
        "config": cfg,
        "jax": f'{r["jax_version"]} {",".join(r["jax_devices"])}',
        "env_steps": r["env_steps"],
        "steady_sps": r["steady_sps"],
        "compile_s": r["compile_s"],
        "startup_s": r["eval_run"]["startup_s"],
        "steps_to_475": r["to_475"]["steps_to_475"],
        "seconds_to_475": r["to_475"]["seconds_to_475"],
        "seconds_to_475_incl_startup": r["to_475"]["seconds_to_475_incl_startup"],
        "seconds_to_475_excl_eval": r["to_475"]["seconds_to_475_excl_eval"],
        "criterion": (f'first evaluation ({r["eval_run"]["eval_episodes"]} episodes, '
                      f'{r["eval_run"]["eval_policy"]}, every {r["eval_run"]["eval_freq"]} steps) '
                      "with mean >= 475"),
        "population": r["population"],
        "raw": r,
    }
    rows += [ours, rej]

    def ratio(a, b):
        return None if a is None or b is None or b == 0 else a / b

    ratios.append({
        "config": cfg,
        "steady_sps": ratio(ours["steady_sps"], rej["steady_sps"]),
        "seconds_to_475_incl_startup": ratio(ours["seconds_to_475_incl_startup"],
                                             rej["seconds_to_475_incl_startup"]),
        "seconds_to_475": ratio(ours["seconds_to_475"], rej["seconds_to_475"]),
        "population_sps": ratio((ours["population"] or {}).get("sps"),
                                (rej["population"] or {}).get("sps")),
    })

def f(x, fmt="{:,.0f}"):
    return "-" if x is None else fmt.format(x)

pops = {(r["population"] or {}).get("agents") for r in rows} - {None}
pop = max(pops) if pops else 0
hdr = ["system", "config", "steady SPS", "s to 475 (+start-up)", "s to 475 (train)",
       "steps to 475", f"pop SPS (x{pop})", "pop median steps to 475"]
table = [hdr]
for row in rows:
    p = row["population"] or {}
    solved = [s for s in p.get("steps_to_475", []) if s is not None]
    table.append([
        row["system"], row["config"], f(row["steady_sps"]),
        f(row["seconds_to_475_incl_startup"], "{:.1f}"),
        f(row["seconds_to_475"], "{:.2f}"), f(row["steps_to_475"]),
        f(p.get("sps")),
        (f(med(p.get("steps_to_475", []))) + f" ({len(solved)}/{len(p.get('steps_to_475', []))})")
        if p else "-",
    ])
for rt in ratios:
    table.append(["ours/rejax", rt["config"], f(rt["steady_sps"], "{:.3f}"),
                  f(rt["seconds_to_475_incl_startup"], "{:.2f}"),
                  f(rt["seconds_to_475"], "{:.2f}"), "", f(rt["population_sps"], "{:.3f}"), ""])
widths = [max(len(str(r[i])) for r in table) for i in range(len(hdr))]
print()
for i, r in enumerate(table):
    print("  ".join(str(c).ljust(w) if j < 2 else str(c).rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
    if i == 0:
        print("  ".join("-" * w for w in widths))
print()
for row in rows:
    print(f'{row["system"]} [{row["config"]}]: 475 = {row["criterion"]}')
print(f"ppo-wgpu adapter: {rows[0].get('adapter')}; rejax: jax {rows[1].get('jax')}")
print("ratios are ours/rejax: above 1 is faster for SPS, slower for seconds")

with open(results_path, "w") as fh:
    json.dump({"rows": rows, "ratios": ratios,
               "ppo_wgpu_binary": binary}, fh, indent=2)
    fh.write("\n")
print(f"wrote {results_path}")
EOF
