"""The embedded default detector ``dat_digits_detector``: finds and reads the digits on a page.

RetinaNet (:mod:`models.detection`) on the default classifier's small DAT, its backbone
initialised from the committed ``dat_digits`` weights, trained on generated scenes: RGB pages
of various sizes and aspect ratios holding several digits each (3-8 asked for in training,
2-6 on held-out pages; fewer where they do not fit), made from the same ink as the
classifier's training data (scikit-learn's handwritten scans and digits typed in Pillow's
font), dark on light or light on dark, slightly rotated, blurred and noisy. A ground-truth
box is the tight box around a digit's ink, in the page's pixels. Scenes are made afresh for
every step (about a sixth of the training time), so no data set is stored.

Every training page goes through ``model.info.preprocessing`` (the letterbox the service
applies to an upload); its boxes scale by ``Letterbox.scale``.

    python -m models.demo_detection train --out models/weights/dat_digits_detector.safetensors
    python -m models.demo_detection evaluate
    python -m models.demo_detection samples --out samples

The held-out scenes (:func:`held_out_scenes`) are built only from the held-out scans of
:func:`models.demo.digit_scans` (never from the training scans, nor from typed digits) with a
seed of their own; mAP@0.5 is :func:`models.detection_eval.mean_average_precision`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter, ImageOps

from .demo import _font_glyph, _scan_ink, digit_scans, load_rgb, with_weights, write_trained
from .detection import RetinaNet, box_iou, encode_boxes, load_backbone
from .detection_eval import mean_average_precision
from .registry import create_model, get_spec

MODEL_NAME = "dat_digits_detector"
DEFAULT_SEED = 0
HELD_OUT_SEED = 20_261_126  # held-out scenes have a seed no training run uses
HELD_OUT_SCENES = 300
INK_LEVEL = 0.35  # alpha from which a pixel counts as ink (the tight box's edge)

Log = Callable[[str], None]
Scene = tuple[Image.Image, np.ndarray, np.ndarray]  # picture, boxes (K, 4) x1y1x2y2, labels (K,)


# --------------------------------------------------------------------------- scenes


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


def _scan_ink_padded(pixels: np.ndarray) -> Image.Image:
    """A scan as a 50x50 'L' ink image with an empty border: many scans touch their 8x8 frame,
    and upscaling them unpadded would cut strokes off square at the frame."""
    return ImageOps.expand(_scan_ink(pixels), 1, 0).resize((50, 50), Image.Resampling.BICUBIC)


def _stroke(ink: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Random stroke thickness and contrast: a ramp on the ink level (a low start thickens)."""
    if rng.random() < 0.3:
        return ink
    low = rng.uniform(0.0, 0.35)
    high = low + rng.uniform(0.15, 0.6)
    return ink.point([round(255 * min(max((v / 255 - low) / (high - low), 0.0), 1.0)) for v in range(256)])


