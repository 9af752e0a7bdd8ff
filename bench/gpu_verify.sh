#!/usr/bin/env bash
# One run on a GPU machine, in steps (run in this order):
#   versions (always);
#   model: DAT-T speed of ours (eager and CUDA graphs) beside the official (autocast fp16);
#   server: the server under JPEG load with --gpu-decode (one process, or four workers; 8 images
#     per request; SERVER_ALL=1 adds 1 image per request and Pillow's path);
#   parity: CUDA numerics against CPU fp32;  tests: the gpu-marked tests (not the slow ones);
#   profile: one batch-64 forward, ours beside the official;
#   jpeg: one JPEG into a model input: the CPU's host paths (today's Pillow path, simplejpeg,
#     torch's uint8 resize) and --gpu-decode (speed, and agreement);
#   capacity: what the host feeds a simulated 5,000 img/s accelerator (--backend simulated),
#     one process and --workers 4 (replicas, front ends), 1 and 8 images per request, today's
#     host path and the default;
#   compiled: at batch 64, ours fp16 compiled as --torch-compile serves it (graphs whose largest
#     bucket is compiled), beside eager, graphs and the official;
#   exported: our fp16 export under ONNX Runtime (CUDA) and TensorRT beside our eager fp16;
#   datpp: DAT-T++ beside DAT-T (fp16, eager and CUDA graphs), and the N blocks' attention per
#     way of computing it (tiles, window gather, flex_attention).
# Usage: OUT=results/gpu OFFICIAL=path/to/official/models [STEPS="model server"] bash bench/gpu_verify.sh
# The default steps (model server tests jpeg compiled) have 575 s of time limits in all, within
# one device call; each step has its own limit, so a short lease still returns the steps that
# finished, and with PACK=file.tgz the results are packed after every step.
# WHEELS=dir first installs the web stack from wheels in dir (a lent GPU machine has CUDA
# PyTorch and torchvision but no FastAPI or uvicorn, and reaches no index). Fill it beforehand:
#   pip download -d .whl --only-binary=:all: --python-version 3.12 \
#     --platform manylinux2014_x86_64 fastapi uvicorn httptools python-multipart pydantic-settings \
#     prometheus-client httpx uvloop simplejpeg
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
OFFICIAL=${OFFICIAL:-.official/models}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
STEPS=" ${STEPS:-model server tests jpeg compiled} "  # also: parity profile exported datpp capacity
want() { [[ "$STEPS" == *" $1 "* ]]; }
if [ -n "${WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --find-links "$WHEELS" "$WHEELS"/*.whl 2>&1 | grep -v -i warning | tail -2
fi
pack() { [ -n "${PACK:-}" ] && tar czf "$PACK" -C "$OUT" . 2>/dev/null; return 0; }

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  $PY -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"
  $PY -c "import PIL, fastapi, uvicorn; print('pillow', PIL.__version__, 'fastapi', fastapi.__version__, 'uvicorn', uvicorn.__version__)"
  lscpu | grep -E "^Model name|^CPU\(s\)"
  echo "TensorRT libraries (ldconfig -p | grep nvinfer): $(ldconfig -p | grep -c nvinfer)"
  $PY -c "import tensorrt; print('tensorrt', tensorrt.__version__)" 2>&1 | tail -1
} 2>&1 | tee "$OUT/env.txt"
pack

if want model; then
echo "== model speed: ours eager and CUDA graphs vs official"
timeout 100 $PY -m bench model --device cuda --precisions ${MODEL_PRECISIONS:-fp16} \
  --batch-sizes ${MODEL_BATCHES:-1,8,64} \
  --cuda-graphs --official "$OFFICIAL" --warmup 3 --repeats 7 --min-seconds 0.3 \
  --out "$OUT/model" 2>&1 | grep -v Warning | tee "$OUT/model.log"
pack
fi

