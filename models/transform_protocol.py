"""``Transform``: what the service, the exporter and the manifest need of a model's fixed-size
preprocessing, whatever its kind (``transforms.Preprocessing`` for classifiers,
``transforms.Letterbox`` for detectors). ``KeepRatioResize`` makes inputs of each image's own
size and is not one."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from PIL import Image


@runtime_checkable
class Transform(Protocol):
    """An RGB image in, a (3, input_size, input_size) float32 tensor out, and a dict form to store."""

    @property
    def input_size(self) -> int: ...

    def __call__(self, image: Image.Image) -> torch.Tensor: ...

    def to_dict(self) -> dict: ...
