"""DAT: Vision Transformer with Deformable Attention (Xia et al., CVPR 2022) and DAT++.

One family: the config's block kinds and switches build either generation (``plus_plus``, see
:mod:`models.config`). Parameter names and shapes match the official releases, so their
checkpoints load strictly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn as nn

from .config import DATConfig
from .deformable import DeformableAttention
from .layers import (
    DropPath,
    LayerNormProxy,
    LayerScale,
    LocalAttention,
    ShiftWindowAttention,
    TransformerMLP,
    TransformerMLPWithConv,
    _eager,
    linear,
    plus_conv,
)
from .neighborhood import NeighborhoodAttention
from .tasks import CLASSIFICATION
from .transform_protocol import Transform
from .transforms import KeepRatioResize, Preprocessing

# Per stage, per block: None for L/S blocks, a (B, groups, Hk, Wk, 2) tensor for D blocks.
StagePoints = list[list[torch.Tensor | None]]


def _conv_channels_last(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Applies an NCHW convolution to (B, H, W, C) input, returning (B, H', W', C')."""
    return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class TransformerStage(nn.Module):
    def __init__(
        self,
        cfg: DATConfig,
        stage: int,
        dim_in: int,
        drop_path: list[float],
        layer_scale_name: str = "weight",
    ):
        super().__init__()
        dim = cfg.dims[stage]
        depth = cfg.depths[stage]
        fmap = cfg.stage_size(stage)
        self.proj = nn.Conv2d(dim_in, dim, 1) if dim_in != dim else nn.Identity()
        self.layer_norms = nn.ModuleList(LayerNormProxy(dim) for _ in range(2 * depth))
        if cfg.use_dwc_mlps[stage]:
            self.mlps = nn.ModuleList(
                TransformerMLPWithConv(dim, cfg.expansion, cfg.drop_rate, residual=cfg.plus_plus)
                for _ in range(depth)
            )
        else:
            self.mlps = nn.ModuleList(TransformerMLP(dim, cfg.expansion, cfg.drop_rate) for _ in range(depth))
        self.attns = nn.ModuleList()
        for kind in cfg.stage_spec[stage]:
            heads, window = cfg.heads[stage], cfg.window_sizes[stage]
            attn: nn.Module
            if kind == "L":
                attn = LocalAttention(dim, heads, window, cfg.attn_drop_rate, cfg.drop_rate)
            elif kind == "S":
                attn = ShiftWindowAttention(dim, heads, window, cfg.attn_drop_rate, cfg.drop_rate, fmap)
            elif kind == "N":
                attn = NeighborhoodAttention(dim, cfg.nat_ksizes[stage], heads, cfg.drop_rate)
            else:
                attn = DeformableAttention(
                    dim,
                    heads,
                    cfg.groups[stage],
                    fmap,
                    cfg.strides[stage],
                    cfg.offset_range_factor[stage],
                    cfg.use_pes[stage],
                    cfg.no_offs[stage],
                    cfg.ksizes[stage],
                    cfg.attn_drop_rate,
                    cfg.drop_rate,
                    plus_plus=cfg.plus_plus,
                    log_cpb=cfg.log_cpb[stage],
                )
            self.attns.append(attn)
        self.drop_path = nn.ModuleList(DropPath(p) if p > 0 else nn.Identity() for p in drop_path)
        # DAT++: a residual depth-wise 3x3 conv before each block, and optional LayerScale.
        # Both lists exist (of Identities) whatever the switches, as in the official code;
        # Identities hold no keys.
        scale = cfg.layer_scale_values[stage]
        self.layer_scales = (
            nn.ModuleList(
                LayerScale(dim, scale, layer_scale_name) if scale > 0 else nn.Identity()
                for _ in range(2 * depth)
            )
            if cfg.plus_plus
            else None
        )
        self.local_perception_units = (
            nn.ModuleList(
                nn.Conv2d(dim, dim, 3, 1, 1, groups=dim) if cfg.use_lpus[stage] else nn.Identity()
                for _ in range(depth)
            )
            if cfg.plus_plus
            else None
        )
        self.use_lpu = cfg.use_lpus[stage]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list, list]:
        """x (B, H, W, C_in) -> (B, H, W, C), per-block positions and references."""
        if isinstance(self.proj, nn.Conv2d):
            x = linear(x, self.proj.weight.flatten(1), self.proj.bias)
        positions, references = [], []
        for d, (attn, mlp) in enumerate(zip(self.attns, self.mlps)):
            if self.use_lpu and self.local_perception_units is not None:
                x = plus_conv(cast(nn.Conv2d, self.local_perception_units[d]), x)
            out, pos, ref = attn(self.layer_norms[2 * d](x))
            if self.layer_scales is not None:
                out = self.layer_scales[2 * d](out)
            x = x + self.drop_path[d](out)
            out = mlp(self.layer_norms[2 * d + 1](x))
            if self.layer_scales is not None:
                out = self.layer_scales[2 * d + 1](out)
            x = x + self.drop_path[d](out)
            positions.append(pos)
            references.append(ref)
        return x, positions, references


@dataclass
class ModelInfo:
    """What a served model needs besides weights: its name, preprocessing and labels."""

    name: str
    preprocessing: Transform | KeepRatioResize  # KeepRatioResize: mmdet detectors, any input size
    labels: list[str] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)  # detectors: COCO ids of the labels


