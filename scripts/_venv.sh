# Sourced by the scripts: create .venv once and install weightstore into it with the extras
# named in WS_EXTRAS (default "test"). torch==2.13.0 (the CPU build) goes first so that nothing
# pulls a multi-GB CUDA build of torch.
WS_EXTRAS=${WS_EXTRAS:-test}
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
# One stamp per installed extra and pyproject.toml version: a later script installs only the
# extras not installed yet (test's include demo's, so demo.sh after test.sh installs nothing).
hash=$(sha1sum pyproject.toml | cut -c1-12)
missing=""
for extra in $(echo "$WS_EXTRAS" | tr ',' ' '); do
  [ -f ".venv/.weightstore-$extra-$hash" ] || missing="$missing,$extra"
done
missing=${missing#,}
if [ -n "$missing" ]; then
  echo "installing weightstore[$missing] into .venv (log: .venv/install.log)" >&2
  {
    python -m pip install -q --upgrade pip &&
      python -m pip install -q torch==2.13.0 &&
      python -m pip install -q -e ".[$missing]"
  } >.venv/install.log 2>&1 || { cat .venv/install.log >&2; exit 1; }
  for extra in $(echo "$missing" | tr ',' ' '); do touch ".venv/.weightstore-$extra-$hash"; done
  case ",$missing," in *,test,*) touch ".venv/.weightstore-demo-$hash" ;; esac
fi
