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
python3 -m pytest -q -p no:cacheprovider tests/test_store.py tests/test_codec.py -k "not postgresql" 2>&1 | tail -4
python3 scripts/bench_restore.py --device cuda --size-mb "$SIZE_MB" --threads 1,4,16 --repeat 3
python3 scripts/bench_restore.py --device cpu --size-mb "$SIZE_MB" --threads 1,4,16 --repeat 3
