"""mmdet 2.x's test pipeline (the R-CNN and mmdet RetinaNet detectors' preprocessing): resize
keeping the aspect ratio, normalise, pad to a divisor; and each image's meta."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from .cv2_resize import cv2_resize_linear
from .normalization import mmcv_normalization_table


class ImageMeta(NamedTuple):
    """Where a detection input came from: mmdet's img_meta for one image."""

    original_size: tuple[int, int]  # (height, width) of the decoded image
    image_size: tuple[int, int]  # (height, width) after the resize, inside the padding
    scale_factor: tuple[float, float, float, float]  # mmdet's (w, h, w, h): resized / original


@dataclass(frozen=True)
class KeepRatioResize:
    """mmdet 2.x's test pipeline: ``Resize(img_scale, keep_ratio=True)`` + ``Normalize`` + ``Pad``.

    - the scale factor is mmcv's ``rescale_size``: min(long bound / long side, short bound /
      short side); the new size ``int(w * s + 0.5)``, ``int(h * s + 0.5)``;
    - the resize is OpenCV's ``INTER_LINEAR`` on uint8 (mmcv's default backend), reproduced
      exactly: 11-bit fixed-point weights, columns clamped at the border, rows not (the edge
      row is mixed with itself), the vertical pass rounded as its SIMD code does;
    - ``(pixel - mean) / std`` in float32 on 0-255 values (``to_rgb``: the model takes RGB, else
      BGR as OpenCV decodes);
    - zeros on the right and bottom up to a multiple of ``size_divisor``.

    Boxes predicted on the input map back to the original image by dividing by
    ``ImageMeta.scale_factor`` (per axis: the rounding makes the two differ slightly).
    """

    img_scale: tuple[int, int] = (1333, 800)
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    to_rgb: bool = True
    size_divisor: int = 32
    mode = "keep_ratio"

    def __post_init__(self) -> None:
        if len(self.img_scale) != 2 or min(self.img_scale) < 1 or self.size_divisor < 1:
            raise ValueError(
                f"img_scale must be two positive sides and size_divisor positive, got "
                f"{self.img_scale}, {self.size_divisor}"
            )

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the resized image (mmcv.rescale_size)."""
        scale = min(max(self.img_scale) / max(width, height), min(self.img_scale) / min(width, height))
        return int(width * float(scale) + 0.5), int(height * float(scale) + 0.5)

    def meta(self, width: int, height: int) -> ImageMeta:
        new_w, new_h = self.resized_size(width, height)
        w_scale, h_scale = float(np.float32(new_w / width)), float(np.float32(new_h / height))
        return ImageMeta((height, width), (new_h, new_w), (w_scale, h_scale, w_scale, h_scale))

    def padded_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the model input: the resized image padded to the divisor."""
        new_w, new_h = self.resized_size(width, height)
        d = self.size_divisor
        return -(-new_w // d) * d, -(-new_h // d) * d

    @property
    def canvas(self) -> int:
        """Side of the square that holds any input this pipeline makes (either orientation):
        the longer bound padded to the divisor. An export takes inputs of this fixed size."""
        return -(-max(self.img_scale) // self.size_divisor) * self.size_divisor

    def to_dict(self) -> dict:
        return {"mode": self.mode, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> KeepRatioResize:
        keys = {"img_scale", "mean", "std", "to_rgb", "size_divisor"}
        kwargs: dict[str, Any] = {
            k: tuple(v) if k in ("img_scale", "mean", "std") else v for k, v in data.items() if k in keys
        }
        return cls(**kwargs)

    def prepare(self, image: Image.Image) -> tuple[torch.Tensor, ImageMeta]:
        """An RGB PIL image -> the normalised, padded float32 (3, H, W) input and its meta."""
        if image.mode != "RGB":
            raise ValueError(f"expected an RGB image, got mode {image.mode!r}")
        meta = self.meta(*image.size)
        pixels = np.asarray(image)
        if not self.to_rgb:
            pixels = pixels[..., ::-1]
        resized = cv2_resize_linear(pixels, meta.image_size[1], meta.image_size[0])
        pad_w, pad_h = self.padded_size(*image.size)
        out = np.zeros((3, pad_h, pad_w), np.float32)
        table = mmcv_normalization_table(tuple(self.mean), tuple(self.std))
        for channel in range(3):
            np.take(
                table[channel],
                resized[..., channel],
                out=out[channel, : resized.shape[0], : resized.shape[1]],
            )
        return torch.from_numpy(out), meta

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.prepare(image)[0]

    def batch(
        self, images: list[Image.Image]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[ImageMeta]]:
        """Images -> (B, 3, H, W) inputs padded to the largest, their (B, 2) resized (height,
        width), (B, 4) scale factors, and metas (the detector's ``image_sizes`` and
        ``scale_factors``)."""
        return self.collate([self.prepare(image) for image in images])

    @staticmethod
    def collate(
        prepared: Sequence[tuple[torch.Tensor, ImageMeta]],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[ImageMeta]]:
        """Prepared images (each input and its meta) -> the batch, as :meth:`batch`."""
        height = max(x.shape[1] for x, _ in prepared)
        width = max(x.shape[2] for x, _ in prepared)
        batch = torch.zeros(len(prepared), 3, height, width)
        for i, (x, _) in enumerate(prepared):
            batch[i, :, : x.shape[1], : x.shape[2]] = x
        metas = [meta for _, meta in prepared]
        sizes = torch.tensor([meta.image_size for meta in metas], dtype=torch.float32)
        factors = torch.tensor([meta.scale_factor for meta in metas], dtype=torch.float32)
        return batch, sizes, factors, metas
