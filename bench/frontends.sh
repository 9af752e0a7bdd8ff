#!/usr/bin/env bash
# --workers 2 as front ends feeding one inference process, against one process and
# --workers 2 replicas (each with its own model copy and batcher), on the same cores: the
# server on --backend simulated (5,000 img/s, DAT-T shapes, the 500x375 JPEG), one image per
# request and eight. One process and replicas run twice: on the default host path, and on
# Pillow's (`today`: Pillow decoding and resizing, the server before the compiled resize and
# the front ends). The replicas share one simulated device (as on a GPU host; see
# service/backends/simulated.py). The matrix runs ROUNDS times in turn, so that a slow spell
# of a shared machine slows every configuration alike; then bench/host_capacity.py summarises,
# each configuration against one process on Pillow's path.
#   usage: bench/frontends.sh OUT [ROUNDS] [DURATION_S] [CLIENTS] [WORKERS]
set -euo pipefail
OUT=${1:?usage: bench/frontends.sh OUT [ROUNDS] [DURATION_S] [CLIENTS] [WORKERS]}
ROUNDS=${2:-2}
DURATION=${3:-8}
CLIENTS=${4:-32}
WORKERS=${5:-2}
PY=${PY:-python}
BASE="--backend simulated --simulated-ips 5000 --model dat_tiny --detector none"
PILLOW="--jpeg-decoder pillow --cpu-resize pillow"
declare -A MODES=(
  [today]="--workers 1 $PILLOW"
  [replicas-today]="--workers $WORKERS --worker-mode replicas $PILLOW"
  [single]="--workers 1"
  [replicas]="--workers $WORKERS --worker-mode replicas"
  [frontends]="--workers $WORKERS --worker-mode frontends"
)
for round in $(seq 1 "$ROUNDS"); do
  for per in 1 8; do
    for mode in today replicas-today single replicas frontends; do
      case $mode in today | single) workers=1 ;; *) workers=$WORKERS ;; esac
      name="w${workers}-${per}img-${mode}"
      echo "== round $round: $name"
      $PY -m bench server --server-args "$BASE ${MODES[$mode]}" \
        --images-per-request "$per" --concurrency "$CLIENTS" --rates half --duration "$DURATION" \
        --title "$name" --out "$OUT/round$round/$name" | tail -n 4
    done
  done
done
$PY -m bench.host_capacity "$OUT" today
