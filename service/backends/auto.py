"""``--backend auto`` on a CPU without ``--artifacts``: the backend measured fastest there.

For the small embedded model, ONNX Runtime beats eager PyTorch several times over on CPU
(framework overhead dominates a 32 px DAT; ``python -m bench backends``, figures in
docs/benchmarks.md), so it is exported once per (model, weights, config) into a cache folder through the
exporter's own pipeline, verified there, and served from the cache on every later start.
Larger models stay on torch, where the measured order is reversed (DAT-T: eager bf16 beats
ONNX Runtime on the CPU). Whatever goes wrong while exporting, the server falls
back to torch and says so in its log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from runtimes.hashing import sha256_file

from .base import Backend, BackendError, DetectionOutput, ImageBatch, ImageOutput, ModelMeta
from .manifest import load_manifest

log = logging.getLogger("service.backends.auto")

# Registered models measured faster under ONNX Runtime than under torch on CPU.
ONNX_ON_CPU = frozenset({"dat_digits"})


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dat-serve" / "exports"


def cache_key(model: str, checkpoint: Path | None, labels: Path | None, max_batch: int) -> str:
    """Changes whenever the weights, config, labels, batch range or exporter format change."""
    from models.registry import resolve_config
    from runtimes import manifest as mf

    name, config, spec = resolve_config(model)
    weights = checkpoint or (spec.weights if spec is not None else None)
    if weights is None or not Path(weights).is_file():
        raise BackendError(f"{model}: no weights file to export (checkpoint or embedded weights)")
    parts = {
        "model": name,
        "config": config.to_dict(),
        "weights": sha256_file(Path(weights)),
        "preprocessing": spec.preprocessing.to_dict() if spec is not None else None,
        "labels": sha256_file(labels) if labels else None,
        "max_batch": max_batch,
        "format": [mf.FORMAT, mf.VERSION],
        "torch": torch.__version__,
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return f"{name}-{digest}"


def ensure_export(
    model: str, *, checkpoint: Path | None, labels: Path | None, cache_dir: Path, max_batch: int
) -> Path:
    """The cached, verified export of ``model``; made (once) if absent or unreadable."""
    from export.options import ExportOptions
    from export.pipeline import run_export
    from runtimes.manifest_fields import BatchRange

    target = cache_dir / cache_key(model, checkpoint, labels, max_batch)
    if target.is_dir():
        try:
            load_manifest(target)
            return target
        except BackendError as exc:
            log.warning("cached export unusable, exporting again: %s", exc)
            shutil.rmtree(target, ignore_errors=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    log.info("exporting %s to ONNX once for the CPU default backend (cache: %s)", model, target)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=cache_dir))
    try:
        is_file = not _registered(model)
        run_export(
            ExportOptions(
                out=work,
                model=None if is_file else model,
                config=model if is_file else None,
                checkpoint=checkpoint,
                labels=labels,
                batch=BatchRange(1, min(8, max_batch), max_batch),
                engine=False,
            ),
            log=lambda line: log.debug(line.strip()),
        )
        try:
            work.rename(target)  # atomic; another process may have won the race
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _registered(model: str) -> bool:
    from models import list_models

    return model in list_models()


class FirstThatLoads(Backend):
    """Loads the first backend that can; then behaves exactly as that backend."""

    def __init__(self, *candidates: Callable[[], Backend]) -> None:
        super().__init__()
        self._candidates = candidates
        self.active: Backend | None = None

    def load(self) -> ModelMeta:
        errors = []
        for make in self._candidates:
            try:
                backend = make()
                meta = backend.load()
            except Exception as exc:  # noqa: BLE001 - try the next one, report all if none loads
                errors.append(f"{type(exc).__name__}: {exc}")
                log.warning("backend candidate failed, trying the next: %s", errors[-1])
                continue
            self.active, self.meta = backend, meta
            self.device, self.precision = backend.device, backend.precision
            return meta
        raise BackendError("no backend could load the model: " + "; ".join(errors))

    def _backend(self) -> Backend:
        if self.active is None:
            raise BackendError("run before load")
        return self.active

    def run(self, images: ImageBatch, points: bool = False) -> list[ImageOutput] | list[DetectionOutput]:
        return self._backend().run(images, points)

    def warmup(self, batch_sizes) -> None:  # noqa: ANN001 - as Backend.warmup
        self._backend().warmup(batch_sizes)

    def describe(self) -> dict[str, Any]:
        return self._backend().describe() if self.active else super().describe()

    @property
    def supports_points(self) -> bool:  # type: ignore[override]
        return bool(self.active and self.active.supports_points)

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.active.name if self.active else "auto"
