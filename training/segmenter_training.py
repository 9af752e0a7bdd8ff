"""Training and measuring ``dat_digits_segmenter``: the committed ``dat_digits_detector``,
frozen (its boxes, scores and labels stay exactly the detector's), plus a mask head trained on
the glyph pixels the scene generator knows (:func:`training.scenes.make_masked_scene`).

Each step makes a batch of new training scenes, runs the frozen detector on their canvases
(the serving letterbox) and takes as RoIs the ground-truth boxes, each jittered once, and
the detector's own detections that overlap a ground truth by IoU >= 0.5, which is what the
head sees when serving. A RoI's target is its digit's mask in page pixels RoIAligned to
28 x 28 over the RoI and thresholded at 0.5 (mmdet's mask target); the loss is binary cross
entropy.

Mask AP@0.5 pastes each detection's 28 x 28 probabilities at the page's own size over its
box, thresholded at the model's ``mask_threshold``, as the server's ``/detect?masks=rle``
does, and compares COCO RLEs (:func:`training.detection_eval.mask_mean_average_precision`).
"""

from __future__ import annotations

import datetime
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from models import RetinaNetSegmenter, create_model, paste_masks, read_state_dict
from models.boxes import box_iou
from models.registry import WEIGHTS_DIR
from models.transforms import Letterbox, expect_pipeline

from .detection_eval import encode_masks, mask_mean_average_precision, mean_average_precision
from .detector_training import _load_average, _machine
from .scenes import HELD_OUT_SEED, TRAIN_STYLE, Scene, SceneStyle, make_masked_scene
from .schedule import adamw, warmup_cosine
from .weights import write_trained

MODEL_NAME = "dat_digits_segmenter"
DEFAULT_SEED = 0
DEFAULT_STEPS = 200
DEFAULT_BATCH = 8
DEFAULT_LR = 2e-3
JITTER = 0.1  # sigma of each edge's shift, as a fraction of the box's side
MATCH_IOU = 0.5  # a detection overlapping a digit this much learns that digit's mask
MAX_ROIS = 16  # per image, drawn at random beyond that

Log = Callable[[str], None]
MaskedScene = tuple[Scene, np.ndarray]  # a scene and its digits' masks (K, H, W) bool


def segmenter_model(pretrained: bool = True) -> RetinaNetSegmenter:
    """The registered ``dat_digits_segmenter`` (committed weights unless ``pretrained=False``)."""
    return create_model(MODEL_NAME, pretrained=pretrained)  # type: ignore[return-value]


def from_detector(detector: str | Path | None = None) -> RetinaNetSegmenter:
    """A segmenter holding the detector's weights (default: the committed
    ``dat_digits_detector``) and a fresh mask head; everything but the mask head frozen."""
    model = segmenter_model(pretrained=False)
    state = read_state_dict(detector or WEIGHTS_DIR / "dat_digits_detector.safetensors")
    result = model.load_state_dict(state, strict=False)
    learned = {k for k in model.state_dict() if k.startswith("mask_head.")}
    derived = {k for k in result.missing_keys if k.endswith(("relative_position_index", "attn_mask"))}
    absent = sorted(set(result.missing_keys) - derived - learned)
    if result.unexpected_keys or absent:
        raise ValueError(
            f"{detector} is not a dat_digits_detector checkpoint: unexpected "
            f"{result.unexpected_keys[:3]}, missing {absent[:3]}"
        )
    model.requires_grad_(False)
    model.mask_head.requires_grad_(True)
    return model.eval()  # the frozen backbone's drop path stays off; the head has no dropout


def _canvas(model: RetinaNetSegmenter, scenes: Sequence[MaskedScene]):
    """Canvas batch, and per scene its boxes on the canvas and (sx, sy)."""
    letterbox = expect_pipeline(model.info.preprocessing, Letterbox)
    images, boxes, scales = [], [], []
    for (image, page_boxes, _), _ in scenes:
        sx, sy = letterbox.scale(*image.size)
        images.append(letterbox(image))
        boxes.append(torch.from_numpy(page_boxes * np.array([sx, sy, sx, sy], np.float32)))
        scales.append(torch.tensor([sx, sy, sx, sy]))
    return torch.stack(images), boxes, scales


