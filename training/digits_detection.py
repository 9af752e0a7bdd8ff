"""``python -m training.digits_detection``: the embedded default detector
``dat_digits_detector``, which finds and reads the digits on a page.

RetinaNet on the default classifier's small DAT, trained on generated scenes
(:mod:`training.scenes`: pages holding 3-8 digits in training, 2-6 on held-out pages; fewer
where they do not fit), its held-out mAP@0.5 measured on scenes of held-out scans only.

    python -m training.digits_detection train --out models/weights/dat_digits_detector.safetensors
    python -m training.digits_detection evaluate
    python -m training.digits_detection samples --out samples
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .detector_training import (
    DEFAULT_BATCH,
    DEFAULT_LR,
    DEFAULT_SEED,
    DEFAULT_STEPS,
    detector_model,
    evaluate,
    train,
)
from .scene_samples import read_samples, write_samples
from .scenes import HELD_OUT_SCENES, held_out_scenes
from .weights import with_weights


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.digits_detection",
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
        command = "python -m training.digits_detection " + " ".join(sys.argv[1:] if argv is None else argv)
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
