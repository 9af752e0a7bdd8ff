"""Checks an exported graph (or engine) against the PyTorch model it came from.

Every export is verified before it is handed over: ``onnx.checker`` first, then the runtime
and PyTorch (float32, eager, the model's own sampling) on the same seeded inputs at several
batch sizes. The first images are shared by every batch size, so a batch-dependent error
shows up too.

Pass criteria (stated in the manifest beside the figures):

* float32 graphs: max |logit difference| <= 1e-4.
* float16 graphs: max |logit difference| <= 1e-2 * max(1, max |reference logit|).
* both: top-1 agreement, where a disagreement is excused only on a near-tie (the reference's
  top-1/top-2 margin is within twice the tolerance, so the allowed error alone could flip it).

Detectors are compared on their kept detections, image by image: every reference detection
must have a counterpart with the same label, a box within ``1e-3 * max(1, |coordinate|)``
(1e-2 for float16 graphs) and a score within the logit tolerance. A detection without a
counterpart is excused only on a near-tie: its score is within tolerance of the score
threshold or of the last kept slot's, or NMS chose between two near-equal boxes: an unmatched
detection of the same class on the other side scores within tolerance of it and overlaps it
beyond the NMS IoU threshold, and both boxes are among the candidates PyTorch's NMS chose from.
A detector's check in which PyTorch kept no detection at all fails: it compared nothing (any
runtime that also finds nothing would pass), so it needs pictures the detector finds objects in.

Instance masks are compared on the matched detections: each side's 28 x 28 probabilities pasted
over its own box (as the server pastes them) and thresholded at 0.5. The two masks' IoU must be
at least ``MASK_IOU[precision]`` (two empty masks agree), or else every pixel they disagree on
must be a near-tie: its pasted probability within ``MASK_TIE[precision]`` of 0.5 on one side.
(A small mask loses much IoU to a single pixel: on the Cascade Mask R-CNN fixture a 10-pixel
mask differs by one pixel whose probability is 0.5 to 5e-5, IoU 0.9, and the smallest on the
mirrored picture keeps an IoU of 0.75, while the pasted
probabilities of any two matched masks differ by at most 2e-3, their boxes' sub-pixel
differences included.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from models import CLASSIFICATION, DAT, RCNN, RetinaNet, Task, paste_masks
from models.boxes import box_iou
from runtimes.manifest import BatchRange
from runtimes.onnxruntime import create_session

FP32_TOLERANCE = 1e-4
FP16_RELATIVE_TOLERANCE = 1e-2
SEED = 0

Runner = Callable[[np.ndarray], list[np.ndarray]]  # float32 NCHW -> the graph's outputs
NOTHING_FOUND = (
    "the reference detector found no objects in the verification inputs, so no "
    "detection was compared: verify on pictures it finds objects in (--verify-images)"
)
BOX_RELATIVE_TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2}
MASK_IOU = {"fp32": 0.99, "fp16": 0.95}
MASK_TIE = {"fp32": 5e-3, "fp16": 5e-2}  # pasted probability error a flipped pixel may carry


def tolerance_for(precision: str, reference: np.ndarray) -> float:
    if precision == "fp32":
        return FP32_TOLERANCE
    return FP16_RELATIVE_TOLERANCE * max(1.0, float(np.abs(reference).max()))


def tolerance_rule(precision: str) -> str:
    if precision == "fp32":
        return f"max_abs_error <= {FP32_TOLERANCE:g}"
    return f"max_abs_error <= {FP16_RELATIVE_TOLERANCE:g} * max(1, max|reference logit|)"


def verification_batches(batch: BatchRange, extra: Iterable[int] = ()) -> list[int]:
    """1, 2 and 7 (an odd size no profile is tuned for), the range's min/opt/max, clipped."""
    sizes = {1, 2, 7, batch.min, batch.opt, batch.max, *extra}
    return sorted({batch.clip(s) for s in sizes})


