#!/usr/bin/env bash
# --workers 2 as front ends feeding one inference process, against one process and today's
# --workers 2 (replicas, each with its own model copy and batcher), on the same cores: the
# server on --backend simulated (5,000 img/s, DAT-T shapes, the 500x375 JPEG), one image per
# request and eight. The replicas share one simulated device (as on a GPU host; see
# service/backends/simulated.py). The matrix runs ROUNDS times in turn, so that a slow spell
# of a shared machine slows every configuration alike; then bench/host_capacity.py summarises.
#   usage: bench/frontends.sh OUT [ROUNDS] [DURATION_S] [CLIENTS] [WORKERS]
set -euo pipefail
OUT=${1:?usage: bench/frontends.sh OUT [ROUNDS] [DURATION_S] [CLIENTS] [WORKERS]}
ROUNDS=${2:-2}
DURATION=${3:-8}
CLIENTS=${4:-32}
WORKERS=${5:-2}
PY=${PY:-python}
BASE="--backend simulated --simulated-ips 5000 --model dat_tiny --detector none"
declare -A MODES=(
  [single]="--workers 1"
  [replicas]="--workers $WORKERS --worker-mode replicas"
  [frontends]="--workers $WORKERS --worker-mode frontends"
)
for round in $(seq 1 "$ROUNDS"); do
  for per in 1 8; do
    for mode in single replicas frontends; do
      workers=$([ "$mode" = single ] && echo 1 || echo "$WORKERS")
      name="w${workers}-${per}img-${mode}"
      echo "== round $round: $name"
      $PY -m bench server --server-args "$BASE ${MODES[$mode]}" \
        --images-per-request "$per" --concurrency "$CLIENTS" --rates half --duration "$DURATION" \
        --title "$name" --out "$OUT/round$round/$name" | tail -n 4
    done
  done
done
$PY -m bench.host_capacity "$OUT" single
