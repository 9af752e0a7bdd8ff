"""Training and measuring ``dat_digits_detector``, the embedded default detector: RetinaNet
(:mod:`models.detection`) on the classifier's small DAT, its backbone initialised from the
committed ``dat_digits`` weights, trained on scenes made afresh for every step (about a sixth
of the training time), so no data set is stored.

Every training page goes through ``model.info.preprocessing`` (the letterbox the service
applies to an upload); its boxes scale by ``Letterbox.scale``. mAP@0.5 is
:func:`training.detection_eval.mean_average_precision`.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models import RetinaNet, create_model, get_spec, load_backbone
from models.transforms import Letterbox, expect_pipeline

from .detection_eval import mean_average_precision
from .detector_loss import detection_loss
from .scenes import (
    HELD_OUT_SCENES,
    HELD_OUT_SEED,
    TRAIN_STYLE,
    Scene,
    SceneStyle,
    held_out_scenes,
    make_scene,
)
from .schedule import adamw, warmup_cosine
from .weights import write_trained

MODEL_NAME = "dat_digits_detector"
DEFAULT_SEED = 0
DEFAULT_STEPS = 1500
DEFAULT_BATCH = 16
DEFAULT_LR = 2e-3

Log = Callable[[str], None]


def detector_model(pretrained: bool = True) -> RetinaNet:
    """The registered ``dat_digits_detector`` (committed weights unless ``pretrained=False``)."""
    return create_model(MODEL_NAME, pretrained=pretrained)  # type: ignore[return-value]


def to_batch(
    model: RetinaNet, scenes: Sequence[Scene]
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Scenes -> canvas batch through the serving letterbox, and their boxes in canvas pixels."""
    letterbox = expect_pipeline(model.info.preprocessing, Letterbox)
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
    letterbox = expect_pipeline(model.info.preprocessing, Letterbox)
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
    optimizer = adamw(model, lr, weight_decay)
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
        factor = warmup_cosine(step, warmup, steps)
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
        or f"python -m training.digits_detection train --out {out} --steps {steps} --seed {seed}",
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
