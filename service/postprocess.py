"""Backend outputs -> response objects (softmax, top-k, sampling points; boxes back in the
original image's pixels, instance masks pasted there and encoded)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from models.transforms import Letterbox, expect_pipeline

from . import masks as mask_codec
from .backends.base import DetectionOutput, ImageOutput, ModelMeta, Points
from .schemas import BlockPoints, Box, CocoDetection, Detection, DetectionResult, Prediction

BOX_DECIMALS = 2

POINT_DECIMALS = 4


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - np.max(logits)
    exp = np.exp(shifted)
    return exp / exp.sum()


def top_k(logits: np.ndarray, labels: Sequence[str], k: int) -> list[Prediction]:
    """The ``k`` most probable classes, most probable first (ties: lower index first)."""
    probs = softmax(logits)
    candidates = np.arange(probs.size)
    if k < probs.size:  # only those at least as probable as the k-th: cheaper than a full sort
        kth = np.partition(probs, probs.size - k)[probs.size - k]
        candidates = np.flatnonzero(probs >= kth)
    order = candidates[np.lexsort((candidates, -probs[candidates]))][:k]
    return [Prediction(label=labels[i], index=int(i), probability=float(probs[i])) for i in order]


def block_points(points: Sequence[Points]) -> list[BlockPoints]:
    out = []
    for p in points:
        groups, height, width, _ = p.yx.shape
        out.append(
            BlockPoints(
                stage=p.stage,
                block=p.block,
                groups=groups,
                height=height,
                width=width,
                yx=np.round(p.yx.astype(np.float64), POINT_DECIMALS).tolist(),
            )
        )
    return out


def classify(
    output: ImageOutput, labels: Sequence[str], k: int, with_points: bool
) -> tuple[list[Prediction], list[BlockPoints] | None]:
    predictions = top_k(output.logits, labels, k)
    points = block_points(output.points) if with_points and output.points is not None else None
    return predictions, points


def _kept(
    output: DetectionOutput,
    meta: ModelMeta,
    width: int,
    height: int,
    score_threshold: float,
    max_detections: int,
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(output row, clipped box, unclipped box) of each detection ``detect`` returns, in order."""
    boxes = output.boxes.astype(np.float64)
    if not output.in_image_pixels:
        sx, sy = expect_pipeline(meta.preprocessing, Letterbox).scale(width, height)
        boxes = boxes / np.array([sx, sy, sx, sy])
    clipped = np.clip(boxes, 0, [width, height, width, height])
    kept: list[tuple[int, np.ndarray, np.ndarray]] = []
    for k, (box, score) in enumerate(zip(clipped, output.scores)):
        if len(kept) == max_detections or score < score_threshold:
            break  # outputs are best first
        if box[2] > box[0] and box[3] > box[1]:
            kept.append((k, box, boxes[k]))
    return kept


def count_detections(
    output: DetectionOutput,
    meta: ModelMeta,
    width: int,
    height: int,
    score_threshold: float,
    max_detections: int,
) -> int:
    """How many detections ``detect`` returns for these arguments (no masks pasted)."""
    return len(_kept(output, meta, width, height, score_threshold, max_detections))


def detect(
    output: DetectionOutput,
    meta: ModelMeta,
    width: int,
    height: int,
    score_threshold: float,
    max_detections: int,
    masks: mask_codec.MaskFormat = "none",
    before_mask: Callable[[], None] | None = None,
) -> list[Detection]:
    """Canvas boxes -> boxes on the (width x height) image the canvas was letterboxed from
    (or already there: ``in_image_pixels``), clipped to it; detections under
    ``score_threshold`` or left without area are dropped. ``masks``: each kept detection's
    mask pasted at the image's size (its unclipped box, as mmdet) and encoded; ``before_mask``
    is called before each one (it may raise to stop the work)."""
    found: list[Detection] = []
    for k, box, unclipped in _kept(output, meta, width, height, score_threshold, max_detections):
        index = int(output.labels[k])
        category = meta.category_ids[index] if meta.category_ids else index + 1
        x1, y1, x2, y2 = (round(float(v), BOX_DECIMALS) for v in box)
        segmentation = None
        if masks != "none" and output.masks is not None:
            if before_mask is not None:
                before_mask()
            pasted = mask_codec.paste(output.masks[k], unclipped, width, height, meta.mask_threshold)
            segmentation = mask_codec.encode(pasted, masks)
        found.append(
            Detection(
                box=Box(x1=x1, y1=y1, x2=x2, y2=y2),
                label=meta.labels[index],
                index=index,
                category_id=category,
                score=float(output.scores[k]),
                segmentation=segmentation,
            )
        )
    return found


def coco_results(results: Sequence[DetectionResult]) -> list[CocoDetection]:
    """The COCO results format: one entry per detection, bbox as x, y, width, height."""
    return [
        CocoDetection(
            image_id=r.index,
            category_id=d.category_id,
            score=d.score,
            segmentation=d.segmentation,
            bbox=[
                d.box.x1,
                d.box.y1,
                round(d.box.x2 - d.box.x1, BOX_DECIMALS),
                round(d.box.y2 - d.box.y1, BOX_DECIMALS),
            ],
        )
        for r in results
        for d in r.detections
    ]
