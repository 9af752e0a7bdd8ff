"""Runs ``python -m bench server`` from its parsed arguments."""

from __future__ import annotations

import io
import json
import shlex
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from . import server as load


def sample_jpeg(width: int = 500, height: int = 375) -> bytes:
    """A photo-sized JPEG with enough detail that decoding costs what a real one does."""
    image = Image.effect_mandelbrot((width, height), (-2.2, -1.2, 1.0, 1.2), 100).convert("RGB")
    draw = ImageDraw.Draw(image)
    for i in range(12):
        draw.ellipse(
            (i * 37 % width, i * 53 % height, i * 37 % width + 80, i * 53 % height + 60),
            outline=(40 * i % 255, 90, 200 - 10 * i),
        )
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def image_or_sample(path: str | None) -> bytes:
    """The bytes of ``--image``, or :func:`sample_jpeg` without one."""
    return Path(path).read_bytes() if path else sample_jpeg()


def _content_type(path: str) -> str:
    suffix = Path(path).suffix.lower()
    return {".png": "image/png", ".webp": "image/webp", ".gif": "image/gif"}.get(suffix, "image/jpeg")


def main(args) -> int:
    if args.measure_baseline and args.url:
        print(
            "--measure-baseline builds the backend from --server-args; for a running server "
            "give --baseline-ips",
            file=sys.stderr,
        )
        return 2
    body = image_or_sample(args.image)
    content_type = _content_type(args.image) if args.image else "image/jpeg"
    server = None
    if args.url:
        load.check_loopback(args.url)
        base_url = args.url.rstrip("/")
    else:
        log = Path(args.out) / "server.log" if args.out else None
        if log:
            log.parent.mkdir(parents=True, exist_ok=True)
        print(f"starting python -m service {args.server_args}", flush=True)
        server = load.ServerProcess(shlex.split(args.server_args), log_path=log)
        base_url = server.url
    runs = []
    try:
        models = load.httpx.get(f"{base_url}/models", timeout=10).json()
        raw = _raw_backend(args.server_args) if args.measure_baseline else None
        raw_before = _measure_raw(raw, args.duration)
        for round_ in range(1, args.rounds + 1):
            for clients in args.concurrency:
                of_rounds = f", round {round_} of {args.rounds}" if args.rounds > 1 else ""
                print(f"closed loop, {clients} clients{of_rounds}, {args.duration:g} s ...", flush=True)
                result = load.run_level(
                    base_url,
                    "closed",
                    clients,
                    args.duration,
                    body,
                    content_type,
                    args.images_per_request,
                    args.processes,
                )
                raw_after = _measure_raw(raw, args.duration)
                if raw:
                    result.baseline_ips = (raw_before + raw_after) / 2
                    raw_before = raw_after
                if args.rounds > 1:
                    result.round = round_
                runs.append(result.to_dict())
                _print_run(result, args.baseline_ips)
        best = max((r["requests_per_second"] for r in runs), default=0.0)
        for rate in args.rates:
            offered = best / 2 if rate == "half" else float(rate)
            if offered <= 0:
                continue
            print(f"open loop, {offered:.1f} req/s, {args.duration:g} s ...", flush=True)
            result = load.run_level(
                base_url,
                "open",
                offered,
                args.duration,
                body,
                content_type,
                args.images_per_request,
                args.processes,
            )
            runs.append(result.to_dict())
            _print_run(result, args.baseline_ips)
    finally:
        if server:
            server.stop()
    summary = load.efficiency_by_level(runs, args.baseline_ips)
    report = {
        "target": base_url,
        "models": models,
        "images_per_request": args.images_per_request,
        "image_bytes": len(body),
        "baseline_ips": args.baseline_ips,
        "runs": runs,
        "efficiency_by_level": summary,
        "title": args.title or f"server, {args.server_args or 'default model'}",
    }
    tables = load.markdown_table(runs, args.baseline_ips)
    if summary:
        tables += "\n\n" + load.efficiency_table(summary)
    print()
    print(tables)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "server.json").write_text(json.dumps(report, indent=2))
        (out / "server.md").write_text(tables + "\n")
        try:
            from .plots import latency_vs_throughput

            latency_vs_throughput(report, out / "server_latency.png")
        except ImportError:
            print("matplotlib not installed: no plot", flush=True)
        print(f"written to {out}")
    return 0


def _raw_backend(server_args: str):
    from .baseline import RawBackend

    print("loading the raw backend for the baseline ...", flush=True)
    raw = RawBackend(server_args)
    print(f"  {raw.describe()}", flush=True)
    return raw


def _measure_raw(raw, duration: float) -> float | None:
    if raw is None:
        return None
    ips = raw.images_per_second(duration / 2)
    print(f"raw backend alone: {ips:8.1f} img/s", flush=True)
    return ips


def _print_run(r: load.RunResult, baseline_ips: float | None) -> None:
    lat = r.latency_ms
    raw = load.raw_ips(r.to_dict(), baseline_ips)
    print(
        f"  {r.images_per_second:8.1f} img/s  p50 {lat.get('p50', 0):7.1f} ms  "
        f"p99 {lat.get('p99', 0):7.1f} ms  errors {sum(r.errors.values())}  "
        f"batch per image {r.mean_batch_size or 0:.1f}  server ms (preprocess/queue/inference) "
        f"{load.stages(r.server_ms)}" + (f"  efficiency {r.images_per_second / raw:.0%}" if raw else ""),
        flush=True,
    )
