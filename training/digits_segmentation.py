"""``python -m training.digits_segmentation``: the embedded segmenter ``dat_digits_segmenter``,
the default detector ``dat_digits_detector`` (frozen, its boxes unchanged) plus a mask head
that outlines each digit's ink.

    python -m training.digits_segmentation train --out models/weights/dat_digits_segmenter.safetensors
    python -m training.digits_segmentation evaluate
    python -m training.digits_segmentation draw --out docs/segmenter_sample.png
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .scenes import HELD_OUT_SCENES, held_out_masked_scenes
from .segmenter_training import (
    DEFAULT_BATCH,
    DEFAULT_LR,
    DEFAULT_SEED,
    DEFAULT_STEPS,
    evaluate,
    segmenter_model,
    train,
)
from .weights import with_weights

DEFAULT_SAMPLE = "scene_chalkboard.png"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.digits_segmentation",
        description="The embedded digits segmenter dat_digits_segmenter: train its mask head, "
        "measure its held-out mask mAP, draw a sample scene with its masks.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "train",
        help="train the mask head on the frozen dat_digits_detector (10-25 minutes on 2 CPU cores)",
        description="Trains dat_digits_segmenter's mask head on generated scenes, the detector "
        "frozen, and writes the whole model's safetensors weights plus a JSON record beside "
        "them (same name, .json).",
    )
    p.add_argument("--out", type=Path, required=True, help="weights file to write (.safetensors)")
    p.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help=f"optimizer steps, each on a batch of new scenes (default {DEFAULT_STEPS})",
    )
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help=f"default {DEFAULT_BATCH}")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"default {DEFAULT_SEED}")
    p.add_argument(
        "--lr", type=float, default=DEFAULT_LR, help=f"peak AdamW learning rate (default {DEFAULT_LR:g})"
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
        default=100,
        help="print mask mAP on 50 held-out scenes every N steps (default 100; 0: never)",
    )
    p.add_argument(
        "--detector",
        type=Path,
        default=None,
        help="dat_digits_detector weights to freeze (default: the committed ones)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")

    p = sub.add_parser(
        "evaluate",
        help="held-out mask and box mAP of the committed (or given) weights",
        description="Measures box mAP@0.5 and mask mAP@0.5 and @0.75 on the held-out scenes.",
    )
    p.add_argument("--weights", type=Path, default=None, help="weights instead of the committed ones")
    p.add_argument(
        "--scenes", type=int, default=HELD_OUT_SCENES, help=f"held-out scenes (default {HELD_OUT_SCENES})"
    )

    p = sub.add_parser(
        "draw",
        help="draw a sample scene with the segmenter's masks (the README's picture)",
        description="Runs dat_digits_segmenter on one of the sample scenes (training.scene_samples) "
        "and writes it beside the same scene with each digit's mask, box and reading drawn.",
    )
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--scene", default=DEFAULT_SAMPLE, help=f"sample scene (default {DEFAULT_SAMPLE})")
    p.add_argument("--weights", type=Path, default=None, help="weights instead of the committed ones")
    p.add_argument(
        "--score-threshold", type=float, default=0.3, help="detections drawn from this score (default 0.3)"
    )

    args = parser.parse_args(argv)
    if args.command == "train":
        if args.steps < 1 or args.batch_size < 1 or args.held_out < 0:
            parser.error("--steps and --batch-size must be positive, --held-out not negative")
        command = "python -m training.digits_segmentation " + " ".join(sys.argv[1:] if argv is None else argv)
        record = train(
            args.out,
            held_out_scenes=held_out_masked_scenes(args.held_out) if args.held_out else (),
            steps=args.steps,
            seed=args.seed,
            batch_size=args.batch_size,
            lr=args.lr,
            eval_every=args.eval_every,
            threads=args.threads,
            detector=args.detector,
            log=lambda m: print(m, flush=True),
            command=command,
        )
        return 0 if not args.held_out or record["held_out_mask_map50"] >= 0.7 else 1
    if args.command == "evaluate":
        model = with_weights(segmenter_model, args.weights)
        start = time.perf_counter()
        scores = evaluate(model, held_out_masked_scenes(args.scenes))
        print(
            f"held-out mask mAP@0.5 {scores['mask_map50']:.4f}, mask mAP@0.75 {scores['mask_map75']:.4f}, "
            f"box mAP@0.5 {scores['box_map50']:.4f} ({args.scenes} scenes, "
            f"{time.perf_counter() - start:.1f}s)"
        )
        return 0
    from .mask_drawing import draw_sample

    try:
        path = draw_sample(args.out, args.scene, args.weights, args.score_threshold)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
