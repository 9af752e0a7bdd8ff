"""The server's side of each model task (:mod:`models.tasks`).

A :class:`ServedTask` says, for one task, which of the server's two slots serves it (the
classifier's, answered by /classify, or the detector's, by /detect), which ``masks`` formats its
route can answer, whether --gpu-decode applies, how an exported graph's batch outputs become
one output per image, and the v2 tensors those outputs fill. Routes, backends and the runtime
look the model's task up here (:func:`served`) and ask it, instead of comparing tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import get_args

import numpy as np

from models import CLASSIFICATION, DETECTION, INSTANCE_SEGMENTATION, Task
from models.transforms import ImageMeta

from . import v2protocol as v2
from .backends.base import DetectionOutput, ImageOutput, ModelMeta, split_detections
from .masks import MaskFormat

PerImage = list[ImageOutput] | list[DetectionOutput]
# a graph's batch outputs (in the task's order) -> one output per image
Splitter = Callable[[Sequence[np.ndarray], Sequence[ImageMeta] | None], PerImage]

_V2_DATATYPES = {"float32": "FP32", "int64": "INT64"}


def _logits(arrays: Sequence[np.ndarray], metas: Sequence[ImageMeta] | None) -> list[ImageOutput]:
    """[logits (B, classes)] -> each image's logits."""
    return [ImageOutput(row) for row in arrays[0].astype(np.float32, copy=False)]


def _detections(arrays: Sequence[np.ndarray], metas: Sequence[ImageMeta] | None) -> list[DetectionOutput]:
    """[boxes, scores, labels] and, for a task with masks, [masks] (B, M, ...) -> each image's
    detections, padding dropped (:func:`split_detections`)."""
    boxes, scores, labels, *masks = arrays
    return split_detections(boxes, scores, labels, masks[0] if masks else None, metas)


@dataclass(frozen=True)
class ServedTask:
    task: Task
    role: Task  # the slot that serves it: CLASSIFICATION (/classify) or DETECTION (/detect)
    splitter: Splitter
    mask_formats: tuple[MaskFormat, ...] = ("none",)  # what its route's ?masks= can answer
    gpu_decode: bool = False  # --gpu-decode decodes its JPEGs on the GPU (Settings.gpu_decode)

    def per_image(self, arrays: Sequence[np.ndarray], metas: Sequence[ImageMeta] | None = None) -> PerImage:
        """A graph's batch outputs, in the task's order -> one output per image; ``metas``: the
        keep-ratio images' resizes, whose scale factors take boxes back to each image's pixels."""
        return self.splitter(arrays, metas)

    def empty(self, images: int, classes: int) -> PerImage:
        """The outputs of ``images`` images that found nothing: zero logits, no detections."""
        return self.per_image(
            [np.zeros((images, *o.resolve(classes, 0)), o.dtype) for o in self.task.outputs]
        )

    def v2_outputs(self, meta: ModelMeta) -> list[v2.TensorSpec]:
        """The task's outputs as v2 tensors, with the batch axis first."""
        return [
            v2.TensorSpec(
                o.name, _V2_DATATYPES[o.dtype], (-1, *o.resolve(len(meta.labels), meta.max_detections))
            )
            for o in self.task.outputs
        ]

    def v2_tensors(
        self, meta: ModelMeta, results: Sequence[ImageOutput | DetectionOutput]
    ) -> dict[str, np.ndarray]:
        """A batch's per-image outputs as the graph's tensors (each output holds its task's
        outputs by name): logits, or the detections padded to the model's count."""
        tensors = {}
        for o in self.task.outputs:
            shape = o.resolve(len(meta.labels), meta.max_detections)
            tensor = np.full((len(results), *shape), o.fill, o.dtype)
            for i, r in enumerate(results):
                value = getattr(r, o.name)
                tensor[i, : len(value)] = value
            tensors[o.name] = tensor
        return tensors


SERVED: dict[str, ServedTask] = {
    s.task.name: s
    for s in (
        ServedTask(CLASSIFICATION, CLASSIFICATION, _logits, gpu_decode=True),
        ServedTask(DETECTION, DETECTION, _detections),
        ServedTask(INSTANCE_SEGMENTATION, DETECTION, _detections, mask_formats=get_args(MaskFormat)),
    )
}


def served(task: Task) -> ServedTask:
    """How the server serves ``task``; ValueError for a task it does not serve (a backbone's
    features)."""
    try:
        return SERVED[task.name]
    except KeyError:
        raise ValueError(f"the server does not serve {task} models; it serves {', '.join(SERVED)}") from None
