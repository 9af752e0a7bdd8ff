"""RoIAlign against a transcription of mmcv's CPU kernel (one sample at a time), and mmdet's
mapping of RoIs to FPN levels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.roi_align import extract_roi_features, map_roi_levels, roi_align


def kernel_roi_align(
    feature: np.ndarray, box, pooled: int, scale: float, sampling_ratio: int = 0, aligned: bool = True
) -> np.ndarray:
    """mmcv's roi_align_cpu for one RoI, loop by loop, in float32 (feature (C, H, W))."""
    f32 = np.float32
    channels, height, width = feature.shape
    offset = f32(0.5) if aligned else f32(0)
    x1, y1, x2, y2 = (f32(v) * f32(scale) - offset for v in box)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = max(roi_w, f32(1)), max(roi_h, f32(1))
    bin_h, bin_w = roi_h / f32(pooled), roi_w / f32(pooled)
    grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_h / f32(pooled)))
    grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_w / f32(pooled)))
    count = max(grid_h * grid_w, 1)
    out = np.zeros((channels, pooled, pooled), np.float32)
    for ph in range(pooled):
        for pw in range(pooled):
            total = np.zeros(channels, np.float32)
            for iy in range(grid_h):
                y = y1 + f32(ph) * bin_h + f32(iy + 0.5) * bin_h / f32(grid_h)
                for ix in range(grid_w):
                    x = x1 + f32(pw) * bin_w + f32(ix + 0.5) * bin_w / f32(grid_w)
                    if y < -1.0 or y > height or x < -1.0 or x > width:
                        continue
                    yy, xx = max(y, f32(0)), max(x, f32(0))
                    y_low, x_low = int(yy), int(xx)
                    if y_low >= height - 1:
                        y_low = y_high = height - 1
                        yy = f32(y_low)
                    else:
                        y_high = y_low + 1
                    if x_low >= width - 1:
                        x_low = x_high = width - 1
                        xx = f32(x_low)
                    else:
                        x_high = x_low + 1
                    ly, lx = yy - f32(y_low), xx - f32(x_low)
                    hy, hx = f32(1) - ly, f32(1) - lx
                    total += (
                        hy * hx * feature[:, y_low, x_low]
                        + hy * lx * feature[:, y_low, x_high]
                        + ly * hx * feature[:, y_high, x_low]
                        + ly * lx * feature[:, y_high, x_high]
                    )
            out[:, ph, pw] = total / f32(count)
    return out


BOXES = [
    [10.0, 12.0, 50.0, 40.0],  # inside, 2 x 2 samples per bin at stride 4 and size 7
    [0.0, 0.0, 3.0, 2.0],  # smaller than a bin: 1 sample, near the top-left border
    [100.0, 20.0, 127.9, 63.5],  # against the right and bottom edges (64 x 128 image)
    [-10.0, -6.0, 20.0, 30.0],  # starts outside the image: samples below -1 count as 0
    [30.0, 5.0, 126.0, 9.0],  # elongated: 4 samples across a bin, 1 down
    [200.0, 80.0, 260.0, 120.0],  # entirely outside: all zeros
    [20.0, 20.0, 20.0, 20.0],  # no area: zeros
]


@pytest.mark.parametrize(
    "scale,pooled,sampling_ratio,aligned",
    [(0.25, 7, 0, True), (0.125, 7, 0, True), (0.25, 14, 0, True), (0.25, 7, 2, True), (0.25, 7, 0, False)],
)
def test_roi_align_is_mmcvs_kernel(scale, pooled, sampling_ratio, aligned):
    torch.manual_seed(0)
    features = torch.randn(2, 5, int(64 * scale), int(128 * scale))
    boxes = torch.tensor(BOXES)
    batch = torch.tensor([0, 1, 0, 1, 0, 1, 0])
    got = roi_align(features, boxes, batch, pooled, scale, sampling_ratio, aligned)
    assert got.shape == (len(BOXES), 5, pooled, pooled)
    for i, box in enumerate(BOXES):
        want = kernel_roi_align(features[batch[i]].numpy(), box, pooled, scale, sampling_ratio, aligned)
        assert np.abs(got[i].numpy() - want).max() < 1e-5, (i, box)
    assert got[5].abs().max() == 0  # outside
    if aligned and sampling_ratio == 0:
        assert got[6].abs().max() == 0  # no area: ceil(0) samples


