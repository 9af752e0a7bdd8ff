"""Checks an exported graph (or engine) against the PyTorch model it came from.

Every export is verified before it is handed over: ``onnx.checker`` first, then the runtime
and PyTorch (float32, eager, the model's own sampling) on the same seeded inputs at several
batch sizes. The first images are shared by every batch size, so a batch-dependent error
shows up too.

The pass criteria are :mod:`export.parity`'s; the reports :mod:`export.verification`'s.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import CLASSIFICATION, DAT, RCNN, RetinaNet
from runtimes.manifest_fields import BatchRange
from runtimes.onnxruntime import create_session

from .parity import Candidates, compare, compare_detections, detection_tolerance_rule, tolerance_rule
from .verification import Verification

SEED = 0

Runner = Callable[[np.ndarray], list[np.ndarray]]  # float32 NCHW -> the graph's outputs
NOTHING_FOUND = (
    "the reference detector found no objects in the verification inputs, so no "
    "detection was compared: verify on pictures it finds objects in (--verify-images)"
)


def verification_batches(batch: BatchRange, extra: Iterable[int] = ()) -> list[int]:
    """1, 2 and 7 (an odd size no profile is tuned for), the range's min/opt/max, clipped."""
    sizes = {1, 2, 7, batch.min, batch.opt, batch.max, *extra}
    return sorted({batch.clip(s) for s in sizes})


def sample_inputs(image_size: int, count: int, seed: int = SEED) -> torch.Tensor:
    """``count`` seeded normalised images (standard normal, the scale of a normalised photo)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, image_size, image_size, generator=generator)


@torch.no_grad()
def reference_outputs(
    model: DAT | RetinaNet | RCNN, images: torch.Tensor, device: str | torch.device = "cpu"
) -> list[np.ndarray]:
    """Float32 eager outputs, the yardstick for every runtime: [logits] for a classifier,
    [boxes, scores, labels] for a detector."""
    model = model.to(device).float().eval()
    out = model(images.to(device))
    outputs = [out] if isinstance(out, torch.Tensor) else list(out)
    return [t.cpu().numpy() for t in outputs]


@torch.no_grad()
def float16_outputs(
    model: RCNN, images: torch.Tensor, device: str | torch.device = "cpu"
) -> list[np.ndarray]:
    """PyTorch's own float16 model on ``images`` (a copy, half precision): the bar a float16
    two-stage detector's artifact is held to (:mod:`export.overlap`)."""
    half = copy.deepcopy(model).to(device).half().eval()
    outputs = half(images.to(device).half())
    return [t.float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy() for t in outputs]


@torch.no_grad()
def reference_candidates(
    model: RetinaNet | RCNN, images: torch.Tensor, device: str | torch.device = "cpu"
) -> Candidates:
    """A detector's pre-NMS boxes and class scores (float32 eager)."""
    model = model.to(device).float().eval()
    boxes, scores = model.nms_candidates(images.to(device))
    return boxes.cpu().numpy(), scores.cpu().numpy()


class References:
    """PyTorch's side of one model's verifications, each computed once per input batch and
    device: float32 outputs, a detector's NMS candidates, a float16 two-stage detector's own
    float16 outputs. An export checks the same inputs several times (the detections check
    before the export, ONNX Runtime, the fallback graph, the engine); an entry is reused only
    for equal inputs on the same device."""

    def __init__(self, model: DAT | RetinaNet | RCNN):
        self.model = model
        self._entries: dict[tuple[str, str, tuple[int, ...]], tuple[torch.Tensor, Any]] = {}

    def _get(self, kind: str, images: torch.Tensor, device: str | torch.device, compute: Callable) -> Any:
        key = (kind, str(device), tuple(images.shape))
        entry = self._entries.get(key)
        if entry is None or not torch.equal(entry[0], images):
            entry = (images.clone(), compute())
            self._entries[key] = entry
        return entry[1]

    def outputs(self, images: torch.Tensor, device: str | torch.device = "cpu") -> list[np.ndarray]:
        """Float32 eager outputs (:func:`reference_outputs`)."""
        if isinstance(self.model, RCNN):  # one pass gives the candidates too
            return self._with_candidates(images, device)[0]
        return self._get("outputs", images, device, lambda: reference_outputs(self.model, images, device))

    def candidates(self, images: torch.Tensor, device: str | torch.device = "cpu") -> Candidates:
        """A detector's pre-NMS boxes and class scores (:func:`reference_candidates`)."""
        model = self.model
        if isinstance(model, RCNN):
            return self._with_candidates(images, device)[1]
        assert isinstance(model, RetinaNet), "only detectors have NMS candidates"
        return self._get("candidates", images, device, lambda: reference_candidates(model, images, device))

    def float16(self, images: torch.Tensor, device: str | torch.device = "cpu") -> list[np.ndarray]:
        """PyTorch's own float16 model's outputs (:func:`float16_outputs`)."""
        model = self.model
        assert isinstance(model, RCNN), "only two-stage detectors are held to PyTorch float16"
        return self._get("float16", images, device, lambda: float16_outputs(model, images, device))

    def _with_candidates(
        self, images: torch.Tensor, device: str | torch.device
    ) -> tuple[list[np.ndarray], Candidates]:
        model = self.model
        assert isinstance(model, RCNN)

        @torch.no_grad()
        def compute() -> tuple[list[np.ndarray], Candidates]:
            model.to(device).float().eval()
            found, (boxes, scores) = model.forward_with_candidates(images.to(device))
            outputs = [t.cpu().numpy() for t in found if t is not None]
            return outputs, (boxes.cpu().numpy(), scores.cpu().numpy())

        return self._get("outputs+candidates", images, device, compute)


