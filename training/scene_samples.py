"""The sample scenes of ``samples/`` for the detector, and their ground truth (``scenes.json``)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import ImageOps

from .digit_ink import digit_scans, font_glyph, load_rgb
from .scenes import HELD_OUT_SEED, HELD_OUT_STYLE, Scene, digit_alpha, paint, scan_ink_padded

# The README's sample pages: size, (paper, pen) colours, and digits as (label, height, centre
# x, centre y) in page pixels; "t" before a label types it in Pillow's font, else it is the
# next held-out scan of that digit (never trained on).
_SAMPLES = {
    "scene_notebook.png": (
        (480, 320),
        ((242, 238, 222), (28, 40, 110)),
        [("2", 70, 90, 150), ("0", 72, 180, 145), ("2", 68, 270, 155), ("6", 74, 370, 148)],
    ),
    "scene_chalkboard.png": (
        (400, 300),
        ((40, 72, 56), (236, 236, 226)),
        [("3", 64, 90, 90), ("1", 60, 200, 85), ("4", 66, 310, 95), ("5", 70, 140, 210), ("9", 68, 270, 205)],
    ),
    "scene_typed.png": (
        (240, 360),
        ((214, 214, 208), (20, 20, 24)),
        [("t7", 60, 70, 80), ("t8", 90, 160, 150), ("t4", 50, 80, 250), ("8", 70, 170, 290)],
    ),
    "scene_small.png": (
        (160, 112),
        ((16, 16, 20), (250, 250, 250)),
        [("1", 40, 40, 50), ("7", 44, 85, 60), ("5", 40, 128, 52)],
    ),
}


def make_samples() -> dict[str, Scene]:
    """The README's sample scenes, keyed by file name: legible digits in fixed places."""
    scans, scan_labels = digit_scans("held_out")
    used: dict[int, int] = {}
    style = replace(HELD_OUT_STYLE, rotation=5.0, shear=0.1, stretch=0.1, noise=4.0, blur=0.0)
    samples = {}
    for k, (name, ((width, height), colours, digits)) in enumerate(_SAMPLES.items()):
        rng = np.random.default_rng([HELD_OUT_SEED, 10_000 + k])
        alpha = np.zeros((height, width), np.float32)
        boxes, labels = [], []
        for code, size, cx, cy in digits:
            label = int(code[-1])
            if code.startswith("t"):
                ink = ImageOps.expand(font_glyph(label, 48, 1), 5, 0)
            else:
                nth = used[label] = used.get(label, -1) + 1
                ink = scan_ink_padded(scans[np.flatnonzero(scan_labels == label)[nth]])
            drawn = digit_alpha(ink, size, rng, style)
            assert drawn is not None
            patch, (x1, y1, x2, y2) = drawn
            left, top = round(cx - (x1 + x2) / 2), round(cy - (y1 + y2) / 2)
            region = alpha[top : top + patch.shape[0], left : left + patch.shape[1]]
            np.maximum(region, patch, out=region)
            boxes.append([left + x1, top + y1, left + x2, top + y2])
            labels.append(label)
        samples[name] = (
            paint(alpha, rng, style, colours),
            np.asarray(boxes, np.float32),
            np.asarray(labels, np.int64),
        )
    return samples


def write_samples(directory: str | Path) -> list[Path]:
    """Writes the sample PNGs and ``scenes.json`` (each file's boxes, in its pixels, and labels)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths, truth = [], {}
    for name, (image, boxes, labels) in make_samples().items():
        image.save(directory / name)
        paths.append(directory / name)
        truth[name] = {
            "size": list(image.size),
            "objects": [
                {"label": str(int(y)), "box": [round(float(v), 1) for v in b]} for b, y in zip(boxes, labels)
            ],
        }
    (directory / "scenes.json").write_text(json.dumps(truth, indent=2) + "\n")
    return [*paths, directory / "scenes.json"]


def read_samples(directory: str | Path) -> list[Scene]:
    """The sample scenes back from ``scenes.json`` and their PNGs (decoded as the service does)."""
    directory = Path(directory)
    truth = json.loads((directory / "scenes.json").read_text())
    scenes = []
    for name, entry in truth.items():
        boxes = np.array([o["box"] for o in entry["objects"]], np.float32).reshape(-1, 4)
        labels = np.array([int(o["label"]) for o in entry["objects"]], np.int64)
        scenes.append((load_rgb(directory / name), boxes, labels))
    return scenes
