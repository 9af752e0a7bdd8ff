"""Where an export came from and whether it is still current: the weights' source and hash,
the tool versions (both recorded in the manifest), and :func:`stale_reason`, which compares
an existing export with a new request."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from runtimes import manifest as mf
from runtimes import tensorrt as trt_runtime
from runtimes.hashing import sha256_file

from .options import DEFAULT_MODEL, ExportOptions


def weights_info(options: ExportOptions) -> dict:
    """Where the weights come from (checkpoint, embedded or random), their file and sha256."""
    if options.checkpoint is not None:
        path = Path(options.checkpoint)
        return {"source": "checkpoint", "file": path.name, "sha256": sha256_file(path)}
    import models

    spec = None if options.config else models.get_spec(options.model or DEFAULT_MODEL)
    if spec is not None and spec.weights is not None and spec.weights.is_file():
        return {"source": "embedded", "file": spec.weights.name, "sha256": sha256_file(spec.weights)}
    return {"source": "random", "file": None, "sha256": None}


def tool_versions() -> dict[str, str]:
    """The versions of the tools that made and checked the export (TensorRT where present)."""
    import numpy
    import onnx
    import onnxruntime
    import onnxscript

    tools = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
    }
    version = trt_runtime.tensorrt_version()
    if version:
        tools["tensorrt"] = version
    return tools


def stale_reason(options: ExportOptions) -> str | None:
    """Why the artifacts in ``options.out`` do not match this request (None: they are current).

    Current means: a manifest with status ok whose files hash as recorded, made from the same
    weights, precision, opset, grid-sample mode and batch range, and, where an engine can be
    built here, an engine built by this TensorRT version for this GPU.
    """
    try:
        manifest = mf.Manifest.load(options.out)
    except mf.ManifestError as exc:
        return str(exc)
    wanted = weights_info(options)
    if wanted["source"] == "random" or manifest.weights.get("sha256") != wanted["sha256"]:
        return "the weights differ from the ones exported"
    for what, have, want in (
        ("precision", manifest.precision, options.precision),
        ("opset", manifest.opset, options.opset),
        ("grid-sample mode", manifest.grid_sample, options.grid_sample),
        ("batch range", manifest.batch, options.batch),
        ("task", manifest.task.name, options.task or manifest.task.name),
    ):
        if have != want:
            return f"{what} {have} was exported, {want} is asked for"
    if options.engine is not False and trt_runtime.unavailable_reason() is None:
        info = manifest.engine_info
        here = {"tensorrt": trt_runtime.tensorrt_version() or "", "device": torch.cuda.get_device_name()}
        if manifest.engine_path is None:
            return "no TensorRT engine was built"
        if {k: info.get(k) for k in here} != here:
            return (
                f"the engine was built with TensorRT {info.get('tensorrt')} on "
                f"{info.get('device')}; here: TensorRT {here['tensorrt']} on {here['device']}"
            )
    return None
