"""RetinaNet's anchors and DeltaXYWH box coding: the anchors on the canvas, the regression
targets training fits (:func:`encode_boxes`) and the decoding the exported detector runs."""

from __future__ import annotations

import math

import torch

from .retinanet_config import RetinaNetConfig

# dw, dh clamp of mmdet's DeltaXYWHBBoxCoder: |log(16 / 1000)|
MAX_LOG_RATIO = abs(math.log(16 / 1000))


def base_anchors(stride: int, cfg: RetinaNetConfig) -> torch.Tensor:
    """The (A, 4) anchors centred on (0, 0), ratio-major as mmdet's AnchorGenerator."""
    scales = cfg.octave_base_scale * 2 ** (
        torch.arange(cfg.scales_per_octave, dtype=torch.float64) / cfg.scales_per_octave
    )
    h_ratios = torch.tensor(cfg.ratios, dtype=torch.float64).sqrt()
    w_ratios = 1 / h_ratios
    ws = (stride * w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (stride * h_ratios[:, None] * scales[None, :]).reshape(-1)
    return torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=-1)


def grid_anchors(stride: int, size: int, cfg: RetinaNetConfig) -> torch.Tensor:
    """All anchors of one (size x size) level: (size*size*A, 4), location-major (row, column,
    anchor), the order of the head's flattened outputs. Centres at (x * stride, y * stride)."""
    shifts = torch.arange(size, dtype=torch.float64) * stride
    yy, xx = torch.meshgrid(shifts, shifts, indexing="ij")
    offsets = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
    return (offsets + base_anchors(stride, cfg)[None]).reshape(-1, 4).float()


def encode_boxes(anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Regression targets (dx, dy, dw, dh) that take ``anchors`` to ``boxes`` (both (..., 4))."""
    pw, ph = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
    px, py = anchors[..., 0] + 0.5 * pw, anchors[..., 1] + 0.5 * ph
    gw, gh = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    gx, gy = boxes[..., 0] + 0.5 * gw, boxes[..., 1] + 0.5 * gh
    return torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=-1)


def decode_boxes(anchors: torch.Tensor, deltas: torch.Tensor, max_size: float | None = None) -> torch.Tensor:
    """Inverse of :func:`encode_boxes` (dw, dh clamped), optionally clipped to [0, max_size]."""
    pw, ph = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
    px, py = anchors[..., 0] + 0.5 * pw, anchors[..., 1] + 0.5 * ph
    dw = deltas[..., 2].clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    dh = deltas[..., 3].clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    gx, gy = px + pw * deltas[..., 0], py + ph * deltas[..., 1]
    gw, gh = pw * dw.exp(), ph * dh.exp()
    boxes = torch.stack([gx - 0.5 * gw, gy - 0.5 * gh, gx + 0.5 * gw, gy + 0.5 * gh], dim=-1)
    return boxes.clamp(0.0, float(max_size)) if max_size is not None else boxes
