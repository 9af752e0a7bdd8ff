"""Backends behind one interface; :func:`create_backend` picks one from the settings.

``auto``:
- with ``--artifacts``: TensorRT where it is installed, a GPU is present and the manifest
  names an engine, else ONNX Runtime;
- on a GPU without artifacts: eager PyTorch on CUDA;
- on a CPU without artifacts: what was measured fastest for the model (``bench.backends``):
  ONNX Runtime on a cached export for the embedded default model (torch if that fails),
  eager PyTorch for the others.

The detector (``/detect``) follows the same rule on its own settings: ``--detector-artifacts``
go to TensorRT where it runs, else ONNX Runtime; without artifacts it runs eager PyTorch.
"""

from __future__ import annotations

from pathlib import Path

from ..settings import Settings
from .base import Backend, BackendError, DetectionOutput, ImageOutput, ModelMeta, Points

__all__ = [
    "Backend",
    "BackendError",
    "DetectionOutput",
    "ImageOutput",
    "ModelMeta",
    "Points",
    "create_backend",
    "create_detector_backend",
]


def _has_engine(artifacts: Path) -> bool:
    from .manifest import load_manifest

    return load_manifest(artifacts).engine_path is not None


def _onnx_measured_faster(settings: Settings) -> bool:
    from .auto import ONNX_ON_CPU
    from .torch import resolve_device

    return (
        settings.auto_export
        and settings.model in ONNX_ON_CPU
        and settings.precision in ("auto", "fp32")
        and resolve_device(settings.device) == "cpu"
    )


def _cached_onnx_or_torch(settings: Settings) -> Backend:
    from .auto import FirstThatLoads, default_cache_dir, ensure_export
    from .onnxruntime import OnnxRuntimeBackend
    from .torch import TorchBackend

    def onnx() -> Backend:
        artifacts = ensure_export(
            settings.model,
            checkpoint=settings.checkpoint,
            labels=settings.labels,
            cache_dir=settings.export_cache or default_cache_dir(),
            max_batch=settings.max_batch_size,
        )
        return OnnxRuntimeBackend(artifacts, device="cpu", threads=settings.cpu_threads)

    def eager() -> Backend:
        return TorchBackend(
            settings.model,
            checkpoint=settings.checkpoint,
            labels=settings.labels,
            device="cpu",
            precision=settings.precision,
            threads=settings.cpu_threads,
        )

    return FirstThatLoads(onnx, eager)


def _artifacts(settings: Settings) -> Path:
    if settings.artifacts is None:  # Settings refuses it as well
        raise BackendError(f"backend {settings.backend} needs --artifacts (a 'python -m export' folder)")
    return settings.artifacts


def create_backend(settings: Settings) -> Backend:
    choice = settings.backend
    if choice == "auto":
        if settings.artifacts is None:
            choice = "torch"
            if _onnx_measured_faster(settings):
                return _cached_onnx_or_torch(settings)
        else:
            from .tensorrt import tensorrt_available

            choice = "tensorrt" if tensorrt_available() and _has_engine(settings.artifacts) else "onnxruntime"
    if choice == "torch":
        from .torch import TorchBackend

        return TorchBackend(
            settings.model,
            checkpoint=settings.checkpoint,
            labels=settings.labels,
            device=settings.device,
            precision=settings.precision,
            threads=settings.cpu_threads,
            cuda_graphs=settings.cuda_graphs,
            compile=settings.torch_compile,
        )
    if choice == "onnxruntime":
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(
            _artifacts(settings),
            device=settings.device,
            threads=settings.cpu_threads,
            precision=settings.precision,
        )
    if choice == "simulated":
        from .simulated import SimulatedBackend

        return SimulatedBackend(
            settings.model, images_per_second=settings.simulated_ips, labels=settings.labels
        )
    if choice == "tensorrt":
        from .tensorrt import TensorRTBackend

        return TensorRTBackend(_artifacts(settings), device=settings.device, precision=settings.precision)
    raise BackendError(f"unknown backend {choice!r}")


def create_detector_backend(settings: Settings) -> Backend | None:
    """The backend behind /detect, or None when the server runs no detector."""
    if not settings.serves_detector:
        return None
    if settings.backend == "simulated":
        from .simulated import SimulatedBackend

        return SimulatedBackend(settings.detector, images_per_second=settings.simulated_ips)
    if settings.detector_artifacts is not None:
        from .tensorrt import tensorrt_available

        if tensorrt_available() and _has_engine(settings.detector_artifacts):
            from .tensorrt import TensorRTBackend

            return TensorRTBackend(settings.detector_artifacts, device=settings.device)
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(
            settings.detector_artifacts, device=settings.device, threads=settings.cpu_threads
        )
    from .torch import TorchBackend

    return TorchBackend(
        settings.detector,
        checkpoint=settings.detector_checkpoint,
        device=settings.device,
        precision=settings.precision,
        threads=settings.cpu_threads,
    )
