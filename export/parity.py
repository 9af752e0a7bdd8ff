"""The pass criteria of a verification, and the comparison of one batch of a runtime's outputs
with PyTorch's: logits (:func:`compare`), detections (:func:`compare_detections`) and their
instance masks (:func:`compare_masks`).

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
A float16 two-stage detector (Mask R-CNN, Cascade) is matched by overlap instead, as a set
(:mod:`export.overlap`: float16 rounding reorders the RPN's near-equal proposals).

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

from collections.abc import Sequence

import numpy as np
import torch

from models import paste_masks
from models.boxes import box_iou

from .verification import BatchResult

FP32_TOLERANCE = 1e-4
FP16_RELATIVE_TOLERANCE = 1e-2
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
