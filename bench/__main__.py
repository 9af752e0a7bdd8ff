"""``python -m bench``: committed benchmarks that print figures (never timed unit tests)."""

from __future__ import annotations

import argparse
import sys

# 1 to the server's default --max-batch-size: the throughput-vs-batch-size curve it serves along
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def _tiles(text: str) -> tuple[tuple[int, int], ...]:
    """'4x7,8' -> ((4, 7), (8, 8))."""
    tiles = []
    for word in _words(text):
        rows, _, cols = word.partition("x")
        try:
            tile = int(rows), int(cols or rows)
        except ValueError:
            tile = (0, 0)
        if min(tile) < 1:
            raise argparse.ArgumentTypeError(f"a tile is RxC or one side, e.g. 4x7 or 8: got {word!r}")
        tiles.append(tile)
    return tuple(tiles)


def _words(text: str) -> tuple[str, ...]:
    return tuple(v for v in text.split(",") if v)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from runtimes.allocator import keep_freed_memory

    keep_freed_memory()  # as the service runs its models (service.server.serve)
    if argv[:1] == ["backends"]:  # the serving backends, through the service's own code
        from .backends import main as backends_main

        return backends_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "backends",
        add_help=False,
        help="img/s of the service's backends (torch fp32/bf16, ONNX Runtime) on one "
        "model; 'python -m bench backends --help' for its options",
    )

    model = sub.add_parser(
        "model",
        help="img/s and latency of the model per precision and batch size (a detector at its test size)",
    )
    model.add_argument("--model", default="dat_tiny", help="registered model name (default dat_tiny)")
    model.add_argument(
        "--batch-sizes",
        type=_ints,
        default=DEFAULT_BATCH_SIZES,
        help=f"comma-separated (default {','.join(map(str, DEFAULT_BATCH_SIZES))})",
    )
    model.add_argument(
        "--precisions",
        type=_words,
        default=("fp32", "bf16"),
        help="comma-separated subset of fp32,bf16,fp16 (default fp32,bf16)",
    )
    model.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    model.add_argument(
        "--official", metavar="DIR", help="models/ folder of an official DAT v1 checkout, measured alongside"
    )
    model.add_argument(
        "--beside",
        type=_words,
        default=(),
        metavar="MODELS",
        help="other registered models measured in the same precisions (e.g. "
        "dat_tiny beside --model dat_pp_tiny); with --interleave, each of "
        "ours gets paired speed-ups over them",
    )
    model.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
    model.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed runs; the median is reported with the min and max (default 5)",
    )
    model.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    model.add_argument(
        "--compile",
        dest="compile_mode",
        nargs="?",
        const="default",
        default=None,
        help="also measure torch.compile'd variants (optionally a mode, e.g. "
        "max-autotune-no-cudagraphs); with --cuda-graphs instead the graphs "
        "whose largest bucket is compiled, as the service's --torch-compile "
        "runs it (one compile, default mode)",
    )
    model.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="also measure our model replayed as CUDA graphs, as the service's "
        "--cuda-graphs runs it (CUDA only)",
    )
    model.add_argument(
        "--exported",
        type=_words,
        default=(),
        metavar="BACKENDS",
        help="also measure our model exported with the same weights (python -m "
        "export, fp32 and on a GPU fp16) under these serving backends: "
        "onnxruntime, tensorrt (where TensorRT and a GPU are present)",
    )
    model.add_argument(
        "--interleave",
        action="store_true",
        help="variants take turns repeat by repeat (ratios on a shared, noisy machine)",
    )
    model.add_argument(
        "--min-seconds",
        type=float,
        default=0.0,
        help="keep repeating each measurement until this much time was timed",
    )
    model.add_argument(
        "--breakdown",
        action="store_true",
        help="detectors: where one image's forward spends its time (backbone, FPN, RPN, box and "
        "mask heads, NMS, RoIAlign, mask pasting), eager fp32 and, with --exported "
        "onnxruntime, in ONNX Runtime's profiler",
    )
    model.add_argument("--out", default=None, help="folder for model.json and model.md")

    neighborhood = sub.add_parser(
        "neighborhood",
        help="ms of a model's N blocks' attention per "
        "way of computing it (tile sizes, window gather, flex_attention)",
    )
    neighborhood.add_argument("--model", default="dat_pp_tiny")
    neighborhood.add_argument("--batch-size", type=int, default=8)
    neighborhood.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    neighborhood.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "fp16"))
    neighborhood.add_argument(
        "--tiles",
        type=_tiles,
        default=((4, 7), (8, 8), (2, 14), (7, 7)),
        help="query tiles of the blocked path besides its default, RxC (rows x columns) or one "
        "side of a square (default 4x7,8x8,2x14,7x7)",
    )
    neighborhood.add_argument("--repeats", type=int, default=7)
    neighborhood.add_argument(
        "--flex", action="store_true", help="also flex_attention with a neighborhood block mask (compiled)"
    )
    neighborhood.add_argument("--threads", type=int, default=None)
    neighborhood.add_argument("--out", default=None, help="JSON file for the results")

    parts = sub.add_parser(
        "parts",
        help="CPU time of one forward by part (attention by kind, MLPs, LPUs, norms, the rest), "
        "models side by side; run with --threads 1",
    )
    parts.add_argument("--models", type=_words, default=("dat_pp_tiny", "dat_tiny"))
    parts.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parts.add_argument("--batch-size", type=int, default=8)
    parts.add_argument("--repeats", type=int, default=5, help="forwards; the fastest is reported")
    parts.add_argument("--threads", type=int, default=1)
    parts.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="the models take turns this many times; each part's fastest round is reported "
        "(robust to other jobs' load; the parts then need not add up to the total)",
    )

    prof = sub.add_parser(
        "profile",
        help="torch.profiler's top operators of one forward, ours beside the official model under autocast",
    )
    prof.add_argument("--model", default="dat_tiny")
    prof.add_argument("--precision", default="fp16", choices=("fp32", "bf16", "fp16"))
    prof.add_argument("--batch-size", type=int, default=64)
    prof.add_argument("--device", default="cuda", help="cpu or cuda[:N]")
    prof.add_argument("--official", metavar="DIR", help="models/ folder of an official DAT v1 checkout")
    prof.add_argument("--rows", type=int, default=15)

    parity = sub.add_parser("parity", help="logits on a device/precision vs CPU fp32")
    parity.add_argument("--model", default="dat_tiny")
    parity.add_argument("--device", default="cuda", help="cuda[:N] (or cpu, against itself)")
    parity.add_argument("--precisions", type=_words, default=("fp32", "fp16", "bf16"))
    parity.add_argument("--batch-sizes", type=_ints, default=(1, 8, 64))
    parity.add_argument("--out", default=None, help="JSON file for the results")

    decode = sub.add_parser(
        "decode",
        help="turning one JPEG into a model input: the CPU's host paths "
        "(today's Pillow path against simplejpeg with the compiled or Pillow's "
        "resize into the crop, torch's uint8 resize, JPEG drafts) in interleaved rounds, with their distance "
        "from the official inputs and its effect on logits; and the service's "
        "--gpu-decode (nvJPEG in batches) on a GPU",
    )
    decode.add_argument("--image", help="JPEG file (default: a generated 500x375 JPEG)")
    decode.add_argument(
        "--large",
        action="store_true",
        help="without --image: a generated 2000x1500 JPEG, which also measures "
        "--jpeg-draft and Pillow's reducing_gap",
    )
    decode.add_argument("--input-size", type=int, default=224, help="the model's input size")
    decode.add_argument("--rounds", type=int, default=15, help="interleaved rounds of the host paths")
    decode.add_argument("--per-round", type=int, default=20, help="images per path in a round")
    decode.add_argument(
        "--models",
        type=_words,
        default=("dat_tiny", "dat_digits"),
        help="registered classifiers whose logits are compared (default dat_tiny,dat_digits)",
    )
    decode.add_argument("--device", default="cpu", help="cuda[:N] measures --gpu-decode too")
    decode.add_argument("--batch", type=int, default=64, help="images submitted at once")
    decode.add_argument("--seconds", type=float, default=3.0, help="timed seconds per path")
    decode.add_argument("--out", default=None, help="JSON file for the results (and a .md beside it)")

    ceiling = sub.add_parser(
        "ceiling",
        help="the raw backend a server runs, alone and with the "
        "batch's JPEGs preprocessed before or beside it: the most the server "
        "can deliver on this host before HTTP",
    )
    ceiling.add_argument(
        "--server-args",
        default="",
        help="arguments of the 'python -m service' whose backend is measured, e.g. "
        '"--model dat_tiny --precision bf16 --max-batch-size 8 --threads 2"',
    )
    ceiling.add_argument("--image", help="JPEG file (default: a generated 500x375 JPEG)")
    ceiling.add_argument("--rounds", type=int, default=10, help="rounds of the three, in turn (default 10)")
    ceiling.add_argument("--out", default=None, help="folder for ceiling.json and ceiling.md")

    server = sub.add_parser("server", help="throughput and latency of the HTTP server under load")
    server.add_argument("--url", help="a running server (loopback only); default: start one")
    server.add_argument(
        "--server-args",
        default="",
        help="arguments for the 'python -m service' this command starts, e.g. "
        '"--model dat_tiny --max-batch-size 32"',
    )
    server.add_argument(
        "--concurrency",
        type=_ints,
        default=(1, 4, 16, 32),
        help="closed-loop client counts (default 1,4,16,32)",
    )
    server.add_argument(
        "--rates",
        type=_words,
        default=(),
        help="open-loop request rates per second; 'half' = half the best closed-loop rate",
    )
    server.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    server.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the closed-loop levels this many times in turn; with a baseline "
        "each level's efficiency is also summarised as the median (and range) "
        "of its rounds, which holds where the host's speed drifts",
    )
    server.add_argument("--image", help="image file to send (default: a generated 500x375 JPEG)")
    server.add_argument("--images-per-request", type=int, default=1)
    server.add_argument("--processes", type=int, default=2, help="client processes")
    server.add_argument(
        "--baseline-ips",
        type=float,
        help="raw backend img/s at the server's max batch (efficiency = server / this)",
    )
    server.add_argument(
        "--measure-baseline",
        action="store_true",
        help="measure the raw backend the server runs (built from --server-args) "
        "at its max batch, alone, before every closed-loop level and after the "
        "last; each level's efficiency is against the mean of the two around it",
    )
    server.add_argument("--title", default="", help="title of the plot")
    server.add_argument("--out", default=None, help="folder for server.json, server.md and the plot")

    args = parser.parse_args(argv)
    if getattr(args, "device", "cpu").startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error(
                f"--device {args.device}: no CUDA GPU here (torch {torch.__version__}); pass --device cpu"
            )
    if args.command in ("server", "ceiling", "decode") and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.command == "server":
        from . import server_cli

        return server_cli.main(args)
    if args.command == "decode":
        import json
        from pathlib import Path

        from models import Preprocessing

        from . import decode as bench_decode
        from . import host_path
        from .machine import machine_description
        from .server_cli import image_or_sample, sample_jpeg

        data = sample_jpeg(2000, 1500) if args.large and not args.image else image_or_sample(args.image)
        preprocessing = Preprocessing(input_size=args.input_size)
        report = bench_decode.run(data, preprocessing, args.device, args.batch, args.seconds)
        machine = report["machine"] = {**machine_description("cpu"), **host_path.versions()}
        report["host_paths"] = host_path.run(data, preprocessing, args.rounds, args.per_round, args.models)
        text = (
            f"{machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, Pillow "
            f"{machine['pillow']}, simplejpeg {machine['simplejpeg']}\n\n"
            + host_path.markdown(report["host_paths"])
        )
        print(text)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2))
            Path(args.out).with_suffix(".md").write_text(text)
    if args.command == "ceiling":
        import json
        from pathlib import Path

        from . import ceiling as bench_ceiling
        from .server_cli import image_or_sample

        data = image_or_sample(args.image)
        report = bench_ceiling.run(args.server_args, data, args.rounds)
        text = (
            f"{report['backend']}, {report['preprocess_workers']} preprocessing threads\n\n"
            f"{bench_ceiling.markdown_table(report)}\n"
        )
        print(text)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "ceiling.json").write_text(json.dumps(report, indent=2))
            (out / "ceiling.md").write_text(text)
            print(f"\nwritten to {out}")
    if args.command == "parts":
        from . import machine as bench_machine
        from . import parts as bench_parts

        with bench_machine.threads(args.threads):
            report = bench_parts.run(
                list(args.models), args.precision, args.batch_size, args.repeats, args.rounds
            )
            machine = bench_machine.machine_description("cpu")
        shape = (
            f"{args.batch_size} images, {args.precision}, {args.threads} thread(s), {args.rounds} round(s)"
        )
        print(f"CPU ms per forward of {shape}, {machine}")
        print(bench_parts.markdown_table(report))
    if args.command == "profile":
        from . import model as bench_model

        print(
            bench_model.profile(
                args.model, args.precision, args.batch_size, args.device, args.official, args.rows
            )
        )
    if args.command == "parity":
        import json

        from . import parity as bench_parity

        print(f"checking {args.model} on {args.device} against CPU fp32 ...", flush=True)
        report = bench_parity.run(
            args.model,
            args.device,
            args.precisions,
            args.batch_sizes,
            progress=lambda s: print(s, flush=True),
        )
        if args.out:
            with open(args.out, "w") as f:
                json.dump(report, f, indent=2)
    if args.command == "neighborhood":
        import json

        import torch

        from . import machine as bench_machine
        from . import neighborhood as bench_neighborhood

        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
        with bench_machine.threads(args.threads):
            machine = bench_machine.machine_description(args.device)
            print(f"{args.model}'s N blocks on {args.device}, {machine}")
            report = bench_neighborhood.run(
                args.model, args.batch_size, args.device, dtype, args.tiles, args.repeats, args.flex
            )
        report["machine"] = bench_machine.machine_description(args.device)
        print()
        print(bench_neighborhood.markdown_table(report))
        if args.out:
            with open(args.out, "w") as f:
                json.dump(report, f, indent=2)
    if args.command == "model":
        from . import machine as bench_machine
        from . import model as bench_model

        with bench_machine.threads(args.threads):
            print(f"benchmarking {args.model} on {args.device} ...", flush=True)
            report = bench_model.run(
                args.model,
                args.batch_sizes,
                args.precisions,
                args.device,
                args.official,
                args.warmup,
                args.repeats,
                min_seconds=args.min_seconds,
                progress=lambda s: print(s, flush=True),
                compile_mode=args.compile_mode,
                cuda_graphs=args.cuda_graphs,
                interleave=args.interleave,
                exported=args.exported,
                threads=args.threads,
                beside=args.beside,
                breakdown=args.breakdown,
            )
        print()
        print(bench_model.markdown_table(report))
        if args.out:
            print(f"\nwritten to {bench_model.write_report(report, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
