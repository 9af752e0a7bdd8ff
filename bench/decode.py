"""``python -m bench decode``: how fast the service turns one JPEG into a model input.

Pillow (decode, then the model's resize / crop / normalise, on one thread) against
``--gpu-decode`` (the service's ``GpuJpegDecoder``: nvJPEG in batches, then the same transform
on the GPU), and how far the GPU's model inputs are from Pillow's.
"""

from __future__ import annotations

from typing import Any

import torch

from models import Preprocessing
from service.preprocess import prepare

from .timing import Measurement, measure

LIMIT = 10**9


def _rates(m: Measurement) -> dict[str, float]:
    return {
        "images_per_second": round(m.images_per_second, 1),
        "min": round(m.ips_min, 1),
        "max": round(m.ips_max, 1),
    }


def pillow(data: bytes, preprocessing: Preprocessing, seconds: float) -> dict[str, Any]:
    return _rates(
        measure(
            "pillow", 1, lambda: prepare(data, preprocessing, LIMIT), warmup=1, repeats=3, min_seconds=seconds
        )
    )


def gpu_decode(
    data: bytes, preprocessing: Preprocessing, device: torch.device, batch: int, seconds: float
) -> dict[str, Any]:
    """The service's decoder, ``batch`` images submitted at once, as concurrent requests do."""
    from service.gpu_decode import GpuJpegDecoder, read_header, torchvision_decoder

    header = read_header(data, LIMIT)
    if header is None:
        return {"skipped": "this JPEG takes the Pillow path (progressive, CMYK, ...)"}
    decoder = GpuJpegDecoder(preprocessing, device, torchvision_decoder(device)).start()
    try:

        def step() -> list[torch.Tensor]:
            futures = [decoder.submit(data, header) for _ in range(batch)]
            return [f.result(60) for f in futures]

        rates = _rates(measure("gpu-decode", batch, step, warmup=1, repeats=3, min_seconds=seconds))
        ours = step()[0].cpu()
    finally:
        decoder.stop(timeout=10)
    reference = prepare(data, preprocessing, LIMIT).tensor
    # in pixel levels: the inputs are (level / 255 - mean) / std
    levels = (ours - reference).abs() * torch.tensor(preprocessing.std).view(3, 1, 1) * 255
    return {
        **rates,
        "batch": batch,
        "calls": decoder.calls,
        "images": decoder.images,
        "input_difference_levels": {
            "mean": round(levels.mean().item(), 3),
            "max": round(levels.max().item(), 3),
        },
    }


def run(data: bytes, preprocessing: Preprocessing, device: str, batch: int, seconds: float) -> dict:
    report: dict[str, Any] = {"bytes": len(data), "pillow_one_thread": pillow(data, preprocessing, seconds)}
    where = torch.device(device)
    if where.type != "cuda":
        report["gpu_decode"] = {"skipped": "--gpu-decode needs a CUDA device (--device cuda)"}
        return report
    try:
        report["gpu_decode"] = gpu_decode(data, preprocessing, where, batch, seconds)
    except ImportError as exc:
        report["gpu_decode"] = {"skipped": f"needs torchvision ({exc})"}
    return report
