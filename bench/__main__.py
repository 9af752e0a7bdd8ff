"""``python -m bench``: committed benchmarks that print figures (never timed unit tests)."""

from __future__ import annotations

import argparse
import sys


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def _words(text: str) -> tuple[str, ...]:
    return tuple(v for v in text.split(",") if v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    model = sub.add_parser("model", help="img/s and latency of the model per precision and batch size")
    model.add_argument("--model", default="dat_tiny", help="registered model name (default dat_tiny)")
    model.add_argument("--batch-sizes", type=_ints, default=(1, 8), help="comma-separated, e.g. 1,8")
    model.add_argument("--precisions", type=_words, default=("fp32", "bf16"),
                       help="comma-separated subset of fp32,bf16,fp16 (default fp32,bf16)")
    model.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    model.add_argument("--official", metavar="DIR",
                       help="models/ folder of an official DAT v1 checkout, measured alongside")
    model.add_argument("--warmup", type=int, default=2)
    model.add_argument("--repeats", type=int, default=5)
    model.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    model.add_argument("--out", default=None, help="folder for model.json and model.md")

    parity = sub.add_parser("parity", help="logits on a device/precision vs CPU fp32")
    parity.add_argument("--model", default="dat_tiny")
    parity.add_argument("--device", default="cuda")
    parity.add_argument("--precisions", type=_words, default=("fp32", "fp16", "bf16"))
    parity.add_argument("--batch-sizes", type=_ints, default=(1, 8, 64))
    parity.add_argument("--out", default=None, help="JSON file for the results")

    args = parser.parse_args(argv)
    if args.command == "parity":
        import json

        from . import parity as bench_parity
        print(f"checking {args.model} on {args.device} against CPU fp32 ...", flush=True)
        report = bench_parity.run(args.model, args.device, args.precisions, args.batch_sizes,
                                  progress=lambda s: print(s, flush=True))
        if args.out:
            with open(args.out, "w") as f:
                json.dump(report, f, indent=2)
    if args.command == "model":
        from . import model as bench_model
        with bench_model.threads(args.threads):
            print(f"benchmarking {args.model} on {args.device} ...", flush=True)
            report = bench_model.run(args.model, args.batch_sizes, args.precisions, args.device,
                                     args.official, args.warmup, args.repeats,
                                     progress=lambda s: print(s, flush=True))
        print()
        print(bench_model.markdown_table(report))
        if args.out:
            print(f"\nwritten to {bench_model.write_report(report, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
