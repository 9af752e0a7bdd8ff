"""DAT v1: Vision Transformer with Deformable Attention (Xia et al., CVPR 2022).

Parameter names and shapes match the official release, so its checkpoints load strictly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .config import DATConfig
from .deformable import DeformableAttention
from .layers import (
    DropPath,
    LayerNormProxy,
    LocalAttention,
    ShiftWindowAttention,
    TransformerMLP,
    TransformerMLPWithConv,
    linear,
)
from .transforms import Letterbox, Preprocessing

# Per stage, per block: None for L/S blocks, a (B, groups, Hk, Wk, 2) tensor for D blocks.
StagePoints = list[list[torch.Tensor | None]]


def _conv_channels_last(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Applies an NCHW convolution to (B, H, W, C) input, returning (B, H', W', C')."""
    return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class TransformerStage(nn.Module):
    def __init__(self, cfg: DATConfig, stage: int, dim_in: int, drop_path: list[float]):
        super().__init__()
        dim = cfg.dims[stage]
        depth = cfg.depths[stage]
        fmap = cfg.stage_size(stage)
        self.proj = nn.Conv2d(dim_in, dim, 1) if dim_in != dim else nn.Identity()
        self.layer_norms = nn.ModuleList(LayerNormProxy(dim) for _ in range(2 * depth))
        mlp = TransformerMLPWithConv if cfg.use_dwc_mlps[stage] else TransformerMLP
        self.mlps = nn.ModuleList(mlp(dim, cfg.expansion, cfg.drop_rate) for _ in range(depth))
        self.attns = nn.ModuleList()
        for kind in cfg.stage_spec[stage]:
            heads, window = cfg.heads[stage], cfg.window_sizes[stage]
            if kind == "L":
                attn = LocalAttention(dim, heads, window, cfg.attn_drop_rate, cfg.drop_rate)
            elif kind == "S":
                attn = ShiftWindowAttention(dim, heads, window, cfg.attn_drop_rate, cfg.drop_rate,
                                            fmap)
            else:
                attn = DeformableAttention(
                    dim, heads, cfg.groups[stage], fmap, cfg.strides[stage],
                    cfg.offset_range_factor[stage], cfg.use_pes[stage], cfg.no_offs[stage],
                    stage, cfg.attn_drop_rate, cfg.drop_rate)
            self.attns.append(attn)
        self.drop_path = nn.ModuleList(DropPath(p) if p > 0 else nn.Identity() for p in drop_path)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list, list]:
        """x (B, H, W, C_in) -> (B, H, W, C), per-block positions and references."""
        if isinstance(self.proj, nn.Conv2d):
            x = linear(x, self.proj.weight.flatten(1), self.proj.bias)
        positions, references = [], []
        for d, (attn, mlp) in enumerate(zip(self.attns, self.mlps)):
            out, pos, ref = attn(self.layer_norms[2 * d](x))
            x = x + self.drop_path[d](out)
            x = x + self.drop_path[d](mlp(self.layer_norms[2 * d + 1](x)))
            positions.append(pos)
            references.append(ref)
        return x, positions, references


@dataclass
class ModelInfo:
    """What a served model needs besides weights: its name, preprocessing and labels."""

    name: str
    preprocessing: Preprocessing | Letterbox
    labels: list[str] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)  # detectors: COCO ids of the labels


class DAT(nn.Module):
    """``model(images)`` -> logits; images float (B, 3, S, S), normalised, S = ``img_size``."""

    task = "classification"

    def __init__(self, config: DATConfig, info: ModelInfo | None = None):
        super().__init__()
        self.config = cfg = config
        self.info = info or ModelInfo("dat", Preprocessing(input_size=cfg.img_size))
        if cfg.use_conv_patches:
            stem = nn.Conv2d(3, cfg.dim_stem, 7, cfg.patch_size, 3)
        else:
            stem = nn.Conv2d(3, cfg.dim_stem, cfg.patch_size, cfg.patch_size, 0)
        self.patch_proj = nn.Sequential(stem, LayerNormProxy(cfg.dim_stem))

        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        self.stages = nn.ModuleList()
        for i in range(4):
            dim_in = cfg.dim_stem if i == 0 else cfg.dims[i - 1] * 2
            start = sum(cfg.depths[:i])
            self.stages.append(TransformerStage(cfg, i, dim_in, rates[start:start + cfg.depths[i]]))

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
        """Side of the square input the model takes."""
        return self.config.img_size

    def _check_input(self, x: torch.Tensor) -> None:
        size = self.config.img_size
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size:
            raise ValueError(f"{self.info.name} expects images of shape (B, 3, {size}, {size}), "
                             f"got {tuple(x.shape)}")

    def _stages(self, x: torch.Tensor) -> tuple[list[torch.Tensor], StagePoints, StagePoints]:
        """Runs the backbone; returns each stage's output (B, H, W, C) and the D-block points."""
        self._check_input(x)
        stem, norm = self.patch_proj
        x = norm(stem(x).permute(0, 2, 3, 1))
        features, positions, references = [], [], []
        for i, stage in enumerate(self.stages):
            x, pos, ref = stage(x)
            features.append(x)
            positions.append(pos)
            references.append(ref)
            if i < 3:
                conv, norm = self.down_projs[i]
                x = norm(_conv_channels_last(conv, x))
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
