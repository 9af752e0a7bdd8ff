"""JPEGs decoded by libjpeg-turbo straight into an array (simplejpeg), on the host path.

Pillow decodes JPEGs with libjpeg-turbo too, with the same settings (accurate integer DCT,
smooth chroma upsampling), so the pixels are the same (tested); what this path saves is
Pillow's image object, its copy into an array and the copy ``exif_transpose`` makes of an
upright image. Pillow still reads the header first: the pixel limits, the format, the
colour mode and the EXIF orientation come from it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import BadImage

try:
    import simplejpeg
except ImportError:  # an optional speed-up: Pillow decodes everything without it
    simplejpeg = None

_ORIENTATION = 0x0112  # EXIF tag; values 2-8 name the eight flips and rotations


def available() -> bool:
    return simplejpeg is not None


def takes(image: Image.Image) -> bool:
    """Whether this path decodes the image Pillow opened: plain JPEG (not MPO) in YCbCr or RGB.
    Greyscale and CMYK JPEGs take Pillow's path, which converts them."""
    return simplejpeg is not None and image.format == "JPEG" and image.mode == "RGB"


def orientation(image: Image.Image) -> int:
    """The EXIF orientation Pillow's ``exif_transpose`` would apply (1: none)."""
    try:
        value = image.getexif().get(_ORIENTATION, 1)
    except Exception as exc:  # noqa: BLE001 - a malformed EXIF block on hostile input is a 400
        raise BadImage(f"cannot read the image's EXIF data ({type(exc).__name__}: {exc})") from exc
    return value if value in range(1, 9) else 1


def upright_size(image: Image.Image, orientation: int) -> tuple[int, int]:
    """(width, height) once the EXIF orientation is applied (5-8 turn the image a quarter)."""
    width, height = image.size
    return (height, width) if orientation >= 5 else (width, height)


def decode(data: bytes, orientation: int = 1, draft_side: int = 0) -> np.ndarray:
    """JPEG bytes -> upright uint8 RGB pixels (H, W, 3), a C-contiguous array.

    ``draft_side`` > 0 decodes at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) where both
    sides stay at least that long, as Pillow's ``draft`` does; 0 decodes at full size."""
    try:
        if draft_side:
            width, height = _size(data)
            factor = draft_factor(width, height, draft_side)
            shrunk = {"min_width": -(-width // factor), "min_height": -(-height // factor)}
        else:
            shrunk = {}
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, **shrunk)
    except ValueError as exc:  # simplejpeg's only error: corrupt or truncated data
        raise BadImage(f"cannot decode the image, it is truncated or corrupt ({exc})") from exc
    return np.ascontiguousarray(transpose(pixels, orientation))


def draft_factor(width: int, height: int, side: int) -> int:
    """Pillow's ``draft`` rule: the largest of 8, 4, 2 (else 1) that divides both sides into
    at least ``side`` pixels."""
    most = min(width // side, height // side)
    return next(f for f in (8, 4, 2, 1) if most >= f)


def _size(data: bytes) -> tuple[int, int]:
    height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    return width, height


def transpose(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W, C) pixels stored with EXIF ``orientation`` -> as displayed, the way Pillow's
    ``exif_transpose`` turns them (a view; 1 and unknown values leave them as they are)."""
    if orientation == 2:  # FLIP_LEFT_RIGHT
        return pixels[:, ::-1]
    if orientation == 3:  # ROTATE_180
        return pixels[::-1, ::-1]
    if orientation == 4:  # FLIP_TOP_BOTTOM
        return pixels[::-1]
    if orientation == 5:  # TRANSPOSE: across the main diagonal
        return pixels.transpose(1, 0, 2)
    if orientation == 6:  # ROTATE_270: a quarter turn clockwise
        return np.rot90(pixels, -1)
    if orientation == 7:  # TRANSVERSE: across the other diagonal
        return pixels[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:  # ROTATE_90: a quarter turn counter-clockwise
        return np.rot90(pixels, 1)
    return pixels
