"""The sample pictures of ``samples/`` for the classifier: scans, a typed digit and digits
drawn as with a paint program, each named after its digit."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .classifier_data import render_digit
from .digit_ink import digit_scans


def _pen_drawing(
    strokes: Sequence[Sequence[tuple[float, float]]],
    size: tuple[int, int],
    width: int,
    ink: tuple[int, int, int],
    paper: tuple[int, int, int],
) -> Image.Image:
    """Strokes (points in 0..1 of the page) drawn with a round pen, as in a paint program."""
    image = Image.new("RGB", size, paper)
    draw = ImageDraw.Draw(image)
    w, h = size
    for stroke in strokes:
        points = [(x * w, y * h) for x, y in stroke]
        draw.line(points, fill=ink, width=width, joint="curve")
        for x, y in (points[0], points[-1]):
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=ink)
    return image


def _arc(
    cx: float, cy: float, rx: float, ry: float, start: float, end: float, n: int = 24
) -> list[tuple[float, float]]:
    """Points along an ellipse arc; angles in degrees, 0 = right, 90 = down."""
    return [
        (
            cx + rx * math.cos(math.radians(start + (end - start) * i / n)),
            cy + ry * math.sin(math.radians(start + (end - start) * i / n)),
        )
        for i in range(n + 1)
    ]


def make_samples() -> dict[str, Image.Image]:
    """The README's sample pictures, keyed by file name (``digit_<label>_<kind>.<ext>``)."""
    scans, labels = digit_scans("held_out")
    first = {int(y): i for i, y in reversed(list(enumerate(labels)))}  # first held-out of each
    samples = {
        "digit_3.png": render_digit(scans[first[3]], 192),
        "digit_7_inverted.jpg": render_digit(scans[first[7]], 192, inverted=True),
    }
    # Typed in Pillow's built-in font, dark grey on cream, not square.
    typed = Image.new("RGB", (160, 200), (246, 240, 226))
    draw = ImageDraw.Draw(typed)
    font = ImageFont.load_default(size=150)
    left, top, right, bottom = draw.textbbox((0, 0), "5", font=font)
    draw.text(
        ((160 - (right - left)) / 2 - left, (200 - (bottom - top)) / 2 - top),
        "5",
        fill=(40, 40, 48),
        font=font,
    )
    samples["digit_5_typed.png"] = typed
    # Drawn with a mouse: a blue 2 on white, and a chalk 4 on a green board.
    two = [_arc(0.5, 0.36, 0.22, 0.2, 200, 380) + [(0.3, 0.8), (0.76, 0.8)]]
    samples["digit_2_drawn.png"] = _pen_drawing(two, (256, 256), 18, (30, 60, 170), (255, 255, 255))
    four = [[(0.58, 0.16), (0.26, 0.62), (0.76, 0.62)], [(0.6, 0.3), (0.6, 0.86)]]
    chalk = _pen_drawing(four, (224, 224), 16, (235, 235, 225), (38, 70, 52))
    samples["digit_4_chalk.jpg"] = chalk.filter(ImageFilter.GaussianBlur(1))
    # A thin, slanted 9 in black felt pen on a grey page.
    nine = [_arc(0.5, 0.33, 0.17, 0.15, 0, 360), [(0.67, 0.33), (0.6, 0.85)]]
    samples["digit_9_drawn.png"] = _pen_drawing(nine, (200, 240), 10, (15, 15, 15), (214, 214, 210))
    return samples


def sample_label(path: str | Path) -> str:
    """The digit a sample should be read as, from its name: ``digit_7_inverted.jpg`` -> '7'."""
    return Path(path).name.split("_")[1][0]


def write_samples(directory: str | Path) -> list[Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in make_samples().items():
        path = directory / name
        if path.suffix == ".jpg":
            image.save(path, quality=90)
        else:
            image.save(path)
        paths.append(path)
    return paths
