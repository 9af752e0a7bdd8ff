"""The one interface every backend implements: load, warm up, run a batch, describe.

A backend is owned by the inference thread: ``load``, ``warmup`` and ``run`` are only ever
called from it, one at a time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from models import CLASSIFICATION, KeepRatioResize, Task, Transform
from models.transforms import ImageMeta
from runtimes.hashing import sha256_file


class BackendError(RuntimeError):
    """The backend cannot serve: missing library or device, bad artifacts, mismatch."""


@dataclass(frozen=True)
class ModelMeta:
    """What the server needs to know about the model a backend runs."""

    name: str
    version: str
    labels: tuple[str, ...]
    preprocessing: Transform | KeepRatioResize
    task: Task = CLASSIFICATION
    category_ids: tuple[int, ...] = ()  # detectors: COCO category id of each label
    max_detections: int = 0  # detectors: detections kept per image
    mask_threshold: float = 0.5  # instance masks: probability from which a pixel belongs
    max_side: int | None = None  # keep-ratio inputs: the exported graph's canvas holds at most this

    @property
    def input_size(self) -> int | None:
        """The square input's side; None where the input keeps each image's aspect ratio."""
        return None if isinstance(self.preprocessing, KeepRatioResize) else self.preprocessing.input_size

    @property
    def keeps_ratio(self) -> bool:
        """Inputs are each image resized to fit, of its own shape (``KeepRatioInput`` lists)."""
        return isinstance(self.preprocessing, KeepRatioResize)

    @property
    def canvas(self) -> int | None:
        """The side of an exported graph's square input: the input size, or for a keep-ratio
        detector the canvas every resized image is padded to (:attr:`KeepRatioResize.canvas`)."""
        if isinstance(self.preprocessing, KeepRatioResize):
            return self.preprocessing.canvas
        return self.input_size


@dataclass(frozen=True)
class Points:
    """The deformed sampling points of one D block for one image: (groups, Hk, Wk, 2), (y, x)
    in [-1, 1] over the block's feature map (``align_corners=True`` convention)."""

    stage: int
    block: int
    yx: np.ndarray


@dataclass(frozen=True)
class ImageOutput:
    logits: np.ndarray  # (num_classes,) float32
    points: tuple[Points, ...] | None = None


@dataclass(frozen=True)
class DetectionOutput:
    """One image's kept detections, best first, on the model's canvas (``in_image_pixels``: in
    the original image's pixels already, as mmdet's detectors give them)."""

    boxes: np.ndarray  # (K, 4) float32, x1 y1 x2 y2 in canvas pixels
    scores: np.ndarray  # (K,) float32
    labels: np.ndarray  # (K,) int64 class indices
    masks: np.ndarray | None = None  # (K, S, S) float32 probabilities over each box (instance masks)
    in_image_pixels: bool = False


# One image for a keep-ratio detector: its padded input (3, H, W) and where it came from
KeepRatioInput = tuple[torch.Tensor, ImageMeta]
ImageBatch = torch.Tensor | list[KeepRatioInput]


def split_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    masks: np.ndarray | None = None,
    metas: Sequence[ImageMeta] | None = None,
) -> list[DetectionOutput]:
    """A detector's padded batch outputs (B, M, ...) -> one output per image, padding dropped
    (label -1 marks an empty slot). ``metas``: each image's keep-ratio resize, whose scale
    factors take its boxes back to its own pixels."""
    out = []
    for b in range(labels.shape[0]):
        keep = labels[b] >= 0
        kept_boxes = boxes[b][keep].astype(np.float32)
        if metas is not None:
            kept_boxes = kept_boxes / np.asarray(metas[b].scale_factor, np.float32)
        out.append(
            DetectionOutput(
                kept_boxes,
                scores[b][keep].astype(np.float32),
                labels[b][keep].astype(np.int64),
                masks=None if masks is None else masks[b][keep].astype(np.float32),
                in_image_pixels=metas is not None,
            )
        )
    return out


