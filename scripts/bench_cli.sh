#!/usr/bin/env bash
# Start-up time of the CLI's everyday commands, over a bare interpreter, this tree beside a
# baseline commit (default: main), measured with hyperfine (Debian: apt-get install hyperfine).
#
#   scripts/bench_cli.sh [BASELINE_REF]
#
# Prints, per command, the mean wall time of this tree and of the baseline, each minus
# `python -c pass`, and their ratio. Target (issue 7): under 0.5 s over the bare interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=${1:-main}
command -v hyperfine >/dev/null || { echo "hyperfine is missing: apt-get install hyperfine" >&2; exit 1; }
python=${PYTHON:-python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

git archive "$baseline" weightstore migrations 2>/dev/null | tar -x -C "$work" ||
  git archive "$baseline" weightstore | tar -x -C "$work"
mkdir -p "$work/before" && mv "$work/weightstore" "$work/before/"
[ -d "$work/migrations" ] && mv "$work/migrations" "$work/before/"

# A small store: two snapshots of one task, written by this tree.
PYTHONPATH=$PWD "$python" - "$work/store" <<'EOF'
import sys
import torch
from weightstore import WeightStore
with WeightStore.open(sys.argv[1]) as store:
    sd = {f"layer.{i}.weight": torch.randn(64, 64) for i in range(8)}
    store.save("sentiment", sd, step=1, tags=["best"])
    sd["layer.0.weight"] += 1e-3
    store.save("sentiment", sd, step=2)
EOF

repo=$PWD
# From the scratch folder: `python -c` puts the current folder first on sys.path, which would
# shadow the baseline's PYTHONPATH with this tree.
cd "$work"
run_cli="import sys; from weightstore.cli.main import main; sys.argv[0] = 'weightstore'; main()"
commands=("--help" "log -n 5" "tasks" "show sentiment@2")
args=(-N --warmup 2 --runs "${RUNS:-10}" --export-json "$work/result.json" -n bare "$python -c pass")
for c in "${commands[@]}"; do
  args+=(-n "now: $c" "env PYTHONPATH=$repo COLUMNS=100 WEIGHTSTORE_PATH=$work/store $python -c \"$run_cli\" $c")
  args+=(-n "$baseline: $c" "env PYTHONPATH=$work/before COLUMNS=100 WEIGHTSTORE_PATH=$work/store $python -c \"$run_cli\" $c")
done
hyperfine "${args[@]}" >/dev/null

"$python" - "$work/result.json" "$baseline" "$(git -C "$repo" rev-parse --short "$baseline")" <<'EOF'
import json, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
base = sys.argv[2]
bare = results.pop("bare")


def over(r, key):  # seconds over the bare interpreter
    if key == "cpu":
        return r["user"] + r["system"] - bare["user"] - bare["system"]
    return r[key] - bare[key]


print(f"baseline: {base} at {sys.argv[3]}")
print(f"bare interpreter (python -c pass): {bare['mean'] * 1e3:.0f} ms; figures are over it")
print("(wall: mean and min elapsed; cpu: user+system, steadier on a busy machine)")
print(f"{'command':<18}{'':>6}{'now ms':>9}{base + ' ms':>12}{'ratio':>8}")
for name in [n[5:] for n in results if n.startswith("now: ")]:
    now, old = results[f"now: {name}"], results[f"{base}: {name}"]
    for key, label in (("mean", "wall"), ("min", "min"), ("cpu", "cpu")):
        a, b = over(now, key), over(old, key)
        print(f"{name if key == 'mean' else '':<18}{label:>6}{a * 1e3:>9.0f}{b * 1e3:>12.0f}"
              f"{b / a:>7.1f}x")
EOF
