#!/usr/bin/env bash
# The service on a CUDA GPU: gpu-marked service tests, then the server under JPEG load with the
# torch backend eager vs CUDA graphs, each with Python's default GIL switch interval and 0.5 ms.
# Usage: OUT=results/gpu_service WHEELS="dir1 dir2" bash bench/gpu_service.sh
# Every step has its own time limit (about 4 minutes in all).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu_service}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}

for dir in ${WHEELS:-}; do  # the image may lack the web stack: install it from local wheels
  $PY -m pip install -q --no-index --find-links "$dir" "$dir"/*.whl 2>&1 | grep -v -i warning | tail -2
done
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())"
  $PY -c "import uvloop, httptools; print('uvloop', uvloop.__version__, 'httptools', httptools.__version__)" 2>&1 | tail -1
  nproc
} 2>&1 | tee "$OUT/env.txt"

echo "== gpu-marked service tests"
timeout 120 $PY -m pytest tests/service/test_gpu.py -q -p no:cacheprovider 2>&1 | tail -8 | tee "$OUT/pytest_gpu.log"

COMMON="--model dat_tiny --device cuda --precision fp16 --max-batch-size 64 --max-queue-size 1024 --max-inflight-requests 1024 --preprocess-workers 12 --max-queue-delay-ms 2"
for variant in "eager:--no-cuda-graphs" "eager-swi:--no-cuda-graphs --switch-interval-ms 0.5" \
               "graphs:--cuda-graphs" "graphs-swi:--cuda-graphs --switch-interval-ms 0.5"; do
  name=${variant%%:*} args=${variant#*:}
  echo "== server $name ($args)"
  timeout 75 $PY -m bench server --server-args "$COMMON $args" --concurrency 16,64 --duration 5 \
    --processes 6 --title "dat_tiny fp16, $name" --out "$OUT/$name" 2>&1 | grep -E "img/s|error|Error" | tee "$OUT/$name.log"
done