@dataclass
class BatchResult:
    """Classifiers: max |logit error| and top-1 agreement. Detectors: max relative box error
    and the share of reference detections matched (``detections`` counts them)."""

    batch: int
    max_abs_error: float
    top1_agreement: float
    tolerance: float
    passed: bool
    detections: int | None = None
    min_mask_iou: float | None = None  # instance masks: the worst matched pair's IoU


@dataclass
class Verification:
    """What one runtime was checked for, and how it did."""

    runtime: str
    artifact: str
    precision: str
    tolerance_rule: str
    checker: str = "not run"  # "ok" / "not run" / the checker's message
    results: list[BatchResult] = field(default_factory=list)
    error: str | None = None  # the runtime failed to load or run
    task: Task = CLASSIFICATION

    @property
    def passed(self) -> bool:
        return (
            self.error is None
            and self.checker in ("ok", "not run")
            and bool(self.results)
            and all(r.passed for r in self.results)
        )

    @property
    def max_abs_error(self) -> float | None:
        return max((r.max_abs_error for r in self.results), default=None)

    @property
    def top1_agreement(self) -> float | None:
        return min((r.top1_agreement for r in self.results), default=None)

    @property
    def min_mask_iou(self) -> float | None:
        return min((r.min_mask_iou for r in self.results if r.min_mask_iou is not None), default=None)

    def summary(self) -> str:
        if self.error:
            return f"{self.runtime}: FAILED ({self.error})"
        if self.checker not in ("ok", "not run"):
            return f"{self.runtime}: FAILED (onnx.checker: {self.checker})"
        verdict = "ok" if self.passed else "FAILED"
        sizes = ",".join(str(r.batch) for r in self.results)
        if self.task.finds_objects:
            found = sum(r.detections or 0 for r in self.results)
            masks = ""
            if self.task.has_masks and self.min_mask_iou is not None:
                masks = f", min mask IoU {self.min_mask_iou:.4f}"
            return (
                f"{self.runtime}: {verdict} - {found} detections, {self.top1_agreement:.0%} "
                f"matched, max relative box error {self.max_abs_error:.3g}{masks} "
                f"({self.tolerance_rule}), batches {sizes}"
            )
        return (
            f"{self.runtime}: {verdict} - max abs error {self.max_abs_error:.3g} "
            f"({self.tolerance_rule}), top-1 agreement {self.top1_agreement:.0%}, "
            f"batches {sizes}"
        )

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(
            task=self.task.name,
            passed=self.passed,
            max_abs_error=self.max_abs_error,
            top1_agreement=self.top1_agreement,
        )
        if self.task.has_masks:
            data["min_mask_iou"] = self.min_mask_iou
        return data


def _near_tie(reference: np.ndarray, index: int, tolerance: float) -> bool:
    top2 = np.sort(reference[index])[-2:]
    return float(top2[1] - top2[0]) <= 2 * tolerance


def compare(reference: np.ndarray, candidate: np.ndarray, precision: str) -> BatchResult:
    """One batch: max abs error, top-1 agreement (near-ties excused) against the tolerance."""
    if candidate.shape != reference.shape:
        raise ValueError(f"output shape {candidate.shape} != reference {reference.shape}")
    reference = reference.astype(np.float64)
    candidate = candidate.astype(np.float64)
    tolerance = tolerance_for(precision, reference)
    error = float(np.abs(candidate - reference).max()) if reference.size else 0.0
    if not np.isfinite(candidate).all():
        error = float("inf")
    agree = reference.argmax(1) == candidate.argmax(1)
    excused = all(_near_tie(reference, int(i), tolerance) for i in np.flatnonzero(~agree))
    return BatchResult(
        batch=int(reference.shape[0]),
        max_abs_error=error,
        top1_agreement=float(agree.mean()),
        tolerance=tolerance,
        passed=error <= tolerance and excused,
    )


def _image_detections(boxes, scores, labels) -> list[tuple[np.ndarray, float, int]]:
    return [(boxes[i], float(scores[i]), int(labels[i])) for i in np.flatnonzero(labels >= 0)]