def _jitter(boxes: torch.Tensor, generator: torch.Generator, size: float) -> torch.Tensor:
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    sides = torch.stack([w, h, w, h], dim=1)
    moved = boxes + torch.randn(boxes.shape, generator=generator) * JITTER * sides
    x1, y1 = torch.minimum(moved[:, 0], moved[:, 2] - 1), torch.minimum(moved[:, 1], moved[:, 3] - 1)
    return torch.stack([x1, y1, moved[:, 2], moved[:, 3]], dim=1).clamp(0, size)


def _crop(mask: torch.Tensor, box: torch.Tensor, size: int) -> torch.Tensor:
    """(H, W) mask sampled bilinearly at the centres of a size x size grid of bins over ``box``
    (page pixels, pixel centres at +0.5): RoIAlign with one sample per bin, done per RoI on
    the page mask itself (pooling all digits' pages at once would copy them per RoI)."""
    height, width = mask.shape
    steps = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    xs = box[0] + steps * (box[2] - box[0])
    ys = box[1] + steps * (box[3] - box[1])
    grid = torch.stack(torch.meshgrid(ys / height * 2 - 1, xs / width * 2 - 1, indexing="ij")[::-1], dim=-1)
    return F.grid_sample(mask[None, None], grid[None], align_corners=False)[0, 0]


