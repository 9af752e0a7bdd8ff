"""The classifier's pictures: rendered scans, the fixed held-out split, and the random
augmentation that turns a digit's ink into a realistic RGB picture.

Every training image is an RGB picture made the way a user would make one, then passed through
``model.info.preprocessing``, the same resize / normalise the service applies to an upload. No
augmentation is applied to the held-out pictures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps

from models import DAT

from .digit_ink import INK_BOX, digit_scans, font_glyph, scan_ink


def render_digit(pixels: np.ndarray, size: int = 64, inverted: bool = False) -> Image.Image:
    """An 8x8 scan (ink 0..16) as a ``size`` x ``size`` RGB picture: black ink on white paper
    (white on black if ``inverted``), the digit filling the middle 3/4, smoothly upscaled."""
    box = round(size * 0.75)
    ink = scan_ink(pixels).resize((box, box), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (size, size), 0)
    canvas.paste(ink, ((size - box) // 2, (size - box) // 2))
    return (canvas if inverted else ImageOps.invert(canvas)).convert("RGB")


def held_out_split(size: int = 64, inverted: bool = False) -> tuple[list[Image.Image], list[int]]:
    """The fixed held-out images (360 RGB pictures, see :func:`render_digit`) and their labels.

    Never used for training; the same every time. Classify them through
    ``model.info.preprocessing`` (or encode them and send them to the service)."""
    scans, labels = digit_scans("held_out")
    return [render_digit(p, size, inverted) for p in scans], [int(y) for y in labels]


def _scan_ink_box(pixels: np.ndarray) -> Image.Image:
    return scan_ink(pixels).resize((INK_BOX, INK_BOX), Image.Resampling.BICUBIC)


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random picture-making in :func:`augment`."""

    identity_ink: float = 0.3  # chance of keeping the ink levels as they are
    threshold: float = 0.35  # else a stroke ramp starts in [0, threshold] of the ink level...
    ramp: tuple[float, float] = (0.15, 0.6)  # ...and is this wide
    morphology: float = 0.1  # chance of a 3x3 dilation or erosion
    fill: tuple[float, float] = (0.3, 0.95)  # digit height / page side
    aspect: float = 0.25  # log of width/height stretch
    rotation: float = 10.0  # degrees
    shear: float = 0.15
    page: tuple[int, int] = (32, 96)  # page side in pixels
    inverted: float = 0.5  # chance of light ink on dark paper
    noise: float = 6.0  # largest sensor-noise sigma
    blur: float = 0.2  # chance of a slight blur


DEFAULT_AUGMENTATION = Augmentation()


def augment(
    ink: Image.Image, rng: np.random.Generator, aug: Augmentation = DEFAULT_AUGMENTATION
) -> Image.Image:
    """A random, realistic RGB picture of the square 'L' ink image ``ink`` (ink 255).

    Stroke thickness and contrast, rotation, shear, aspect, size and position on the page,
    page size, ink and paper colours (either polarity), blur and sensor noise."""
    # Stroke thickness: a random ramp on the ink level (a low threshold thickens strokes).
    if rng.random() >= aug.identity_ink:
        low = rng.uniform(0.0, aug.threshold)
        high = low + rng.uniform(*aug.ramp)
        lut = [round(255 * min(max((v / 255 - low) / (high - low), 0.0), 1.0)) for v in range(256)]
        ink = ink.point(lut)
    if rng.random() < aug.morphology:
        ink = ink.filter(ImageFilter.MaxFilter(3) if rng.random() < 0.5 else ImageFilter.MinFilter(3))

    # Geometry: output page pixel -> ink pixel, as Image.transform wants it.
    page = int(rng.integers(aug.page[0], aug.page[1] + 1))
    fill = rng.uniform(*aug.fill) * page / ink.width
    aspect = math.exp(rng.uniform(-aug.aspect, aug.aspect))
    angle = math.radians(rng.uniform(-aug.rotation, aug.rotation))
    shear = rng.uniform(-aug.shear, aug.shear)
    scale_x, scale_y = fill * aspect, fill / aspect
    cos, sin = math.cos(angle), math.sin(angle)
    # forward = rotation @ shear @ diag(scale_x, scale_y)
    a, b = cos * scale_x, (cos * shear - sin) * scale_y
    c, d = sin * scale_x, (sin * shear + cos) * scale_y
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    room = max(0.0, (1 - 0.95 * fill * ink.width / page)) * page / 2
    cx = page / 2 + rng.uniform(-room, room) * 0.6
    cy = page / 2 + rng.uniform(-room, room) * 0.6
    centre = ink.width / 2
    matrix = (ia, ib, centre - ia * cx - ib * cy, ic, id_, centre - ic * cx - id_ * cy)
    placed = ink.transform((page, page), Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR)

    # Colours: paper and ink, either polarity, a little tint, an uneven light.
    alpha = np.asarray(placed, np.float32)[..., None] / 255 * rng.uniform(0.75, 1.0)
    light = rng.uniform(170, 255) + rng.uniform(-15, 15, 3)
    dark = rng.uniform(0, 90) + rng.uniform(-35, 35, 3)
    paper, pen = (dark, light) if rng.random() < aug.inverted else (light, dark)
    ramp = np.linspace(-1, 1, page, dtype=np.float32)
    shade = rng.uniform(-20, 20) * ramp[None, :, None] + rng.uniform(-20, 20) * ramp[:, None, None]
    rgb = paper + shade + (pen - paper) * alpha
    rgb = rgb + rng.normal(0, rng.uniform(0, aug.noise), rgb.shape)
    image = Image.fromarray(np.clip(rgb, 0, 255).round().astype(np.uint8), "RGB")
    if rng.random() < aug.blur:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    return image


def to_batch(model: DAT, images: Sequence[Image.Image]) -> torch.Tensor:
    """RGB pictures -> (N, 3, S, S) through the model's own serving preprocessing."""
    return torch.stack([model.info.preprocessing(image) for image in images])


def training_set(
    model: DAT,
    scans: np.ndarray,
    labels: np.ndarray,
    font_digits: int,
    rng: np.random.Generator,
    aug: Augmentation,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch of freshly augmented pictures, preprocessed: every scan once plus
    ``font_digits`` typed digits (balanced over 0-9)."""
    inks = [_scan_ink_box(p) for p in scans]
    targets = [int(y) for y in labels]
    for i in range(font_digits):
        digit = i % 10
        inks.append(font_glyph(digit, int(rng.choice((24, 32, 48))), int(rng.integers(0, 3))))
        targets.append(digit)
    batch = to_batch(model, [augment(ink, rng, aug) for ink in inks])
    return batch, torch.tensor(targets)
