#!/usr/bin/env bash
# What this host can feed an accelerator: the server on --backend simulated (5,000 img/s, DAT-T
# shapes, the 500x375 JPEG), one process and --workers 2, one image per request and eight, with
# today's host path (Pillow throughout), the default (simplejpeg, Pillow into the crop) and
# --cpu-resize torch. The whole matrix runs ROUNDS times in turn, so that a slow spell of a
# shared machine slows every configuration alike; bench/host_capacity.py summarises the rounds.
#   usage: bench/host_capacity.sh OUT [ROUNDS] [DURATION_S]
set -euo pipefail
OUT=${1:?usage: bench/host_capacity.sh OUT [ROUNDS] [DURATION_S]}
ROUNDS=${2:-2}
DURATION=${3:-8}
PY=${PY:-python}
BASE="--backend simulated --simulated-ips 5000 --model dat_tiny --detector none"
declare -A PATHS=(
  [pillow]="--jpeg-decoder pillow --cpu-resize pillow"
  [default]=""
  [torch]="--cpu-resize torch"
)
for round in $(seq 1 "$ROUNDS"); do
  for per in 1 8; do
    for workers in 1 2; do
      for path in pillow default torch; do
        name="w${workers}-${per}img-${path}"
        echo "== round $round: $name"
        $PY -m bench server --server-args "$BASE --workers $workers ${PATHS[$path]}" \
          --images-per-request "$per" --concurrency 32 --rates half --duration "$DURATION" \
          --title "$name" --out "$OUT/round$round/$name" | tail -n 4
      done
    done
  done
done
