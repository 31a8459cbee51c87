#!/usr/bin/env bash
# Every GPU check in one run, for a machine with CUDA:
#   1. the GPU tests (pytest -m gpu: no host syncs in the hot loop, data on the device, the
#      compact model on the GPU),
#   2. the compact-model speed-up table (benchmarks/speedup.py --device cuda), batch 1/64/256,
#   3. what watching costs on the GPU (benchmarks/overhead.py --device cuda --fast): plain loop,
#      explorer, without the unmasked evaluation, bf16 + channels_last, with a dashboard.
# Prints the device, the test summary and the table; writes logs and JSON to OUT_DIR.
#
#   benchmarks/gpu_checks.sh [OUT_DIR]        # PYTHON=... picks the interpreter (default python3)
#
# Needs torch with CUDA, torchvision, scikit-learn, pytest, pyyaml, tqdm and fvcore (with its
# iopath and yacs); the notebook packages are not needed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-gpu-checks}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"
"$PY" -m pytest -q -ra -p no:cacheprovider -m gpu tests/ 2>&1 | tee "$OUT/gpu_tests.log" | tail -8
tests=${PIPESTATUS[0]}
"$PY" benchmarks/speedup.py --device cuda --markdown --json "$OUT/speedup_gpu.json" 2>&1 \
  | tee "$OUT/speedup_gpu.md" | grep -v '^#'
bench=${PIPESTATUS[0]}
"$PY" benchmarks/overhead.py --device cuda --fast --epochs 5 --rounds 2 2>&1 | tee "$OUT/overhead_gpu.md"
over=${PIPESTATUS[0]}
echo "gpu tests exit $tests, speed-up benchmark exit $bench, overhead benchmark exit $over"
exit $(( tests || bench || over ))
