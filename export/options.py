"""What one export is asked to do (:class:`ExportOptions`), and the checks a request passes
before any slow work starts (:func:`check_options`); :class:`ExportError` says what is wrong."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import models as model_zoo
from runtimes.manifest_fields import BatchRange

from . import onnx as onnx_export
from . import symbolics
from . import tensorrt as trt_export

DEFAULT_MODEL = "dat_digits"
GRID_SAMPLE_CHOICES = ("auto", "native", "decomposed")
# The tasks whose graphs the export writes (a task fixes the outputs and how they are compared).
TASKS = {name: task for name, task in model_zoo.TASKS.items() if task.exportable}


class ExportError(Exception):
    """The request cannot be carried out as given (one-line message for the user)."""


@dataclass
class ExportOptions:
    """One export's request (``python -m export``'s flags); :func:`check_options` vets it."""

    out: str | Path
    model: str | None = None  # registered name; default DEFAULT_MODEL unless config is given
    config: str | Path | None = None  # official YAML / JSON (config mapping)
    checkpoint: str | Path | None = None
    random_weights: bool = False  # allow a model without weights (smoke tests only)
    name: str | None = None  # model name for the manifest (default: registered name / file stem)
    labels: str | Path | None = None
    task: str | None = None  # a name in TASKS (classification / detection); None: the model's own
    verify_images: tuple[str | Path, ...] = ()  # real pictures to verify on (detectors)
    precision: str = "fp32"
    opset: int = onnx_export.DEFAULT_OPSET
    batch: BatchRange = field(default_factory=BatchRange)
    grid_sample: str = "auto"
    engine: bool | None = None  # True: required; False: never; None: where TensorRT runs
    verify_batches: tuple[int, ...] = ()  # extra batch sizes to verify
    workspace_gb: float = trt_export.DEFAULT_WORKSPACE_GB


def check_options(options: ExportOptions) -> None:
    """Raises ExportError for a request that cannot be carried out, before any slow work."""
    try:  # every export is verified with it: say so before the slow part, not after
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ExportError(
            "ONNX Runtime is not installed: every export is verified with it "
            "(pip install 'dat-serve[cpu]', or [gpu] on a GPU host)"
        ) from None
    if options.task is not None and options.task not in TASKS:
        raise ExportError(f"task {options.task!r} is not supported yet; choose from {sorted(TASKS)}")
    if options.grid_sample not in GRID_SAMPLE_CHOICES:
        raise ExportError(f"grid-sample must be one of {GRID_SAMPLE_CHOICES}")
    if options.opset not in onnx_export.SUPPORTED_OPSETS:
        ops = onnx_export.SUPPORTED_OPSETS
        raise ExportError(f"opset {options.opset} is not supported; choose {ops.start}-{ops.stop - 1}")
    if options.grid_sample == "native" and options.opset not in symbolics.NATIVE_OPSETS:
        raise ExportError(
            f"--grid-sample native needs opset 18 or 19: opset {options.opset} names "
            "the bilinear mode 'linear', which TensorRT reads as nearest; use "
            "--grid-sample decomposed (or auto)"
        )
    if options.model and options.config:
        raise ExportError("give either a registered model name or a config file, not both")
    for what, path in (
        ("config", options.config),
        ("checkpoint", options.checkpoint),
        ("labels", options.labels),
        *(("image", p) for p in options.verify_images),
    ):
        if path is not None and not Path(path).is_file():
            raise ExportError(f"{what} file not found: {path}")
