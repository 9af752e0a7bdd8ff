"""The order of Pillow's two resize passes, which torch's resizes follow to agree with it.

Pillow resizes in two separable passes with 8-bit rounding between them, so the order moves
values (up to 11 levels on sharp edges). Pillow 13 runs the vertical pass first when the height
shrinks by more than twice as many pixels as the width; older versions always run the
horizontal pass first. Which one is installed is probed once.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image


def pass_sizes(width: int, height: int, size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The (height, width) after each of Pillow's two resize passes to (size, size).

    Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many
    pixels as the width (older versions always run the horizontal pass first); with 8-bit
    rounding between the passes the order moves values by up to 11 levels on sharp edges."""
    if vertical_first(width, height, size):
        return (size, width), (size, size)
    return (height, size), (size, size)


def vertical_first(width: int, height: int, size: int) -> bool:
    """Whether the installed Pillow resizes a ``width`` x ``height`` image to a square of
    ``size`` with its vertical pass first."""
    shrink_height, shrink_width = height - size, width - size
    return shrink_height > 0 and shrink_height > 2 * shrink_width and _pillow_can_resize_vertically_first()


@functools.cache
def _pillow_can_resize_vertically_first() -> bool:
    """Whether the installed Pillow orders its passes as :func:`pass_sizes` says, probed once
    on a small image whose height shrinks far more than its width."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 8, 3), dtype=np.uint8))
    bicubic = Image.Resampling.BICUBIC
    stepwise = image.resize((8, 10), bicubic).resize((4, 10), bicubic)  # vertical, then horizontal
    return np.array_equal(np.asarray(image.resize((4, 10), bicubic)), np.asarray(stepwise))
