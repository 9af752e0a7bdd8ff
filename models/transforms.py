"""Evaluation preprocessing, defined once: the service, export validation and tests import it.

The official evaluation (``data/build.py`` of the DAT release) resizes a PIL image to an
(S, S) square with S = int(256 / 224 * size), bicubic, centre-crops ``size``, then
normalises with the ImageNet mean and std.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .resize_order import pass_sizes, vertical_first

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_INTERPOLATIONS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes a model input of shape (3, input_size, input_size)."""

    input_size: int = 224
    crop_pct: float = 224 / 256  # resize to int(input_size / crop_pct), then centre-crop
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError("crop_pct must be in (0, 1]")

    @property
    def resize_size(self) -> int:
        # The official code computes int((256 / 224) * size); crop_pct = 224/256 reproduces it.
        return int(round(self.input_size / self.crop_pct, 6))

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
        top = int(round((size - crop) / 2.0))  # torchvision's CenterCrop rounds the offsets the same way
        resample = _INTERPOLATIONS[self.interpolation]
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
        top = int(round((size - self.input_size) / 2.0))
        x = x[:, :, top : top + self.input_size, top : top + self.input_size] / 255.0
        x = ((x - _per_channel(self.mean, x.device)) / _per_channel(self.std, x.device)).contiguous()
        return x[0] if one else x

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
        top = int(round((size - self.input_size) / 2.0))
        crop = x[0, :, top : top + self.input_size, top : top + self.input_size].permute(1, 2, 0)
        out = np.empty((3, self.input_size, self.input_size), np.float32)
        return torch.from_numpy(normalize_into(out, crop.numpy(), self.mean, self.std))


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
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}")

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
        resized = image.resize(self.resized_size(*image.size), _INTERPOLATIONS[self.interpolation])
        canvas = np.zeros((3, self.input_size, self.input_size), np.float32)
        normalize_into(canvas[:, : resized.height, : resized.width], np.asarray(resized), self.mean, self.std)
        return torch.from_numpy(canvas)


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
        table = _mmcv_normalization_table(tuple(self.mean), tuple(self.std))
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


def _cv2_linear_taps(source: int, target: int, clamp: bool) -> tuple[torch.Tensor, ...]:
    """OpenCV's INTER_LINEAR taps along one axis: the two source indices and their 11-bit weights."""
    scale = 1.0 / (target / source)  # OpenCV: 1 / inv_scale, in double
    f = ((np.arange(target, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(f).astype(np.int64)
    f = (f - first.astype(np.float32)).astype(np.float32)
    if clamp:  # columns: a tap outside the image moves onto the border with all the weight
        outside = (first < 0) | (first >= source - 1)
        f[outside] = 0
        first = np.clip(first, 0, source - 1)
    w0 = np.rint((np.float32(1) - f) * np.float32(2048)).astype(np.int32)  # cvRound: half to even
    w1 = np.rint(f * np.float32(2048)).astype(np.int32)
    return (
        torch.from_numpy(np.clip(first, 0, source - 1)),
        torch.from_numpy(np.clip(first + 1, 0, source - 1)),
        torch.from_numpy(w0),
        torch.from_numpy(w1),
    )


def cv2_resize_linear(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)`` for uint8
    (H, W, C) pixels, bit-exact: a horizontal pass in 11-bit fixed point (int32), then the
    vertical one as OpenCV's SIMD code rounds it, ((a >> 4) * wa >> 16) + ((b >> 4) * wb >> 16),
    plus 2, shifted right by 2."""
    source = torch.from_numpy(pixels.astype(np.int32))  # a writable copy
    x0, x1, a0, a1 = _cv2_linear_taps(source.shape[1], width, clamp=True)
    y0, y1, b0, b1 = _cv2_linear_taps(source.shape[0], height, clamp=False)
    rows = source[:, x0] * a0[None, :, None] + source[:, x1] * a1[None, :, None]
    top = ((rows[y0] >> 4) * b0[:, None, None]) >> 16
    bottom = ((rows[y1] >> 4) * b1[:, None, None]) >> 16
    return ((top + bottom + 2) >> 2).clamp_(0, 255).to(torch.uint8).numpy()


@functools.lru_cache(maxsize=16)
def _mmcv_normalization_table(
    mean: tuple[float, float, float], std: tuple[float, float, float]
) -> np.ndarray:
    """(3, 256): (value - mean) / std in float32 for each 0-255 value, as mmcv's imnormalize."""
    values = np.arange(256, dtype=np.float32)[None, :]
    return (values - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None]


def normalize_into(
    out: np.ndarray, pixels: np.ndarray, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> np.ndarray:
    """uint8 RGB pixels (H, W, 3) -> ``out`` (3, H, W) float32, ``(pixels / 255 - mean) / std``.

    A pixel has 256 values per channel, so the arithmetic is done once per value (in float32,
    as ToTensor + Normalize do: bit-identical) and each pixel looks its result up: one pass
    instead of three float passes over the image and a transpose (docs/benchmarks.md)."""
    table = _normalization_table(tuple(mean), tuple(std))  # hashable, whatever sequence came in
    for channel in range(3):
        np.take(table[channel], pixels[..., channel], out=out[channel], mode="clip")
    return out


@functools.lru_cache(maxsize=16)
def _normalization_table(mean: tuple[float, float, float], std: tuple[float, float, float]) -> np.ndarray:
    values = np.arange(256, dtype=np.float32)[None, :] / 255.0  # (1, 256)
    return (values - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None]


@functools.lru_cache(maxsize=16)
def _per_channel(values: tuple[float, float, float], device: torch.device) -> torch.Tensor:
    """A (3, 1, 1) constant, made once per device (not copied to a GPU for every image)."""
    return torch.tensor(values, dtype=torch.float32, device=device).view(3, 1, 1)


_Kind = TypeVar("_Kind")


def preprocessing_from_dict(data: dict) -> Preprocessing | Letterbox | KeepRatioResize:
    """Reads any kind back from its ``to_dict`` form (manifests store it)."""
    if data.get("mode") == Letterbox.mode:
        return Letterbox.from_dict(data)
    if data.get("mode") == KeepRatioResize.mode:
        return KeepRatioResize.from_dict(data)
    return Preprocessing.from_dict(data)


def expect_pipeline(transform: object, kind: type[_Kind]) -> _Kind:
    """``transform`` where only one kind will do (a RetinaNet's :class:`Letterbox`, an mmdet
    detector's :class:`KeepRatioResize`), or a TypeError naming both."""
    if not isinstance(transform, kind):
        raise TypeError(f"expected a {kind.__name__} pipeline, got {type(transform).__name__}")
    return transform
