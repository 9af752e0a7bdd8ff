#!/usr/bin/env bash
# Compose's one-shot export: builds the ONNX model and, on the GPU, a TensorRT engine into
# $DAT_ARTIFACTS, or does nothing when the manifest there shows they are current.
set -euo pipefail

model=${DAT_MODEL:-dat_digits}
args=(--out "${DAT_ARTIFACTS:-/artifacts/current}" --max-batch "${DAT_EXPORT_MAX_BATCH:-32}"
      --skip-if-current)
case "$model" in
    *.yaml|*.yml|*.json) args+=(--config "$model") ;;
    *) args+=(--model "$model") ;;
esac
[ -n "${DAT_CHECKPOINT:-}" ] && args+=(--checkpoint "$DAT_CHECKPOINT")
[ "${DAT_EXPORT_PRECISION:-fp16}" = "fp16" ] && args+=(--fp16)
# An engine is required when a GPU is visible: better to fail here than serve ONNX silently.
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && args+=(--engine)

echo "python -m export ${args[*]}"
exec python -m export "${args[@]}"
