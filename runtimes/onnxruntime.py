"""The one way an ONNX Runtime session is made, for export verification and for serving: the
execution providers for a device, the thread and optimisation options, and a check that the CUDA
provider really started (ONNX Runtime falls back to the CPU silently when it cannot).

``onnxruntime`` is imported when a session is made, so the rest runs where it is absent.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import onnxruntime

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# Two builds of one package (the same import name and folder): exactly one should be installed.
DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")
ERRORS_ONLY = 3  # ONNX Runtime's log severity: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal


class SessionError(RuntimeError):
    """ONNX Runtime is missing, or cannot run on the device asked for."""


def runtime_summary() -> dict[str, Any] | None:
    """The installed ONNX Runtime: version, providers it can run, which builds are installed
    (pip distributions); None where it is not importable."""
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


def has_cuda_provider() -> bool:
    """Whether the installed ONNX Runtime is a build with the CUDA execution provider."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return CUDA in ort.get_available_providers()


def providers(device: str, available: list[str]) -> list:
    """The providers argument for ``device`` (``cpu``, ``cuda`` or ``cuda:N``): the CUDA provider
    on that GPU, the CPU for the operators it lacks; or the CPU alone."""
    target = torch.device(device)
    if target.type == "cpu":
        return [CPU]
    if target.type != "cuda":
        raise SessionError(f"ONNX Runtime runs on cpu or cuda devices, not on {device}")
    if CUDA not in available:
        raise SessionError(
            f"device {device} requested but this onnxruntime has no {CUDA} "
            "(install onnxruntime-gpu: the gpu extra)"
        )
    index = target.index if target.index is not None else torch.cuda.current_device()
    return [(CUDA, {"device_id": index}), CPU]


def create_session(
    path: str | Path, *, device: str = "cpu", threads: int | None = None, quiet: bool = False
) -> onnxruntime.InferenceSession:
    """An ``onnxruntime.InferenceSession`` on ``path`` for ``device``, all graph optimisations on,
    ``threads`` intra-op threads (None: ONNX Runtime's choice, one per core) and one inter-op
    thread; ``quiet`` logs errors only (export verification runs many sessions)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise SessionError("onnxruntime is not installed (the cpu or the gpu extra)") from exc
    chosen = providers(device, ort.get_available_providers())
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if quiet:
        options.log_severity_level = ERRORS_ONLY
    session = ort.InferenceSession(str(path), options, providers=chosen)
    if chosen[0] != CPU and session.get_providers()[0] != CUDA:
        raise SessionError("onnxruntime could not start its CUDA provider")
    return session
