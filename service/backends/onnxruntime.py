"""ONNX Runtime (CPU or CUDA execution provider) on an ONNX model from ``python -m export``.

Artifacts are read only through the exporter's manifest, which carries the preprocessing and
labels the graph was validated with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import (
    Backend,
    BackendError,
    DetectionOutput,
    ImageBatch,
    ImageOutput,
    ModelMeta,
    on_canvas,
    outputs_for,
    run_in_chunks,
)
from .manifest import check_precision, load_manifest, meta_from_manifest
from .torch import resolve_device

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
# Two builds of one package (the same import name and folder): exactly one should be installed.
DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")


def runtime_summary() -> dict[str, Any] | None:
    """The installed ONNX Runtime: version, providers it can run, which builds are installed
    (pip distributions); None where it is not importable."""
    import importlib.metadata

    try:
        import onnxruntime as ort
    except ImportError:
        return None
    builds = []
    for name in DISTRIBUTIONS:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        builds.append(name)
    return {
        "version": ort.__version__,
        "providers": list(ort.get_available_providers()),
        "distributions": builds,
    }


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

    def _providers(self, ort: Any) -> list[str | tuple[str, dict[str, Any]]]:
        available = ort.get_available_providers()
        device = self._device_request
        if device == "auto":
            device = "cuda" if "CUDAExecutionProvider" in available and torch.cuda.is_available() else "cpu"
        device = resolve_device(device)  # "cpu" or "cuda:N", N a GPU that is present
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in available:
                raise BackendError(
                    f"device {device} requested but this onnxruntime has no "
                    "CUDAExecutionProvider (install onnxruntime-gpu: the gpu extra)"
                )
            index = torch.device(device).index
            self.device = device
            return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        self.device = "cpu"
        return ["CPUExecutionProvider"]

    def load(self) -> ModelMeta:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError("onnxruntime is not installed") from exc
        manifest = load_manifest(self._artifacts)
        onnx_path = Path(manifest.onnx_path)
        if not onnx_path.is_file():
            raise BackendError(f"{self._artifacts}: the manifest names {onnx_path}, which is missing")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self._threads:
            options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(onnx_path), options, providers=self._providers(ort))
        if self.device.startswith("cuda") and session.get_providers()[0] != "CUDAExecutionProvider":
            raise BackendError("onnxruntime could not start its CUDA provider")
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
        batch = getattr(manifest, "batch", None)
        self._max_batch = int(batch.max) if batch is not None else None  # the verified range
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
        return outputs_for(self.meta.task, arrays, metas)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "artifacts": str(self._artifacts),
            "threads": self._threads,
            "static_batch": self._fixed_batch,
            "max_batch": self._max_batch,
        }