def _digit_alpha(
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


def _render(rng: np.random.Generator, split: str, style: SceneStyle) -> tuple[Scene, np.ndarray]:
    """A scene plus its ink layer (H, W) in [0, 1] (for tests)."""
    scans, scan_labels = _ink_sources(split)
    long_side = int(rng.integers(style.long_side[0], style.long_side[1] + 1))
    aspect = math.exp(rng.uniform(math.log(style.aspect[0]), math.log(style.aspect[1])))
    width, height = (
        (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
    )
    alpha = np.zeros((height, width), np.float32)
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    wanted = int(rng.integers(style.digits[0], style.digits[1] + 1))
    lo, hi = math.log(style.height[0]), math.log(style.height[1])
    for _ in range(wanted):
        if rng.random() < style.typed:
            label = int(rng.integers(10))
            ink = ImageOps.expand(
                _font_glyph(label, int(rng.choice((24, 32, 48))), int(rng.integers(0, 3))), 5, 0
            )
        else:
            i = int(rng.integers(len(scans)))
            label, ink = int(scan_labels[i]), _scan_ink_padded(scans[i])
        drawn = _digit_alpha(ink, math.exp(rng.uniform(lo, hi)) * long_side, rng, style)
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
                break

    box_array = np.stack(boxes) if boxes else np.zeros((0, 4), np.float32)
    return (_paint(alpha, rng, style), box_array, np.asarray(labels, np.int64)), alpha


def _paint(
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
    return _render(rng, split, style)[0]


def held_out_scenes(n: int = HELD_OUT_SCENES, seed: int = HELD_OUT_SEED) -> list[Scene]:
    """The fixed held-out scenes: scene i comes from ``default_rng([seed, i])`` and held-out
    scans only, so the first ``n`` are the same whatever ``n``. Never used for training."""
    return [make_scene(np.random.default_rng([seed, i]), "held_out") for i in range(n)]


# --------------------------------------------------------------------------- targets and loss

NEGATIVE, IGNORED = -1, -2


def assign_anchors(
    anchors: torch.Tensor, gt_boxes: torch.Tensor, pos_iou: float = 0.5, neg_iou: float = 0.4
) -> torch.Tensor:
    """mmdet's MaxIoUAssigner as RetinaNet configures it: for each anchor (N, 4) the index of
    its ground truth (K, 4), NEGATIVE or IGNORED. IoU >= ``pos_iou`` is positive, below
    ``neg_iou`` negative, in between ignored; then every ground truth also takes the anchors
    it overlaps best (min_pos_iou 0, all ties), so a small or thin digit still has one.
    A ground truth overlapping no anchor at all takes none (mmdet would take every anchor)."""
    assigned = torch.full((anchors.shape[0],), NEGATIVE, dtype=torch.long, device=anchors.device)
    if gt_boxes.numel() == 0:
        return assigned
    iou = box_iou(anchors, gt_boxes)  # (N, K)
    best, which = iou.max(dim=1)
    assigned[best >= neg_iou] = IGNORED
    positive = best >= pos_iou
    assigned[positive] = which[positive]
    gt_best = iou.max(dim=0).values
    for k in range(gt_boxes.shape[0]):  # later ground truths win ties, as in mmdet
        if gt_best[k] > 0:
            assigned[iou[:, k] == gt_best[k]] = k
    return assigned


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Element-wise focal loss (Lin et al.) of sigmoid ``logits`` against 0/1 ``targets``."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * ce


def detection_loss(
    logits: torch.Tensor,
    deltas: torch.Tensor,
    anchors: torch.Tensor,
    targets: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, dict[str, float]]:
    """RetinaNet's loss on one batch: focal loss summed over the non-ignored anchors and all
    classes, plus L1 on the encoded deltas of the positives, both divided by the batch's
    number of positives. ``targets``: per image, boxes (K, 4) in canvas pixels and labels (K,)."""
    num_classes = logits.shape[-1]
    assigned = torch.stack([assign_anchors(anchors, boxes) for boxes, _ in targets])  # (B, N)
    classes = torch.zeros_like(logits)
    box_targets = torch.zeros_like(deltas)
    for b, (boxes, labels) in enumerate(targets):
        positive = assigned[b] >= 0
        if positive.any():
            matched = assigned[b][positive]
            classes[b, positive] = F.one_hot(labels[matched], num_classes).to(classes.dtype)
            box_targets[b, positive] = encode_boxes(anchors[positive], boxes[matched])
    positive = assigned >= 0
    num_pos = max(int(positive.sum()), 1)
    valid = assigned != IGNORED
    cls_loss = sigmoid_focal_loss(logits[valid], classes[valid]).sum() / num_pos
    box_loss = (deltas[positive] - box_targets[positive]).abs().sum() / num_pos
    return cls_loss + box_loss, {"cls": cls_loss.item(), "box": box_loss.item(), "pos": float(positive.sum())}


# --------------------------------------------------------------------------- model


def detector_model(pretrained: bool = True) -> RetinaNet:
    """The registered ``dat_digits_detector`` (committed weights unless ``pretrained=False``)."""
    return create_model(MODEL_NAME, pretrained=pretrained)  # type: ignore[return-value]


def to_batch(
    model: RetinaNet, scenes: Sequence[Scene]
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Scenes -> canvas batch through the serving letterbox, and their boxes in canvas pixels."""
    letterbox = model.info.preprocessing
    images, targets = [], []
    for image, boxes, labels in scenes:
        sx, sy = letterbox.scale(*image.size)
        images.append(letterbox(image))
        targets.append(
            (torch.from_numpy(boxes * np.array([sx, sy, sx, sy], np.float32)), torch.from_numpy(labels))
        )
    return torch.stack(images), targets


@torch.inference_mode()
def detect(
    model: RetinaNet, images: Sequence[Image.Image], batch_size: int = 64
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per RGB picture: boxes (M, 4) in its own pixels, scores (M,), labels (M,), best first."""
    was_training = model.training
    model.eval()
    letterbox = model.info.preprocessing
    out = []
    for i in range(0, len(images), batch_size):
        chunk = images[i : i + batch_size]
        found = model(torch.stack([letterbox(image) for image in chunk]))
        for j, image in enumerate(chunk):
            keep = found.labels[j] >= 0
            sx, sy = letterbox.scale(*image.size)
            boxes = found.boxes[j][keep].numpy() / np.array([sx, sy, sx, sy], np.float32)
            out.append((boxes, found.scores[j][keep].numpy(), found.labels[j][keep].numpy()))
    model.train(was_training)
    return out


def evaluate(model: RetinaNet, scenes: Sequence[Scene], iou_threshold: float = 0.5) -> float:
    """mAP@``iou_threshold`` of the model on scenes, through the serving letterbox."""
    predictions = detect(model, [image for image, _, _ in scenes])
    return mean_average_precision(
        predictions, [(boxes, labels) for _, boxes, labels in scenes], iou_threshold, model.num_classes
    )


# --------------------------------------------------------------------------- training

DEFAULT_STEPS = 1500
DEFAULT_BATCH = 16
DEFAULT_LR = 2e-3


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads"


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def train(
    out: str | Path | None = None,
    *,
    steps: int = DEFAULT_STEPS,
    seed: int = DEFAULT_SEED,
    batch_size: int = DEFAULT_BATCH,
    lr: float = DEFAULT_LR,
    weight_decay: float = 0.05,
    warmup_steps: int = 100,
    held_out: int = HELD_OUT_SCENES,
    eval_every: int = 250,
    threads: int | None = None,
    backbone: str | Path | None = None,
    log: Log = print,
    command: str | None = None,
    style: SceneStyle = TRAIN_STYLE,
) -> dict:
    """Trains ``dat_digits_detector`` on freshly generated scenes (a new batch every step),
    its backbone initialised from the ``dat_digits`` classifier (``backbone``: another
    classifier checkpoint; default the committed one). Writes ``out`` (safetensors) and
    ``out``.json; returns the record (held-out mAP@0.5, time, config...)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    start, load = time.perf_counter(), _load_average()
    model = detector_model(pretrained=False)
    load_backbone(model, backbone or get_spec("dat_digits").weights)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() > 1 and "rpe_table" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() > 1 and "rpe_table" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    warmup = min(warmup_steps, steps // 5)
    held_scenes = held_out_scenes(held_out) if held_out else []
    log(
        f"training {MODEL_NAME}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{steps} steps of {batch_size} new scenes, seed {seed}, {torch.get_num_threads()} threads"
    )

    data_seconds, sums = 0.0, {"loss": 0.0, "cls": 0.0, "box": 0.0, "pos": 0.0}
    for step in range(1, steps + 1):
        tick = time.perf_counter()
        rng = np.random.default_rng([seed, step])
        images, targets = to_batch(model, [make_scene(rng, "train", style) for _ in range(batch_size)])
        data_seconds += time.perf_counter() - tick
        factor = (
            step / max(warmup, 1)
            if step <= warmup
            else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))
        )
        for group in optimizer.param_groups:
            group["lr"] = lr * factor
        logits, deltas = model.forward_raw(images)
        loss, parts = detection_loss(logits, deltas, model.anchors, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        sums["loss"] += loss.item()
        for key in ("cls", "box", "pos"):
            sums[key] += parts[key]
        if step % 50 == 0 or step == steps:
            n = 50 if step % 50 == 0 else step % 50
            message = (
                f"step {step:5d}/{steps}  loss {sums['loss'] / n:.4f} (cls {sums['cls'] / n:.4f}, "
                f"box {sums['box'] / n:.4f}, {sums['pos'] / n / batch_size:.1f} pos/img)  "
                f"lr {lr * factor:.2e}  {time.perf_counter() - start:6.1f}s"
            )
            if eval_every and held_scenes and step % eval_every == 0 and step != steps:
                message += f"  held-out mAP@0.5 {evaluate(model, held_scenes[:100]):.4f} (100 scenes)"
            log(message)
            sums = dict.fromkeys(sums, 0.0)

    seconds = time.perf_counter() - start
    model.eval()
    held_map = evaluate(model, held_scenes) if held_scenes else float("nan")
    record = {
        "model": MODEL_NAME,
        "command": command
        or f"python -m models.demo_detection train --out {out} --steps {steps} --seed {seed}",
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "scenes_seen": steps * batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup_steps": warmup,
        "backbone_init": str(backbone or "models/weights/dat_digits.safetensors"),
        "scene_style": asdict(style),
        "held_out_scenes": len(held_scenes),
        "held_out_seed": HELD_OUT_SEED,
        "held_out_map50": round(held_map, 4),
        "training_seconds": round(seconds, 1),
        "data_seconds": round(data_seconds, 1),
        "threads": torch.get_num_threads(),
        "machine": _machine(),
        "load_average_1min": {"start": load, "end": _load_average()},  # other work on the machine
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "config": model.config.to_dict(),
    }
    log(
        f"held-out mAP@0.5 {held_map:.4f} ({len(held_scenes)} scenes); trained in {seconds:.0f}s "
        f"({data_seconds:.0f}s making scenes)"
    )
    if out is not None:
        write_trained(
            model,
            out,
            record,
            log,
            {
                "model": MODEL_NAME,
                "held_out_map50": f"{held_map:.4f}",
                "seed": str(seed),
                "steps": str(steps),
            },
        )
    return record


# --------------------------------------------------------------------------- samples

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
                ink = ImageOps.expand(_font_glyph(label, 48, 1), 5, 0)
            else:
                nth = used[label] = used.get(label, -1) + 1
                ink = _scan_ink_padded(scans[np.flatnonzero(scan_labels == label)[nth]])
            drawn = _digit_alpha(ink, size, rng, style)
            assert drawn is not None
            patch, (x1, y1, x2, y2) = drawn
            left, top = round(cx - (x1 + x2) / 2), round(cy - (y1 + y2) / 2)
            region = alpha[top : top + patch.shape[0], left : left + patch.shape[1]]
            np.maximum(region, patch, out=region)
            boxes.append([left + x1, top + y1, left + x2, top + y2])
            labels.append(label)
        samples[name] = (
            _paint(alpha, rng, style, colours),
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


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.demo_detection",
        description="The embedded digits detector dat_digits_detector: train it, measure its "
        "held-out mAP, write the sample scenes.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "train",
        help="train dat_digits_detector on generated scenes (15-25 minutes on 2 CPU cores)",
        description="Trains dat_digits_detector (backbone from the dat_digits "
        "classifier) and writes its safetensors weights plus a JSON "
        "record beside them (same name, .json).",
    )
    p.add_argument("--out", type=Path, required=True, help="weights file to write (.safetensors)")
    p.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help=f"optimizer steps, each on a batch of new scenes (default {DEFAULT_STEPS})",
    )
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help=f"default {DEFAULT_BATCH}")
    p.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"seed of initialisation and scenes (default {DEFAULT_SEED})",
    )
    p.add_argument(
        "--lr", type=float, default=DEFAULT_LR, help=f"peak AdamW learning rate (default {DEFAULT_LR:g})"
    )
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=100,
        help="steps of linear learning-rate warm-up before the cosine decay (default 100)",
    )
    p.add_argument(
        "--held-out",
        type=int,
        default=HELD_OUT_SCENES,
        help=f"held-out scenes measured at the end (default {HELD_OUT_SCENES}; 0: none)",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=250,
        help="print mAP on 100 held-out scenes every N steps (default 250; 0: never)",
    )
    p.add_argument(
        "--backbone",
        type=Path,
        default=None,
        help="classifier checkpoint for the backbone (default: the committed dat_digits)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")

    p = sub.add_parser(
        "evaluate",
        help="held-out mAP@0.5 of the committed (or given) weights",
        description="Measures mAP@0.5 on the held-out scenes and the sample scenes.",
    )
    p.add_argument("--weights", type=Path, default=None, help="weights instead of the committed ones")
    p.add_argument(
        "--scenes", type=int, default=HELD_OUT_SCENES, help=f"held-out scenes (default {HELD_OUT_SCENES})"
    )
    p.add_argument(
        "--samples",
        type=Path,
        default=Path("samples"),
        help="directory holding scenes.json (default samples)",
    )

    p = sub.add_parser(
        "samples",
        help="write the README's sample scenes and their scenes.json",
        description="Writes samples/scene_*.png and scenes.json (ground truth).",
    )
    p.add_argument("--out", type=Path, default=Path("samples"), help="directory (default samples)")

    args = parser.parse_args(argv)
    if args.command == "train":
        command = "python -m models.demo_detection " + " ".join(sys.argv[1:] if argv is None else argv)
        record = train(
            args.out,
            steps=args.steps,
            seed=args.seed,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup_steps=args.warmup_steps,
            held_out=args.held_out,
            eval_every=args.eval_every,
            threads=args.threads,
            backbone=args.backbone,
            log=lambda m: print(m, flush=True),
            command=command,
        )
        return 0 if not args.held_out or record["held_out_map50"] >= 0.7 else 1
    if args.command == "evaluate":
        model = with_weights(detector_model, args.weights)
        start = time.perf_counter()
        score = evaluate(model, held_out_scenes(args.scenes))
        print(f"held-out mAP@0.5 {score:.4f} ({args.scenes} scenes, {time.perf_counter() - start:.1f}s)")
        if (args.samples / "scenes.json").is_file():
            samples = read_samples(args.samples)
            print(f"sample scenes mAP@0.5 {evaluate(model, samples):.4f} ({len(samples)} scenes)")
        return 0
    for path in write_samples(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
