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
# A detector's export is verified on pictures it finds objects in, or refused: the default
# detector on the sample scenes in the image (samples/scene_*.png), another on the files of
# DAT_EXPORT_VERIFY_IMAGES (space-separated paths or globs, e.g. /checkpoints/verify/*.jpg).
if [ -n "${DAT_EXPORT_VERIFY_IMAGES:-}" ]; then
    # shellcheck disable=SC2206  # split on spaces and expand the globs, on purpose
    images=($DAT_EXPORT_VERIFY_IMAGES)
    args+=(--verify-images "${images[@]}")
elif [ "$detector" = "dat_digits_detector" ]; then
    args+=(--verify-images /app/samples/scene_*.png)
fi
echo "python -m export ${args[*]}"
exec python -m export "${args[@]}"