def test_roi_align_chunks_and_buckets_agree(monkeypatch):
    """The same RoIs one at a time, and all at once in small chunks: identical results."""
    import models.roi_align as module

    torch.manual_seed(1)
    features = torch.randn(1, 8, 32, 48)
    boxes = torch.rand(60, 4) * torch.tensor([190.0, 120.0, 190.0, 120.0])
    boxes = torch.cat([boxes[:, :2].minimum(boxes[:, 2:]), boxes[:, :2].maximum(boxes[:, 2:])], 1)
    batch = torch.zeros(60, dtype=torch.long)
    together = roi_align(features, boxes, batch, 7, 0.25)
    monkeypatch.setattr(module, "_CHUNK_ELEMENTS", 1)  # one RoI per chunk
    apart = roi_align(features, boxes, batch, 7, 0.25)
    assert torch.allclose(together, apart, atol=1e-6)
    single = torch.cat([roi_align(features, boxes[i : i + 1], batch[:1], 7, 0.25) for i in range(60)])
    assert torch.allclose(together, single, atol=1e-6)


def test_levels_follow_the_finest_scale():
    # sqrt(area) < 112 -> 0, < 224 -> 1, < 448 -> 2, else 3 (finest_scale 56)
    boxes = torch.tensor(
        [
            [0, 0, 111, 111],
            [0, 0, 112, 112],
            [0, 0, 223, 223],
            [0, 0, 224, 224],
            [0, 0, 447, 447],
            [0, 0, 448, 448],
            [0, 0, 2000, 1000],
            [0, 0, 0, 0.0],
        ]
    )
    assert map_roi_levels(boxes, 4).tolist() == [0, 1, 1, 2, 2, 3, 3, 0]
    # an elongated box goes by its area, not its length
    assert map_roi_levels(torch.tensor([[0.0, 0.0, 480.0, 9.0]]), 4).tolist() == [0]


def test_extractor_reads_each_rois_level():
    torch.manual_seed(2)
    strides = (4, 8, 16, 32)
    features = [torch.randn(2, 3, 256 // s, 256 // s) for s in strides]
    boxes = torch.tensor(
        [
            [[10.0, 10.0, 60.0, 60.0], [0.0, 0.0, 150.0, 150.0]],
            [[20.0, 30.0, 250.0, 250.0], [5.0, 5.0, 250.0, 255.0]],
        ]
    )
    out = extract_roi_features(features, boxes, 7, strides)
    assert out.shape == (4, 3, 7, 7)
    levels = map_roi_levels(boxes.reshape(-1, 4), 4).tolist()
    assert levels == [0, 1, 2, 2]
    for i, level in enumerate(levels):
        want = roi_align(
            features[level], boxes.reshape(-1, 4)[i : i + 1], torch.tensor([i // 2]), 7, 1 / strides[level]
        )
        assert torch.equal(out[i], want[0])


def test_half_features_keep_float32_geometry():
    """fp16 features: the sample positions stay float32 (a coordinate near 1333 would round
    to a whole pixel in fp16); only the feature values carry fp16's error."""
    torch.manual_seed(5)
    features = torch.randn(1, 4, 16, 400)
    boxes = torch.tensor([[1300.3, 10.0, 1333.7, 50.0], [5.2, 3.1, 40.9, 60.0]])
    batch = torch.zeros(2, dtype=torch.long)
    want = roi_align(features, boxes, batch, 7, 0.25)
    got = roi_align(features.half(), boxes, batch, 7, 0.25)
    assert got.dtype == torch.float16
    assert (got.float() - want).abs().max() < 5e-3  # fp16 values, not fp16 positions (~0.2 off)


def test_static_extraction_is_the_eager_one():
    """While traced, every RoI goes through every level's RoIAlign (the others' as empty
    boxes) and keeps its own level's: bit for bit what pooling each level's RoIs alone gives."""
    torch.manual_seed(6)
    strides = (4, 8, 16, 32)
    features = [torch.randn(2, 5, 640 // s, 960 // s) for s in strides]
    xy = torch.rand(2, 40, 2) * torch.tensor([960.0, 640.0])
    wh = torch.rand(2, 40, 2) ** 2 * torch.tensor([960.0, 640.0])
    boxes = torch.cat([xy, xy + wh], -1)
    boxes[0, :3] = torch.tensor([[0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 30.0], [0.0, 0.0, 960.0, 640.0]])
    levels = map_roi_levels(boxes.reshape(-1, 4), 4)
    assert set(levels.tolist()) == {0, 1, 2, 3}  # every level has RoIs
    for pooled in (7, 14):
        eager = extract_roi_features(features, boxes, pooled, strides)
        static = extract_roi_features(features, boxes, pooled, strides, static=True)
        assert torch.equal(static, eager)


def test_the_seam_routes_through_an_override():
    from models import roi_align as module

    calls = []

    def spy(*args):
        calls.append(args[3:])
        return roi_align(*args)

    features = [torch.randn(1, 2, 16, 16)]
    boxes = torch.tensor([[[1.0, 2.0, 30.0, 40.0]]])
    with module.override(spy):
        out = extract_roi_features(features, boxes, 7, (4,), static=True)
    assert calls == [(7, 0.25, 0, True)]
    assert module.pool_rois is not None and module._SEAM["roi_align"] is roi_align  # restored
    assert torch.equal(out, extract_roi_features(features, boxes, 7, (4,)))
