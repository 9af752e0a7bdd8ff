"""Detection mAP in numpy: COCO-style AP at one IoU threshold (AP50 by default).

Per class, detections of all images are ranked by score (a stable sort, so ties keep image
order). Going down the ranking, a detection is a true positive when some ground truth of its
class in its image, not yet matched, overlaps it by IoU >= ``iou_threshold`` (it takes the
best such one, as pycocotools does); otherwise it is a false positive. AP is the precision
envelope (the best precision at any recall at least as high) averaged over COCO's 101 recall
points 0, 0.01, ..., 1 -- not VOC's all-point area, which gives slightly different numbers.
mAP is the mean over the classes that have ground truth; classes without ground truth are
skipped, and so are their detections. No crowd regions, area ranges or per-image caps.

Predictions are per image ``(boxes (M, 4), scores (M,), labels (M,))``; ground truths
``(boxes (K, 4), labels (K,))``; boxes x1, y1, x2, y2 in the same pixels. Detections with
a negative label (the detector's padding slots) are ignored.

Mask AP (:func:`mask_mean_average_precision`) ranks and matches the same way, the IoU of two
masks being pycocotools' (``mask.iou`` of COCO RLEs, the COCO evaluation's own): predictions
``(rles, scores, labels)``, ground truths ``(rles, labels)``, RLEs as :func:`encode_masks`
writes them or as the server's ``masks=rle`` answers them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from models.boxes import box_iou

RECALL_POINTS = np.linspace(0.0, 1.0, 101)

Prediction = tuple[Any, Any, Any]  # boxes (M, 4), scores (M,), labels (M,)
GroundTruth = tuple[Any, Any]  # boxes (K, 4), labels (K,)


def iou_matrix(a, b) -> np.ndarray:
    """(N, 4) x (M, 4) x1y1x2y2 (any array-likes) -> (N, M) IoU: :func:`models.boxes.box_iou`
    in float64."""
    a, b = (torch.as_tensor(np.asarray(x, np.float64)).reshape(-1, 4) for x in (a, b))
    return box_iou(a, b).numpy()


def interpolated_ap(true_positive: Sequence[bool] | np.ndarray, num_ground_truth: int) -> float:
    """AP of a ranking (best first; True for each true positive) over ``num_ground_truth``
    objects: the 101-point interpolated precision envelope."""
    if num_ground_truth <= 0:
        raise ValueError("AP needs at least one ground truth")
    tp = np.asarray(true_positive, bool)
    if tp.size == 0:
        return 0.0
    hits = np.cumsum(tp)
    recall = hits / num_ground_truth
    precision = hits / np.arange(1, tp.size + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    index = np.searchsorted(recall, RECALL_POINTS, side="left")
    reached = index < tp.size
    return float(np.where(reached, envelope[np.minimum(index, tp.size - 1)], 0.0).mean())


def _as_arrays(predictions: Sequence[Prediction], ground_truths: Sequence[GroundTruth], regions=None):
    """Predictions and ground truths as arrays, the padding slots (label < 0) dropped;
    ``regions`` converts an image's boxes or masks (default: boxes as (N, 4) float64)."""
    if len(predictions) != len(ground_truths):
        raise ValueError(f"{len(predictions)} predictions for {len(ground_truths)} images")
    regions = regions or _box_array
    preds = []
    for found, scores, labels in predictions:
        scores, labels = (
            np.asarray(scores, np.float64).reshape(-1),
            np.asarray(labels).reshape(-1).astype(np.int64),
        )
        valid = np.flatnonzero(labels >= 0)
        preds.append((_take(regions(found), valid), scores[valid], labels[valid]))
    truths = [(regions(found), np.asarray(y).reshape(-1).astype(np.int64)) for found, y in ground_truths]
    return preds, truths


def _box_array(boxes) -> np.ndarray:
    return np.asarray(boxes, np.float64).reshape(-1, 4)


def _take(regions, index: np.ndarray):
    """The regions at ``index``: rows of an array, items of a list (of masks)."""
    return regions[index] if isinstance(regions, np.ndarray) else [regions[i] for i in index]


