"""Reading ``python -m export`` artifacts, only through their manifest (``runtimes.manifest``)."""

from __future__ import annotations

from pathlib import Path

from models import KeepRatioResize
from runtimes.manifest import Manifest, ManifestError

from .base import BackendError, ModelMeta, file_version


def load_manifest(folder: Path) -> Manifest:
    if not Path(folder).is_dir():
        raise BackendError(f"artifacts folder not found: {folder}")
    try:
        return Manifest.load(folder)
    except ManifestError as exc:
        raise BackendError(f"{folder}: {exc}") from exc


def meta_from_manifest(manifest: Manifest, artifact: Path) -> ModelMeta:
    """The version is the weights' hash where the manifest records it, so the same weights
    report the same version whichever backend serves them; else the artifact's own hash."""
    preprocessing = manifest.preprocessing
    weights_sha = manifest.weights.get("sha256")
    version = f"sha256:{weights_sha[:12]}" if weights_sha else file_version(artifact)
    return ModelMeta(
        manifest.model_name,
        version,
        manifest.labels,
        preprocessing,
        task=manifest.task,
        category_ids=manifest.category_ids,
        max_detections=_kept_per_image(manifest),
        mask_threshold=float(manifest.model_config.get("mask_threshold", 0.5)),
        max_side=preprocessing.canvas if isinstance(preprocessing, KeepRatioResize) else None,
    )


def _kept_per_image(manifest: Manifest) -> int:
    """The graph's detections axis (a detector's boxes: batch x kept x 4); 0 for a task whose
    outputs have none (a classifier's logits) or where the graph leaves it dynamic."""
    for expected, output in zip(manifest.task.outputs, manifest.outputs):
        if "detections" in expected.shape:
            size = output.shape[1 + expected.shape.index("detections")]  # after the batch axis
            return size if isinstance(size, int) else 0
    return 0


def check_precision(manifest: Manifest, requested: str) -> str:
    """The artifact's precision; a different explicit request is refused, not ignored."""
    if requested not in ("auto", manifest.precision):
        raise BackendError(
            f"precision {requested} requested but the artifacts were exported "
            f"as {manifest.precision}; export again or leave precision on auto"
        )
    return manifest.precision
