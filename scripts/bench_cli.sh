#!/usr/bin/env bash
# CPU time of the CLI's commands over a bare interpreter, this tree beside a baseline commit:
#
#   scripts/bench_cli.sh [BASELINE_REF] [--runs N] [--mb 256]
#
# See scripts/bench_cli.py for what is measured and the targets.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] && . .venv/bin/activate
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  baseline=$1
  shift
  exec python scripts/bench_cli.py --baseline "$baseline" "$@"
fi
exec python scripts/bench_cli.py "$@"
