"""A Triton model repository from a verified export, for users who already run Triton.

    from runtimes.manifest import Manifest
    from export.triton import write_repository
    write_repository(Manifest.load("exports/digits"), "model_repository")

writes::

    model_repository/<model>/config.pbtxt     platform, tensors, max batch, dynamic batching
    model_repository/<model>/labels.txt       the classification extension's labels
    model_repository/<model>/1/model.onnx     (or model.plan: a TensorRT engine)

Everything comes from the manifest: tensor names, dtypes and dims (without the batch axis),
``max_batch_size`` from the verified batch range, so Triton never forms a batch the export
was not checked at. The TensorRT engine only runs under the TensorRT version and GPU it was
built with (recorded in the manifest); Triton's own TensorRT must be that version.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runtimes.manifest import Manifest

CONFIG_NAME = "config.pbtxt"
LABELS_NAME = "labels.txt"
VERSION = "1"
PLATFORMS = {"onnxruntime": ("onnxruntime_onnx", "model.onnx"), "tensorrt": ("tensorrt_plan", "model.plan")}
DATA_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64"}
DEFAULT_QUEUE_DELAY_US = 5000  # as the server's own default max_queue_delay_ms
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class TritonRepositoryError(ValueError):
    """The export cannot be written as asked (no engine, batch range Triton cannot use, ...)."""


@dataclass(frozen=True)
class TritonOptions:
    platform: str = "auto"  # auto: the TensorRT engine when the export has one, else ONNX
    name: str | None = None  # model name in the repository (default: the manifest's)
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _dims(values) -> str:
    return "[ " + ", ".join(str(v) for v in values) + " ]"


def _platform(manifest: Manifest, choice: str) -> str:
    if choice == "auto":
        return "tensorrt" if manifest.engine_path is not None else "onnxruntime"
    if choice == "tensorrt" and manifest.engine_path is None:
        raise TritonRepositoryError(
            "the export has no TensorRT engine; export with --engine on a GPU machine or use the ONNX model"
        )
    if choice not in PLATFORMS:
        raise TritonRepositoryError(f"platform must be auto, onnxruntime or tensorrt, not {choice!r}")
    return choice


def model_config(manifest: Manifest, options: TritonOptions = TritonOptions()) -> str:
    """The ``config.pbtxt`` text for the export (Triton's ModelConfig, protobuf text format)."""
    platform = _platform(manifest, options.platform)
    name = options.name or manifest.model_name
    for spec in (manifest.input, *manifest.outputs):
        if spec.dtype not in DATA_TYPES:
            raise TritonRepositoryError(
                f"tensor {spec.name!r} has dtype {spec.dtype}, which this writer does not map to Triton"
            )
    dynamic = not isinstance(manifest.input.shape[0], int)
    if dynamic and manifest.batch.min > 1:
        raise TritonRepositoryError(
            f"Triton forms batches from 1 but the export was verified from "
            f"batch {manifest.batch.min}; export with --min-batch 1"
        )
    # With a batch axis Triton's dims leave it out; a fixed-batch graph keeps its full shape.
    in_dims = manifest.input.shape[1:] if dynamic else manifest.input.shape
    outputs = []
    for spec in manifest.outputs:
        # The classification extension reads labels for a classifier's logits; a detector's
        # label indices map to the same file (one label per line) for the client to read.
        labelled = spec.name in manifest.task.labelled_outputs
        labels = [f"    label_filename: {_quote(LABELS_NAME)}"] if labelled else []
        outputs += [
            "  {",
            f"    name: {_quote(spec.name)}",
            f"    data_type: {DATA_TYPES[spec.dtype]}",
            f"    dims: {_dims(spec.shape[1:] if dynamic else spec.shape)}",
            *labels,
            "  },",
        ]
    outputs[-1] = "  }"
    lines = [
        f"name: {_quote(name)}",
        f"platform: {_quote(PLATFORMS[platform][0])}",
        f"max_batch_size: {manifest.batch.max if dynamic else 0}",
        "input [",
        "  {",
        f"    name: {_quote(manifest.input.name)}",
        f"    data_type: {DATA_TYPES[manifest.input.dtype]}",
        *(["    format: FORMAT_NCHW"] if manifest.input.layout == "NCHW" and len(in_dims) == 3 else []),
        f"    dims: {_dims(in_dims)}",
        "  }",
        "]",
        "output [",
        *outputs,
        "]",
    ]
    if dynamic:
        preferred = sorted({manifest.batch.opt, manifest.batch.max})
        lines += [
            "dynamic_batching {",
            f"  preferred_batch_size: {_dims(preferred)}",
            f"  max_queue_delay_microseconds: {options.max_queue_delay_us}",
            "}",
        ]
    # An engine runs on the GPU it was built for; ONNX Runtime on a GPU where Triton has one.
    kind = "KIND_GPU" if platform == "tensorrt" else "KIND_AUTO"
    lines += ["instance_group [", "  {", "    count: 1", f"    kind: {kind}", "  }", "]"]
    return "\n".join(lines) + "\n"


def write_repository(
    manifest: Manifest, repository: str | Path, options: TritonOptions = TritonOptions()
) -> Path:
    """Writes (or replaces) the model's folder in ``repository``; returns that folder."""
    name = options.name or manifest.model_name
    if not _NAME.fullmatch(name):
        raise TritonRepositoryError(
            f"model name {name!r} cannot name a folder in a Triton "
            "repository (use letters, digits, '_', '-' and '.')"
        )
    platform = _platform(manifest, options.platform)
    config = model_config(manifest, options)
    artifact = manifest.engine_path if platform == "tensorrt" else manifest.onnx_path
    assert artifact is not None  # _platform picks tensorrt only with an engine
    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    # Built beside the target, then swapped in: Triton never sees a half-written model.
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repository))
    try:
        (work / VERSION).mkdir()
        shutil.copyfile(artifact, work / VERSION / PLATFORMS[platform][1])
        (work / LABELS_NAME).write_text("".join(f"{label}\n" for label in manifest.labels))
        (work / CONFIG_NAME).write_text(config)
        os.chmod(work, 0o755)
        target = repository / name
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target