Candidates = tuple[np.ndarray, np.ndarray]  # boxes (B, K, 4), class scores (B, C, K)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """The IoU of two x1y1x2y2 boxes, in float64."""
    return box_iou(*(torch.as_tensor(box, dtype=torch.float64).reshape(1, 4) for box in (a, b))).item()


class _Judge:
    """Decides whether a detection kept on one side only is a near-tie (module docstring)."""

    def __init__(
        self,
        cutoffs: list[float],
        tolerance: float,
        box_rtol: float,
        iou_threshold: float,
        candidates: Candidates | None,
    ):
        self.cutoffs, self.tolerance, self.box_rtol = cutoffs, tolerance, box_rtol
        self.iou_threshold, self.candidates = iou_threshold, candidates

    def is_candidate(self, box: np.ndarray, score: float, label: int) -> bool:
        if self.candidates is None:
            return False
        boxes, scores = self.candidates
        close = np.all(np.abs(boxes - box) <= self.box_rtol * np.maximum(1, np.abs(box)), axis=-1)
        return bool(np.any(close & (np.abs(scores[label] - score) <= self.tolerance)))

    def excused(self, detection, others) -> bool:
        box, score, label = detection
        if any(abs(score - c) <= self.tolerance for c in self.cutoffs):
            return True
        return any(
            other_label == label
            and abs(other_score - score) <= self.tolerance
            and _iou(box, other_box) > self.iou_threshold
            and self.is_candidate(box, score, label)
            and self.is_candidate(other_box, other_score, label)
            for other_box, other_score, other_label in others
        )


def compare_detections(
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    precision: str,
    score_threshold: float,
    iou_threshold: float = 0.5,
    candidates: Candidates | None = None,
) -> BatchResult:
    """One batch of (boxes, scores, labels[, masks]): detections matched one to one, and
    their masks compared (module docstring). ``candidates``: PyTorch's pre-NMS boxes and
    scores; without them no NMS tie is excused."""
    score_tol = tolerance_for(precision, np.ones(1))
    with_masks = len(reference) > 3 and len(candidate) > 3
    mask_ious: list[float] = []
    masks_agree = True
    box_rtol = BOX_RELATIVE_TOLERANCE[precision]
    for expected, actual in zip(reference, candidate):
        if np.shape(expected) != np.shape(actual):
            raise ValueError(f"output shape {np.shape(actual)} != reference {np.shape(expected)}")
    worst, matched, total, excused_all = 0.0, 0, 0, True
    for b in range(reference[0].shape[0]):
        ref = _image_detections(*(np.asarray(r[b], np.float64) for r in reference[:3]))
        cand = _image_detections(*(np.asarray(c[b], np.float64) for c in candidate[:3]))
        ref_slots, cand_slots = np.flatnonzero(reference[2][b] >= 0), np.flatnonzero(candidate[2][b] >= 0)
        total += len(ref)
        free = list(range(len(cand)))
        lost = []
        for r, (box, score, label) in enumerate(ref):
            hit = next(
                (
                    j
                    for j in free
                    if cand[j][2] == label
                    and abs(cand[j][1] - score) <= score_tol
                    and np.all(np.abs(cand[j][0] - box) <= box_rtol * np.maximum(1, np.abs(box)))
                ),
                None,
            )
            if hit is None:
                lost.append((box, score, label))
                continue
            free.remove(hit)
            matched += 1
            if with_masks:
                iou, near_ties_only = compare_masks(
                    (reference[3][b][ref_slots[r]], box),
                    (candidate[3][b][cand_slots[hit]], cand[hit][0]),
                    MASK_TIE[precision],
                )
                mask_ious.append(iou)
                masks_agree &= iou >= MASK_IOU[precision] or near_ties_only
            worst = max(worst, float(np.max(np.abs(cand[hit][0] - box) / np.maximum(1, np.abs(box)))))
        extra = [cand[j] for j in free]
        # Every slot full: the last kept score is a cut-off a near-tie may fall either side of.
        cutoffs = [score_threshold] + ([ref[-1][1]] if len(ref) == reference[1].shape[1] else [])
        image_candidates = None if candidates is None else (candidates[0][b], candidates[1][b])
        judge = _Judge(cutoffs, score_tol, box_rtol, iou_threshold, image_candidates)
        excused_all &= all(judge.excused(d, extra) for d in lost)
        excused_all &= all(judge.excused(d, lost) for d in extra)
    min_mask_iou = min(mask_ious, default=1.0) if with_masks else None
    return BatchResult(
        batch=int(reference[0].shape[0]),
        max_abs_error=worst,
        top1_agreement=matched / total if total else 1.0,
        tolerance=box_rtol,
        passed=excused_all and masks_agree,
        detections=total,
        min_mask_iou=min_mask_iou,
    )


