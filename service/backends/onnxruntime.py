"""ONNX Runtime (CPU or CUDA execution provider) on an ONNX model from ``python -m export``.

Artifacts are read only through their manifest (``runtimes.manifest``), which carries the
preprocessing and labels the graph was validated with; the session is made as export
verification makes its own (``runtimes.onnxruntime``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtimes.onnxruntime import SessionError, create_session, has_cuda_provider

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

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self,
        artifacts: str | Path,
        *,
        device: str = "auto",
        threads: int | None = None,
        precision: str = "auto",
    ) -> None:
        super().__init__()
        self._precision_request = precision
        self._artifacts = Path(artifacts)
        self._threads = threads
        self._device_request = device
        self._session: Any = None
        self._input = ""
        self._outputs: list[str] = []
        self._dtype: type = np.float32
        self._fixed_batch: int | None = None
        self._max_batch: int | None = None

    def _device(self) -> str:
        """``cpu`` or ``cuda:N`` (a GPU that is present); ``auto`` takes the GPU where this
        onnxruntime has the CUDA provider."""
        device = self._device_request
        if device == "auto":
            device = "cuda" if has_cuda_provider() and torch.cuda.is_available() else "cpu"
        return resolve_device(device)

    def load(self) -> ModelMeta:
        manifest = load_manifest(self._artifacts)
        onnx_path = manifest.onnx_path
        if not onnx_path.is_file():
            raise BackendError(f"{self._artifacts}: the manifest names {onnx_path}, which is missing")
        self.device = self._device()
        try:
            session = create_session(onnx_path, device=self.device, threads=self._threads)
        except SessionError as exc:
            raise BackendError(str(exc)) from exc
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        self._input = manifest.input_name
        self._outputs = list(manifest.output_names)
        if self._input not in inputs or not set(self._outputs) <= outputs:
            raise BackendError(
                f"{onnx_path}: the graph has inputs {sorted(inputs)} and outputs "
                f"{sorted(outputs)}; the manifest names {self._input!r} -> {self._outputs}"
            )
        meta = meta_from_manifest(manifest, onnx_path)
        spec = inputs[self._input]
        if spec.type not in _NUMPY_TYPES:
            raise BackendError(f"{onnx_path}: unsupported input type {spec.type}")
        self._dtype = _NUMPY_TYPES[spec.type]
        shape = list(spec.shape)
        if len(shape) != 4 or shape[1:] != [3, meta.canvas, meta.canvas]:
            raise BackendError(
                f"{onnx_path}: input shape {shape} does not match the manifest's "
                f"preprocessing (N, 3, {meta.canvas}, {meta.canvas})"
            )
        self._fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self._max_batch = manifest.batch.max  # the verified range
        self.precision = check_precision(manifest, self._precision_request)
        self._session = session
        self.meta = meta
        return meta

    def _run_chunk(self, chunk: torch.Tensor) -> list[np.ndarray]:
        x: np.ndarray = chunk.numpy().astype(self._dtype, copy=False)
        return self._session.run(self._outputs, {self._input: x})

    def run(self, images: ImageBatch, points: bool = False) -> list[ImageOutput] | list[DetectionOutput]:
        if self._session is None or self.meta is None:
            raise BackendError("run before load")
        metas = None
        if isinstance(images, list):  # keep-ratio images: onto the graph's canvas
            images, metas = on_canvas(images, self.meta)
        arrays = run_in_chunks(self._run_chunk, images.contiguous(), self._max_batch, self._fixed_batch)
        return served(self.meta.task).per_image(arrays, metas)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "artifacts": str(self._artifacts),
            "threads": self._threads,
            "static_batch": self._fixed_batch,
            "max_batch": self._max_batch,
        }
