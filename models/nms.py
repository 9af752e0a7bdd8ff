"""Class-aware non-maximum suppression behind one seam, with ONNX ``NonMaxSuppression`` semantics.

The detector's post-processing calls :func:`nms_keep`; eager mode runs the pure-PyTorch
:func:`greedy_nms_keep` below, and the exporter swaps in an opaque op that it translates to
ONNX ``NonMaxSuppression`` (:func:`override`). The seam returns a dense keep-mask rather than
a list of indices, so everything around it keeps static shapes and exports cleanly.

Semantics (those of ONNX ``NonMaxSuppression`` with ``center_point_box=0``), per image and
class: candidates are the boxes scoring strictly above ``score_threshold``, visited from the
highest score down; a candidate is kept unless its IoU with an already kept box of the same
class is strictly above ``iou_threshold``; at most ``max_per_class`` are kept. Boxes without
area never suppress and are never suppressed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch

KeepFn = Callable[[torch.Tensor, torch.Tensor, int, float, float], torch.Tensor]


def _iou_with(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """One (4,) box x1y1x2y2 against (N, 4) others -> (N,) IoU, 0 wherever a box has no area
    (ONNX NMS convention)."""
    x1, y1 = min(box[0], box[2]), min(box[1], box[3])
    x2, y2 = max(box[0], box[2]), max(box[1], box[3])
    ox1, oy1 = np.minimum(others[:, 0], others[:, 2]), np.minimum(others[:, 1], others[:, 3])
    ox2, oy2 = np.maximum(others[:, 0], others[:, 2]), np.maximum(others[:, 1], others[:, 3])
    area, other_area = (x2 - x1) * (y2 - y1), (ox2 - ox1) * (oy2 - oy1)
    w = np.clip(np.minimum(x2, ox2) - np.maximum(x1, ox1), 0, None)
    h = np.clip(np.minimum(y2, oy2) - np.maximum(y1, oy1), 0, None)
    inter = w * h
    union = area + other_area - inter
    valid = (area > 0) & (other_area > 0) & (union > 0)
    return np.where(valid, inter / np.where(union > 0, union, 1), 0.0)


def greedy_nms_keep(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    max_per_class: int,
    iou_threshold: float,
    score_threshold: float,
) -> torch.Tensor:
    """boxes (B, N, 4) x1y1x2y2, scores (B, C, N) -> keep mask (B, C, N), scores' dtype."""
    keep = torch.zeros(scores.shape, dtype=torch.bool)
    all_boxes = boxes.detach().float().cpu().numpy()
    all_scores = scores.detach().float().cpu().numpy()
    for b in range(scores.shape[0]):
        for c in range(scores.shape[1]):
            candidates = np.flatnonzero(all_scores[b, c] > score_threshold)
            if candidates.size == 0:
                continue
            # Highest score first; equal scores in index order.
            candidates = candidates[np.argsort(-all_scores[b, c, candidates], kind="stable")]
            # each kept box against the candidates after it: O(kept x N), never an N x N matrix
            # (the RPN's 5 levels x 1000 would be 25 M IoUs, of which 1000 rows are read)
            ordered = all_boxes[b, candidates]
            suppressed = np.zeros(candidates.size, dtype=bool)
            kept = 0
            for i in range(candidates.size):
                if suppressed[i]:
                    continue
                keep[b, c, candidates[i]] = True
                kept += 1
                if kept == max_per_class:
                    break
                suppressed[i + 1 :] |= _iou_with(ordered[i], ordered[i + 1 :]) > iou_threshold
    return keep.to(device=scores.device, dtype=scores.dtype)


_SEAM: dict[str, KeepFn] = {"nms": greedy_nms_keep}


def nms_keep(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    max_per_class: int,
    iou_threshold: float,
    score_threshold: float,
) -> torch.Tensor:
    """The seam: which (class, box) pairs survive NMS, as a 0/1 mask shaped like ``scores``."""
    return _SEAM["nms"](boxes, scores, max_per_class, iou_threshold, score_threshold)


@contextlib.contextmanager
def override(fn: KeepFn) -> Iterator[None]:
    """Temporarily routes :func:`nms_keep` through ``fn`` (the exporter's opaque op)."""
    previous = _SEAM["nms"]
    _SEAM["nms"] = fn
    try:
        yield
    finally:
        _SEAM["nms"] = previous