def compare_masks(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], tie: float
) -> tuple[float, bool]:
    """Two (S x S probabilities, box) masks, each pasted over its own box (:func:`models.paste_masks`)
    and thresholded at 0.5: their IoU (1 when both are empty), and whether every pixel they
    disagree on has a pasted probability within ``tie`` of 0.5 on one side."""
    boxes = np.stack([a[1], b[1]]).astype(np.float32)
    # every pixel a mask can cover lies within its box plus one
    height = max(1, int(np.ceil(boxes[:, 3].max())) + 2)
    width = max(1, int(np.ceil(boxes[:, 2].max())) + 2)
    masks = torch.from_numpy(np.stack([a[0], b[0]]).astype(np.float32))
    soft = paste_masks(masks, torch.from_numpy(boxes), height, width, None)
    pasted = soft >= 0.5
    union = int((pasted[0] | pasted[1]).sum())
    iou = 1.0 if union == 0 else int((pasted[0] & pasted[1]).sum()) / union
    differ = pasted[0] != pasted[1]
    near = (soft[:, differ] - 0.5).abs().amin(dim=0) <= tie
    return iou, bool(near.all())


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
def reference_candidates(
    model: RetinaNet | RCNN, images: torch.Tensor, device: str | torch.device = "cpu"
) -> Candidates:
    """A detector's pre-NMS boxes and class scores (float32 eager)."""
    model = model.to(device).float().eval()
    boxes, scores = model.nms_candidates(images.to(device))
    return boxes.cpu().numpy(), scores.cpu().numpy()


def detection_tolerance_rule(precision: str, masks: bool = False) -> str:
    rule = (
        f"box error <= {BOX_RELATIVE_TOLERANCE[precision]:g} * max(1, |coordinate|), "
        f"same labels, {tolerance_rule(precision).replace('max_abs_error', 'score error')}"
    )
    if masks:
        rule += (
            f", pasted mask IoU >= {MASK_IOU[precision]:g} or only pixels within "
            f"{MASK_TIE[precision]:g} of 0.5 differ"
        )
    return rule


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
) -> Verification:
    """Runs ``run`` (float32 NCHW numpy -> the graph's outputs) at each batch size and compares
    with the model. ``images`` replaces the seeded random inputs (a detector finds nothing in
    noise; real pictures make its comparison meaningful)."""
    task = getattr(model, "task", CLASSIFICATION)
    detection = task.finds_objects
    rule = detection_tolerance_rule(precision, task.has_masks) if detection else tolerance_rule(precision)
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
    for size in batch_sizes:
        x = images[:size]
        expected = reference_outputs(model, x, device)
        try:
            actual = [np.asarray(a) for a in run(x.numpy())]
            if isinstance(model, (RetinaNet, RCNN)):  # detectors: their kept detections
                result = compare_detections(
                    expected,
                    actual,
                    precision,
                    model.config.score_threshold,
                    model.config.iou_threshold,
                    reference_candidates(model, x, device),
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
    )
