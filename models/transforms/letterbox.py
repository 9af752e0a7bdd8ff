"""The RetinaNet detectors' preprocessing: letterboxing into a square canvas."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from .normalization import IMAGENET_MEAN, IMAGENET_STD, normalize_into
from .resampling import INTERPOLATIONS


@dataclass(frozen=True)
class Letterbox:
    """Detection preprocessing: keep the aspect ratio, fit the image into an (S, S) canvas,
    pad on the right and bottom (as mmdet's Resize(keep_ratio) + Pad), normalise.

    The padding is zero after normalisation. Boxes predicted on the canvas map back to the
    original image with :meth:`scale`.
    """

    input_size: int = 1120
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    mode = "letterbox"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}")

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the image inside the canvas."""
        ratio = min(self.input_size / width, self.input_size / height)
        return (
            max(1, min(self.input_size, int(width * ratio + 0.5))),
            max(1, min(self.input_size, int(height * ratio + 0.5))),
        )

    def scale(self, width: int, height: int) -> tuple[float, float]:
        """(sx, sy): canvas pixels per original pixel, horizontally and vertically."""
        new_w, new_h = self.resized_size(width, height)
        return new_w / width, new_h / height

    def to_dict(self) -> dict:
        return {"mode": self.mode, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> Letterbox:
        keys = {"input_size", "interpolation", "mean", "std"}
        kwargs: dict[str, Any] = {
            k: tuple(v) if k in ("mean", "std") else v for k, v in data.items() if k in keys
        }
        return cls(**kwargs)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """An RGB PIL image -> normalised float32 tensor (3, input_size, input_size)."""
        if image.mode != "RGB":
            raise ValueError(f"expected an RGB image, got mode {image.mode!r}")
        resized = image.resize(self.resized_size(*image.size), INTERPOLATIONS[self.interpolation])
        canvas = np.zeros((3, self.input_size, self.input_size), np.float32)
        normalize_into(canvas[:, : resized.height, : resized.width], np.asarray(resized), self.mean, self.std)
        return torch.from_numpy(canvas)
