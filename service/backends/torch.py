"""Eager PyTorch on CPU or CUDA; fp32, or an fp16 / bf16 model.

The only backend that also returns the D blocks' sampling points.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from models import DAT, create_model, get_spec, load_checkpoint, read_state_dict
from models.registry import read_labels

from .base import Backend, BackendError, ImageOutput, ModelMeta, Points, file_version

log = logging.getLogger("service.backends.torch")

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(f"device {device} requested but CUDA is not available")
    if device != "cpu" and not device.startswith("cuda"):
        raise BackendError(f"device must be cpu, cuda or cuda:N, not {device!r}")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """auto: fp16 autocast on CUDA; fp32 on CPU, where bf16 autocast only pays off for large
    models on CPUs with AMX (DAT-T 2.3x) and is slower than fp32 for the small default model."""
    if precision != "auto":
        return precision
    return "fp16" if device.startswith("cuda") else "fp32"


class TorchBackend(Backend):
    name = "torch"
    supports_points = True

    def __init__(self, model: str | Path | Mapping[str, Any] | DAT = "dat_digits", *,
                 checkpoint: str | Path | None = None, labels: str | Path | None = None,
                 device: str = "auto", precision: str = "auto", threads: int | None = None) -> None:
        super().__init__()
        self._source = model
        self._checkpoint = Path(checkpoint) if checkpoint else None
        self._labels = Path(labels) if labels else None
        self._threads = threads
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        if self.precision not in ("fp32", *_DTYPES):
            raise BackendError(f"unknown precision {self.precision!r}")
        self.model: DAT | None = None

    def _build(self) -> tuple[DAT, str]:
        if isinstance(self._source, DAT):
            # A copy: moving to another device or dtype must not change the caller's model.
            return copy.deepcopy(self._source), "in-memory"
        labels = read_labels(self._labels) if self._labels else None
        if self._checkpoint is None:
            model = create_model(self._source, labels=labels)
            weights = _embedded_weights(self._source)
            if weights is None:
                log.warning("serving %s with random weights (no checkpoint given and none embedded)",
                            model.info.name)
                return model, "untrained"
            return model, file_version(weights)
        state = read_state_dict(self._checkpoint)
        head = state.get("cls_head.weight")
        overrides = {"num_classes": int(head.shape[0])} if head is not None else {}
        model = create_model(self._source, labels=labels, pretrained=False, **overrides)
        load_checkpoint(model, state)
        return model, file_version(self._checkpoint)

    def load(self) -> ModelMeta:
        if self._threads:
            torch.set_num_threads(self._threads)
        model, version = self._build()
        # Half precision runs a half model (not autocast): faster, and the model keeps its
        # sampling positions and grid samples in float32 by itself.
        self.dtype = _DTYPES.get(self.precision, torch.float32)
        self.model = model.eval().to(self.device, self.dtype)
        info = model.info
        self.meta = ModelMeta(info.name, version, tuple(info.labels), info.preprocessing)
        return self.meta

    def run(self, images: torch.Tensor, points: bool = False) -> list[ImageOutput]:
        if self.model is None:
            raise BackendError("run before load")
        x = images.to(self.device, non_blocking=True).to(self.dtype)
        with torch.inference_mode():
            if points:
                logits, positions, _ = self.model.forward_with_points(x)
            else:
                logits, positions = self.model(x), None
        logits_np = logits.float().cpu().numpy()
        per_image: list[list[Points]] = [[] for _ in range(len(logits_np))]
        if positions is not None:
            for s, stage in enumerate(positions):
                for b, pos in enumerate(stage):
                    if pos is None:
                        continue
                    pos_np = pos.float().cpu().numpy()
                    for i in range(len(per_image)):
                        per_image[i].append(Points(s, b, pos_np[i]))
        return [ImageOutput(row, tuple(per_image[i]) if points else None)
                for i, row in enumerate(logits_np)]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "threads": torch.get_num_threads() if self.device == "cpu" else None}


def _embedded_weights(source: Any) -> Path | None:
    """The weights file a registered model ships with, if any."""
    if not isinstance(source, str):
        return None
    try:
        weights = get_spec(source).weights
    except KeyError:
        return None
    return weights if weights is not None and weights.is_file() else None
