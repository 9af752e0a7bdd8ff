"""TensorRT 10+ engines from ``python -m export``, read through their manifest and run by
``runtimes.tensorrt.EngineRunner``, the runner the exporter verified them with.

``tensorrt`` is imported only when this backend loads, so the server (and its tests) run
where it is not installed. Inputs may already be on the engine's GPU (preprocessed there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from runtimes.tensorrt import EngineError, EngineRunner, import_problem, unavailable_reason

from ..tasks import served
from .base import (
    Backend,
    BackendError,
    DetectionOutput,
    ImageBatch,
    ImageOutput,
    ModelMeta,
    on_canvas,
    run_in_chunks,
)
from .manifest import check_precision, load_manifest, meta_from_manifest
from .torch import resolve_device


def tensorrt_available() -> bool:
    """The tensorrt package imports and a CUDA GPU is visible."""
    return unavailable_reason() is None


class TensorRTBackend(Backend):
    name = "tensorrt"
    takes_device_inputs = True

    def __init__(self, artifacts: str | Path, *, device: str = "auto", precision: str = "auto") -> None:
        super().__init__()
        self._precision_request = precision
        self._artifacts = Path(artifacts)
        self.device = resolve_device(device)  # "cuda:N": torch.cuda.set_device needs the index
        self._runner: EngineRunner | None = None

    def load(self) -> ModelMeta:
        problem = import_problem()
        if problem is not None:
            raise BackendError(
                f"the tensorrt backend needs the 'tensorrt' package (NVIDIA's wheel index): {problem}"
            )
        if not self.device.startswith("cuda") or not torch.cuda.is_available():
            raise BackendError("the tensorrt backend needs a CUDA device")
        manifest = load_manifest(self._artifacts)
        engine_path = manifest.engine_path
        if engine_path is None or not engine_path.is_file():
            raise BackendError(f"{self._artifacts}: the manifest names no TensorRT engine, or it is missing")
        try:
            runner = EngineRunner(engine_path, manifest.input_name, manifest.output_names, self.device)
        except EngineError as exc:
            raise BackendError(f"{engine_path}: {exc}") from exc
        meta = meta_from_manifest(manifest, engine_path)
        if list(runner.input_shape[1:]) != [3, meta.canvas, meta.canvas]:
            raise BackendError(
                f"{engine_path}: input shape {list(runner.input_shape)} does not match the manifest's "
                f"preprocessing (N, 3, {meta.canvas}, {meta.canvas})"
            )
        self.precision = check_precision(manifest, self._precision_request)
        self._runner = runner
        self.meta = meta
        return meta

    def run(self, images: ImageBatch, points: bool = False) -> list[ImageOutput] | list[DetectionOutput]:
        if self._runner is None or self.meta is None:
            raise BackendError("run before load")
        metas = None
        if isinstance(images, list):  # keep-ratio images: onto the engine's canvas
            images, metas = on_canvas(images, self.meta)
        runner = self._runner
        arrays = run_in_chunks(runner, images, runner.max_batch, runner.fixed_batch)
        return served(self.meta.task).per_image(arrays, metas)

    def describe(self) -> dict[str, Any]:
        max_batch = self._runner.max_batch if self._runner else None
        return {**super().describe(), "artifacts": str(self._artifacts), "engine_max_batch": max_batch}
