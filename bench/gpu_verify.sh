#!/usr/bin/env bash
# One run on a GPU machine: versions, CUDA numerics vs CPU fp32, model speed beside the
# official implementation (autocast fp16), and the server on the GPU under JPEG load.
# Usage: OUT=results/gpu OFFICIAL=path/to/official/models bash bench/gpu_verify.sh
# Each step has its own time limit (about 3.5 minutes in all), so a short lease still returns
# the steps that finished; with PACK=file.tgz the results are packed after every step.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
OFFICIAL=${OFFICIAL:-.official/models}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  $PY -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"
  echo "TensorRT libraries (ldconfig -p | grep nvinfer): $(ldconfig -p | grep -c nvinfer)"
  $PY -c "import tensorrt; print('tensorrt', tensorrt.__version__)" 2>&1 | tail -1
} 2>&1 | tee "$OUT/env.txt"

pack() { [ -n "${PACK:-}" ] && tar czf "$PACK" -C "$OUT" . 2>/dev/null; return 0; }

echo "== CUDA numerics vs CPU fp32 (dat_tiny, random weights)"
timeout 40 $PY -m bench parity --device cuda --precisions fp32,fp16,bf16 --batch-sizes 1,8,64 \
  --out "$OUT/parity.json" 2>&1 | tee "$OUT/parity.log"

pack
echo "== model speed, ours vs official"
timeout 75 $PY -m bench model --device cuda --precisions fp32,fp16,bf16 --batch-sizes 1,8,32,64,128 \
  --official "$OFFICIAL" --warmup 2 --repeats 5 --min-seconds 0.2 --out "$OUT/model" 2>&1 | tee "$OUT/model.log"

pack
echo "== server on the GPU, JPEG bodies"
nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 500 > "$OUT/gpu_util.txt" 2>&1 &
SMI=$!
timeout 55 $PY -m bench server \
  --server-args "--model dat_tiny --device cuda --precision fp16 --max-batch-size 64 --max-queue-size 1024 --max-inflight-requests 1024 --preprocess-workers 12 --max-queue-delay-ms 2" \
  --concurrency 16,64 --duration 5 --processes 6 --title "dat_tiny fp16 server, JPEG bodies" \
  --out "$OUT/server" 2>&1 | tee "$OUT/server.log"
kill $SMI 2>/dev/null
echo "GPU utilisation samples (%): $(sort -n "$OUT/gpu_util.txt" | awk '{a[NR]=$1} END {print "median", a[int(NR/2)+1], "max", a[NR]}')"

pack
echo "== gpu-marked tests"
timeout 25 $PY -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tail -15 | tee "$OUT/pytest_gpu.log"
pack
