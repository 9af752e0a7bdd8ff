"""The detector's scenes: RGB pages of various sizes and aspect ratios holding several digits
each, made from the classifier's ink (scikit-learn's scans and digits typed in Pillow's font),
dark on light or light on dark, slightly rotated, blurred and noisy. A ground-truth box is the
tight box around a digit's ink, in the page's pixels.

The held-out scenes (:func:`held_out_scenes`) are built only from the held-out scans of
:func:`training.digit_ink.digit_scans` (never from the training scans, nor from typed digits)
with a seed of their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from .digit_ink import digit_scans, font_glyph, scan_ink

HELD_OUT_SEED = 20_261_126  # held-out scenes have a seed no training run uses
HELD_OUT_SCENES = 300
INK_LEVEL = 0.35  # alpha from which a pixel counts as ink (the tight box's edge)

Scene = tuple[Image.Image, np.ndarray, np.ndarray]  # picture, boxes (K, 4) x1y1x2y2, labels (K,)


@dataclass(frozen=True)
class SceneStyle:
    """Ranges of the random page-making in :func:`make_scene`. Digit heights are fractions of
    the page's long side: 0.11-0.375 is 14-48 px once letterboxed into the 128 canvas."""

    digits: tuple[int, int] = (2, 6)  # digits asked for (fewer when they do not fit)
    height: tuple[float, float] = (0.11, 0.375)  # digit ink height / long side (log-uniform)
    long_side: tuple[int, int] = (96, 384)  # page pixels
    aspect: tuple[float, float] = (0.5, 2.0)  # page width / height (log-uniform)
    typed: float = 0.25  # chance a digit is typed in Pillow's font rather than a scan
    inverted: float = 0.5  # chance of light ink on a dark page
    stretch: float = 0.2  # log of a digit's width / height stretch
    rotation: float = 10.0  # degrees
    shear: float = 0.15
    overlap: float = 0.1  # largest intersection / smaller box between two digits' boxes
    noise: float = 8.0  # largest sensor-noise sigma
    blur: float = 0.25  # chance of a slight blur of the whole page


def _ink_sources(split: str) -> tuple[np.ndarray, np.ndarray]:
    if split not in ("train", "held_out"):
        raise ValueError(f"split must be 'train' or 'held_out', not {split!r}")
    return digit_scans(split)


def scan_ink_padded(pixels: np.ndarray) -> Image.Image:
    """A scan as a 50x50 'L' ink image with an empty border: many scans touch their 8x8 frame,
    and upscaling them unpadded would cut strokes off square at the frame."""
    return ImageOps.expand(scan_ink(pixels), 1, 0).resize((50, 50), Image.Resampling.BICUBIC)


