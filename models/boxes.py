"""Box arithmetic: the IoU of two sets of boxes, and mmdet 2.x's at test time in its float32
order of operations: the anchor generator, DeltaXYWH decoding, and mmcv's batched (class- or
level-aware) NMS as one call of :func:`models.nms.nms_keep` with static shapes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .nms import nms_keep

# DeltaXYWHBBoxCoder's wh_ratio_clip: |log(16 / 1000)|
MAX_LOG_RATIO = abs(math.log(16 / 1000))


def anchor_grid(
    stride: int,
    scales: Sequence[float],
    ratios: Sequence[float],
    height: int,
    width: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """mmdet's AnchorGenerator for one (height x width) level: (H*W*A, 4), location-major,
    ratio-major within a location, centres at (x * stride, y * stride), float32 as mmdet's."""
    h_ratios = torch.sqrt(torch.tensor(ratios, dtype=torch.float32))
    w_ratios = 1 / h_ratios
    scales_ = torch.tensor(scales, dtype=torch.float32)
    ws = (stride * w_ratios[:, None] * scales_[None, :]).reshape(-1)
    hs = (stride * h_ratios[:, None] * scales_[None, :]).reshape(-1)
    base = torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=-1).to(device)
    shift_x = torch.arange(width, device=device).to(torch.float32) * stride
    shift_y = torch.arange(height, device=device).to(torch.float32) * stride
    yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
    shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
    return (base[None] + shifts).reshape(-1, 4)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 4) x (M, 4) x1y1x2y2 -> (N, M) IoU, in the boxes' dtype (0 where the union is empty)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    return inter / (area_a[:, None] + area_b[None] - inter).clamp(min=1e-12)


def delta2bbox(
    rois: torch.Tensor,
    deltas: torch.Tensor,
    means: Sequence[float],
    stds: Sequence[float],
    max_hw: torch.Tensor | None = None,
) -> torch.Tensor:
    """mmdet's DeltaXYWHBBoxCoder.decode in its float32 order of operations: rois (..., 4) and
    deltas (..., 4) broadcast; ``max_hw`` (..., 2) (height, width) broadcast to them: boxes
    clipped to [0, width] x [0, height]."""
    deltas = deltas * deltas.new_tensor(stds) + deltas.new_tensor(means)
    dxy, dwh = deltas[..., :2], deltas[..., 2:]
    pxy = (rois[..., :2] + rois[..., 2:]) * 0.5
    pwh = rois[..., 2:] - rois[..., :2]
    dwh = dwh.clamp(min=-MAX_LOG_RATIO, max=MAX_LOG_RATIO)
    gxy = pxy + pwh * dxy
    gwh = pwh * dwh.exp()
    boxes = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], dim=-1)
    if max_hw is not None:
        max_xy = max_hw.to(boxes.dtype).flip(-1)
        max_xy = torch.cat([max_xy, max_xy], dim=-1).expand_as(boxes)
        boxes = torch.where(boxes < 0, torch.zeros_like(boxes), boxes)
        boxes = torch.where(boxes > max_xy, max_xy, boxes)
    return boxes


def batched_nms_keep(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    groups: torch.Tensor,
    valid: torch.Tensor,
    iou_threshold: float,
    max_keep: int,
) -> torch.Tensor:
    """mmcv's batched_nms as one NMS call per image: boxes (B, K, 4), scores / groups / valid
    (B, K) -> (B, K) bool, the pairs kept (at most ``max_keep``, the best by score). Each
    group's boxes are shifted by ``group * (max coordinate of the valid boxes + 1)`` as mmcv
    does, so only boxes of one group suppress each other, with mmcv's rounding."""
    coords = torch.where(valid[..., None], boxes, torch.full_like(boxes, -math.inf))
    top = coords.flatten(1).amax(dim=1)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    shifted = boxes + (groups.to(boxes.dtype) * (top[:, None] + 1))[..., None]
    # invalid pairs score below the threshold, so NMS never visits them
    candidates = torch.where(valid, scores, torch.full_like(scores, -1.0))
    keep = nms_keep(shifted, candidates[:, None], max_keep, iou_threshold, -0.5)
    return keep[:, 0] > 0


def top_kept(
    scores: torch.Tensor, keep: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` best kept entries of (B, N) scores, best first: (scores, indices, found)."""
    masked = torch.where(keep, scores, torch.full_like(scores, -math.inf))
    best, index = masked.topk(min(k, masked.shape[1]), dim=1)
    found = torch.isfinite(best)
    if best.shape[1] < k:  # fewer candidates than slots: pad
        pad = k - best.shape[1]
        best = F.pad(best, (0, pad), value=-math.inf)
        index = F.pad(index, (0, pad))
        found = F.pad(found, (0, pad))
    return torch.where(found, best, torch.zeros_like(best)), index, found


def class_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    valid: torch.Tensor,
    iou_threshold: float,
    max_per_img: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class-aware NMS over (box, class) pairs, then the ``max_per_img`` best: boxes
    (B, M, 4), scores (B, M), labels (B, M) (-1 past the last), best first."""
    keep = batched_nms_keep(boxes, scores, classes, valid, iou_threshold, max_per_img)
    best, index, found = top_kept(scores, keep, max_per_img)
    picked = torch.gather(boxes, 1, index[..., None].expand(-1, -1, 4)) * found[..., None]
    labels = torch.where(found, torch.gather(classes, 1, index), torch.full_like(index, -1))
    return picked, best, labels


def class_candidates(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, valid: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(box, class) pairs as an export's verification reads NMS candidates: boxes (B, N, 4) and
    class scores (B, C, N), each pair scored for its own class only (0 elsewhere and where
    invalid), float32."""
    own = F.one_hot(classes, num_classes).transpose(1, 2).to(scores.dtype)  # (B, C, N)
    return boxes.float(), (own * (scores * valid)[:, None, :]).float()
