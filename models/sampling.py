"""The two bilinear samplings of deformable attention, each behind one small function.

Eager mode runs ``F.grid_sample`` (bilinear, zeros padding, ``align_corners=True``), exactly
as the official DAT does. The exporter (or a future GPU kernel) swaps an implementation in
with :func:`override`, so the model itself never changes: ``models`` knows nothing about ONNX.

Both seams take ``grid`` in grid_sample's (x, y) order, normalised to [-1, 1].
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

Sampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bilinear_grid_sample(source: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) sampled at (N, Ho, Wo, 2) -> (N, C, Ho, Wo)."""
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


_SEAMS: dict[str, Sampler] = {
    "deformable_kv": bilinear_grid_sample,
    "bias_interpolation": bilinear_grid_sample,
}


def sample_keys_values(features: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Samples the key/value features at the deformed points (seam ``deformable_kv``)."""
    return _SEAMS["deformable_kv"](features, grid)


def interpolate_position_bias(table: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Reads the relative-position-bias table at continuous displacements
    (seam ``bias_interpolation``)."""
    return _SEAMS["bias_interpolation"](table, grid)


@contextlib.contextmanager
def override(**samplers: Sampler) -> Iterator[None]:
    """Temporarily replaces seams by name, e.g. ``override(deformable_kv=fn)``."""
    unknown = set(samplers) - set(_SEAMS)
    if unknown:
        raise KeyError(f"unknown sampling seam(s) {sorted(unknown)}; known: {sorted(_SEAMS)}")
    previous = {name: _SEAMS[name] for name in samplers}
    _SEAMS.update(samplers)
    try:
        yield
    finally:
        _SEAMS.update(previous)
