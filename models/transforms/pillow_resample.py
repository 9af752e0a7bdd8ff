"""Pillow's antialiased resize, bit for bit, compiled with numba: the classifiers' CPU host path.

Pillow (``libImaging/Resample.c``) resizes in two separable passes. Each output pixel of a pass
is a weighted sum of the input pixels under the filter: the weights are computed in double,
normalised, then rounded to 22-bit fixed point; the sum runs in int32 from half a unit and is
shifted back and clipped to 8 bits, before the second pass reads it. Its loops are scalar, over
one output pixel at a time.

Here the same integer arithmetic runs with each pass along the first axis of a contiguous
array, so that one weight multiplies a whole row and the compiler vectorises the sums; a pass
along the width runs on a transposed copy. Only the pixels a crop keeps are computed. The
passes come in the order the installed Pillow uses (``resize_order``), so the values are
Pillow's exactly (tested against it on many shapes).

numba compiles the kernels on their first call (about a second; cached on disk afterwards, where
a folder is writable): ``warm`` does that ahead of traffic.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib.util import find_spec
from types import SimpleNamespace

import numpy as np

from ..resize_order import vertical_first
from . import pillow_kernels
from .pillow_kernels import PRECISION_BITS

_SUPPORT = {"bicubic": 2.0, "bilinear": 1.0}
FILTERS = tuple(_SUPPORT)


def available() -> bool:
    """Whether numba is installed (the kernels compile on first use)."""
    return find_spec("numba") is not None


def _filter(name: str, x: np.ndarray) -> np.ndarray:
    """Pillow's filter kernels, operation for operation (the rounding of doubles must match)."""
    x = np.abs(x)
    if name == "bilinear":
        return np.where(x < 1.0, 1.0 - x, 0.0)
    a = -0.5
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


@functools.lru_cache(maxsize=64)
def coefficients(in_size: int, out_size: int, filter_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for a resize of a whole axis:
    per output pixel, its first input pixel, how many it reads, and their int32 weights."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = _SUPPORT[filter_name] * filter_scale
    taps = int(np.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    first = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    count = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - first
    k = np.arange(taps)
    weights = _filter(filter_name, (k + first[:, None] - center[:, None] + 0.5) * (1.0 / filter_scale))
    weights = np.where(k < count[:, None], weights, 0.0)
    total = np.zeros(out_size)
    for tap in range(taps):  # summed in Pillow's order: doubles do not add associatively
        total = total + weights[:, tap]
    weights = np.where(total[:, None] != 0.0, weights / np.where(total == 0.0, 1.0, total)[:, None], weights)
    scaled = weights * (1 << PRECISION_BITS)
    fixed = np.trunc(np.where(weights < 0, scaled - 0.5, scaled + 0.5)).astype(np.int32)
    return first.astype(np.int32), count.astype(np.int32), fixed


def resize_and_crop(
    pixels: np.ndarray, size: int, top: int, left: int, height: int, width: int, filter_name: str = "bicubic"
) -> np.ndarray:
    """``Image.fromarray(pixels).resize((size, size), filter).crop((left, top, left + width,
    top + height))`` as uint8 (height, width, 3), computing only the crop."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3) pixels, got {pixels.dtype} {pixels.shape}")
    if not (0 <= top and top + height <= size and 0 <= left and left + width <= size):
        raise ValueError(f"the crop ({left}, {top}, {width}x{height}) leaves the {size}x{size} resize")
    kernels = _kernels()
    pixels = np.ascontiguousarray(pixels)
    in_height, in_width = pixels.shape[:2]
    flat = pixels.reshape(in_height, in_width * 3)
    rows = [a[top : top + height] for a in coefficients(in_height, size, filter_name)]
    cols = [a[left : left + width] for a in coefficients(in_width, size, filter_name)]
    out = np.empty((height, width * 3), np.uint8)
    if vertical_first(in_width, in_height, size):
        # only the columns the crop reads: vertical pass, transpose, horizontal pass, transpose
        c0, c1 = int(cols[0][0]), int((cols[0] + cols[1]).max())
        tall = np.empty((height, (c1 - c0) * 3), np.uint8)
        kernels.resample_rows(flat, 0, c0 * 3, *rows, tall)
        turned = np.empty((c1 - c0, height * 3), np.uint8)
        kernels.transpose(tall, 0, 0, turned)
        wide = np.empty((width, height * 3), np.uint8)
        kernels.resample_rows(turned, c0, 0, *cols, wide)
        kernels.transpose(wide, 0, 0, out)
    else:
        # only the rows the crop reads: transpose, horizontal pass, transpose, vertical pass
        r0, r1 = int(rows[0][0]), int((rows[0] + rows[1]).max())
        turned = np.empty((in_width, (r1 - r0) * 3), np.uint8)
        kernels.transpose(flat, r0, 0, turned)
        wide = np.empty((width, (r1 - r0) * 3), np.uint8)
        kernels.resample_rows(turned, 0, 0, *cols, wide)
        upright = np.empty((r1 - r0, width * 3), np.uint8)
        kernels.transpose(wide, 0, 0, upright)
        kernels.resample_rows(upright, r0, 0, *rows, out)
    return out.reshape(height, width, 3)


def planes(pixels: np.ndarray, table: np.ndarray) -> np.ndarray:
    """uint8 RGB pixels (H, W, 3) -> float32 planes (3, H, W) of ``table[c, level]``: the
    normalisation as ``normalization.normalize_into`` looks it up, in one compiled pass."""
    height, width = pixels.shape[:2]
    out = np.empty((3, height, width), np.float32)
    _kernels().planes(np.ascontiguousarray(pixels).reshape(height, width * 3), table, out)
    return out


def warm() -> None:
    """Compiles the kernels now (or loads them from numba's cache), not on a first request."""
    planes(resize_and_crop(np.zeros((3, 2, 3), np.uint8), 4, 1, 1, 2, 2), np.zeros((3, 256), np.float32))


@functools.cache
def _kernels() -> SimpleNamespace:
    """The kernels compiled, once per process: numba is imported only by those who resize with
    it. ``nogil``: the service's decoding threads run them side by side."""
    from numba import njit

    def compiled(kernel: Callable[..., None]) -> Callable[..., None]:
        try:
            return njit(cache=True, nogil=True)(kernel)  # compiled once, then loaded from disk
        except RuntimeError:  # no writable cache folder (a read-only file system): compiled per process
            return njit(nogil=True)(kernel)

    kernels = (pillow_kernels.resample_rows, pillow_kernels.transpose, pillow_kernels.planes)
    return SimpleNamespace(**{kernel.__name__: compiled(kernel) for kernel in kernels})
