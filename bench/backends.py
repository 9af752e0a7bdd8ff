"""``python -m bench backends``: which serving backend is fastest on this machine's CPU?

Times the service's own backends (what ``python -m service`` would run, preprocessed inputs,
no HTTP) on one model: torch fp32, torch bf16 (bf16 weights), and ONNX Runtime on an ``export``
artifact. bf16 only counts where its top-1 agrees with fp32 on real inputs (the digits
held-out set for ``dat_digits``, else random images). Also reports the cost of the first
call at a batch size not seen before (oneDNN builds kernels per shape), which a server with
a dynamic batcher pays in production unless it warms every batch size up.

    python -m bench backends                         # dat_digits, batches 1,8,16
    python -m bench backends --model cfg.json --batch-sizes 1,4 --artifacts exports/x
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from service.backends.base import Backend
from service.backends.onnxruntime import OnnxRuntimeBackend
from service.backends.torch import TorchBackend

from .exported import export_model
from .timing import measure


def _inputs(model_name: str, preprocessing, count: int) -> tuple[torch.Tensor, str]:
    if model_name == "dat_digits":
        try:
            from training.classifier_data import render_digit
            from training.digit_ink import digit_scans

            scans, _ = digit_scans("held_out")
            images = [render_digit(s, 64, inverted=bool(i % 2)) for i, s in enumerate(scans[:count])]
            return torch.stack([preprocessing(im) for im in images]), f"{len(images)} held-out digits"
        except Exception as exc:  # noqa: BLE001 - training/scikit-learn missing: fall back
            print(f"(digits unavailable: {exc}; using random images)")
    g = torch.Generator().manual_seed(0)
    size = preprocessing.input_size
    return torch.randn(count, 3, size, size, generator=g), f"{count} random images"


def _top1(backend: Backend, x: torch.Tensor, batch: int) -> np.ndarray:
    out = []
    for i in range(0, len(x), batch):
        out += [int(o.logits.argmax()) for o in backend.run(x[i : i + batch])]
    return np.array(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench backends",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="dat_digits")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--artifacts", default=None, help="an existing export (else one is made)")
    parser.add_argument("--batch-sizes", default="1,8,16")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    sizes = [int(v) for v in args.batch_sizes.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        return _run(args, sizes, Path(tmp))


def _shared_random_weights(model: str, folder: Path) -> str:
    """One random checkpoint for every backend: each would otherwise draw its own weights."""
    from models import create_model, save_safetensors

    torch.manual_seed(0)
    path = folder / "random.safetensors"
    save_safetensors(create_model(model, pretrained=False), path)
    print(f"{model} has no weights: all backends share random weights ({path.name})")
    return str(path)


def _run(args, sizes: list[int], tmp: Path) -> int:
    from models import get_spec

    has_weights = args.checkpoint is not None
    if not has_weights:
        try:
            has_weights = get_spec(args.model).weights is not None
        except KeyError:  # a config file: no embedded weights
            has_weights = False
    if not has_weights:
        args.checkpoint = _shared_random_weights(args.model, tmp)
    backends: dict[str, Backend] = {
        "torch-fp32": TorchBackend(args.model, checkpoint=args.checkpoint, device="cpu", precision="fp32"),
        "torch-bf16": TorchBackend(args.model, checkpoint=args.checkpoint, device="cpu", precision="bf16"),
    }
    artifacts = Path(args.artifacts) if args.artifacts else None
    if artifacts is None:
        print("exporting to ONNX for the onnxruntime backend ...", flush=True)
        started = time.perf_counter()
        artifacts = export_model(args.model, args.checkpoint, tmp / "export", max(sizes))
        print(f"  done in {time.perf_counter() - started:.1f}s", flush=True)
    backends["onnxruntime-fp32"] = OnnxRuntimeBackend(artifacts, device="cpu", threads=args.threads)
    metas = {name: b.load() for name, b in backends.items()}
    meta = metas["torch-fp32"]
    print(
        f"model {meta.name} ({meta.version}), input {meta.input_size}px, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )

    x, what = _inputs(args.model, meta.preprocessing, 360)
    reference = _top1(backends["torch-fp32"], x, 16)
    agreement = {name: float((_top1(b, x, 16) == reference).mean()) for name, b in backends.items()}

    first_call: dict[str, float] = {}
    rows = []
    for name, backend in backends.items():
        for n in sizes:
            batch = x[:n] if len(x) >= n else x.repeat(n // len(x) + 1, 1, 1, 1)[:n]
            started = time.perf_counter()
            backend.run(batch)
            first_call[f"{name}@{n}"] = (time.perf_counter() - started) * 1000
            m = measure(
                name,
                n,
                lambda b=backend, t=batch: b.run(t),
                warmup=2,
                repeats=args.repeats,
                min_seconds=args.min_seconds,
            )
            rows.append(m)
            print(
                f"  {name:18s} batch {n:3d}: {m.images_per_second:8.1f} img/s "
                f"(p50 {m.latency_ms_p50:.2f} ms/batch, first call {first_call[f'{name}@{n}']:.1f} ms)",
                flush=True,
            )

    print(
        f"\ntop-1 agreement with torch-fp32 on {what}: "
        + ", ".join(f"{k} {v:.1%}" for k, v in agreement.items())
    )
    print("\n| backend | " + " | ".join(f"batch {n} img/s" for n in sizes) + " | top-1 vs fp32 |")
    print("|---|" + "---|" * (len(sizes) + 1))
    for name in backends:
        cells = [f"{m.images_per_second:.0f}" for m in rows if m.variant == name]
        print(f"| {name} | " + " | ".join(cells) + f" | {agreement[name]:.1%} |")
    best = max(
        backends,
        key=lambda name: (
            sum(m.images_per_second for m in rows if m.variant == name) if agreement[name] >= 0.99 else -1
        ),
    )
    print(f"\nfastest with top-1 agreement >= 99%: {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