def average_precision(
    predictions: Sequence[Prediction],
    ground_truths: Sequence[GroundTruth],
    label: int,
    iou_threshold: float = 0.5,
) -> float | None:
    """AP of class ``label`` over all images, or None when it has no ground truth."""
    preds, truths = _as_arrays(predictions, ground_truths)
    return _class_ap(preds, truths, label, iou_threshold)


def _class_ap(preds, truths, label: int, iou_threshold: float, overlaps=iou_matrix) -> float | None:
    gt_regions = [_take(regions, np.flatnonzero(labels == label)) for regions, labels in truths]
    num_gt = sum(len(r) for r in gt_regions)
    if num_gt == 0:
        return None
    image: list[int] = []
    score: list[float] = []
    index: list[int] = []
    for i, (_regions, scores, labels) in enumerate(preds):
        mine = np.flatnonzero(labels == label)
        mine = mine[np.argsort(-scores[mine], kind="stable")]
        image.extend([i] * mine.size)
        score.extend(scores[mine])
        index.extend(mine)
    order = np.argsort(-np.asarray(score, np.float64), kind="stable")
    taken = [np.zeros(len(r), bool) for r in gt_regions]
    ious: dict[int, np.ndarray] = {}
    tp = np.zeros(order.size, bool)
    for rank, k in enumerate(order):
        i, j = image[k], index[k]
        if len(gt_regions[i]) == 0:
            continue
        if i not in ious:
            ious[i] = overlaps(preds[i][0], gt_regions[i])
        overlap = np.where(taken[i], -1.0, ious[i][j])
        best = int(np.argmax(overlap))
        if overlap[best] >= iou_threshold:
            taken[i][best] = True
            tp[rank] = True
    return interpolated_ap(tp, num_gt)


def class_average_precisions(
    predictions: Sequence[Prediction],
    ground_truths: Sequence[GroundTruth],
    iou_threshold: float = 0.5,
    num_classes: int = 10,
    masks: bool = False,
) -> dict[int, float]:
    """AP per class, for the classes 0..num_classes-1 that have ground truth (of boxes, or
    of RLE masks with ``masks``)."""
    if masks:
        preds, truths = _as_arrays(predictions, ground_truths, list)
        overlaps = mask_iou
    else:
        (preds, truths), overlaps = _as_arrays(predictions, ground_truths), iou_matrix
    aps = {c: _class_ap(preds, truths, c, iou_threshold, overlaps) for c in range(num_classes)}
    return {c: ap for c, ap in aps.items() if ap is not None}


def mean_average_precision(
    predictions: Sequence[Prediction],
    ground_truths: Sequence[GroundTruth],
    iou_threshold: float = 0.5,
    num_classes: int = 10,
) -> float:
    """mAP@``iou_threshold``: the mean AP over the classes with ground truth (0.0 if none)."""
    aps = class_average_precisions(predictions, ground_truths, iou_threshold, num_classes)
    return float(np.mean(list(aps.values()))) if aps else 0.0


def mask_mean_average_precision(
    predictions: Sequence[Prediction],
    ground_truths: Sequence[GroundTruth],
    iou_threshold: float = 0.5,
    num_classes: int = 10,
) -> float:
    """Mask mAP@``iou_threshold`` over RLE masks (module docstring; 0.0 if no ground truth)."""
    aps = class_average_precisions(predictions, ground_truths, iou_threshold, num_classes, masks=True)
    return float(np.mean(list(aps.values()))) if aps else 0.0


def encode_masks(masks) -> list[dict]:
    """(K, H, W) bool masks -> COCO compressed RLEs (pycocotools)."""
    from pycocotools import mask as coco_mask

    masks = np.asarray(masks, bool)
    return [coco_mask.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]


def mask_iou(a: Sequence[dict], b: Sequence[dict]) -> np.ndarray:
    """IoU (len(a), len(b)) of two lists of RLE masks of one image (pycocotools, no crowds)."""
    from pycocotools import mask as coco_mask

    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    return np.asarray(coco_mask.iou(list(a), list(b), [0] * len(b)), np.float64).reshape(len(a), len(b))
