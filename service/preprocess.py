"""Bytes of an uploaded image -> the model's input tensor.

Decoding (limits checked on the header first, EXIF orientation, any mode to RGB) lives here;
resize / crop / normalise is the model's own ``models.Preprocessing``, never re-implemented.
Runs on the preprocessing thread pool, neither on the event loop nor on the inference thread.
"""

from __future__ import annotations

import io
import re
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from models import KeepRatioResize, Preprocessing

from .backends.base import KeepRatioInput
from .errors import BadImage, PayloadTooLarge

# Formats a client may send (JPEG includes MPO). Restricting ``Image.open`` also keeps Pillow
# away from plugins that shell out or parse exotic containers (EPS, PSD, ...).
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated image is a client error, not grey pixels


@dataclass(frozen=True)
class Decoded:
    tensor: torch.Tensor  # (3, S, S) float32, the model input
    width: int  # of the upright image, before resizing
    height: int
    format: str


def configure_pillow(max_image_pixels: int) -> None:
    """Pillow's own bomb guard, as a second line behind our header check."""
    Image.MAX_IMAGE_PIXELS = max_image_pixels


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Identifies the image and checks its header dimensions, without decoding pixels."""
    if not data:
        raise BadImage("the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard (set to the same limit) fired while reading the header
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "its size"
        raise PayloadTooLarge(f"image of {size} exceeds the limit of {max_pixels:,} pixels") from exc
    except UnidentifiedImageError as exc:
        raise BadImage(
            "cannot identify the image; supported formats: JPEG, PNG, GIF, WebP, BMP, TIFF"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - any parser failure on hostile input is a 400
        raise BadImage(f"cannot read the image header ({type(exc).__name__}: {exc})") from exc
    width, height = image.size
    if width < 1 or height < 1:
        raise BadImage(f"the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"image of {width}x{height} = {width * height:,} pixels exceeds the "
            f"limit of {max_pixels:,} pixels"
        )
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB: alpha composited on white, 16-bit and float scaled."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        # 16-bit samples (PNG/TIFF): the full 0..65535 range maps onto 0..255.
        array = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "F":
        # Floating-point samples (TIFF) are taken as intensities in [0, 1].
        array = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0) * 255.0
        return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK (Adobe inversion handled by Pillow), YCbCr, LAB, HSV


def decode(data: bytes, max_pixels: int) -> tuple[Image.Image, str]:
    """Bytes -> (upright RGB image, format name). The first frame of an animation; errors
    are 400 / 413."""
    image = open_image(data, max_pixels)
    fmt = image.format or ""
    try:
        image.seek(0)
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb(image), fmt
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"image exceeds the limit of {max_pixels:,} pixels") from exc
    except MemoryError as exc:
        raise PayloadTooLarge("image too large to decode") from exc
    except Exception as exc:  # noqa: BLE001 - truncated / corrupt data of any kind
        raise BadImage(
            f"cannot decode the image, it is truncated or corrupt ({type(exc).__name__}: {exc})"
        ) from exc


def prepare(
    data: bytes, preprocessing: Preprocessing, max_pixels: int, device: torch.device | None = None
) -> Decoded:
    """Decode, then the model's own resize / crop / normalise: with Pillow, or with torch on
    ``device`` (a ``Preprocessing`` whose ``runs_on_tensors``)."""
    image, fmt = decode(data, max_pixels)
    tensor = preprocessing(image) if device is None else _on_device(image, preprocessing, device)
    return Decoded(tensor, image.width, image.height, fmt)


def stack(decoded: Sequence[Decoded]) -> torch.Tensor:
    """A request's images as one (N, 3, S, S) batch, where they were preprocessed."""
    tensors = [d.tensor for d in decoded]
    inputs = tensors[0][None] if len(tensors) == 1 else torch.stack(tensors)  # one image: a view
    if inputs.is_cuda:  # made on the decoding threads' streams, read on this one
        for tensor in tensors:
            tensor.record_stream(torch.cuda.current_stream(inputs.device))
    return inputs


def keep_ratio_inputs(decoded: Sequence[Decoded], preprocessing: KeepRatioResize) -> list[KeepRatioInput]:
    """A request's images for a keep-ratio detector: each input (its own shape) and its meta."""
    return [(d.tensor, preprocessing.meta(d.width, d.height)) for d in decoded]


_thread_streams = threading.local()


def _on_device(image: Image.Image, preprocessing: Preprocessing, device: torch.device) -> torch.Tensor:
    if device.type != "cuda":
        return preprocessing.from_pixels(torch.from_numpy(np.array(image)))
    # Pinned memory and this thread's own stream: on the model's stream every image would wait
    # for the batch in flight. The stream is synchronised (GIL released) before the tensor
    # leaves this thread, so its readers need not wait; ``stack`` tells the allocator about them.
    pixels = torch.empty((image.height, image.width, 3), dtype=torch.uint8, pin_memory=True)
    pixels.numpy()[:] = np.asarray(image)
    stream = getattr(_thread_streams, "stream", None)
    if stream is None or stream.device != device:
        stream = _thread_streams.stream = torch.cuda.Stream(device)
    with torch.cuda.stream(stream):
        tensor = preprocessing.from_pixels(pixels.to(device, non_blocking=True))
    stream.synchronize()
    return tensor
