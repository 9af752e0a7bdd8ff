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

from models import KeepRatioResize, Preprocessing, Transform
from models.transforms import pillow_resample

from . import jpeg
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


RESIZES = ("pillow", "numba", "torch")


@dataclass(frozen=True)
class HostPath:
    """How the CPU turns bytes into a classifier's inputs. The default is the official
    transform, Pillow throughout; the server's settings choose (--jpeg-decoder, --cpu-resize,
    --jpeg-draft)."""

    jpeg_decoder: str = "pillow"  # or "simplejpeg" (service.jpeg): the same pixels, sooner
    # Pillow's own; "numba" (Preprocessing.from_array): its values, 4x faster; "torch"
    # (Preprocessing.from_uint8): faster still, within 1-2 levels of them
    resize: str = "pillow"
    jpeg_draft: bool = False  # large JPEGs decoded at 1/2-1/8 scale: moves the inputs further

    def __post_init__(self) -> None:
        if self.jpeg_decoder not in ("pillow", "simplejpeg") or self.resize not in RESIZES:
            raise ValueError(f"unknown host path {self}")
        if self.jpeg_decoder == "simplejpeg" and not jpeg.available():
            raise ValueError("the simplejpeg decoder is not installed (pip install simplejpeg)")
        if self.resize == "numba" and not pillow_resample.available():
            raise ValueError("the compiled resize needs numba (pip install numba)")

    def warm(self) -> None:
        """Compiles what this path runs (numba's kernels), so that no request waits for it."""
        if self.resize == "numba":
            pillow_resample.warm()


OFFICIAL = HostPath()


def decode(data: bytes, max_pixels: int) -> tuple[Image.Image, str]:
    """Bytes -> (upright RGB image, format name). The first frame of an animation; errors
    are 400 / 413."""
    image = open_image(data, max_pixels)
    return load(image, max_pixels), image.format or ""


def load(image: Image.Image, max_pixels: int, draft_side: int = 0) -> Image.Image:
    """An opened image -> its pixels, upright and in RGB. ``draft_side`` > 0 lets a JPEG
    decode at a reduced scale while both sides stay at least that long."""
    try:
        image.seek(0)
        if draft_side:
            image.draft("RGB", (draft_side, draft_side))  # a no-op but for JPEGs
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"image exceeds the limit of {max_pixels:,} pixels") from exc
    except MemoryError as exc:
        raise PayloadTooLarge("image too large to decode") from exc
    except Exception as exc:  # noqa: BLE001 - truncated / corrupt data of any kind
        raise BadImage(
            f"cannot decode the image, it is truncated or corrupt ({type(exc).__name__}: {exc})"
        ) from exc


def prepare(
    data: bytes,
    preprocessing: Transform | KeepRatioResize,
    max_pixels: int,
    device: torch.device | None = None,
    host: HostPath = OFFICIAL,
) -> Decoded:
    """Decode, then the model's own resize / crop / normalise: on the CPU as ``host`` says,
    or with torch on ``device`` (a ``Preprocessing`` whose ``runs_on_tensors``)."""
    if device is not None and not isinstance(preprocessing, Preprocessing):
        raise ValueError(f"{type(preprocessing).__name__} preprocessing does not run on a device")
    image = open_image(data, max_pixels)
    fmt = image.format or ""
    # a classifier whose resize runs on tensors (None: the pipeline's own PIL path)
    tensors = (
        preprocessing if isinstance(preprocessing, Preprocessing) and preprocessing.runs_on_tensors else None
    )
    draft_side = tensors.resize_size if host.jpeg_draft and tensors else 0  # the resize's input
    pixels: np.ndarray | None = None
    if host.jpeg_decoder == "simplejpeg" and jpeg.takes(image):
        orientation = jpeg.orientation(image)
        width, height = jpeg.upright_size(image, orientation)
        pixels = jpeg.decode(data, orientation, draft_side)
    else:
        # the size before a draft shrinks it (a JPEG's header holds its EXIF orientation)
        drafted = jpeg.upright_size(image, jpeg.orientation(image)) if draft_side and fmt == "JPEG" else None
        image = load(image, max_pixels, draft_side)
        width, height = drafted or image.size
    if device is not None and isinstance(preprocessing, Preprocessing):
        pixels = np.asarray(image) if pixels is None else pixels
        tensor = _on_device(pixels, preprocessing, device)
    elif host.resize == "numba" and tensors:
        tensor = tensors.from_array(np.asarray(image) if pixels is None else pixels)
    elif host.resize == "torch" and tensors:
        tensor = tensors.from_uint8(np.asarray(image) if pixels is None else pixels)
    else:
        tensor = preprocessing(image if pixels is None else Image.fromarray(pixels))
    return Decoded(tensor, width, height, fmt)


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


def _on_device(pixels: np.ndarray, preprocessing: Preprocessing, device: torch.device) -> torch.Tensor:
    if device.type != "cuda":
        return preprocessing.from_pixels(torch.from_numpy(np.array(pixels)))
    # Pinned memory and this thread's own stream: on the model's stream every image would wait
    # for the batch in flight. The stream is synchronised (GIL released) before the tensor
    # leaves this thread, so its readers need not wait; ``stack`` tells the allocator about them.
    pinned = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
    pinned.numpy()[:] = pixels
    stream = getattr(_thread_streams, "stream", None)
    if stream is None or stream.device != device:
        stream = _thread_streams.stream = torch.cuda.Stream(device)
    with torch.cuda.stream(stream):
        tensor = preprocessing.from_pixels(pinned.to(device, non_blocking=True))
    stream.synchronize()
    return tensor
