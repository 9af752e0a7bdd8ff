"""Normalising pixels: the ImageNet statistics; lookup tables (a uint8 channel has 256 values,
so the float arithmetic is done once per value and each pixel looks its result up); and the
per-channel constants the tensor paths subtract and divide by.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@functools.lru_cache(maxsize=16)
def mmcv_normalization_table(mean: tuple[float, float, float], std: tuple[float, float, float]) -> np.ndarray:
    """(3, 256): (value - mean) / std in float32 for each 0-255 value, as mmcv's imnormalize."""
    values = np.arange(256, dtype=np.float32)[None, :]
    return (values - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None]


def normalize_into(
    out: np.ndarray, pixels: np.ndarray, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> np.ndarray:
    """uint8 RGB pixels (H, W, 3) -> ``out`` (3, H, W) float32, ``(pixels / 255 - mean) / std``.

    A pixel has 256 values per channel, so the arithmetic is done once per value (in float32,
    as ToTensor + Normalize do: bit-identical) and each pixel looks its result up: one pass
    instead of three float passes over the image and a transpose (docs/benchmarks.md)."""
    table = normalization_table(tuple(mean), tuple(std))  # hashable, whatever sequence came in
    for channel in range(3):
        np.take(table[channel], pixels[..., channel], out=out[channel], mode="clip")
    return out


@functools.lru_cache(maxsize=16)
def normalization_table(mean: tuple[float, float, float], std: tuple[float, float, float]) -> np.ndarray:
    """(3, 256) float32: each channel's normalised value of each pixel level."""
    values = np.arange(256, dtype=np.float32)[None, :] / 255.0  # (1, 256)
    return (values - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None]


@functools.lru_cache(maxsize=16)
def per_channel(values: tuple[float, float, float], device: torch.device) -> torch.Tensor:
    """A (3, 1, 1) constant, made once per device (not copied to a GPU for every image)."""
    return torch.tensor(values, dtype=torch.float32, device=device).view(3, 1, 1)
