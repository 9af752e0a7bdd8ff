"""The DAT detection backbone: :class:`DATBackbone` (built from a name, file or mapping by
:func:`models.factory.create_backbone`).

The backbone of the DAT detection release (LeapLabTHU/DAT-Detection, ``models/backbones/dat.py``)
for DAT v1 and DAT++ configs: a DAT without its classifier (no ``cls_norm`` / ``cls_head``),
with a LayerNorm on each output stage (``norms.i``; an Identity, which holds no keys, on the
others) and LayerScale named ``gamma``, so the ``backbone.`` entries of the release's mmdet
checkpoints load strictly. ``backbone(images)`` returns the normalised maps of ``out_indices``,
NCHW, for any height and width that are multiples of ``patch_size * 8`` (32 for the released
models), as mmdet pads its inputs:

- N and D blocks run at any size (their grids for other sizes are computed on first use);
- L and S blocks pad each map to a multiple of their window (zeros, bottom and right), build
  the shifted-window mask for the padded size (cached per size) and crop after, as the
  release's window attention does.

A classifier keeps its exact-size check (:meth:`DAT._check_input`); only the backbone lifts it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import yaml

from .config import DATConfig
from .dat import DAT, ModelInfo
from .layers import LayerNormProxy
from .tasks import FEATURES
from .transforms import Preprocessing

DEFAULT_OUT_INDICES = (0, 1, 2, 3)

# The DAT-Detection constructor's defaults where they differ from DATConfig's (v1 DAT-T's):
# an mmdet ``model.backbone`` dict leaves out what it does not change, and mmdet fills it
# from these. The others (dims, heads, windows, ksizes, ...) are the same in both.
RELEASE_DEFAULTS: dict[str, Any] = {
    "stage_spec": [["L", "D"], ["L", "D"], ["L", "D", "L", "D", "L", "D"], ["L", "D"]],
    "strides": [-1, -1, -1, -1],
    "offset_range_factor": [1, 2, 3, 4],
    "use_pes": [False, False, False, False],
    "sr_ratios": [8, 4, 2, 1],
}
MMDET_TYPE = "DAT"  # the backbone's mmdet registry name (``type='DAT'``)


def check_out_indices(out_indices: Sequence[int]) -> tuple[int, ...]:
    indices = tuple(int(i) for i in out_indices)
    if not indices or list(indices) != sorted(set(indices)) or not all(0 <= i < 4 for i in indices):
        raise ValueError(f"out_indices must be increasing stage indices 0-3, got {tuple(out_indices)}")
    return indices


class DATBackbone(DAT):
    """``backbone(images)`` -> the normalised maps of ``out_indices``, each (B, C_i, H/s_i, W/s_i)
    with s_i = patch_size * 2^i; images (B, 3, H, W), H and W multiples of patch_size * 8."""

    task = FEATURES

    def __init__(
        self,
        config: DATConfig,
        out_indices: Sequence[int] = DEFAULT_OUT_INDICES,
        info: ModelInfo | None = None,
    ):
        out_indices = check_out_indices(out_indices)
        super().__init__(
            config,
            info or ModelInfo("dat_backbone", Preprocessing(config.img_size)),
            layer_scale_name="gamma",
        )
        del self.cls_norm, self.cls_head
        self.out_indices = out_indices
        self.norms = nn.ModuleList(
            LayerNormProxy(d) if i in out_indices else nn.Identity() for i, d in enumerate(config.dims)
        )

    def _check_input(self, x: torch.Tensor) -> None:
        # Any multiple of the total stride: the L/S blocks pad, the N/D blocks take any size.
        multiple = self.config.patch_size * 8
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] % multiple or x.shape[3] % multiple:
            raise ValueError(
                f"{self.info.name} expects images of shape (B, 3, H, W) with H and W "
                f"divisible by {multiple}, got {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        features, _, _ = self._stages(x)
        return [self.norms[i](features[i]).permute(0, 3, 1, 2) for i in self.out_indices]


def build_backbone(
    config: DATConfig, out_indices: Sequence[int] | None = None, name: str = "dat_backbone"
) -> DATBackbone:
    """The backbone of ``config`` (random weights, eval mode), stages 0-3 unless ``out_indices``."""
    indices = DEFAULT_OUT_INDICES if out_indices is None else out_indices
    return DATBackbone(config, indices, ModelInfo(name, Preprocessing(config.img_size))).eval()


def backbone_config(mapping: Mapping[str, Any]) -> tuple[DATConfig, Any]:
    """The config of a ``MODEL.DAT`` mapping or an mmdet ``model.backbone`` dict, and the
    ``out_indices`` it lists (None if it lists none)."""
    data = dict(mapping)
    if "type" not in data:
        return DATConfig.from_mapping(data), data.get("out_indices")
    if data["type"] != MMDET_TYPE:
        raise ValueError(f"an mmdet backbone config must have type={MMDET_TYPE!r}, got type={data['type']!r}")
    data = {**RELEASE_DEFAULTS, **data}
    plus_plus = None if "plus_plus" in data else True  # the release's code is DAT++
    return DATConfig.from_mapping(data, plus_plus=plus_plus), data.get("out_indices")


def file_out_indices(path: Path) -> Any:
    """The ``out_indices`` a config file lists (None if it lists none), its constructor keywords
    unwrapped as :meth:`DATConfig.from_yaml` does."""
    with open(path) as f:
        data = yaml.safe_load(f)
    if isinstance(data.get("MODEL"), dict):
        data = data["MODEL"].get("DAT") or {}
    elif isinstance(data.get("config"), dict):
        data = data["config"]
    return data.get("out_indices")