def mask_targets(
    model: RetinaNetSegmenter,
    scenes: Sequence[MaskedScene],
    found,
    truth: list[torch.Tensor],
    scales: list[torch.Tensor],
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoIs (N, 5) on the canvas (module docstring) and their 28 x 28 targets (N, 28, 28)."""
    size = model.config.mask_size
    rois, targets = [], []
    for b, ((_, masks), gt) in enumerate(zip(scenes, truth)):
        if len(gt) == 0:
            continue
        kept = found.labels[b] >= 0
        candidates = torch.cat([_jitter(gt, generator, model.config.canvas), found.boxes[b][kept]])
        best, which = box_iou(candidates, gt).max(dim=1)
        chosen = (best >= MATCH_IOU).nonzero().squeeze(1)
        if len(chosen) > MAX_ROIS:
            chosen = chosen[torch.randperm(len(chosen), generator=generator)[:MAX_ROIS]]
        boxes, digit = candidates[chosen], which[chosen]
        page = torch.from_numpy(masks).float()
        pooled = torch.stack([_crop(page[k], box, size) for k, box in zip(digit.tolist(), boxes / scales[b])])
        rois.append(torch.cat([torch.full((len(chosen), 1), float(b)), boxes], dim=1))
        targets.append((pooled >= 0.5).float())
    if not rois:
        return torch.zeros(0, 5), torch.zeros(0, size, size)
    return torch.cat(rois), torch.cat(targets)


@torch.inference_mode()
def segment(
    model: RetinaNetSegmenter, images: Sequence[Image.Image], batch_size: int = 32
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]]:
    """Per RGB picture: boxes (M, 4) in its pixels, scores, labels, and each detection's mask
    pasted at the picture's size over its unclipped box, as COCO RLEs (as /detect answers)."""
    letterbox = expect_pipeline(model.info.preprocessing, Letterbox)
    out = []
    for i in range(0, len(images), batch_size):
        chunk = images[i : i + batch_size]
        found = model(torch.stack([letterbox(image) for image in chunk]))
        for j, image in enumerate(chunk):
            keep = found.labels[j] >= 0
            scale = torch.tensor(letterbox.scale(*image.size)).repeat(2)
            boxes = found.boxes[j][keep] / scale
            masks = paste_masks(
                found.masks[j][keep], boxes, image.height, image.width, model.config.mask_threshold
            )
            limit = torch.tensor([image.width, image.height] * 2, dtype=torch.float32)
            clipped = torch.minimum(boxes.clamp(min=0), limit)
            out.append(
                (
                    clipped.numpy(),
                    found.scores[j][keep].numpy(),
                    found.labels[j][keep].numpy(),
                    encode_masks(masks),
                )
            )
    return out


def evaluate(model: RetinaNetSegmenter, scenes: Sequence[MaskedScene]) -> dict[str, float]:
    """Box mAP@0.5 and mask mAP@0.5 and @0.75 on masked scenes, through the serving letterbox
    (0.75 as well: a mask filling its whole box already reaches most digits at 0.5)."""
    found = segment(model, [image for (image, _, _), _ in scenes])
    truth = [(encode_masks(m), y) for (_, _, y), m in scenes]
    masks = [(f[3], f[1], f[2]) for f in found]
    return {
        "box_map50": mean_average_precision(
            [f[:3] for f in found], [(b, y) for (_, b, y), _ in scenes], 0.5, model.num_classes
        ),
        "mask_map50": mask_mean_average_precision(masks, truth, 0.5, model.num_classes),
        "mask_map75": mask_mean_average_precision(masks, truth, 0.75, model.num_classes),
    }


def train(
    out: str | Path | None = None,
    *,
    held_out_scenes: Sequence[MaskedScene] = (),
    steps: int = DEFAULT_STEPS,
    seed: int = DEFAULT_SEED,
    batch_size: int = DEFAULT_BATCH,
    lr: float = DEFAULT_LR,
    weight_decay: float = 0.05,
    warmup_steps: int = 50,
    eval_every: int = 100,
    threads: int | None = None,
    detector: str | Path | None = None,
    log: Log = print,
    command: str | None = None,
    style: SceneStyle = TRAIN_STYLE,
) -> dict:
    """Trains the mask head of ``dat_digits_segmenter`` on the frozen detector (``detector``:
    its weights, default the committed ones), a batch of new scenes every step. Writes
    ``out`` (safetensors, the whole model) and ``out``.json; returns the record."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    start, load = time.perf_counter(), _load_average()
    model = from_detector(detector)
    optimizer = adamw(model.mask_head, lr, weight_decay)
    warmup = min(warmup_steps, steps // 5)
    parameters = sum(p.numel() for p in model.mask_head.parameters())
    log(
        f"training {MODEL_NAME}'s mask head: {parameters:,} parameters, {steps} steps of "
        f"{batch_size} new scenes, seed {seed}, {torch.get_num_threads()} threads"
    )
    data_seconds, loss_sum, rois_sum = 0.0, 0.0, 0
    for step in range(1, steps + 1):
        tick = time.perf_counter()
        rng = np.random.default_rng([seed, step])
        scenes = [make_masked_scene(rng, "train", style) for _ in range(batch_size)]
        images, truth, scales = _canvas(model, scenes)
        data_seconds += time.perf_counter() - tick
        with torch.no_grad():
            features = model.features(images)
            found = model.postprocess(*model.bbox_head(features))
        rois, targets = mask_targets(model, scenes, found, truth, scales, generator)
        factor = warmup_cosine(step, warmup, steps)
        for group in optimizer.param_groups:
            group["lr"] = lr * factor
        loss = F.binary_cross_entropy_with_logits(model.mask_logits(features, images, rois), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum, rois_sum = loss_sum + loss.item(), rois_sum + len(rois)
        if step % 25 == 0 or step == steps:
            n = 25 if step % 25 == 0 else step % 25
            message = (
                f"step {step:5d}/{steps}  mask loss {loss_sum / n:.4f}  {rois_sum / n:.0f} RoIs/batch  "
                f"lr {lr * factor:.2e}  {time.perf_counter() - start:6.1f}s"
            )
            if eval_every and held_out_scenes and step % eval_every == 0 and step != steps:
                score = evaluate(model, held_out_scenes[:50])
                message += (
                    f"  held-out mask mAP@0.5 {score['mask_map50']:.4f} @0.75 {score['mask_map75']:.4f} "
                    "(50 scenes)"
                )
            log(message)
            loss_sum, rois_sum = 0.0, 0

    seconds = time.perf_counter() - start
    scores = evaluate(model, held_out_scenes) if held_out_scenes else {}
    record = {
        "model": MODEL_NAME,
        "command": command
        or f"python -m training.digits_segmentation train --out {out} --steps {steps} --seed {seed}",
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "scenes_seen": steps * batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup_steps": warmup,
        "detector": str(detector or "models/weights/dat_digits_detector.safetensors"),
        "trained": "mask_head only; every other weight is the detector's",
        "scene_style": asdict(style),
        "held_out_scenes": len(held_out_scenes),
        "held_out_seed": HELD_OUT_SEED,
        **{f"held_out_{k}": round(v, 4) for k, v in scores.items()},
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
    if held_out_scenes:
        log(
            f"held-out mask mAP@0.5 {scores['mask_map50']:.4f}, @0.75 {scores['mask_map75']:.4f}; "
            f"box mAP@0.5 {scores['box_map50']:.4f} ({len(held_out_scenes)} scenes)"
        )
    log(f"trained in {seconds:.0f}s ({data_seconds:.0f}s making scenes)")
    if out is not None:
        write_trained(
            model,
            out,
            record,
            log,
            {
                "model": MODEL_NAME,
                "held_out_mask_map50": str(record.get("held_out_mask_map50")),
                "seed": str(seed),
            },
        )
    return record
