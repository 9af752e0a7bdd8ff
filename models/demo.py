"""The embedded default classifier ``dat_digits``: a small DAT that reads handwritten digits.

It is trained from scratch on scikit-learn's handwritten digits (1,797 scans of 8x8 pixels,
0-16 ink) plus digits typed in Pillow's built-in font, so a person can draw or render a digit
(dark ink on light paper or light on dark, any image size, roughly centred) and get it back.

Every training image is an RGB picture made the way a user would make one, then passed through
``model.info.preprocessing``, the same resize / normalise the service applies to an upload.

    python -m models.demo train --out models/weights/dat_digits.safetensors
    python -m models.demo predict samples/*.png samples/*.jpg
    python -m models.demo samples --out samples

The held-out split (:func:`held_out_split`) is the last 360 scans of the data set, which come
after every training scan in the original order; no augmentation is applied to them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from .checkpoint import save_safetensors
from .dat import DAT
from .registry import create_model

M = TypeVar("M", bound=torch.nn.Module)

MODEL_NAME = "dat_digits"
HELD_OUT = 360  # the last 360 of the 1,797 scans (20%)
DEFAULT_EPOCHS = 60
DEFAULT_SEED = 0
DEFAULT_FONT_DIGITS = 400

Log = Callable[[str], None]


# --------------------------------------------------------------------------- data


@cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: (1797, 8, 8) float intensities 0..16 and their labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # only training and evaluation need it, not serving
        raise ImportError(
            "the digits data set ships with scikit-learn: pip install scikit-learn (or the 'dev' extra)"
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


def render_digit(pixels: np.ndarray, size: int = 64, inverted: bool = False) -> Image.Image:
    """An 8x8 scan (ink 0..16) as a ``size`` x ``size`` RGB picture: black ink on white paper
    (white on black if ``inverted``), the digit filling the middle 3/4, smoothly upscaled."""
    box = round(size * 0.75)
    ink = _scan_ink(pixels).resize((box, box), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (size, size), 0)
    canvas.paste(ink, ((size - box) // 2, (size - box) // 2))
    return (canvas if inverted else ImageOps.invert(canvas)).convert("RGB")


def held_out_split(size: int = 64, inverted: bool = False) -> tuple[list[Image.Image], list[int]]:
    """The fixed held-out images (360 RGB pictures, see :func:`render_digit`) and their labels.

    Never used for training; the same every time. Classify them through
    ``model.info.preprocessing`` (or encode them and send them to the service)."""
    scans, labels = digit_scans("held_out")
    return [render_digit(p, size, inverted) for p in scans], [int(y) for y in labels]


def _scan_ink(pixels: np.ndarray) -> Image.Image:
    """8x8 intensities 0..16 -> 'L' image, ink 255 on 0."""
    return Image.fromarray(np.clip(np.asarray(pixels) * (255 / 16), 0, 255).round().astype(np.uint8))


_INK_BOX = 40  # side of the square ink images the augmentation starts from


@cache
def _font_glyph(digit: int, font_size: int, stroke: int) -> Image.Image:
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
    return square.resize((_INK_BOX, _INK_BOX), Image.Resampling.BILINEAR)


def _scan_ink_box(pixels: np.ndarray) -> Image.Image:
    return _scan_ink(pixels).resize((_INK_BOX, _INK_BOX), Image.Resampling.BICUBIC)


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


def augment(ink: Image.Image, rng: np.random.Generator, aug: Augmentation = Augmentation()) -> Image.Image:
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
    alpha = ink.transform((page, page), Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR)

    # Colours: paper and ink, either polarity, a little tint, an uneven light.
    alpha = np.asarray(alpha, np.float32)[..., None] / 255 * rng.uniform(0.75, 1.0)
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


# --------------------------------------------------------------------------- model


def digits_model(pretrained: bool = True) -> DAT:
    """The registered ``dat_digits`` model (committed weights unless ``pretrained=False``)."""
    return create_model(MODEL_NAME, pretrained=pretrained)


def to_batch(model: DAT, images: Sequence[Image.Image]) -> torch.Tensor:
    """RGB pictures -> (N, 3, S, S) through the model's own serving preprocessing."""
    return torch.stack([model.info.preprocessing(image) for image in images])


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