# the raw backend the server runs (fp16, CUDA graphs) at its max batch: the efficiency baseline
BASELINE=$($PY -c "
import json
rows = json.load(open('$OUT/model/model.json'))['results']
print(next(r['images_per_second'] for r in rows if r['variant'] == 'ours-fp16-graphs' and r['batch_size'] == 64))
" 2>/dev/null || echo "")
echo "baseline (ours-fp16-graphs, batch 64): ${BASELINE:-none} img/s"

if want server; then
echo "== server on the GPU, 500x375 JPEG bodies"
nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 500 > "$OUT/gpu_util.txt" 2>&1 &
SMI=$!
COMMON="--model dat_tiny --detector none --device cuda --precision fp16 --max-batch-size 64
  --max-queue-size 4096 --max-inflight-requests 2048 --max-queue-delay-ms 2"
server() {  # name, timeout, extra server args, then bench arguments
  local name=$1 limit=$2 extra=$3; shift 3
  timeout "$limit" $PY -m bench server --server-args "$COMMON $extra" --duration 5 --processes 6 \
    --title "DAT-T fp16 server on the GPU, $name" --out "$OUT/server-$name" "$@" 2>&1 \
    | tee "$OUT/server-$name.log"
  pack
}
# the headline run measures its own baseline around each level (the backend the server runs,
# alone, in the bench process); the others divide by the model step's figure. --gpu-decode
# leaves the host's cores to HTTP. SERVER_ALL=1 adds one image per request and Pillow's path.
server w1-8img-gpudecode 100 "--gpu-decode" --images-per-request 8 --concurrency 32,128 \
  --rates half --measure-baseline
BASELINE_ARG=${BASELINE:+--baseline-ips $BASELINE}
server w4-8img-gpudecode 70 "--workers 4 --gpu-decode --preprocess-workers 2" --images-per-request 8 \
  --concurrency 64,256 $BASELINE_ARG
if [ -n "${SERVER_ALL:-}" ]; then
  server w4-1img-gpudecode 70 "--workers 4 --gpu-decode --preprocess-workers 2" --concurrency 128,512 \
    $BASELINE_ARG
  server w6-8img-pillow 50 "--workers 6 --preprocess-workers 3" --images-per-request 8 --concurrency 128 \
    $BASELINE_ARG
fi
kill $SMI 2>/dev/null
echo "GPU utilisation samples (%): $(sort -n "$OUT/gpu_util.txt" | awk '{a[NR]=$1} END {print "median", a[int(NR/2)+1], "max", a[NR]}')"
fi

if want parity; then
echo "== CUDA numerics vs CPU fp32 (dat_tiny, random weights)"
timeout 40 $PY -m bench parity --device cuda --precisions fp32,fp16,bf16 --batch-sizes 1,8,64 \
  --out "$OUT/parity.json" 2>&1 | grep -v Warning | tee "$OUT/parity.log"
pack
fi

if want tests; then
echo "== gpu-marked tests (the Triton client tests need tritonclient, absent there)"
timeout 90 $PY -m pytest -m "gpu and not slow" -q -p no:cacheprovider tests/service/test_gpu.py \
  tests/export/test_export_tensorrt.py 2>&1 | tail -15 | tee "$OUT/pytest_gpu.log"
pack
fi

if want profile; then
echo "== profile of one batch-64 forward, ours fp16 vs official autocast fp16"
timeout 40 $PY -m bench profile --device cuda --precision fp16 --batch-size 64 --official "$OFFICIAL" \
  --rows 12 > "$OUT/profile.txt" 2>&1
grep -E "^==|Self CUDA time total|Self CPU time total" "$OUT/profile.txt"
pack
fi

if want jpeg; then
echo "== one 500x375 JPEG into a model input: Pillow on one core vs --gpu-decode (nvJPEG, batches of 64)"
timeout 45 $PY -m bench decode --device cuda --batch 64 --rounds 9 --per-round 10 --models dat_tiny --out "$OUT/decode.json" 2>&1 \
  | grep -v Warning | tee "$OUT/decode.log"
pack
fi

if want capacity; then
echo "== the host feeding a simulated 5,000 img/s accelerator: one process, --workers 4 as replicas"
echo "   (a model copy each, one simulated device) and as front ends (one inference process), today's"
echo "   host path (Pillow) and the default (simplejpeg, Pillow into the crop)"
for per in 1 8; do
  for workers in 1 4r 4f; do
    mode=$([ "$workers" = 4f ] && echo frontends || echo replicas)
    for path in pillow default; do
      flags=$([ "$path" = pillow ] && echo "--jpeg-decoder pillow" || true)
      timeout 90 $PY -m bench server --server-args "--backend simulated --simulated-ips 5000 \
        --model dat_tiny --detector none --workers ${workers%[rf]} --worker-mode $mode $flags" \
        --images-per-request "$per" --concurrency 128 --rates half --duration 10 --processes 4 \
        --out "$OUT/capacity/w$workers-${per}img-$path" 2>&1 | tail -n 4
    done
  done
done | tee "$OUT/capacity.log"
pack
fi

if want compiled; then
echo "== model speed at batch 64: ours fp16 compiled as --torch-compile serves it (CUDA graphs whose"
echo "   batch-64 bucket is compiled, inductor) vs eager, graphs and the official autocast"
timeout 170 $PY -m bench model --device cuda --precisions fp16 --batch-sizes 64 --compile --cuda-graphs \
  --official "$OFFICIAL" --warmup 3 --repeats 7 --min-seconds 0.3 \
  --out "$OUT/compiled" 2>&1 | grep -E "img/s|Error" | tee "$OUT/compiled.log"
pack
fi

if want exported; then
echo "== our fp16 export under the serving backends (TensorRT engine where TensorRT is installed)"
timeout 240 $PY -m bench model --device cuda --precisions fp16 --batch-sizes 1,8,64 \
  --exported onnxruntime,tensorrt --warmup 3 --repeats 7 --min-seconds 0.3 \
  --out "$OUT/exported" 2>&1 | grep -v Warning | tee "$OUT/exported.log"
pack
fi
if want datpp; then
echo "== DAT-T++ beside DAT-T, fp16, eager and CUDA graphs; then its N blocks' attention"
timeout 150 $PY -m bench model --device cuda --model dat_pp_tiny --beside dat_tiny --precisions fp16 \
  --batch-sizes 1,8,64 --cuda-graphs --interleave --warmup 3 --repeats 7 \
  --out "$OUT/datpp" 2>&1 | grep -v Warning | tee "$OUT/datpp.log"
timeout 120 $PY -m bench neighborhood --device cuda --precision fp16 --batch-size 64 --flex \
  --out "$OUT/neighborhood.json" 2>&1 | grep -v Warning | tee "$OUT/neighborhood.log"
pack
fi
echo "== done"
