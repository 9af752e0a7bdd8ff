"""RoIAlign as mmcv computes it (``aligned=True``, average pooling), in pure PyTorch, and mmdet's
``SingleRoIExtractor`` (each RoI pooled from one FPN level chosen by its scale).

Per RoI (x1, y1, x2, y2) and level of stride s, mmcv's kernel: the RoI in feature pixels is
``x * (1/s) - 0.5`` (``aligned``: pixel centres at half-integers); each of the P x P bins averages
``gh x gw`` bilinear samples at the centres of a regular sub-grid, ``g = ceil(roi side / P)``
when ``sampling_ratio`` is 0 (adaptive, per RoI) else ``sampling_ratio``. A sample outside
``[-1, H] x [-1, W]`` counts as 0; inside, coordinates below 0 read row / column 0 and those past
the last read the last (no blending with zeros). The float32 arithmetic follows the kernel's
order, so the sampling weights are the kernel's own.

The bilinear weights factor into a row part and a column part. Per RoI the samples' row weights
are summed into a (P, rows) matrix over the window of rows they touch, likewise the columns, and
a bin is ``rows_weights @ window @ column_weights.T`` over that window of the feature map: the
work follows the RoI's area, not its number of samples (an elongated box at a fine level takes
hundreds of samples per bin). RoIs are grouped by window size (powers of two) and chunked.

The extractor pools through one seam, :func:`pool_rois`: eager mode runs :func:`roi_align`
below, and the exporter swaps in an opaque op that it translates to ONNX ``RoiAlign``
(:func:`override`), whose ``half_pixel`` mode and adaptive sampling (``sampling_ratio`` 0:
``ceil(roi side / P)`` per RoI) are mmcv's ``aligned`` kernel. While a graph is traced the
extractor keeps static shapes: every RoI goes through every level's seam, those of the other
levels as empty boxes (no samples), and a mask picks each RoI's own level.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch

# features, boxes, batch_index, output_size, spatial_scale, sampling_ratio, aligned
RoIAlignFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, float, int, bool], torch.Tensor]

_CHUNK_ELEMENTS = 1 << 24  # gathered feature values per chunk (64 MiB of float32)


def _axis_weights(
    start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, pooled: int, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Along one axis, for N RoIs: the first pixel of each RoI's window (N,), the window's
    length (N,), and the weights (N, P, L) of its pixels in each bin, L = the longest window.
    Summed over the bin's samples, each split between its low and high neighbour."""
    n = start.shape[0]
    samples = max(int(grid.max().item()), 1) if n else 1
    p = torch.arange(pooled, dtype=start.dtype, device=start.device).view(1, -1, 1)
    i = torch.arange(samples, dtype=start.dtype, device=start.device).view(1, 1, -1)
    start, bin_size, grid = start.view(-1, 1, 1), bin_size.view(-1, 1, 1), grid.view(-1, 1, 1)
    # the kernel's order: roi_start + p * bin + (i + .5) * bin / grid
    coord = start + p * bin_size + (i + 0.5) * bin_size / grid.clamp(min=1)
    used = (i < grid) & (coord >= -1.0) & (coord <= size)
    coord = coord.clamp(min=0)
    low = coord.floor().clamp(max=size - 1).long()  # (int) of a non-negative value
    edge = low >= size - 1
    coord = torch.where(edge, low.to(coord.dtype), coord)
    high = torch.where(edge, low, low + 1)
    frac = coord - low.to(coord.dtype)
    index = torch.stack([low, high], dim=-1).view(n, pooled, -1)
    weights = (torch.stack([1.0 - frac, frac], dim=-1) * used[..., None]).view(n, pooled, -1)
    taken = used[..., None].expand(-1, -1, -1, 2).reshape(n, pooled, -1)
    first = torch.where(taken, index, torch.full_like(index, size)).flatten(1).amin(dim=1)
    last = torch.where(taken, index, torch.full_like(index, -1)).flatten(1).amax(dim=1)
    first = torch.where(last >= 0, first, torch.zeros_like(first))  # nothing sampled: 1 pixel
    length = (last - first + 1).clamp(min=1)
    local = torch.where(taken, index - first.view(-1, 1, 1), torch.zeros_like(index))
    window = torch.zeros(
        n, pooled, int(length.max().item()) if n else 1, dtype=start.dtype, device=start.device
    )
    window.scatter_add_(2, local, weights)
    return first, length, window


