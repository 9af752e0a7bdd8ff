"""Backends for service tests: the real torch backend instrumented, and a detector that always
answers the same."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import numpy as np
import torch

from models import DETECTION, Letterbox
from service.backends import Backend, DetectionOutput, ModelMeta
from service.backends.torch import TorchBackend

# the canvas FixedDetector's boxes are on
CANVAS = 128


class CountingBackend(TorchBackend):
    """The real torch backend, instrumented: every batch is recorded, a gate can hold the
    worker inside ``run`` (to keep requests queued), and batches can be made to fail."""

    def __init__(self, model, **kwargs) -> None:
        super().__init__(model, device="cpu", precision="fp32", **kwargs)
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)  # released once per batch that starts
        self.fail_when: Callable[[torch.Tensor], bool] = lambda images: False
        self.load_gate = threading.Event()
        self.load_gate.set()

    def load(self):
        self.load_gate.wait(30)
        return super().load()

    def run(self, images, points=False):
        self.entered.release()
        if not self.gate.wait(10):
            raise RuntimeError("test gate never opened")
        if self.fail_when(images):
            raise RuntimeError("injected failure")
        self.batches.append(int(images.shape[0]))
        return super().run(images, points)

    @property
    def images_computed(self) -> int:
        return sum(self.batches)

    async def wait_entered(self, timeout: float = 10.0) -> None:
        if not await asyncio.to_thread(self.entered.acquire, True, timeout):
            raise AssertionError("no batch started")


class FixedDetector(Backend):
    """Answers every image with the same canvas detections (best first): a digit 3 at
    (10, 20)-(60, 100), a 7 below the default score threshold, and a box in the padding."""

    name = "fixed"

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def load(self) -> ModelMeta:
        self.meta = ModelMeta(
            "fixed_detector",
            "v1",
            tuple("0123456789"),
            Letterbox(CANVAS, mean=(0.5,) * 3, std=(0.5,) * 3),
            task=DETECTION,
            max_detections=100,
        )
        return self.meta

    def run(self, images: torch.Tensor, points: bool = False) -> list[DetectionOutput]:
        self.batches.append(images.shape[0])
        boxes = np.array([[10, 20, 60, 100], [0, 0, 8, 8], [20, 100, 40, 127]], np.float32)
        return [
            DetectionOutput(boxes, np.array([0.9, 0.2, 0.1], np.float32), np.array([3, 7, 1]))
            for _ in range(images.shape[0])
        ]
