"""Eager PyTorch on CPU or CUDA; fp32, or an fp16 / bf16 model; a classifier or a detector.

mmdet's detectors (the release's Mask R-CNN, Cascade Mask R-CNN and RetinaNet) take each image
resized to fit, in its own shape: a batch runs one forward per input shape, so each image's
detections are what it would get alone (padding it to a larger neighbour would move the
neighbourhood attention's border windows and change them). The embedded segmenter (a RetinaNet
with a mask head, models.segmenter) runs on its square canvas like the RetinaNet and answers
each detection's mask probabilities beside its box.

The only backend that also returns the D blocks' sampling points (classifiers).

With ``cuda_graphs`` the forward is captured at warm-up as CUDA graphs, one per batch-size
bucket (powers of two up to the max batch; a batch runs zero-padded in the next bucket), and
checked against the eager model (eager on any failure). An eager DAT launches about a
thousand kernels per forward from Python, and every launch must win the GIL back from the
event loop and the decoding threads; a replay is a single call.

With ``compile`` as well, the largest bucket's graph replays the forward compiled by
``torch.compile`` (inductor fuses the memory-bound glue between the matmuls, which is much of
a large batch's time on a GPU: docs/benchmarks.md). Only that bucket: torch.compile recompiles for ranges
of batch sizes (on the CPU 1, 2-3, 4-7, 8+), each a compile of its own, and a saturated
server runs full batches.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import (
    DAT,
    RCNN,
    RetinaNet,
    create_model,
    get_spec,
    load_checkpoint,
    read_state_dict,
)
from models.labels import read_labels
from models.transforms import KeepRatioResize

from ..devices import normalize_device
from .base import (
    Backend,
    BackendError,
    DetectionOutput,
    ImageBatch,
    ImageOutput,
    KeepRatioInput,
    ModelMeta,
    Points,
    file_version,
    split_detections,
)

log = logging.getLogger("service.backends.torch")

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str) -> str:
    """``cpu`` or ``cuda:N`` (:func:`service.devices.normalize_device`), as a BackendError."""
    try:
        return normalize_device(device)
    except ValueError as exc:
        raise BackendError(str(exc)) from None


def resolve_precision(precision: str, device: str) -> str:
    """auto: fp16 on CUDA; fp32 on CPU, where bf16 only pays off for large models on CPUs
    with AMX and is slower than fp32 for the small default model (docs/benchmarks.md)."""
    if precision != "auto":
        return precision
    return "fp16" if device.startswith("cuda") else "fp32"


class TorchBackend(Backend):
    name = "torch"
    supports_points = True
    takes_device_inputs = True

    def __init__(
        self,
        model: str | Path | Mapping[str, Any] | DAT | RetinaNet | RCNN = "dat_digits",
        *,
        checkpoint: str | Path | None = None,
        labels: str | Path | None = None,
        device: str = "auto",
        precision: str = "auto",
        threads: int | None = None,
        cuda_graphs: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self._source = model
        self._checkpoint = Path(checkpoint) if checkpoint else None
        self._labels = Path(labels) if labels else None
        self._threads = threads
        self.cpu_threads: int | None = None  # known once loaded
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        if self.precision not in ("fp32", *_DTYPES):
            raise BackendError(f"unknown precision {self.precision!r}")
        self.model: DAT | RetinaNet | RCNN | None = None
        self._use_graphs = cuda_graphs and self.device.startswith("cuda")
        self._compile = compile and self._use_graphs
        self._graphs: CudaGraphs | None = None

    def _build(self) -> tuple[DAT | RetinaNet | RCNN, str]:
        if isinstance(self._source, (DAT, RetinaNet, RCNN)):
            # A copy: moving to another device or dtype must not change the caller's model.
            return copy.deepcopy(self._source), "in-memory"
        labels = read_labels(self._labels) if self._labels else None
        if self._checkpoint is None:
            model = create_model(self._source, labels=labels)
            weights = _embedded_weights(self._source)
            if weights is None:
                log.warning(
                    "serving %s with random weights (no checkpoint given and none embedded)", model.info.name
                )
                return model, "untrained"
            return model, file_version(weights)
        state = read_state_dict(self._checkpoint)
        model = create_model(self._source, labels=labels, pretrained=False)
        classes = _checkpoint_classes(model, state)
        if classes is not None and classes != model.num_classes:
            model = create_model(self._source, labels=labels, pretrained=False, num_classes=classes)
        load_checkpoint(model, state)
        return model, file_version(self._checkpoint)

    def load(self) -> ModelMeta:
        if self._threads:
            torch.set_num_threads(self._threads)
        self.cpu_threads = torch.get_num_threads()  # this (inference) thread's own count
        model, version = self._build()
        # Half precision runs a half model (not autocast): faster, and the model keeps its
        # sampling positions and grid samples in float32 by itself.
        self.dtype = _DTYPES.get(self.precision, torch.float32)
        self.model = model.eval().to(self.device, self.dtype)
        info = model.info
        self.meta = ModelMeta(
            info.name,
            version,
            tuple(info.labels),
            info.preprocessing,
            task=model.task,
            category_ids=tuple(info.category_ids),
            max_detections=getattr(model.config, "max_per_img", 0),
            mask_threshold=getattr(model.config, "mask_threshold", 0.5),
        )
        if not isinstance(model, DAT):  # sampling points and CUDA graphs: DAT's own forward
            self.supports_points = False
            self._use_graphs = False
        return self.meta

    def run(self, images: ImageBatch, points: bool = False) -> list[ImageOutput] | list[DetectionOutput]:
        if self.model is None:
            raise BackendError("run before load")
        if isinstance(images, list):
            return self._run_keeping_ratio(images)
        x = images.to(self.device, non_blocking=True).to(self.dtype)
        positions: list | None
        if isinstance(self.model, RetinaNet):
            with torch.inference_mode():
                found = self.model(x)
            outputs = split_detections(*(t.cpu().numpy() for t in found[:3]))
            masks = getattr(found, "masks", None)  # a RetinaNetSegmenter's, over each box
            if masks is None:
                return outputs
            kept = (found.labels >= 0).cpu().numpy()
            masks_np = masks.float().cpu().numpy()
            return [replace(o, masks=masks_np[b][kept[b]]) for b, o in enumerate(outputs)]
        if not isinstance(self.model, DAT):
            raise BackendError(
                f"{self.model.info.name} takes images of their own shapes, not a (B, 3, S, S) batch"
            )
        with torch.inference_mode():
            if self._graphs is not None and x.shape[0] <= self._graphs.max_batch:
                logits, positions = self._graphs.run(x)
                positions = positions if points else None
            elif points:
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
        return [ImageOutput(row, tuple(per_image[i]) if points else None) for i, row in enumerate(logits_np)]

    def _run_keeping_ratio(self, images: list[KeepRatioInput]) -> list[DetectionOutput]:
        """One forward per input shape (module docstring); boxes come back in each original
        image's pixels (mmdet's ``rescale=True``), masks as the head's probabilities per box."""
        model = self.model
        if model is None:
            raise BackendError("run before load")
        if not isinstance(model.info.preprocessing, KeepRatioResize):
            raise BackendError(
                f"{model.info.name} takes a (B, 3, S, S) batch, not images of their own shapes"
            )
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, (tensor, _) in enumerate(images):
            by_shape.setdefault(tuple(tensor.shape), []).append(i)
        outputs: dict[int, DetectionOutput] = {}
        for members in by_shape.values():
            batch, sizes, factors, _ = KeepRatioResize.collate([images[i] for i in members])
            x = batch.to(self.device, non_blocking=True).to(self.dtype)
            with torch.inference_mode():
                found = model(x, sizes.to(self.device), factors.to(self.device))
            masks = getattr(found, "masks", None)
            for j, i in enumerate(members):
                kept = found.labels[j] >= 0
                outputs[i] = DetectionOutput(
                    found.boxes[j][kept].float().cpu().numpy(),
                    found.scores[j][kept].float().cpu().numpy(),
                    found.labels[j][kept].cpu().numpy().astype(np.int64),
                    masks=None if masks is None else masks[j][kept].float().cpu().numpy(),
                    in_image_pixels=True,
                )
        return [outputs[i] for i in range(len(images))]

    def warmup(self, batch_sizes) -> None:  # noqa: ANN001 - as Backend.warmup
        if self._use_graphs and self.model is not None:
            self._graphs = self._capture(max(batch_sizes), compiled=self._compile)
            if self._graphs is None and self._compile:
                self._graphs = self._capture(max(batch_sizes), compiled=False)
        super().warmup(batch_sizes)

    def _capture(self, max_batch: int, compiled: bool) -> CudaGraphs | None:
        """The graphs, checked against eager; None (and a warning) on any failure."""
        what = "compiled " if compiled else ""
        model, meta = self.model, self.meta
        if not isinstance(model, DAT) or meta is None or meta.input_size is None:
            return None  # warmup captures a loaded classifier only
        try:
            with torch.inference_mode():
                graphs = CudaGraphs(
                    model, max_batch, meta.input_size, self.device, self.dtype, compiled=compiled
                )
                graphs.check_against(model)
            log.info(
                f"captured {what}CUDA graphs",
                extra={"buckets": graphs.sizes, "compiled_bucket": graphs.compiled_bucket},
            )
            return graphs
        except Exception as exc:  # noqa: BLE001 - eager (or uncompiled graphs) still work
            torch.cuda.synchronize(self.device)
            log.warning(
                f"{what}CUDA graph capture failed, running "
                f"{'uncompiled graphs' if compiled else 'eager'}: %s",
                exc,
            )
            return None

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "threads": self.cpu_threads if self.device == "cpu" else None,
            "cuda_graphs": self._graphs.sizes if self._graphs is not None else None,
            "compiled_batch": self._graphs.compiled_bucket if self._graphs is not None else None,
        }