def roi_align(
    features: torch.Tensor,
    boxes: torch.Tensor,
    batch_index: torch.Tensor,
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int = 0,
    aligned: bool = True,
) -> torch.Tensor:
    """features (B, C, H, W), boxes (N, 4) x1 y1 x2 y2 in image pixels, batch_index (N,) ->
    (N, C, P, P) pooled features, P = ``output_size``."""
    n = boxes.shape[0]
    _, channels, height, width = features.shape
    pooled = int(output_size)
    out = features.new_zeros(n, channels, pooled, pooled)
    if n == 0:
        return out
    # geometry and weights in float32 whatever the features' precision (fp16 cannot hold a
    # 1333-pixel coordinate to better than half a pixel)
    boxes = boxes.float()
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (boxes[:, k] * spatial_scale - offset for k in range(4))
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_w, bin_h = roi_w / pooled, roi_h / pooled
    if sampling_ratio > 0:
        grid_w = torch.full_like(roi_w, float(sampling_ratio))
        grid_h = torch.full_like(roi_h, float(sampling_ratio))
    else:  # ceilf(roi / P); an empty (or inverted) RoI samples nothing and pools 0
        grid_w, grid_h = bin_w.ceil().clamp(min=0), bin_h.ceil().clamp(min=0)
    count = (grid_w * grid_h).clamp(min=1)
    top, rows, row_weights = _axis_weights(y1, bin_h, grid_h, pooled, height)
    left, cols, col_weights = _axis_weights(x1, bin_w, grid_w, pooled, width)
    row_weights = row_weights / count.view(-1, 1, 1)
    # (B*H*W, C): one index reaches any image's pixel, its channels contiguous
    flat = features.permute(0, 2, 3, 1).reshape(-1, channels)
    base = batch_index.to(boxes.device).long() * (height * width) + top * width + left
    # windows padded to the next of 1, 2, 3, 4, 6, 8, 12, ...: few distinct shapes, at most
    # 1.5 x 1.5 times the area
    bucket_h, bucket_w = _bucket(rows), _bucket(cols)
    for bh, bw in torch.unique(torch.stack([bucket_h, bucket_w], 1), dim=0).tolist():
        members = ((bucket_h == bh) & (bucket_w == bw)).nonzero().squeeze(1)
        # pixels past the image are read clamped and weigh 0 (the window ends before them)
        dy = torch.arange(bh, device=boxes.device)
        dx = torch.arange(bw, device=boxes.device)
        size = max(1, _CHUNK_ELEMENTS // (channels * bh * bw))
        for chunk in members.split(size):
            ys = (top[chunk, None] + dy).clamp(max=height - 1) - top[chunk, None]
            xs = (left[chunk, None] + dx).clamp(max=width - 1) - left[chunk, None]
            index = base[chunk, None, None] + ys[:, :, None] * width + xs[:, None, :]
            m = len(chunk)
            values = flat[index.view(-1)].view(m, bh, bw * channels).float()
            # rows, then columns: (m, P, bw, C) -> (m, P(cols), P(rows), C)
            across = torch.bmm(_fit(row_weights[chunk], bh), values).view(m, pooled, bw, channels)
            across = across.transpose(1, 2).reshape(m, bw, pooled * channels)
            both = torch.bmm(_fit(col_weights[chunk], bw), across).view(m, pooled, pooled, channels)
            out[chunk] = both.permute(0, 3, 2, 1).to(out.dtype)
    return out


def _bucket(length: torch.Tensor) -> torch.Tensor:
    octave = 2 ** torch.floor(torch.log2(length.float()))  # largest power of two <= length
    return (
        torch.where(length <= octave, octave, torch.where(length <= octave * 1.5, octave * 1.5, octave * 2))
        .ceil()
        .long()
    )


def _fit(weights: torch.Tensor, length: int) -> torch.Tensor:
    """(n, P, L) weights cut or zero-padded to (n, P, length); past each window they are 0."""
    if weights.shape[2] >= length:
        return weights[:, :, :length]
    return torch.nn.functional.pad(weights, (0, length - weights.shape[2]))


def map_roi_levels(boxes: torch.Tensor, num_levels: int, finest_scale: float = 56.0) -> torch.Tensor:
    """mmdet's level of each (..., 4) box: floor(log2(sqrt(w * h) / finest_scale + 1e-6)),
    clamped to the levels (scale < 112: level 0, < 224: 1, < 448: 2, else 3)."""
    scale = torch.sqrt((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]))
    levels = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return levels.clamp(min=0, max=num_levels - 1).long()