def on_canvas(images: list[KeepRatioInput], meta: ModelMeta) -> tuple[torch.Tensor, list[ImageMeta]]:
    """Keep-ratio inputs, each (3, H, W) of its own shape, padded with zeros onto the square
    (B, 3, S, S) canvas an exported graph takes (as mmdet pads, right and bottom), S =
    ``meta.max_side``; with each image's resize."""
    size = meta.max_side
    if size is None:
        raise BackendError(f"{meta.name} takes (B, 3, S, S) batches, not keep-ratio images")
    batch = torch.zeros(len(images), 3, size, size)
    for i, (tensor, _) in enumerate(images):
        if tensor.shape[1] > size or tensor.shape[2] > size:
            raise BackendError(f"an input of {tuple(tensor.shape[1:])} does not fit the {size}px canvas")
        batch[i, :, : tensor.shape[1], : tensor.shape[2]] = tensor
    return batch, [image_meta for _, image_meta in images]


class Backend(ABC):
    name: ClassVar[str]
    supports_points: bool = False  # a class default; a backend may refuse them once loaded
    # run() also takes images already on its CUDA device (preprocessed there by the service)
    takes_device_inputs: ClassVar[bool] = False

    def __init__(self) -> None:
        self.meta: ModelMeta | None = None
        self.device = "cpu"
        self.precision = "fp32"

    @abstractmethod
    def load(self) -> ModelMeta:
        """Loads weights / artifacts onto the device; sets and returns ``meta``."""

    @abstractmethod
    def run(self, images: ImageBatch, points: bool = False) -> list[ImageOutput] | list[DetectionOutput]:
        """images: float32 (B, 3, S, S), already preprocessed, on the CPU (or on ``device``
        where ``takes_device_inputs``), or a list of :data:`KeepRatioInput` for a keep-ratio
        detector -> one output per image (:class:`DetectionOutput` for a detector)."""

    def sample_batch(self, n: int) -> ImageBatch:
        """``n`` blank images as ``run`` takes them (warm-up and health probes)."""
        if self.meta is None:
            raise BackendError("not loaded")
        preprocessing = self.meta.preprocessing
        if isinstance(preprocessing, KeepRatioResize):
            meta = preprocessing.meta(640, 480)  # a 4:3 picture, the commonest shape
            width, height = preprocessing.padded_size(640, 480)
            return [(torch.zeros(3, height, width), meta) for _ in range(n)]
        size = self.meta.input_size
        if size is None:
            raise BackendError(f"{self.meta.name} has no input size to make a sample batch of")
        return torch.zeros(n, 3, size, size)

    def warmup(self, batch_sizes: Iterable[int]) -> None:
        """Runs each batch size once so the first requests do not pay for lazy setup (a
        keep-ratio detector: batch 1 only; its input shapes change with every image anyway)."""
        if self.meta is None:
            raise BackendError("warmup before load")
        sizes = sorted(set(batch_sizes))
        for n in sizes[:1] if self.meta.keeps_ratio else sizes:
            self.run(self.sample_batch(n), points=self.supports_points)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": self.device,
            "precision": self.precision,
            "supports_points": self.supports_points,
        }


def file_version(path: str | Path) -> str:
    """A short content hash identifying a weights / artifact file."""
    return f"sha256:{sha256_file(path)[:12]}"


def run_in_chunks(
    run_fixed, images: torch.Tensor, max_batch: int | None, fixed: int | None = None
) -> list[np.ndarray]:
    """Splits ``images`` into chunks a runtime accepts: at most ``max_batch`` each, and padded
    with zeros to exactly ``fixed`` when the graph has a static batch dimension.
    ``run_fixed`` returns the graph's outputs (a list); each comes back concatenated."""
    step = fixed or max_batch or images.shape[0]
    chunks: list[list[np.ndarray]] = []
    for start in range(0, images.shape[0], step):
        chunk = images[start : start + step]
        n = chunk.shape[0]
        if fixed and n < fixed:
            chunk = torch.cat([chunk, chunk.new_zeros((fixed - n, *chunk.shape[1:]))])
        chunks.append([np.asarray(o)[:n] for o in run_fixed(chunk)])
    return [np.concatenate(parts) for parts in zip(*chunks)]
