# Sourced by the scripts: create .venv once and install weightstore into it with the extras
# named in WS_EXTRAS (default "test"). torch==2.13.0 (the CPU build) goes first so that nothing
# pulls a multi-GB CUDA build of torch.
WS_EXTRAS=${WS_EXTRAS:-test}
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
stamp=".venv/.weightstore-$(echo "$WS_EXTRAS" | tr ',' '-')-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "installing weightstore[$WS_EXTRAS] into .venv (log: .venv/install.log)" >&2
  {
    python -m pip install -q --upgrade pip &&
      python -m pip install -q torch==2.13.0 &&
      python -m pip install -q -e ".[$WS_EXTRAS]"
  } >.venv/install.log 2>&1 || { cat .venv/install.log >&2; exit 1; }
  touch "$stamp"
fi
