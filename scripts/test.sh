#!/usr/bin/env bash
# Install weightstore with its test tools into .venv (CPU-only torch first) and run every check:
# the test suite (SQLite and the PostgreSQL server on 127.0.0.1:5432), ruff, mypy --strict and
# the layer contract.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  # CI machines start PostgreSQL before the run; start it here if it stopped.
  command -v pg_ctlcluster >/dev/null &&
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi

# The 0.x line of huggingface_hub lists files differently (siblings, not tree): the Hub routes
# are tested against it too, from a small environment of its own (tests/test_hub.py).
if [ ! -x .venv-hub0/bin/python ]; then
  { python -m venv .venv-hub0 && .venv-hub0/bin/pip install -q "huggingface_hub>=0.30,<1"; } \
    >.venv/hub0-install.log 2>&1 || { cat .venv/hub0-install.log >&2; rm -rf .venv-hub0; exit 1; }
fi
export WS_HUB0_PYTHON="$PWD/.venv-hub0/bin/python"

ruff check weightstore tests scripts
mypy
lint-imports
python -m pytest -q -p no:cacheprovider "$@"
