"""Backend outputs -> response objects (softmax, top-k, sampling points)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .backends.base import ImageOutput, Points
from .schemas import BlockPoints, Prediction

POINT_DECIMALS = 4


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - np.max(logits)
    exp = np.exp(shifted)
    return exp / exp.sum()


def top_k(logits: np.ndarray, labels: Sequence[str], k: int) -> list[Prediction]:
    """The ``k`` most probable classes, most probable first (ties: lower index first)."""
    probs = softmax(logits)
    order = np.argsort(-probs, kind="stable")[:k]
    return [Prediction(label=labels[i], index=int(i), probability=float(probs[i])) for i in order]


def block_points(points: Sequence[Points]) -> list[BlockPoints]:
    out = []
    for p in points:
        groups, height, width, _ = p.yx.shape
        out.append(BlockPoints(stage=p.stage, block=p.block, groups=groups, height=height,
                               width=width, yx=np.round(p.yx.astype(np.float64), POINT_DECIMALS).tolist()))
    return out


def classify(output: ImageOutput, labels: Sequence[str], k: int,
             with_points: bool) -> tuple[list[Prediction], list[BlockPoints] | None]:
    predictions = top_k(output.logits, labels, k)
    points = block_points(output.points) if with_points and output.points is not None else None
    return predictions, points