class CudaGraphs:
    """A DAT's ``forward_with_points`` captured per bucket size, largest first, in one memory
    pool (graphs replay one at a time on the inference thread and their outputs are copied out
    before the next replay, so sharing the pool's scratch memory is safe). ``compiled``: the
    largest bucket captures the ``torch.compile``'d forward instead."""

    def __init__(
        self, model: DAT, max_batch: int, size: int, device: str, dtype: torch.dtype, compiled: bool = False
    ) -> None:
        self.max_batch = max_batch
        self.sizes = sorted({min(2**i, max_batch) for i in range(max_batch.bit_length() + 1)})
        self.compiled_bucket = self.sizes[-1] if compiled else None
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, Any]] = {}
        pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream(device)
        for n in reversed(self.sizes):
            forward = model.forward_with_points
            if n == self.compiled_bucket:
                # dynamic=False: this one shape; compiled in the warm-up calls below, before capture
                forward = torch.compile(model.forward_with_points, dynamic=False)
            static = torch.zeros(n, 3, size, size, device=device, dtype=dtype)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(2):  # lazy initialisation (cuBLAS handles, ...) outside capture
                    forward(static)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                logits, positions, _ = forward(static)
            self._graphs[n] = (graph, static, (logits, positions))
        torch.cuda.synchronize(device)

    def check_against(self, model: DAT) -> None:
        """Replays must answer as the eager model does (a padded bucket included)."""
        static = self._graphs[self.sizes[-1]][1]
        g = torch.Generator(device=static.device).manual_seed(0)
        for n in {1, 3 if self.max_batch >= 3 else 1, self.max_batch}:
            x = torch.randn(n, *static.shape[1:], generator=g, device=static.device).to(static.dtype)
            eager = model(x).float()
            replayed = self.run(x)[0].float()
            scale = eager.abs().max().clamp_min(1.0)
            error = ((replayed - eager).abs().max() / scale).item()
            tolerance = 1e-3 if static.dtype == torch.float32 else 3e-2
            if not error <= tolerance:
                raise RuntimeError(
                    f"CUDA graph replay differs from eager at batch {n} "
                    f"(relative error {error:.2e} > {tolerance:g})"
                )

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
        n = x.shape[0]
        bucket = next(b for b in self.sizes if b >= n)
        graph, static, (logits, positions) = self._graphs[bucket]
        static[:n].copy_(x)
        if n < bucket:
            static[n:].zero_()
        graph.replay()
        return logits[:n], [[p[:n] if p is not None else None for p in stage] for stage in positions]


def _checkpoint_classes(model: DAT | RetinaNet | RCNN, state: Mapping[str, torch.Tensor]) -> int | None:
    """The number of classes a checkpoint's head was trained for (None: no head in it, or an
    mmdet two-stage detector, whose checkpoint must match its config: loading says where not)."""
    if isinstance(model, RCNN):
        return None
    if isinstance(model, RetinaNet):
        head = state.get("bbox_head.retina_cls.weight")
        return int(head.shape[0]) // model.config.num_anchors if head is not None else None
    head = state.get("cls_head.weight")
    return int(head.shape[0]) if head is not None else None


def _embedded_weights(source: Any) -> Path | None:
    """The weights file a registered model ships with, if any."""
    if not isinstance(source, str):
        return None
    try:
        weights = get_spec(source).weights
    except KeyError:
        return None
    return weights if weights is not None and weights.is_file() else None
