"""The handwritten-digit ink both demo models learn from: scikit-learn's digits (1,797 scans
of 8x8 pixels, ink 0..16) split into training and held-out scans, digits typed in Pillow's
built-in font, and pictures decoded as the service decodes an upload.

The held-out split is the last 360 scans of the data set, which come after every training
scan in the original order.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HELD_OUT = 360  # the last 360 of the 1,797 scans (20%)


@cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: (1797, 8, 8) float intensities 0..16 and their labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # only training and evaluation need it, not serving
        raise ImportError(
            "the digits data set ships with scikit-learn: pip install scikit-learn (or the 'train' extra)"
        ) from exc
    data = load_digits()
    return data.images.astype(np.float32), data.target.astype(np.int64)


def digit_scans(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 scans (0..16) and labels of ``split``: 'train' (1,437) or 'held_out' (360)."""
    images, labels = _digits()
    cut = len(images) - HELD_OUT
    if split == "train":
        return images[:cut], labels[:cut]
    if split == "held_out":
        return images[cut:], labels[cut:]
    raise ValueError(f"split must be 'train' or 'held_out', not {split!r}")


def scan_ink(pixels: np.ndarray) -> Image.Image:
    """8x8 intensities 0..16 -> 'L' image, ink 255 on 0."""
    return Image.fromarray(np.clip(np.asarray(pixels) * (255 / 16), 0, 255).round().astype(np.uint8))


INK_BOX = 40  # side of the square ink images the augmentation starts from


@cache
def font_glyph(digit: int, font_size: int, stroke: int) -> Image.Image:
    """Digit ``digit`` typed in Pillow's built-in font: 'L' ink image, the glyph's height filling
    a square (the way the scans are framed)."""
    font = ImageFont.load_default(size=font_size)
    pad = font_size // 2 + stroke
    image = Image.new("L", (font_size * 2 + 2 * pad, font_size * 2 + 2 * pad), 0)
    ImageDraw.Draw(image).text(
        (pad, pad), str(digit), fill=255, font=font, stroke_width=stroke, stroke_fill=255
    )
    glyph = image.crop(image.getbbox())
    side = max(glyph.size)
    square = Image.new("L", (side, side), 0)
    square.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return square.resize((INK_BOX, INK_BOX), Image.Resampling.BILINEAR)


def load_rgb(path: str | Path) -> Image.Image:
    """Decodes a picture as the service does: any format, converted to RGB."""
    with Image.open(path) as image:
        return image.convert("RGB")
