#!/usr/bin/env bash
# Load test of POST /classify with wrk (an external load generator), several concurrencies,
# against a server on 127.0.0.1 only. Prints requests/s, p50/p90/p99 latency, errors and the
# mean batch size the server formed (from its /metrics) per concurrency.
#
#   bench/loadtest.sh                                  # starts python -m service (defaults)
#   bench/loadtest.sh -c "1 8 32" -d 10 -- --model cfg.json --backend torch
#   bench/loadtest.sh -u http://127.0.0.1:8000         # an already running server
#
# Options: -u URL (loopback only; default: start a server on a free port, stop it at the end)
#          -c "LEVELS" connections per run (default "1 4 16 64")   -d SECONDS per run (10)
#          -i IMAGE file to send (default: a rendered 28x28 digit PNG)  -t wrk threads (2)
#          -- ARGS for python -m service when the script starts it
# Needs wrk (Debian: apt-get install -y wrk). Every run is bounded by -d; the whole script by
# the sum plus server start-up.
set -euo pipefail
cd "$(dirname "$0")/.."

URL="" LEVELS="1 4 16 64" DURATION=10 IMAGE="" THREADS=2
while getopts "u:c:d:i:t:h" opt; do
  case $opt in
    u) URL=$OPTARG ;; c) LEVELS=$OPTARG ;; d) DURATION=$OPTARG ;; i) IMAGE=$OPTARG ;;
    t) THREADS=$OPTARG ;; *) sed -n '2,17p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 2; }

TMP=$(mktemp -d)
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

if [ -z "$URL" ]; then
  PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  URL="http://127.0.0.1:$PORT"
  echo "starting: python -m service --host 127.0.0.1 --port $PORT --log-level warning $*"
  "$PY" -m service --host 127.0.0.1 --port "$PORT" --log-level warning "$@" 2>"$TMP/server.log" &
  SERVER_PID=$!
  for _ in $(seq 1200); do  # up to 120 s (a first start may export the default model)
    curl -sf "$URL/health/ready" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited:" >&2; tail -20 "$TMP/server.log" >&2; exit 1; }
    sleep 0.1
  done
fi
host=$(echo "$URL" | sed -E 's#^https?://(\[[^]]+\]|[^:/]+).*#\1#')
case "$host" in
  127.*|localhost|\[::1\]) ;;
  *) echo "refusing to load-test $URL: only loopback targets are allowed" >&2; exit 2 ;;
esac
curl -sf "$URL/health/ready" >/dev/null || { echo "$URL is not ready" >&2; exit 1; }

if [ -z "$IMAGE" ]; then
  IMAGE="$TMP/digit.png"
  "$PY" - "$IMAGE" <<'EOF'
import sys
from PIL import Image, ImageDraw
image = Image.new("L", (28, 28), 255)
ImageDraw.Draw(image).text((9, 6), "7", fill=0, font_size=18)
image.save(sys.argv[1])
EOF
fi
case "$IMAGE" in
  *.jpg|*.jpeg|*.JPG) TYPE=image/jpeg ;; *.webp) TYPE=image/webp ;; *) TYPE=image/png ;;
esac
status=$(curl -s -o "$TMP/one.json" -w '%{http_code}' -H "Content-Type: $TYPE" --data-binary "@$IMAGE" "$URL/classify")
[ "$status" = 200 ] || { echo "a single request failed ($status): $(cat "$TMP/one.json")" >&2; exit 1; }
model=$("$PY" -c 'import json,sys; m=json.load(open(sys.argv[1]))["model"]; print(m["name"], m["backend"], m["precision"])' "$TMP/one.json")
echo "target $URL, model: $model, image $(basename "$IMAGE") ($(wc -c <"$IMAGE") bytes), ${DURATION}s per level"
echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); wrk shares them"

batches() {  # sum and count of the server's batch-size histogram
  curl -s "$URL/metrics" | awk '/^dat_batch_size_sum\{task="classification"\} /{s=$2} /^dat_batch_size_count\{task="classification"\} /{c=$2} END{print s+0, c+0}'
}

printf '\n| connections | requests/s | p50 ms | p90 ms | p99 ms | errors | mean batch |\n|---:|---:|---:|---:|---:|---:|---:|\n' > "$TMP/table"
for c in $LEVELS; do
  t=$(( c < THREADS ? c : THREADS ))
  read -r s0 n0 < <(batches)
  LOADTEST_IMAGE="$IMAGE" LOADTEST_TYPE="$TYPE" timeout $((DURATION + 30)) \
    wrk -t "$t" -c "$c" -d "${DURATION}s" --timeout 10s -s bench/loadtest.lua "$URL/classify" > "$TMP/wrk.txt"
  read -r s1 n1 < <(batches)
  line=$(grep '^RESULT' "$TMP/wrk.txt")
  get() { echo "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  errors=$(( $(get non2xx) + $(get connect_err) + $(get read_err) + $(get write_err) + $(get timeouts) ))
  mean=$(awk -v a="$s0" -v b="$s1" -v x="$n0" -v y="$n1" 'BEGIN{ if (y > x) printf "%.2f", (b-a)/(y-x); else print "-" }')
  printf '%4d connections: %8s req/s  p50 %8s ms  p99 %8s ms  errors %s  mean batch %s\n' \
    "$c" "$(get rps)" "$(get p50_ms)" "$(get p99_ms)" "$errors" "$mean"
  printf '| %d | %s | %s | %s | %s | %d | %s |\n' "$c" "$(get rps)" "$(get p50_ms)" "$(get p90_ms)" \
    "$(get p99_ms)" "$errors" "$mean" >> "$TMP/table"
done
cat "$TMP/table"