_SEAM: dict[str, RoIAlignFn] = {"roi_align": roi_align}


def pool_rois(
    features: torch.Tensor,
    boxes: torch.Tensor,
    batch_index: torch.Tensor,
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int = 0,
    aligned: bool = True,
) -> torch.Tensor:
    """The seam: :func:`roi_align`'s contract, through whatever implementation is in place."""
    return _SEAM["roi_align"](
        features, boxes, batch_index, output_size, spatial_scale, sampling_ratio, aligned
    )


@contextlib.contextmanager
def override(fn: RoIAlignFn) -> Iterator[None]:
    """Temporarily routes :func:`pool_rois` through ``fn`` (the exporter's opaque op)."""
    previous = _SEAM["roi_align"]
    _SEAM["roi_align"] = fn
    try:
        yield
    finally:
        _SEAM["roi_align"] = previous


def extract_roi_features(
    features: Sequence[torch.Tensor],
    boxes: torch.Tensor,
    output_size: int,
    strides: Sequence[int],
    sampling_ratio: int = 0,
    finest_scale: float = 56.0,
    static: bool | None = None,
) -> torch.Tensor:
    """mmdet's SingleRoIExtractor: boxes (B, K, 4) in input pixels over the first
    ``len(strides)`` feature levels -> (B * K, C, P, P), image-major. ``static``: every RoI
    through every level (module docstring); default: while a graph is traced."""
    levels = features[: len(strides)]
    b, k = boxes.shape[:2]
    flat_boxes = boxes.reshape(-1, 4)
    batch_index = torch.arange(b, device=boxes.device).repeat_interleave(k)
    target = map_roi_levels(flat_boxes, len(levels), finest_scale)
    if static is None:
        static = torch.compiler.is_exporting() or torch.compiler.is_compiling()
    if static:
        each = []
        for level, (feature, stride) in enumerate(zip(levels, strides)):
            here = target == level
            # another level's RoI: an empty box, which samples nothing (sampling_ratio 0)
            level_boxes = torch.where(here[:, None], flat_boxes, torch.zeros_like(flat_boxes))
            pooled = pool_rois(feature, level_boxes, batch_index, output_size, 1.0 / stride, sampling_ratio)
            each.append(torch.where(here[:, None, None, None], pooled, torch.zeros_like(pooled)))
        return torch.stack(each).sum(dim=0)  # adds exact zeros: each RoI keeps its own level's
    out = levels[0].new_zeros(b * k, levels[0].shape[1], output_size, output_size)
    for level, (feature, stride) in enumerate(zip(levels, strides)):
        index = (target == level).nonzero().squeeze(1)
        if index.numel():
            out[index] = pool_rois(
                feature, flat_boxes[index], batch_index[index], output_size, 1.0 / stride, sampling_ratio
            )
    return out