def _stroke(ink: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Random stroke thickness and contrast: a ramp on the ink level (a low start thickens)."""
    if rng.random() < 0.3:
        return ink
    low = rng.uniform(0.0, 0.35)
    high = low + rng.uniform(0.15, 0.6)
    return ink.point([round(255 * min(max((v / 255 - low) / (high - low), 0.0), 1.0)) for v in range(256)])


def digit_alpha(
    ink: Image.Image, height: float, rng: np.random.Generator, style: SceneStyle
) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The square 'L' ink image drawn ``height`` pixels tall, rotated, sheared and stretched:
    an alpha patch (h, w) in [0, 1] and the tight box (x1, y1, x2, y2) of its ink, or None
    when the ink vanished."""
    ink = _stroke(ink, rng)
    source = np.asarray(ink, np.float32) / 255
    rows, cols = np.nonzero(source >= INK_LEVEL)
    if rows.size == 0:
        return None
    stretch = math.exp(rng.uniform(-style.stretch, style.stretch))
    angle = math.radians(rng.uniform(-style.rotation, style.rotation))
    shear = rng.uniform(-style.shear, style.shear)
    cos, sin = math.cos(angle), math.sin(angle)
    # forward (ink -> patch) = rotation @ shear @ diag(sx, sy), about the ink's centre, scaled
    # so that the drawn ink is ``height`` pixels tall
    c, d = sin * stretch, (sin * shear + cos) / stretch
    ys = c * cols + d * rows
    scale = height / (ys.max() + 1 - ys.min())
    sx, sy = scale * stretch, scale / stretch
    a, b = cos * sx, (cos * shear - sin) * sy
    c, d = sin * sx, (sin * shear + cos) * sy
    centre = ink.width / 2
    corners = np.array([[-centre, -centre], [centre, -centre], [-centre, centre], [centre, centre]])
    extent = np.abs(corners @ np.array([[a, c], [b, d]])).max(axis=0)
    width, height_px = (int(math.ceil(2 * e)) + 2 for e in extent)
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    px, py = width / 2, height_px / 2
    matrix = (ia, ib, centre - ia * px - ib * py, ic, id_, centre - ic * px - id_ * py)
    patch = ink.transform((width, height_px), Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR)
    alpha = np.asarray(patch, np.float32) / 255
    rows, cols = np.nonzero(alpha >= INK_LEVEL)
    if rows.size == 0:
        return None
    return alpha, (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)


def _fits(box: np.ndarray, placed: list[np.ndarray], overlap: float) -> bool:
    for other in placed:
        w = min(box[2], other[2]) - max(box[0], other[0])
        h = min(box[3], other[3]) - max(box[1], other[1])
        if w > 0 and h > 0:
            smaller = min(
                (box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1])
            )
            if w * h > overlap * smaller:
                return False
    return True


def render_scene(rng: np.random.Generator, split: str, style: SceneStyle) -> tuple[Scene, np.ndarray]:
    """A scene plus its ink layer (H, W) in [0, 1] (for tests)."""
    scene, alpha, _ = _render(rng, split, style)
    return scene, alpha


def _render(
    rng: np.random.Generator, split: str, style: SceneStyle
) -> tuple[Scene, np.ndarray, list[tuple[int, int, np.ndarray]]]:
    """The scene, its ink layer and each digit's ink (left, top, patch >= INK_LEVEL): the
    glyph's own pixels, whose tight box is its ground-truth box."""
    scans, scan_labels = _ink_sources(split)
    long_side = int(rng.integers(style.long_side[0], style.long_side[1] + 1))
    aspect = math.exp(rng.uniform(math.log(style.aspect[0]), math.log(style.aspect[1])))
    width, height = (
        (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
    )
    alpha = np.zeros((height, width), np.float32)
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    inks: list[tuple[int, int, np.ndarray]] = []
    wanted = int(rng.integers(style.digits[0], style.digits[1] + 1))
    lo, hi = math.log(style.height[0]), math.log(style.height[1])
    for _ in range(wanted):
        if rng.random() < style.typed:
            label = int(rng.integers(10))
            ink = ImageOps.expand(
                font_glyph(label, int(rng.choice((24, 32, 48))), int(rng.integers(0, 3))), 5, 0
            )
        else:
            i = int(rng.integers(len(scans)))
            label, ink = int(scan_labels[i]), scan_ink_padded(scans[i])
        drawn = digit_alpha(ink, math.exp(rng.uniform(lo, hi)) * long_side, rng, style)
        if drawn is None:
            continue
        patch, (x1, y1, x2, y2) = drawn
        ph, pw = patch.shape
        if pw > width or ph > height:
            continue
        for _attempt in range(20):  # a free spot, the whole patch on the page
            left, top = int(rng.integers(0, width - pw + 1)), int(rng.integers(0, height - ph + 1))
            box = np.array([left + x1, top + y1, left + x2, top + y2], np.float32)
            if _fits(box, boxes, style.overlap):
                region = alpha[top : top + ph, left : left + pw]
                np.maximum(region, patch * rng.uniform(0.75, 1.0), out=region)
                boxes.append(box)
                labels.append(label)
                inks.append((left, top, patch >= INK_LEVEL))
                break

    box_array = np.stack(boxes) if boxes else np.zeros((0, 4), np.float32)
    return (paint(alpha, rng, style), box_array, np.asarray(labels, np.int64)), alpha, inks


def paint(
    alpha: np.ndarray,
    rng: np.random.Generator,
    style: SceneStyle,
    colours: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Image.Image:
    """The page for an ink layer (H, W): paper and pen of either polarity with a little tint
    (or the given (paper, pen) RGB), an uneven light, sensor noise, maybe a slight blur."""
    height, width = alpha.shape
    light = rng.uniform(170, 255) + rng.uniform(-15, 15, 3)
    dark = rng.uniform(0, 90) + rng.uniform(-35, 35, 3)
    paper, pen = (dark, light) if rng.random() < style.inverted else (light, dark)
    if colours is not None:
        paper, pen = (np.asarray(c, np.float64) for c in colours)
    shade = (
        rng.uniform(-20, 20) * np.linspace(-1, 1, width, dtype=np.float32)[None, :, None]
        + rng.uniform(-20, 20) * np.linspace(-1, 1, height, dtype=np.float32)[:, None, None]
    )
    rgb = paper.astype(np.float32) + shade + (pen - paper).astype(np.float32) * alpha[..., None]
    sigma = rng.uniform(0, style.noise)
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * sigma
    image = Image.fromarray(np.clip(rgb, 0, 255).round().astype(np.uint8), "RGB")
    if rng.random() < style.blur:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0) * max(width, height) / 128))
    return image


