#!/usr/bin/env bash
# GPU-side checks, run on a lent GPU machine (see /work/.library/device): the CUDA round-trip
# tests and restore timings on CUDA and CPU. That machine has torch but no registry access:
# carry `.gpu-site` made here with
#   pip install --target .gpu-site --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux2014_x86_64 zstandard blake3 sqlalchemy alembic mako markupsafe typing_extensions
set -u
export PYTHONPATH="$PWD/.gpu-site:$PWD" WEIGHTSTORE_SKIP_POSTGRES=1
SIZE_MB=${SIZE_MB:-1024}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, os; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'cores', os.cpu_count())"
# The compiled decoder: built there for that machine's Python (the one built here may not load).
python3 setup.py -q build_ext --inplace >/dev/null 2>&1 || echo "compiled decoder not built"
python3 -m weightstore.cli.main info
# nvCOMP for tests/test_torchcodec.py's GPU test: add nvidia-nvcomp-cu12 to the .gpu-site line.
python3 -m pytest -q -p no:cacheprovider tests/test_store.py tests/test_codec.py \
  tests/test_decode_paths.py tests/test_torchcodec.py -k "not postgresql" 2>&1 | tail -4
python3 scripts/bench_decode.py --synthetic-mb 512 --dtype bfloat16 --threads 1,2,4,8,16 --repeat 3
python3 scripts/bench_restore.py --device cuda --size-mb "$SIZE_MB" --threads 1,4,16 --repeat 3 --chain 2
python3 scripts/bench_restore.py --device cpu --size-mb "$SIZE_MB" --threads 1,4,16 --repeat 3 --chain 2
