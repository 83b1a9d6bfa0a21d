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

ruff check weightstore tests scripts
mypy
lint-imports
python -m pytest -q -p no:cacheprovider "$@"
