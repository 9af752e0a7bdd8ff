"""A simulated accelerator, for capacity work: how many images can this host feed?

``run`` sleeps ``batch / images_per_second`` and returns zeros of the model's output shape. A
sleep releases the GIL and burns no CPU, as a GPU computing a batch would leave the host free
(the launches and copies a real backend costs are left out). The model is built once at load,
only for its name, labels and preprocessing; no weights are kept and nothing is computed.

Its inference thread runs ATen serially (``service.model_runtime`` sets it): a host feeding an
accelerator copies batches, it does not compute them, and an OpenMP team would spin between
batches (measured: 3 of the 4 CPU ms a one-image request cost the inference process of
``--workers 2`` front ends, on 2 cores).

One device, however many processes: where ``DAT_SIMULATED_DEVICE_LOCK`` names a file (the
parent of ``--workers N`` replicas sets it), every process's batches take turns on it (an
exclusive ``flock`` around the sleep), as they would on the one GPU of a host; without it each
replica would have an accelerator of its own and seem N times as fast.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from models import create_model

from ..tasks import served
from .base import Backend, BackendError, DetectionOutput, ImageBatch, ImageOutput, ModelMeta

DEVICE_LOCK = "DAT_SIMULATED_DEVICE_LOCK"


class SimulatedBackend(Backend):
    name = "simulated"

    def __init__(
        self, model: str | Path = "dat_digits", *, images_per_second: float, labels: str | Path | None = None
    ) -> None:
        super().__init__()
        if not images_per_second > 0:
            raise BackendError(f"a simulated backend needs images_per_second > 0, got {images_per_second}")
        self._source = model
        self._labels = labels
        self.images_per_second = float(images_per_second)
        self.precision = "simulated"
        self._num_classes = 0
        self._device_lock = os.environ.get(DEVICE_LOCK)  # set by the parent process, not by users
        self._lock_fd: int | None = None

    def load(self) -> ModelMeta:
        from models.labels import read_labels

        labels = read_labels(self._labels) if self._labels else None
        model = create_model(self._source, labels=labels, pretrained=False)
        if self._device_lock:
            self._lock_fd = os.open(self._device_lock, os.O_RDWR | os.O_CREAT, 0o600)
        info = model.info
        self._num_classes = len(info.labels)
        self.meta = ModelMeta(
            info.name,
            "simulated",
            tuple(info.labels),
            info.preprocessing,
            task=model.task,
            category_ids=tuple(info.category_ids),
            max_detections=getattr(model.config, "max_per_img", 0),
            mask_threshold=getattr(model.config, "mask_threshold", 0.5),
        )
        return self.meta

    def run(self, images: ImageBatch, points: bool = False) -> list[ImageOutput] | list[DetectionOutput]:
        if self.meta is None:
            raise BackendError("run before load")
        n = len(images)  # a tensor's batch, or a keep-ratio detector's list of inputs
        with self._on_device():
            time.sleep(n / self.images_per_second)
        return served(self.meta.task).empty(n, self._num_classes)

    @contextlib.contextmanager
    def _on_device(self) -> Iterator[None]:
        if self._lock_fd is None:
            yield
            return
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "simulated": {"images_per_second": self.images_per_second}}
