"""Backends behind one interface; :func:`create_backend` picks one from the settings.

``auto``: with ``--artifacts``, TensorRT where it is installed, a GPU is present and the
manifest names an engine, else ONNX Runtime; without artifacts, eager PyTorch (CUDA when
available). On CPU the torch backend is also the fastest we measured (see the README).
"""

from __future__ import annotations

from ..settings import Settings
from .base import Backend, BackendError, ImageOutput, ModelMeta, Points

__all__ = ["Backend", "BackendError", "ImageOutput", "ModelMeta", "Points", "create_backend"]


def _has_engine(settings: Settings) -> bool:
    from .manifest import load_manifest
    engine = getattr(load_manifest(settings.artifacts), "engine_path", None)
    return bool(engine)


def create_backend(settings: Settings) -> Backend:
    choice = settings.backend
    if choice == "auto":
        if settings.artifacts is None:
            choice = "torch"
        else:
            from .tensorrt import tensorrt_available
            choice = "tensorrt" if tensorrt_available() and _has_engine(settings) else "onnxruntime"
    if choice == "torch":
        from .torch import TorchBackend
        return TorchBackend(settings.model, checkpoint=settings.checkpoint, labels=settings.labels,
                            device=settings.device, precision=settings.precision,
                            threads=settings.threads)
    if choice == "onnxruntime":
        from .onnxruntime import OnnxRuntimeBackend
        return OnnxRuntimeBackend(settings.artifacts, device=settings.device, threads=settings.threads,
                                  precision=settings.precision)
    if choice == "tensorrt":
        from .tensorrt import TensorRTBackend
        return TensorRTBackend(settings.artifacts, device=settings.device, precision=settings.precision)
    raise BackendError(f"unknown backend {choice!r}")
