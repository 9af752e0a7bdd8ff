"""The classifiers' evaluation transform: resize, centre crop, normalise.

The official evaluation (``data/build.py`` of the DAT release) resizes a PIL image to an
(S, S) square with S = int(256 / 224 * size), bicubic, centre-crops ``size``, then
normalises with the ImageNet mean and std.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..resize_order import pass_sizes, vertical_first
from . import pillow_resample
from .normalization import IMAGENET_MEAN, IMAGENET_STD, normalization_table, normalize_into, per_channel
from .resampling import INTERPOLATIONS


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes a model input of shape (3, input_size, input_size)."""

    input_size: int = 224
    crop_pct: float = 224 / 256  # resize to int(input_size / crop_pct), then centre-crop
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError("crop_pct must be in (0, 1]")

    @property
    def resize_size(self) -> int:
        # The official code computes int((256 / 224) * size); crop_pct = 224/256 reproduces it.
        return int(round(self.input_size / self.crop_pct, 6))

    @property
    def crop_offset(self) -> int:
        """Where the centre crop starts in the ``resize_size`` square, on both axes (torchvision's
        CenterCrop rounds the offsets the same way)."""
        return int(round((self.resize_size - self.input_size) / 2.0))

    def to_dict(self) -> dict:
        return {**asdict(self), "resize_size": self.resize_size}

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        keys = {"input_size", "crop_pct", "interpolation", "mean", "std"}
        kwargs: dict[str, Any] = {
            k: tuple(v) if k in ("mean", "std") else v for k, v in data.items() if k in keys
        }
        return cls(**kwargs)

    def resize_and_crop(self, image: Image.Image) -> Image.Image:
        """Square resize to ``resize_size`` then centre crop to ``input_size`` (RGB in, RGB out)."""
        size, crop = self.resize_size, self.input_size
        top = self.crop_offset
        resample = INTERPOLATIONS[self.interpolation]
        if self._crop_resizes_exactly(*image.size):
            # Only the pixels the crop keeps (a quarter fewer for 224 of 256), the same values:
            # Pillow places each output pixel at box start + (i + 0.5) * scale.
            scale_x, scale_y = image.width / size, image.height / size
            box = (top * scale_x, top * scale_y, (top + crop) * scale_x, (top + crop) * scale_y)
            return image.resize((crop, crop), resample, box=box)
        image = image.resize((size, size), resample)
        return image.crop((top, top, top + crop, top + crop))

    def _crop_resizes_exactly(self, width: int, height: int) -> bool:
        """Whether resizing straight into the crop gives the very values of resize-then-crop:
        a power-of-two resize size makes the box's float32 corners and every sampling position
        exact binary fractions, and Pillow must order its two passes the same way for both."""
        size, crop = self.resize_size, self.input_size
        return (
            crop < size
            and size & (size - 1) == 0
            and vertical_first(width, height, size) == vertical_first(width, height, crop)
        )

    def normalize(self, image: Image.Image) -> np.ndarray:
        """RGB uint8 image -> float32 (3, H, W), scaled to [0, 1] and normalised."""
        pixels = np.asarray(image)
        return normalize_into(np.empty((3, *pixels.shape[:2]), np.float32), pixels, self.mean, self.std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """An RGB PIL image -> normalised float32 tensor (3, input_size, input_size)."""
        if image.mode != "RGB":
            raise ValueError(f"expected an RGB image, got mode {image.mode!r}")
        return torch.from_numpy(self.normalize(self.resize_and_crop(image)))

    @property
    def runs_on_tensors(self) -> bool:
        """Whether :meth:`from_pixels` can compute this transform (torch has no antialiased
        nearest-neighbour resize that matches Pillow's)."""
        return self.interpolation in ("bicubic", "bilinear")

    def from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """``__call__`` computed with torch on any device, so that a GPU can take the resize off
        the CPU: uint8 RGB pixels (H, W, 3) -> normalised float32 (3, input_size, input_size);
        images of one size at once: (N, H, W, 3) -> (N, 3, input_size, input_size).

        Pillow resizes in two separable antialiased passes (in the order ``resize_order.pass_sizes``
        gives), rounding to 8 bits after each; doing the same makes torch's antialiased resize
        agree with it on all but a few values in 10^3 (bicubic: 10^4), and those by one level
        (tested)."""
        if not self.runs_on_tensors:
            raise ValueError(f"no tensor resize matches Pillow's {self.interpolation!r}")
        if pixels.dtype != torch.uint8 or pixels.dim() not in (3, 4) or pixels.shape[-1] != 3:
            raise ValueError(
                f"expected uint8 (H, W, 3) or (N, H, W, 3) pixels, got {pixels.dtype} {tuple(pixels.shape)}"
            )
        one = pixels.dim() == 3
        size = self.resize_size
        x = (pixels[None] if one else pixels).permute(0, 3, 1, 2).float()
        for target in pass_sizes(x.shape[3], x.shape[2], size):
            if tuple(x.shape[2:]) != target:
                x = (
                    F.interpolate(
                        x, size=target, mode=self.interpolation, antialias=True, align_corners=False
                    )
                    .round_()
                    .clamp_(0, 255)
                )
        top = self.crop_offset
        x = x[:, :, top : top + self.input_size, top : top + self.input_size] / 255.0
        x = ((x - per_channel(self.mean, x.device)) / per_channel(self.std, x.device)).contiguous()
        return x[0] if one else x

    def from_array(self, pixels: np.ndarray) -> torch.Tensor:
        """``__call__`` bit for bit on uint8 RGB pixels (H, W, 3), about 4x faster: Pillow's
        resampling arithmetic compiled with numba (:mod:`.pillow_resample`), only the crop
        computed. Bicubic and bilinear; numba must be installed."""
        if self.interpolation not in pillow_resample.FILTERS:
            raise ValueError(f"the compiled resize has no {self.interpolation!r} filter")
        size, crop = self.resize_size, self.input_size
        top = self.crop_offset
        kept = pillow_resample.resize_and_crop(pixels, size, top, top, crop, crop, self.interpolation)
        table = normalization_table(tuple(self.mean), tuple(self.std))  # hashable, whatever came in
        return torch.from_numpy(pillow_resample.planes(kept, table))

    def from_uint8(self, pixels: np.ndarray) -> torch.Tensor:
        """``__call__`` on the CPU, about 3x faster: uint8 RGB pixels (H, W, 3) -> normalised
        float32 (3, input_size, input_size).

        torch's uint8 antialiased resize is Pillow's algorithm (separable passes, fixed-point
        weights) in vectorised code; its values differ from Pillow's by at most one level in
        255, on a few pixels in 10^3 (tested)."""
        if not self.runs_on_tensors:
            raise ValueError(f"no tensor resize matches Pillow's {self.interpolation!r}")
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"expected uint8 (H, W, 3) pixels, got {pixels.dtype} {pixels.shape}")
        if not pixels.flags.writeable:  # Pillow's arrays are read-only; torch wants to own writable ones
            pixels = pixels.copy()
        size = self.resize_size
        x = torch.from_numpy(pixels).permute(2, 0, 1)[None]  # channels-last: the kernel's fast layout
        passes = pass_sizes(x.shape[3], x.shape[2], size)
        if passes[0][0] != x.shape[2]:  # vertical first: two calls (one call runs horizontal first)
            x = F.interpolate(x, size=passes[0], mode=self.interpolation, antialias=True)
        if tuple(x.shape[2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode=self.interpolation, antialias=True)
        top = self.crop_offset
        crop = x[0, :, top : top + self.input_size, top : top + self.input_size].permute(1, 2, 0)
        out = np.empty((3, self.input_size, self.input_size), np.float32)
        return torch.from_numpy(normalize_into(out, crop.numpy(), self.mean, self.std))
