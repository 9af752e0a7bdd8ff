"""Detector outputs with instances: the padded batch a detector with masks returns, and one
image's detections in its own pixels (boxes clipped, masks pasted at its size)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F


class InstanceDetections(NamedTuple):
    boxes: torch.Tensor  # (B, M, 4) float32, x1 y1 x2 y2 (original pixels with scale_factors)
    scores: torch.Tensor  # (B, M) float32, 0 past the last detection
    labels: torch.Tensor  # (B, M) int64, -1 past the last detection
    masks: torch.Tensor | None = None  # (B, M, S, S) float32 mask probabilities, 0 past the last


class ImageInstances(NamedTuple):
    """One image's detections in its own pixels, as ``predict`` returns them."""

    boxes: torch.Tensor  # (N, 4) float32 x1 y1 x2 y2, clipped to the image
    scores: torch.Tensor  # (N,) best first
    labels: torch.Tensor  # (N,) int64
    masks: torch.Tensor | None = None  # (N, H, W) bool, instance segmentation only


def instances(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, size: tuple[int, int]
) -> ImageInstances:
    """One image's padded outputs -> its detections, boxes clipped to (height, width)."""
    kept = labels >= 0
    height, width = size
    limit = boxes.new_tensor([width, height, width, height])
    clipped = torch.minimum(boxes[kept].clamp(min=0), limit)
    return ImageInstances(clipped.cpu(), scores[kept].cpu(), labels[kept].cpu())


def paste_masks(
    masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int, threshold: float | None = 0.5
) -> torch.Tensor:
    """mmdet 2.x's ``_do_paste_mask`` + threshold: (M, S, S) probabilities, (M, 4) boxes in the
    target image's pixels -> (M, height, width) bool (``>= threshold``), or the float32
    probabilities with ``threshold=None``. Pixel centres are sampled bilinearly
    (``grid_sample``, zeros outside the mask) over each box's pixels plus one, as mmdet's CPU
    path; every pixel further out samples under 0.5 (and is 0 here)."""
    dtype = torch.float32 if threshold is None else torch.bool
    out = torch.zeros(masks.shape[0], height, width, dtype=dtype, device=masks.device)
    boxes = boxes.float()
    for i in range(masks.shape[0]):
        x0, y0, x1, y1 = boxes[i]
        left = max(int(math.floor(float(x0))) - 1, 0)
        top = max(int(math.floor(float(y0))) - 1, 0)
        right = min(int(math.ceil(float(x1))) + 1, width)
        bottom = min(int(math.ceil(float(y1))) + 1, height)
        if right <= left or bottom <= top:
            continue
        ys = torch.arange(top, bottom, device=masks.device).to(torch.float32) + 0.5
        xs = torch.arange(left, right, device=masks.device).to(torch.float32) + 0.5
        ys = (ys - y0) / (y1 - y0) * 2 - 1
        xs = (xs - x0) / (x1 - x0) * 2 - 1
        ys = torch.where(torch.isinf(ys), torch.zeros_like(ys), ys)  # a box without height
        xs = torch.where(torch.isinf(xs), torch.zeros_like(xs), xs)
        grid = torch.stack([xs[None, :].expand(len(ys), -1), ys[:, None].expand(-1, len(xs))], dim=-1)
        pasted = F.grid_sample(masks[i][None, None].float(), grid[None], align_corners=False)[0, 0]
        out[i, top:bottom, left:right] = pasted if threshold is None else pasted >= threshold
    return out
