"""``python -m training.digits``: the embedded default classifier ``dat_digits``, a small DAT
that reads handwritten digits.

It is trained from scratch on scikit-learn's handwritten digits (1,797 scans of 8x8 pixels,
0-16 ink) plus digits typed in Pillow's built-in font, so a person can draw or render a digit
(dark ink on light paper or light on dark, any image size, roughly centred) and get it back.

    python -m training.digits train --out models/weights/dat_digits.safetensors
    python -m training.digits predict samples/*.png samples/*.jpg
    python -m training.digits samples --out samples

The held-out split (:func:`training.classifier_data.held_out_split`) is the last 360 scans of
the data set, which come after every training scan in the original order.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .classifier_samples import write_samples
from .classifier_training import (
    DEFAULT_EPOCHS,
    DEFAULT_FONT_DIGITS,
    DEFAULT_SEED,
    digits_model,
    predict,
    train,
)
from .digit_ink import load_rgb
from .weights import with_weights


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.digits",
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
        command = "python -m training.digits " + " ".join(sys.argv[1:] if argv is None else argv)
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