class DAT(nn.Module):
    """``model(images)`` -> logits; images float (B, 3, S, S), normalised, S = ``input_size``."""

    task = CLASSIFICATION

    def __init__(self, config: DATConfig, info: ModelInfo | None = None, layer_scale_name: str = "weight"):
        super().__init__()
        self.config = cfg = config
        self.info = info or ModelInfo("dat", Preprocessing(input_size=cfg.img_size))
        if cfg.use_conv_patches and cfg.plus_plus:  # two stride-p/2 3x3 convs
            half = cfg.dim_stem // 2
            self.patch_proj = nn.Sequential(
                nn.Conv2d(3, half, 3, cfg.patch_size // 2, 1),
                LayerNormProxy(half),
                nn.GELU(),
                nn.Conv2d(half, cfg.dim_stem, 3, cfg.patch_size // 2, 1),
                LayerNormProxy(cfg.dim_stem),
            )
        else:
            if cfg.use_conv_patches:  # v1: one 7x7 conv
                stem = nn.Conv2d(3, cfg.dim_stem, 7, cfg.patch_size, 3)
            else:
                stem = nn.Conv2d(3, cfg.dim_stem, cfg.patch_size, cfg.patch_size, 0)
            self.patch_proj = nn.Sequential(stem, LayerNormProxy(cfg.dim_stem))

        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        self.stages = nn.ModuleList()
        for i in range(4):
            dim_in = cfg.dim_stem if i == 0 else cfg.dims[i - 1] * 2
            start = sum(cfg.depths[:i])
            self.stages.append(
                TransformerStage(cfg, i, dim_in, rates[start : start + cfg.depths[i]], layer_scale_name)
            )

        self.down_projs = nn.ModuleList()
        for i in range(3):
            if cfg.use_conv_patches:
                conv = nn.Conv2d(cfg.dims[i], cfg.dims[i + 1], 3, 2, 1, bias=False)
            else:
                conv = nn.Conv2d(cfg.dims[i], cfg.dims[i + 1], 2, 2, 0, bias=False)
            self.down_projs.append(nn.Sequential(conv, LayerNormProxy(cfg.dims[i + 1])))

        self.cls_norm = LayerNormProxy(cfg.dims[-1])
        self.cls_head = nn.Linear(cfg.dims[-1], cfg.num_classes)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def input_size(self) -> int:
        """Side of the square input the model is served at (its preprocessing's size: a
        DAT++ model may run at another size than the ``img_size`` its tables were built for)."""
        preprocessing = self.info.preprocessing
        if isinstance(preprocessing, KeepRatioResize):
            raise TypeError(f"{self.info.name}: a keep-ratio preprocessing has no fixed input size")
        return preprocessing.input_size

    def _check_input(self, x: torch.Tensor) -> None:
        cfg = self.config
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.info.name} expects images of shape (B, 3, H, W), got {tuple(x.shape)}")
        if cfg.windowed:  # window attention: the size its windows and masks were built for
            if x.shape[2] != cfg.img_size or x.shape[3] != cfg.img_size:
                raise ValueError(
                    f"{self.info.name} expects images of shape (B, 3, "
                    f"{cfg.img_size}, {cfg.img_size}), got {tuple(x.shape)}"
                )
            return
        multiple = cfg.patch_size * 8
        if x.shape[2] % multiple or x.shape[3] % multiple:
            raise ValueError(
                f"{self.info.name} expects a height and width divisible by {multiple}, got {tuple(x.shape)}"
            )

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H/p, W/p, dim_stem): convs on NCHW, norms channels-last."""
        channels_last = False
        if x.device.type == "cpu" and _eager():
            # channels-last strides in, channels-last strides out of oneDNN's convs: each norm
            # then reads a contiguous map (DAT-T++'s first norm and GELU run at 112 x 112)
            x = x.contiguous(memory_format=torch.channels_last)
        for layer in self.patch_proj:
            if isinstance(layer, nn.Conv2d) and channels_last:
                x, channels_last = x.permute(0, 3, 1, 2), False
            elif isinstance(layer, LayerNormProxy) and not channels_last:
                x, channels_last = x.permute(0, 2, 3, 1), True
            x = layer(x)
        return x

    def _stages(self, x: torch.Tensor) -> tuple[list[torch.Tensor], StagePoints, StagePoints]:
        """Runs the backbone; returns each stage's output (B, H, W, C) and the D-block points."""
        self._check_input(x)
        x = self._stem(x)
        features, positions, references = [], [], []
        for i, stage in enumerate(self.stages):
            x, pos, ref = stage(x)
            features.append(x)
            positions.append(pos)
            references.append(ref)
            if i < 3:
                conv, norm = cast(nn.Sequential, self.down_projs[i])
                x = norm(_conv_channels_last(cast(nn.Conv2d, conv), x))
        return features, positions, references

    def forward_head(self, last: torch.Tensor) -> torch.Tensor:
        """Last stage output (B, H, W, C) -> logits (B, num_classes)."""
        return self.cls_head(self.cls_norm(last).mean(dim=(1, 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, _, _ = self._stages(x)
        return self.forward_head(features[-1])

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale features: the four stage outputs, each (B, C_i, H/4/2^i, W/4/2^i)."""
        features, _, _ = self._stages(x)
        return [f.permute(0, 3, 1, 2).contiguous() for f in features]

    def forward_with_points(self, x: torch.Tensor) -> tuple[torch.Tensor, StagePoints, StagePoints]:
        """Logits plus, in the official layout, the deformed sampling points and the reference
        points of every block: ``positions[stage][block]`` is None for L/S blocks and a float32
        (B, groups, Hk, Wk, 2) tensor of (y, x) in [-1, 1] for D blocks."""
        features, positions, references = self._stages(x)
        return self.forward_head(features[-1]), positions, references