def _training_set(
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
        inks.append(_font_glyph(digit, int(rng.choice((24, 32, 48))), int(rng.integers(0, 3))))
        targets.append(digit)
    batch = to_batch(model, [augment(ink, rng, aug) for ink in inks])
    return batch, torch.tensor(targets)


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
    augmentation: Augmentation = Augmentation(),
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
    decay = [p for n, p in model.named_parameters() if p.dim() > 1 and "rpe_table" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() > 1 and "rpe_table" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
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
        inputs, targets = _training_set(model, scans, labels, font_digits, rng, epoch_aug)
        order = torch.from_numpy(rng.permutation(len(targets)))
        model.train()
        loss_sum = correct = 0.0
        for i in range(0, len(order), batch_size):
            index = order[i : i + batch_size]
            step += 1
            factor = (
                step / max(warmup, 1)
                if step <= warmup
                else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))
            )
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
        "command": command or f"python -m models.demo train --out {out} --epochs {epochs} --seed {seed}",
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


def write_trained(
    model: torch.nn.Module,
    out: str | Path,
    record: dict,
    log: Callable[[str], None],
    metadata: dict[str, str],
) -> None:
    """A trained demo model: its safetensors weights (with ``metadata``) and, beside them, the
    JSON record of how they were made."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(model, out, metadata=metadata)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.with_suffix('.json')}")


def with_weights(build: Callable[..., M], weights: Path | None) -> M:
    """``build``'s model with its committed weights, or with ``weights`` where given."""
    model = build(pretrained=weights is None)
    if weights is not None:
        from .checkpoint import load_checkpoint

        load_checkpoint(model, weights)
    return model


# --------------------------------------------------------------------------- samples


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


def load_rgb(path: str | Path) -> Image.Image:
    """Decodes a picture as the service does: any format, converted to RGB."""
    with Image.open(path) as image:
        return image.convert("RGB")


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.demo",
        description="The embedded digits classifier dat_digits: train it, classify pictures, "
        "write the sample pictures.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "train",
        help="train dat_digits from scratch on scikit-learn's digits (about 5 minutes on 2 CPU cores)",
        description="Trains dat_digits from scratch and writes its safetensors "
        "weights plus a JSON record beside them (same name, .json).",
    )
    p.add_argument("--out", type=Path, required=True, help="weights file to write (.safetensors)")
    p.add_argument(
        "--epochs",
        type=int,
        default=DEFAULT_EPOCHS,
        help=f"passes over the training scans (default {DEFAULT_EPOCHS})",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"seed of initialisation and augmentation (default {DEFAULT_SEED})",
    )
    p.add_argument("--batch-size", type=int, default=64, help="default 64")
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (default 2e-3)")
    p.add_argument(
        "--warmup-epochs",
        type=int,
        default=2,
        help="epochs of linear learning-rate warm-up before the cosine decay (default 2)",
    )
    p.add_argument(
        "--polarity-epochs",
        type=int,
        default=10,
        help="epochs over which light-on-dark pictures are phased in, from none to half of them (default 10)",
    )
    p.add_argument(
        "--font-digits",
        type=int,
        default=DEFAULT_FONT_DIGITS,
        help="digits typed in Pillow's font added to each epoch "
        f"(default {DEFAULT_FONT_DIGITS}; 0 for scans only)",
    )
    p.add_argument(
        "--train-limit", type=int, default=None, help="use only the first N training scans (for quick checks)"
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=10,
        help="print held-out accuracy every N epochs (default 10; 0 for the end only)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")

    p = sub.add_parser(
        "predict",
        help="classify picture files with the committed weights",
        description="Classifies pictures (any format Pillow reads) with dat_digits.",
    )
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--weights", type=Path, default=None, help="weights to use instead of the committed ones")

    p = sub.add_parser(
        "samples",
        help="write the README's sample pictures",
        description="Writes the sample pictures; each name says its digit.",
    )
    p.add_argument("--out", type=Path, default=Path("samples"), help="directory (default samples)")

    args = parser.parse_args(argv)
    if args.command == "train":
        command = "python -m models.demo " + " ".join(sys.argv[1:] if argv is None else argv)
        record = train(
            args.out,
            epochs=args.epochs,
            seed=args.seed,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup_epochs=args.warmup_epochs,
            polarity_epochs=args.polarity_epochs,
            font_digits=args.font_digits,
            train_limit=args.train_limit,
            eval_every=args.eval_every,
            threads=args.threads,
            log=lambda m: print(m, flush=True),
            command=command,
        )
        return 0 if record["held_out_top1"] >= 0.95 or args.train_limit else 1
    if args.command == "predict":
        model = with_weights(digits_model, args.weights)
        probs = predict(model, [load_rgb(path) for path in args.images])
        for path, row in zip(args.images, probs):
            print(f"{path}: {model.info.labels[int(row.argmax())]} ({row.max().item():.3f})")
        return 0
    for path in write_samples(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
