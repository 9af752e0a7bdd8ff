"""Training and measuring ``dat_digits``, the embedded default classifier: a small DAT trained
from scratch on scikit-learn's handwritten digits plus digits typed in Pillow's font."""

from __future__ import annotations

import datetime
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from models import DAT, create_model

from .classifier_data import DEFAULT_AUGMENTATION, Augmentation, held_out_split, to_batch, training_set
from .digit_ink import digit_scans
from .schedule import adamw, warmup_cosine
from .weights import write_trained

MODEL_NAME = "dat_digits"
DEFAULT_EPOCHS = 60
DEFAULT_SEED = 0
DEFAULT_FONT_DIGITS = 400

Log = Callable[[str], None]


def digits_model(pretrained: bool = True) -> DAT:
    """The registered ``dat_digits`` model (committed weights unless ``pretrained=False``)."""
    model = create_model(MODEL_NAME, pretrained=pretrained)
    assert isinstance(model, DAT)  # a registered classifier
    return model


@torch.inference_mode()
def predict(model: DAT, images: Sequence[Image.Image], batch_size: int = 256) -> torch.Tensor:
    """Class probabilities (N, 10) for RGB pictures."""
    was_training = model.training
    model.eval()
    out = [
        model(to_batch(model, images[i : i + batch_size])).softmax(-1)
        for i in range(0, len(images), batch_size)
    ]
    model.train(was_training)
    return torch.cat(out)


def accuracy(model: DAT, images: Sequence[Image.Image], labels: Sequence[int]) -> float:
    """Top-1 accuracy on RGB pictures, through the serving preprocessing."""
    predicted = predict(model, images).argmax(-1)
    return (predicted == torch.as_tensor(list(labels))).float().mean().item()


def train(
    out: str | Path | None = None,
    *,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = DEFAULT_SEED,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    warmup_epochs: int = 2,
    polarity_epochs: int = 10,
    font_digits: int = DEFAULT_FONT_DIGITS,
    train_limit: int | None = None,
    eval_every: int = 10,
    threads: int | None = None,
    log: Log = print,
    command: str | None = None,
    augmentation: Augmentation = DEFAULT_AUGMENTATION,
) -> dict:
    """Trains ``dat_digits`` from scratch; writes ``out`` (safetensors) and ``out``.json.

    Deterministic for a given seed (on a given machine and thread count). Returns the record
    also written to the JSON: command, seed, epochs, held-out accuracy, training time..."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    scans, labels = digit_scans("train")
    if train_limit is not None:
        scans, labels = scans[:train_limit], labels[:train_limit]
    held_images, held_labels = held_out_split()
    model = digits_model(pretrained=False).train()
    optimizer = adamw(model, lr, weight_decay)
    per_epoch = math.ceil((len(scans) + font_digits) / batch_size)
    total, warmup = epochs * per_epoch, min(warmup_epochs * per_epoch, epochs * per_epoch // 5)
    log(
        f"training {MODEL_NAME}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{len(scans)} scans + {font_digits} typed digits per epoch, {epochs} epochs, "
        f"seed {seed}, {torch.get_num_threads()} threads"
    )

    start, step = time.perf_counter(), 0
    for epoch in range(1, epochs + 1):
        rng = np.random.default_rng([seed, epoch])
        # Both polarities from the start leave the network at chance for many epochs (or for
        # good, with some seeds): light-on-dark pictures are phased in once it reads digits.
        ramp = min(1.0, (epoch - 1) / max(polarity_epochs, 1))
        epoch_aug = replace(augmentation, inverted=augmentation.inverted * ramp)
        inputs, targets = training_set(model, scans, labels, font_digits, rng, epoch_aug)
        order = torch.from_numpy(rng.permutation(len(targets)))
        model.train()
        loss_sum = correct = 0.0
        for i in range(0, len(order), batch_size):
            index = order[i : i + batch_size]
            step += 1
            factor = warmup_cosine(step, warmup, total)
            for group in optimizer.param_groups:
                group["lr"] = lr * factor
            logits = model(inputs[index])
            loss = F.cross_entropy(logits, targets[index], label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            loss_sum += loss.item() * len(index)
            correct += (logits.argmax(-1) == targets[index]).sum().item()
        message = (
            f"epoch {epoch:3d}/{epochs}  loss {loss_sum / len(order):.4f}  "
            f"train acc {correct / len(order):.4f}  {time.perf_counter() - start:6.1f}s"
        )
        if eval_every and (epoch % eval_every == 0 or epoch == epochs):
            message += f"  held-out acc {accuracy(model, held_images, held_labels):.4f}"
        log(message)

    seconds = time.perf_counter() - start
    model.eval()
    held_out = accuracy(model, held_images, held_labels)
    inverted = accuracy(model, *held_out_split(inverted=True))
    record = {
        "model": MODEL_NAME,
        "command": command or f"python -m training.digits train --out {out} --epochs {epochs} --seed {seed}",
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup_epochs": warmup_epochs,
        "polarity_epochs": polarity_epochs,
        "font_digits_per_epoch": font_digits,
        "augmentation": asdict(augmentation),
        "train_scans": len(scans),
        "held_out_images": len(held_labels),
        "held_out_top1": round(held_out, 4),
        "held_out_inverted_top1": round(inverted, 4),
        "training_seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "config": model.config.to_dict(),
    }
    log(
        f"held-out top-1 {held_out:.4f} ({len(held_labels)} images), light-on-dark {inverted:.4f}; "
        f"trained in {seconds:.0f}s"
    )
    if out is not None:
        write_trained(
            model,
            out,
            record,
            log,
            {
                "model": MODEL_NAME,
                "held_out_top1": f"{held_out:.4f}",
                "seed": str(seed),
                "epochs": str(epochs),
            },
        )
    return record
