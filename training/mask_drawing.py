"""The README's segmentation picture: a sample scene, and beside it the same scene with each
detected digit's mask tinted, its box outlined and its reading written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from models import paste_masks
from models.boxes import box_iou
from models.transforms import Letterbox, expect_pipeline

from .scene_samples import make_samples
from .segmenter_training import segmenter_model
from .weights import with_weights

# distinct, legible on dark and light paper
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180))
TINT = 0.55  # share of the colour in a masked pixel
GAP = 8  # pixels between the two panels


def draw_masks(image: Image.Image, boxes, labels, masks: np.ndarray) -> Image.Image:
    """``image`` with (K, H, W) bool masks tinted, boxes (K, 4) outlined and labels written."""
    rgb = np.asarray(image.convert("RGB"), np.float32).copy()
    for k, mask in enumerate(masks):
        tint = np.array(PALETTE[k % len(PALETTE)], np.float32)
        rgb[mask] = (1 - TINT) * rgb[mask] + TINT * tint
    out = Image.fromarray(rgb.round().astype(np.uint8))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=16)
    for k, (box, label) in enumerate(zip(boxes, labels)):
        colour = PALETTE[k % len(PALETTE)]
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=2)
        draw.text(
            (x1 + 2, max(y1 - 19, 0)), str(label), fill=colour, font=font, stroke_width=2, stroke_fill=0
        )
    return out


@torch.inference_mode()
def draw_sample(
    out: str | Path, scene: str, weights: Path | None = None, score_threshold: float = 0.3
) -> Path:
    """Runs ``dat_digits_segmenter`` on sample ``scene`` and writes the two panels to ``out``."""
    samples = make_samples()
    if scene not in samples:
        raise KeyError(f"unknown sample scene {scene!r}; the samples are {', '.join(samples)}")
    image = samples[scene][0]
    model = with_weights(segmenter_model, weights)
    letterbox = expect_pipeline(model.info.preprocessing, Letterbox)
    found = model(letterbox(image)[None])
    keep = (found.labels[0] >= 0) & (found.scores[0] >= score_threshold)
    # one reading per digit: class-aware NMS may keep a second, lower-scored class on it
    overlap = box_iou(found.boxes[0], found.boxes[0]).tril(-1)  # with the better-scored ones
    keep &= ~((overlap >= 0.5) & keep[None, :]).any(dim=1)
    boxes = found.boxes[0][keep] / torch.tensor(letterbox.scale(*image.size)).repeat(2)
    masks = paste_masks(found.masks[0][keep], boxes, image.height, image.width, model.config.mask_threshold)
    labels = [model.info.labels[i] for i in found.labels[0][keep].tolist()]
    drawn = draw_masks(image, boxes.numpy(), labels, masks.numpy())
    panel = Image.new("RGB", (2 * image.width + GAP, image.height), (255, 255, 255))
    panel.paste(image, (0, 0))
    panel.paste(drawn, (image.width + GAP, 0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    panel.save(out, optimize=True)
    return out
