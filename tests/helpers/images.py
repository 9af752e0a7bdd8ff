"""Pictures for requests: encoded bytes of a PIL image, deterministic random ones, photo-like
JPEGs, and the pixels nvJPEG would decode from them."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def image_bytes(image: Image.Image, fmt: str = "PNG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def sample_png(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    """A deterministic, non-uniform picture (different seeds give different predictions)."""
    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(size[1], size[0], 3, generator=g) * 255).to(torch.uint8).numpy()
    return image_bytes(Image.fromarray(pixels, "RGB"))


def photo(width: int = 48, height: int = 40, seed: int = 0) -> Image.Image:
    """Smooth colour gradients with noise: survives JPEG well, and no two pixels alike."""
    g = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    pixels = pixels + g.normal(0, 8, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def jpeg(image: Image.Image | None = None, orientation: int | None = None, **save) -> bytes:
    image = image or photo()
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        save["exif"] = exif
    return image_bytes(image, "JPEG", quality=95, **save)


def pillow_pixels(encoded: list[torch.Tensor]) -> list[torch.Tensor]:
    """What nvJPEG returns, computed by Pillow: (3, H, W) uint8 as stored (no EXIF turn)."""
    out = []
    for data in encoded:
        image = Image.open(io.BytesIO(data.numpy().tobytes()))
        out.append(torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1))
    return out
