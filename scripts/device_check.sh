#!/usr/bin/env bash
# Everything of Stemcell that needs a GPU, in one run (time limits add up to 570 s: one 600 s device call): the `gpu` tests, then
# benchmarks/gpu_path.py, then benchmarks/merge_swap.py and merging_joint.py --quick (swap figures: the CUDA copy path).
# Results go to ${OUT:-runs/device_check}/ (gpu_path.json/.parquet/.png, merge_swap.json, merging_joint.json/.png,
# pytest.txt, env.txt). Exits non-zero if a GPU test fails; the benchmark itself exits 0 without CUDA.
#   bash scripts/device_check.sh            # PYTHON=... to pick the interpreter (default python3)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/device_check}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" RAY_USAGE_STATS_ENABLED=0
started=$(date +%s)

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_mode --format=csv || echo "nvidia-smi: none"
  "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  "$PY" -c "import tensorrt; print('tensorrt', tensorrt.__version__)" 2>/dev/null || echo "tensorrt: not installed (TensorRT rows and test skipped)"
} 2>&1 | tee "$OUT/env.txt"

timeout 150 "$PY" -m pytest -q -m gpu tests/gpu -p no:cacheprovider 2>&1 | tee "$OUT/pytest.txt"
tests_rc=${PIPESTATUS[0]}

timeout 270 "$PY" benchmarks/gpu_path.py --out "$OUT/gpu_path.json" 2>&1 | tee "$OUT/gpu_path.txt"
bench_rc=${PIPESTATUS[0]}

# layer vs whole-model swapping on the CUDA path (pinned memory, copy stream): fps_layer_swap, fps_model_swap,
# bytes copied per batch, on merged models (merge_swap.py), then as merging_joint.py reports it
timeout 60 "$PY" benchmarks/merge_swap.py --out "$OUT/merge_swap.json" 2>&1 | tee "$OUT/merge_swap.txt"
swap_rc=${PIPESTATUS[0]}
timeout 90 "$PY" benchmarks/merging_joint.py --quick --budget-s 30 --swap-iters 50 \
  --out "$OUT/merging_joint.json" 2>&1 | tee "$OUT/merging_joint.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || swap_rc=1

echo "device_check: gpu tests rc=$tests_rc, gpu_path rc=$bench_rc, swapping rc=$swap_rc, $(( $(date +%s) - started )) s"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ] && [ "$swap_rc" -eq 0 ]
