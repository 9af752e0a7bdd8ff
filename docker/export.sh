#!/usr/bin/env bash
# Compose's one-shot export: builds the ONNX models and, on the GPU, TensorRT engines for the
# classifier into $DAT_ARTIFACTS and the detector into $DAT_DETECTOR_ARTIFACTS, or does
# nothing for an export whose manifest shows it is current.
set -euo pipefail

common=(--max-batch "${DAT_EXPORT_MAX_BATCH:-32}" --skip-if-current)
[ "${DAT_EXPORT_PRECISION:-fp16}" = "fp16" ] && common+=(--fp16)
# An engine is required when a GPU is visible: better to fail here than serve ONNX silently.
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && common+=(--engine)

model=${DAT_MODEL:-dat_digits}
args=(--out "${DAT_ARTIFACTS:-/artifacts/current}" "${common[@]}")
case "$model" in
    *.yaml|*.yml|*.json) args+=(--config "$model") ;;
    *) args+=(--model "$model") ;;
esac
[ -n "${DAT_CHECKPOINT:-}" ] && args+=(--checkpoint "$DAT_CHECKPOINT")
echo "python -m export ${args[*]}"
python -m export "${args[@]}"

detector=${DAT_DETECTOR:-dat_digits_detector}
[ "${detector,,}" = "none" ] && exit 0
args=(--model "$detector" --out "${DAT_DETECTOR_ARTIFACTS:-/artifacts/detector}" "${common[@]}")
[ -n "${DAT_DETECTOR_CHECKPOINT:-}" ] && args+=(--checkpoint "$DAT_DETECTOR_CHECKPOINT")
# A detector finds nothing in random inputs: verify the default one on its sample scenes.
[ "$detector" = "dat_digits_detector" ] && args+=(--verify-images /app/samples/scene_*.png)
echo "python -m export ${args[*]}"
exec python -m export "${args[@]}"
