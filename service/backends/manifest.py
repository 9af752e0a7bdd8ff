"""Reading ``python -m export`` artifacts, only through the exporter's own manifest module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models import KeepRatioResize, Letterbox, Preprocessing, preprocessing_from_dict

from .base import BackendError, ModelMeta, file_version


def load_manifest(folder: Path) -> Any:
    try:
        from export.manifest import Manifest, ManifestError
    except ImportError as exc:
        raise BackendError(f"cannot read artifacts: the export package is unavailable ({exc})") from exc
    if not Path(folder).is_dir():
        raise BackendError(f"artifacts folder not found: {folder}")
    try:
        return Manifest.load(folder)
    except ManifestError as exc:
        raise BackendError(f"{folder}: {exc}") from exc


def meta_from_manifest(manifest: Any, artifact: Path) -> ModelMeta:
    """The version is the weights' hash where the manifest records it, so the same weights
    report the same version whichever backend serves them; else the artifact's own hash."""
    preprocessing = manifest.preprocessing
    if not isinstance(preprocessing, (Preprocessing, Letterbox, KeepRatioResize)):
        preprocessing = preprocessing_from_dict(dict(preprocessing))
    weights_sha = (getattr(manifest, "weights", None) or {}).get("sha256")
    version = f"sha256:{weights_sha[:12]}" if weights_sha else file_version(artifact)
    return ModelMeta(
        str(manifest.model_name),
        version,
        tuple(manifest.labels),
        preprocessing,
        task=manifest.task,
        category_ids=tuple(getattr(manifest, "category_ids", ()) or ()),
        max_detections=_kept_per_image(manifest),
        mask_threshold=float((getattr(manifest, "model_config", None) or {}).get("mask_threshold", 0.5)),
        max_side=preprocessing.canvas if isinstance(preprocessing, KeepRatioResize) else None,
    )


def _kept_per_image(manifest: Any) -> int:
    """A detector graph's second axis (boxes: batch x kept x 4); 0 for a classifier."""
    if not manifest.task.finds_objects:
        return 0
    shape = manifest.outputs[0].shape
    return int(shape[1]) if len(shape) > 1 and isinstance(shape[1], int) else 0


def check_precision(manifest: Any, requested: str) -> str:
    """The artifact's precision; a different explicit request is refused, not ignored."""
    precision = str(getattr(manifest, "precision", None) or "fp32")
    if requested not in ("auto", precision):
        raise BackendError(
            f"precision {requested} requested but the artifacts were exported "
            f"as {precision}; export again or leave precision on auto"
        )
    return precision
