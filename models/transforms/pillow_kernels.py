"""The kernels of :mod:`.pillow_resample`, written for numba to compile (``pillow_resample``
does; as plain Python they are far too slow to run)."""

import numpy as np

PRECISION_BITS = 22  # Pillow's: 32 - 8 bits of a pixel - 2 bits of headroom


def resample_rows(
    src: np.ndarray,
    row0: int,
    col0: int,
    first: np.ndarray,
    count: np.ndarray,
    weights: np.ndarray,
    out: np.ndarray,
) -> None:
    """A pass along the first axis, Pillow's arithmetic:
    ``out[i, j] = clip8((half + sum_k src[first[i] - row0 + k, col0 + j] * weights[i, k]) >> 22)``,
    each weight multiplying a whole row (vectorised)."""
    width = out.shape[1]
    sums = np.empty(width, np.int32)
    half = np.int32(1 << (PRECISION_BITS - 1))
    for i in range(out.shape[0]):
        sums[:] = half
        base = first[i] - row0
        for k in range(count[i]):
            weight = weights[i, k]
            row = src[base + k, col0 : col0 + width]  # j alone indexes: no negative-index checks
            for j in range(width):
                sums[j] += np.int32(row[j]) * weight
        for j in range(width):
            value = sums[j] >> PRECISION_BITS
            out[i, j] = 0 if value < 0 else (255 if value > 255 else value)


def transpose(src: np.ndarray, row0: int, col0: int, out: np.ndarray) -> None:
    """RGB pixels, rows for columns: ``out[x, 3 r + c] = src[row0 + r, 3 (col0 + x) + c]``, in
    tiles that stay in cache."""
    columns, rows = out.shape[0], out.shape[1] // 3
    tile = 16
    for r_start in range(0, rows, tile):
        for x_start in range(0, columns, tile):
            for r in range(r_start, min(r_start + tile, rows)):
                line = src[row0 + r, 3 * col0 : 3 * (col0 + columns)]
                for x in range(x_start, min(x_start + tile, columns)):
                    out[x, 3 * r] = line[3 * x]
                    out[x, 3 * r + 1] = line[3 * x + 1]
                    out[x, 3 * r + 2] = line[3 * x + 2]


def planes(src: np.ndarray, table: np.ndarray, out: np.ndarray) -> None:
    """RGB pixels (h, 3 w) to float32 planes (3, h, w), each level looked up in its channel's
    ``table`` row."""
    height, width = out.shape[1], out.shape[2]
    for i in range(height):
        line = src[i, : 3 * width]
        for x in range(width):
            out[0, i, x] = table[0, line[3 * x]]
            out[1, i, x] = table[1, line[3 * x + 1]]
            out[2, i, x] = table[2, line[3 * x + 2]]
