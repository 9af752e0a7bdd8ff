"""The CPU's host path per image, today's against the candidates, in interleaved rounds.

For a JPEG and a classifier's preprocessing: milliseconds per image of decoding, resizing and
the whole path (bytes to model input) for each candidate, every round running each variant in
turn (a slow spell of a shared machine slows them all alike), reported as medians of the
per-round figures and of the per-round ratios to today's path; and how far each candidate's
inputs are from the official ones (Pillow decode, Pillow resize), in pixel levels and in the
logits and probabilities of real models.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from models import Preprocessing, create_model
from service import jpeg
from service.preprocess import HostPath, decode, prepare

LIMIT = 10**9
TODAY = "today: Pillow decode, resize, crop"
DEFAULT = "default: simplejpeg, numba (Pillow's resize compiled)"


def today(data: bytes, p: Preprocessing) -> torch.Tensor:
    """The path before this change: Pillow decodes (with ``exif_transpose``'s copy), resizes
    the whole square, then crops."""
    image, _ = decode(data, LIMIT)
    size = p.resize_size
    top = int(round((size - p.input_size) / 2.0))
    resized = image.resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(p.normalize(resized.crop((top, top, top + p.input_size, top + p.input_size))))


def reducing_gap(gap: float) -> Callable[[bytes, Preprocessing], torch.Tensor]:
    """Pillow's ``reducing_gap``: a box reduction by an integer factor first, then the resize."""

    def run(data: bytes, p: Preprocessing) -> torch.Tensor:
        image, _ = decode(data, LIMIT)
        size = p.resize_size
        top = int(round((size - p.input_size) / 2.0))
        resized = image.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=gap)
        return torch.from_numpy(p.normalize(resized.crop((top, top, top + p.input_size, top + p.input_size))))

    return run


def through(host: HostPath) -> Callable[[bytes, Preprocessing], torch.Tensor]:
    return lambda data, p: prepare(data, p, LIMIT, host=host).tensor


def candidates(large: bool) -> dict[str, Callable[[bytes, Preprocessing], torch.Tensor]]:
    """Whole paths, bytes to model input. The first is today's (the reference of the ratios)."""
    runs = {
        TODAY: today,
        DEFAULT: through(HostPath("simplejpeg", "numba")),
        "--cpu-resize pillow: simplejpeg, Pillow into the crop": through(HostPath("simplejpeg", "pillow")),
        "--cpu-resize torch: simplejpeg, torch uint8": through(HostPath("simplejpeg", "torch")),
    }
    if large:
        runs["--jpeg-draft: simplejpeg draft, numba"] = through(HostPath("simplejpeg", "numba", True))
        runs["--jpeg-draft --cpu-resize torch"] = through(HostPath("simplejpeg", "torch", True))
        runs["Pillow reducing_gap=2 (not offered)"] = reducing_gap(2.0)
        runs["Pillow reducing_gap=3 (not offered)"] = reducing_gap(3.0)
    return runs


def stages(data: bytes, p: Preprocessing) -> dict[str, Callable[[], object]]:
    """Decoding and resizing apart (resize includes crop and normalisation)."""
    image, _ = decode(data, LIMIT)
    pixels = np.asarray(image).copy()
    size = p.resize_size
    top = int(round((size - p.input_size) / 2.0))

    def resize_then_crop() -> object:
        resized = image.resize((size, size), Image.Resampling.BICUBIC)
        return p.normalize(resized.crop((top, top, top + p.input_size, top + p.input_size)))

    return {
        "decode: Pillow (today)": lambda: decode(data, LIMIT),
        "decode: simplejpeg": lambda: jpeg.decode(data),
        "resize: Pillow whole square, crop (today)": resize_then_crop,
        "resize: Pillow into the crop": lambda: p(image),
        "resize: numba, Pillow's arithmetic into the crop": lambda: p.from_array(pixels),
        "resize: torch uint8 antialiased": lambda: p.from_uint8(pixels),
    }


def interleaved(runs: dict[str, Callable[[], object]], rounds: int, per_round: int) -> dict[str, list[float]]:
    """ms per call of each run, one figure per round; the runs take turns within a round."""
    for run in runs.values():
        run()
    ms: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(per_round):
                run()
            ms[name].append((time.perf_counter() - start) * 1000 / per_round)
    return ms