TRAIN_STYLE = SceneStyle(digits=(3, 8))  # denser pages: more digits to learn from per step

HELD_OUT_STYLE = SceneStyle(typed=0.0)  # held-out pages: held-out scans and nothing else


def make_scene(rng: np.random.Generator, split: str = "train", style: SceneStyle | None = None) -> Scene:
    """A random page of digits: the RGB picture, the tight ink boxes (K, 4) float32 x1 y1 x2 y2
    in its pixels, and their labels (K,) int64. ``split`` picks the scans ('train' or
    'held_out'); the default style adds typed digits to training pages only. Deterministic
    given ``rng``."""
    if style is None:
        style = TRAIN_STYLE if split == "train" else HELD_OUT_STYLE
    return render_scene(rng, split, style)[0]


def make_masked_scene(
    rng: np.random.Generator, split: str = "train", style: SceneStyle | None = None
) -> tuple[Scene, np.ndarray]:
    """:func:`make_scene`'s page (the same one for the same ``rng``) and each digit's mask
    (K, H, W) bool: the pixels where its own ink reaches ``INK_LEVEL``, so the mask's tight box
    is its box. Digits may overlap a little; each mask holds its own ink whole."""
    if style is None:
        style = TRAIN_STYLE if split == "train" else HELD_OUT_STYLE
    scene, alpha, inks = _render(rng, split, style)
    masks = np.zeros((len(inks), *alpha.shape), bool)
    for k, (left, top, ink) in enumerate(inks):
        masks[k, top : top + ink.shape[0], left : left + ink.shape[1]] = ink
    return scene, masks


def held_out_masked_scenes(
    n: int = HELD_OUT_SCENES, seed: int = HELD_OUT_SEED
) -> list[tuple[Scene, np.ndarray]]:
    """:func:`held_out_scenes` with each digit's mask (:func:`make_masked_scene`)."""
    return [make_masked_scene(np.random.default_rng([seed, i]), "held_out") for i in range(n)]


def held_out_scenes(n: int = HELD_OUT_SCENES, seed: int = HELD_OUT_SEED) -> list[Scene]:
    """The fixed held-out scenes: scene i comes from ``default_rng([seed, i])`` and held-out
    scans only, so the first ``n`` are the same whatever ``n``. Never used for training."""
    return [make_scene(np.random.default_rng([seed, i]), "held_out") for i in range(n)]