def verify_runner(
    run: Runner,
    model: DAT | RetinaNet | RCNN,
    *,
    runtime: str,
    artifact: str | Path,
    precision: str,
    batch_sizes: Sequence[int],
    device: str = "cpu",
    checker: str = "not run",
    images: torch.Tensor | None = None,
    references: References | None = None,
) -> Verification:
    """Runs ``run`` (float32 NCHW numpy -> the graph's outputs) at each batch size and compares
    with the model. ``images`` replaces the seeded random inputs (a detector finds nothing in
    noise; real pictures make its comparison meaningful). ``references``: PyTorch's outputs
    already computed for ``model`` (a new :class:`References` otherwise)."""
    from . import overlap

    task = getattr(model, "task", CLASSIFICATION)
    detection = task.finds_objects
    by_overlap = isinstance(model, RCNN) and precision == "fp16"  # export.overlap says why
    rule = detection_tolerance_rule(precision, task.has_masks) if detection else tolerance_rule(precision)
    if by_overlap:
        rule = overlap.tolerance_rule(task.has_masks)
    report = Verification(
        runtime=runtime,
        artifact=Path(artifact).name,
        precision=precision,
        tolerance_rule=rule,
        checker=checker,
        task=task,
    )
    if images is None:
        images = sample_inputs(model.input_size, max(batch_sizes))
    elif images.shape[0] < max(batch_sizes):  # repeat real pictures up to the largest batch
        images = images.repeat((max(batch_sizes) + images.shape[0] - 1) // images.shape[0], 1, 1, 1)
    if references is None:
        references = References(model)
    elif references.model is not model:
        raise ValueError("references were computed for another model")
    for size in batch_sizes:
        x = images[:size]
        expected = references.outputs(x, device)
        try:
            actual = [np.asarray(a) for a in run(x.numpy())]
            if isinstance(model, RCNN) and by_overlap:
                result = overlap.compare_by_overlap(expected, actual, references.float16(x, device))
            elif isinstance(model, (RetinaNet, RCNN)):  # detectors: their kept detections
                result = compare_detections(
                    expected,
                    actual,
                    precision,
                    model.config.score_threshold,
                    model.config.iou_threshold,
                    references.candidates(x, device),
                )
            else:
                result = compare(expected[0], actual[0], precision)
            report.results.append(result)
        except Exception as exc:  # a runtime error is a verification failure, reported
            report.error = f"batch {size}: {type(exc).__name__}: {_first_line(exc)}"
            break
    if detection and report.error is None and not any(r.detections for r in report.results):
        report.error = NOTHING_FOUND
    return report


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def check_onnx(path: str | Path) -> str:
    """``onnx.checker`` with shape inference; 'ok' or the checker's first line."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # ValidationError, InferenceError
        return _first_line(exc) or type(exc).__name__
    return "ok"


def onnxruntime_runner(path: str | Path, input_name: str) -> Runner:
    """A CPU ONNX Runtime session, made as the server makes its own, as a :data:`Runner`."""
    session = create_session(path, device="cpu", quiet=True)

    def run(images: np.ndarray) -> list[np.ndarray]:
        return session.run(None, {input_name: images.astype(np.float32)})

    return run


def verify_onnx(
    path: str | Path,
    model: DAT | RetinaNet | RCNN,
    *,
    precision: str,
    batch_sizes: Sequence[int],
    input_name: str,
    images: torch.Tensor | None = None,
    references: References | None = None,
) -> Verification:
    """onnx.checker, then ONNX Runtime (CPU) against PyTorch at each batch size."""
    checker = check_onnx(path)
    if checker != "ok":
        return Verification(
            runtime="onnxruntime",
            artifact=Path(path).name,
            precision=precision,
            tolerance_rule=tolerance_rule(precision),
            checker=checker,
        )
    try:
        run = onnxruntime_runner(path, input_name)
    except Exception as exc:
        return Verification(
            runtime="onnxruntime",
            artifact=Path(path).name,
            precision=precision,
            tolerance_rule=tolerance_rule(precision),
            checker=checker,
            error=f"session: {type(exc).__name__}: {_first_line(exc)}",
        )
    return verify_runner(
        run,
        model,
        runtime="onnxruntime",
        artifact=path,
        precision=precision,
        batch_sizes=batch_sizes,
        checker=checker,
        images=images,
        references=references,
    )
