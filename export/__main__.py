"""``python -m export``: DAT -> verified ONNX (and TensorRT engine) + manifest.

Exit status: 0 exported and verified; 1 verification (or the export itself) failed;
2 the request is wrong (unknown model, missing file, checkpoint that does not fit, bad option);
3 a TensorRT engine was requested where TensorRT or a CUDA GPU is missing.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from runtimes.manifest_fields import BatchRange

EPILOG = """\
examples:
  python -m export --out exports/digits                      # embedded dat_digits model
  python -m export --model dat_tiny --checkpoint dat_tiny_in1k_224.pth --out exports/dat_tiny
  python -m export --model dat_pp_tiny --checkpoint dat_pp_tiny_in1k_224.pth --out exports/dat_pp_tiny
  python -m export --config dat_tiny.yaml --checkpoint ckpt.pth --fp16 --out exports/tiny16
  python -m export --model dat_pp_tiny_mask_rcnn_3x --checkpoint mask_rcnn.pth --max-batch 2 \
      --verify-images street.jpg --out exports/mask_rcnn    # on its square canvas (1344 px)
  python -m export --out exports/digits --triton model_repository   # plus a Triton repository
  python -m export --out exports/digits --triton model_repository --triton-only

Writes OUT/model.onnx, OUT/manifest.json and, where TensorRT and a CUDA GPU are present,
OUT/model.plan. Every artifact is checked against PyTorch before the manifest says ok.
--triton DIR then writes DIR/<model>/config.pbtxt, DIR/<model>/labels.txt and
DIR/<model>/1/model.onnx (or model.plan) from that manifest.
exit status: 0 ok, 1 verification or export failed, 2 bad request, 3 TensorRT requested
but unavailable.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(_positive(part) for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    from .onnx import DEFAULT_OPSET, SUPPORTED_OPSETS
    from .options import DEFAULT_MODEL, GRID_SAMPLE_CHOICES, TASKS
    from .tensorrt import DEFAULT_WORKSPACE_GB

    p = _Parser(
        prog="python -m export",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a DAT or DAT++ model to ONNX (our own translations of the deformable "
        "sampling, GridSample or gathers, and of DAT++'s neighborhood attention), "
        "verify it against PyTorch, optionally build a TensorRT engine, and write a "
        "manifest with hashes and parity figures.",
    )
    model = p.add_argument_group("model")
    which = model.add_mutually_exclusive_group()
    which.add_argument(
        "--model",
        metavar="NAME",
        help=f"registered model name (python -c 'import models; "
        f"print(models.list_models())'); default {DEFAULT_MODEL}, the "
        "embedded classifier, when neither --model nor --config is given",
    )
    which.add_argument(
        "--config",
        metavar="FILE",
        help="official DAT YAML (MODEL.DAT section), a JSON/YAML mapping of the MODEL.DAT keys, "
        "or an mmdet 2.x detector config (.py, read as data, never executed)",
    )
    model.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="weights: official .pth (weights-only load) or .safetensors; "
        "default: the model's embedded weights",
    )
    model.add_argument(
        "--random-weights",
        action="store_true",
        help="allow exporting a model without weights (smoke tests only)",
    )
    model.add_argument(
        "--name",
        metavar="NAME",
        help="model name recorded in the manifest (default: the registered name or the config file's stem)",
    )
    model.add_argument(
        "--labels", metavar="FILE", help="class names, one per line (default: the model's own labels)"
    )
    model.add_argument(
        "--task",
        choices=sorted(TASKS),
        default=None,
        help="check that the model is a classifier (the graph outputs logits), "
        "a detector (boxes, scores, labels after NMS) or an instance segmenter "
        "(those plus 28 x 28 mask probabilities per detection); default: the "
        "model's own task",
    )

    graph = p.add_argument_group("graph")
    graph.add_argument(
        "--out",
        metavar="DIR",
        required=True,
        help="output folder for model.onnx, manifest.json (and model.plan)",
    )
    graph.add_argument(
        "--fp16",
        action="store_true",
        help="float16 graph (for TensorRT's strongly typed networks); input and "
        "output stay float32; LayerNorm, softmax, sampling positions, "
        "grid samples and RoIAlign run in float32",
    )
    graph.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset, {SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1} "
        f"(default {DEFAULT_OPSET}); a native GridSample needs 18 or 19",
    )
    graph.add_argument(
        "--grid-sample",
        choices=GRID_SAMPLE_CHOICES,
        default="auto",
        help="native: one pinned GridSample node per sampling; decomposed: "
        "Gather + arithmetic, no GridSample; auto (default): native, "
        "falling back to decomposed for a runtime (ONNX Runtime, TensorRT) "
        "where it fails verification",
    )
    graph.add_argument(
        "--min-batch",
        type=_positive,
        default=1,
        metavar="N",
        help="smallest batch of the dynamic batch axis (default 1)",
    )
    graph.add_argument(
        "--opt-batch",
        type=_positive,
        default=8,
        metavar="N",
        help="batch TensorRT tunes for (default 8, clipped to the range)",
    )
    graph.add_argument(
        "--max-batch", type=_positive, default=32, metavar="N", help="largest batch (default 32)"
    )
    graph.add_argument(
        "--verify-batches",
        type=_sizes,
        default=(),
        metavar="N,N",
        help="extra batch sizes to verify, besides 1, 2, 7 and min/opt/max",
    )
    graph.add_argument(
        "--verify-images",
        nargs="+",
        default=(),
        metavar="FILE",
        help="verify on these pictures (through the model's preprocessing) "
        "instead of seeded random inputs. A detector's export stops (exit 2) "
        "when PyTorch finds no objects in the verification inputs: a check "
        "that compares no detection proves nothing, so give it pictures it "
        "finds objects in",
    )

    engine = p.add_argument_group("TensorRT")
    toggle = engine.add_mutually_exclusive_group()
    toggle.add_argument(
        "--engine",
        "--tensorrt",
        dest="engine",
        action="store_const",
        const=True,
        default=None,
        help="require a TensorRT engine (error if TensorRT or a CUDA GPU is "
        "missing); default: build one where possible",
    )
    toggle.add_argument(
        "--no-engine",
        dest="engine",
        action="store_const",
        const=False,
        help="skip TensorRT even where it is available",
    )
    engine.add_argument(
        "--workspace-gb",
        type=float,
        default=DEFAULT_WORKSPACE_GB,
        help=f"TensorRT builder workspace (default {DEFAULT_WORKSPACE_GB:g} GiB)",
    )
    triton = p.add_argument_group("Triton model repository")
    triton.add_argument(
        "--triton",
        metavar="DIR",
        help="after the export, write a Triton model repository for it into DIR "
        "(config.pbtxt with tensors, max batch and dynamic batching; labels; "
        "the model file in version folder 1)",
    )
    triton.add_argument(
        "--triton-only",
        action="store_true",
        help="do not export: write the --triton repository from the verified export already in --out",
    )
    triton.add_argument(
        "--triton-platform",
        choices=("auto", "onnxruntime", "tensorrt"),
        default="auto",
        help="auto (default): the TensorRT engine when the export has one (it runs "
        "only under the TensorRT version it was built with), else the ONNX model",
    )
    p.add_argument(
        "--skip-if-current",
        action="store_true",
        help="do nothing when --out already holds a verified export of the same "
        "weights and options (and, where TensorRT runs, an engine for this GPU "
        "and TensorRT version)",
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks on failure")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .options import ExportError, ExportOptions
    from .pipeline import EngineUnavailable, VerificationFailed, run_export

    try:
        opt = min(max(args.opt_batch, args.min_batch), args.max_batch)
        batch = BatchRange(args.min_batch, opt, args.max_batch)
    except ValueError as exc:
        parser.error(str(exc))
    options = ExportOptions(
        out=args.out,
        model=args.model,
        config=args.config,
        checkpoint=args.checkpoint,
        random_weights=args.random_weights,
        name=args.name,
        labels=args.labels,
        task=args.task,
        precision="fp16" if args.fp16 else "fp32",
        opset=args.opset,
        batch=batch,
        grid_sample=args.grid_sample,
        engine=args.engine,
        verify_batches=args.verify_batches,
        verify_images=tuple(args.verify_images),
        workspace_gb=args.workspace_gb,
    )
    if not args.debug:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    if args.triton_only and not args.triton:
        parser.error("--triton-only needs --triton DIR")
    try:
        if args.triton_only:
            return _write_triton(args, parser.prog)
        if args.skip_if_current:
            from .options import check_options
            from .provenance import stale_reason

            check_options(options)
            reason = stale_reason(options)
            if reason is None:
                print(f"{args.out} is current: nothing to do", flush=True)
                return _write_triton(args, parser.prog) if args.triton else 0
            print(f"exporting: {reason}", flush=True)
        run_export(options, log=lambda line: print(line, flush=True))
    except ExportError as exc:
        if args.debug:
            raise
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 3 if isinstance(exc, EngineUnavailable) else 2
    except VerificationFailed as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"{parser.prog}: error: export failed: {type(exc).__name__}: {text} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    return _write_triton(args, parser.prog) if args.triton else 0


def _write_triton(args: argparse.Namespace, prog: str) -> int:
    from runtimes.manifest import Manifest, ManifestError

    from .triton import TritonOptions, TritonRepositoryError, write_repository

    try:
        folder = write_repository(
            Manifest.load(args.out), args.triton, TritonOptions(platform=args.triton_platform, name=args.name)
        )
    except (ManifestError, TritonRepositoryError, OSError) as exc:
        print(f"{prog}: error: Triton repository: {exc}", file=sys.stderr)
        return 2
    print(
        f"Triton model repository: {folder} ({', '.join(sorted(p.name for p in folder.iterdir()))})",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
