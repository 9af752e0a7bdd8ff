"""OpenCV's ``INTER_LINEAR`` resize of uint8 pixels, reproduced bit-exactly in torch (mmcv's
default resize backend, without OpenCV)."""

from __future__ import annotations

import numpy as np
import torch


def _cv2_linear_taps(source: int, target: int, clamp: bool) -> tuple[torch.Tensor, ...]:
    """OpenCV's INTER_LINEAR taps along one axis: the two source indices and their 11-bit weights."""
    scale = 1.0 / (target / source)  # OpenCV: 1 / inv_scale, in double
    f = ((np.arange(target, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(f).astype(np.int64)
    f = (f - first.astype(np.float32)).astype(np.float32)
    if clamp:  # columns: a tap outside the image moves onto the border with all the weight
        outside = (first < 0) | (first >= source - 1)
        f[outside] = 0
        first = np.clip(first, 0, source - 1)
    w0 = np.rint((np.float32(1) - f) * np.float32(2048)).astype(np.int32)  # cvRound: half to even
    w1 = np.rint(f * np.float32(2048)).astype(np.int32)
    return (
        torch.from_numpy(np.clip(first, 0, source - 1)),
        torch.from_numpy(np.clip(first + 1, 0, source - 1)),
        torch.from_numpy(w0),
        torch.from_numpy(w1),
    )


def cv2_resize_linear(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)`` for uint8
    (H, W, C) pixels, bit-exact: a horizontal pass in 11-bit fixed point (int32), then the
    vertical one as OpenCV's SIMD code rounds it, ((a >> 4) * wa >> 16) + ((b >> 4) * wb >> 16),
    plus 2, shifted right by 2."""
    source = torch.from_numpy(pixels.astype(np.int32))  # a writable copy
    x0, x1, a0, a1 = _cv2_linear_taps(source.shape[1], width, clamp=True)
    y0, y1, b0, b1 = _cv2_linear_taps(source.shape[0], height, clamp=False)
    rows = source[:, x0] * a0[None, :, None] + source[:, x1] * a1[None, :, None]
    top = ((rows[y0] >> 4) * b0[:, None, None]) >> 16
    bottom = ((rows[y1] >> 4) * b1[:, None, None]) >> 16
    return ((top + bottom + 2) >> 2).clamp_(0, 255).to(torch.uint8).numpy()