def summary(ms: dict[str, list[float]], reference: str) -> list[dict[str, Any]]:
    base = ms[reference]
    rows = []
    for name, values in ms.items():
        ratios = [v / b for v, b in zip(values, base)]
        rows.append(
            {
                "variant": name,
                "ms_median": round(statistics.median(values), 3),
                "ms_min": round(min(values), 3),
                "of_reference_median": round(statistics.median(ratios), 3),
                "of_reference_range": [round(min(ratios), 3), round(max(ratios), 3)],
            }
        )
    return rows


def distance(ours: torch.Tensor, official: torch.Tensor, p: Preprocessing) -> dict[str, float]:
    """In pixel levels: the inputs are (level / 255 - mean) / std."""
    levels = ((ours - official).abs() * torch.tensor(p.std).view(3, 1, 1) * 255).round()
    return {
        "max_levels": int(levels.max()),
        "mean_levels": round(levels.mean().item(), 5),
        "values_differing": round((levels > 0).float().mean().item(), 5),
    }


def logit_effects(data: bytes, models: tuple[str, ...], large: bool) -> dict[str, dict[str, Any]]:
    """Each model's logits and probabilities on each candidate's inputs against the official."""
    effects: dict[str, dict[str, Any]] = {}
    for name in models:
        torch.manual_seed(0)
        model = create_model(name).eval()
        p = model.info.preprocessing
        with torch.no_grad():
            official = model(p(decode(data, LIMIT)[0])[None])[0]
            rows = {}
            for variant, run in candidates(large).items():
                logits = model(run(data, p)[None])[0]
                rows[variant] = {
                    "max_logit_difference": float((logits - official).abs().max()),
                    "max_probability_difference": float(
                        (logits.softmax(-1) - official.softmax(-1)).abs().max()
                    ),
                }
        effects[name] = {"input_size": p.input_size, "weights": _weights(name), "variants": rows}
    return effects


def _weights(name: str) -> str:
    from service.backends.torch import _embedded_weights

    return "embedded, trained" if _embedded_weights(name) is not None else "random (no checkpoint here)"


def versions() -> dict[str, str | None]:
    import PIL

    simplejpeg = jpeg.simplejpeg
    return {"pillow": PIL.__version__, "simplejpeg": getattr(simplejpeg, "__version__", None)}


def run(
    data: bytes, p: Preprocessing, rounds: int, per_round: int, models: tuple[str, ...]
) -> dict[str, Any]:
    width, height = Image.open(io.BytesIO(data)).size
    large = min(width, height) >= 2 * p.resize_size
    official = p(decode(data, LIMIT)[0])
    paths = candidates(large)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as on the service's decoding threads (runtime.keep_aten_serial)
    try:
        whole = interleaved({name: (lambda f=f: f(data, p)) for name, f in paths.items()}, rounds, per_round)
        parts = interleaved(stages(data, p), rounds, per_round)
    finally:
        torch.set_num_threads(threads)
    return {
        "image": {"width": width, "height": height, "bytes": len(data)},
        "preprocessing": p.to_dict(),
        "rounds": rounds,
        "images_per_round": per_round,
        "paths": summary(whole, TODAY),
        "stages": summary(parts, "decode: Pillow (today)"),
        "distance_from_official": {name: distance(f(data, p), official, p) for name, f in paths.items()},
        "model_effects": logit_effects(data, models, large),
    }


def markdown(report: dict[str, Any]) -> str:
    image = report["image"]
    lines = [
        f"{image['width']}x{image['height']} JPEG ({image['bytes']:,} bytes) -> "
        f"{report['preprocessing']['input_size']} input, one thread, {report['rounds']} interleaved rounds "
        f"of {report['images_per_round']} images",
        "",
        "| path | ms/image (median) | of today's (median of rounds) | max levels off | values off |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in report["paths"]:
        d = report["distance_from_official"][row["variant"]]
        lines.append(
            f"| {row['variant']} | {row['ms_median']:.2f} | {row['of_reference_median']:.2f} "
            f"| {d['max_levels']} | {d['values_differing']:.2%} |"
        )
    lines += ["", "| stage | ms/image (median) |", "| --- | ---: |"]
    lines += [f"| {row['variant']} | {row['ms_median']:.2f} |" for row in report["stages"]]
    for name, effect in report["model_effects"].items():
        lines += [
            "",
            f"{name} ({effect['weights']} weights): largest change against the official inputs",
            "",
            "| path | logit | probability |",
            "| --- | ---: | ---: |",
        ]
        for variant, row in effect["variants"].items():
            lines.append(
                f"| {variant} | {row['max_logit_difference']:.2e} | {row['max_probability_difference']:.2e} |"
            )
    return "\n".join(lines) + "\n"
