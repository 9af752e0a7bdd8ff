"""The R-CNN detectors' heads in mmdet 2.x's module and parameter names: the RPN head, the box
head(s) and the FCN mask head(s) of the RoI head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from .rcnn_config import BBoxHeadConfig, MaskHeadConfig, RCNNConfig


class RPNHead(nn.Module):
    """A shared 3x3 conv (ReLU), then 1x1 convs for sigmoid objectness and box deltas."""

    def __init__(self, in_channels: int, feat_channels: int, num_anchors: int):
        super().__init__()
        self.rpn_conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(feat_channels, num_anchors, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, num_anchors * 4, 1)
        for conv in (self.rpn_conv, self.rpn_cls, self.rpn_reg):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(cast(torch.Tensor, conv.bias))  # made with one above

    def forward(self, features: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for x in features:
            x = F.relu(self.rpn_conv(x))
            out.append((self.rpn_cls(x), self.rpn_reg(x)))
        return out


class ConvNormReLU(nn.Module):
    """mmcv's ConvModule with BN: ``.conv`` (no bias), ``.bn``, ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class ConvReLU(nn.Module):
    """mmcv's ConvModule without norm: ``.conv`` (with bias), ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


class BBoxHead(nn.Module):
    """mmdet's ConvFCBBoxHead (shared branch only, as every DAT config): (N, C, S, S) RoI
    features -> class logits (N, classes + 1) and deltas (N, 4 or 4 * classes)."""

    def __init__(self, cfg: BBoxHeadConfig, in_channels: int, roi_size: int, num_classes: int):
        super().__init__()
        self.config = cfg
        channels = in_channels
        if cfg.num_shared_convs:
            block = ConvNormReLU if cfg.norm else ConvReLU
            self.shared_convs = nn.ModuleList(
                block(channels if i == 0 else cfg.conv_out_channels, cfg.conv_out_channels)
                for i in range(cfg.num_shared_convs)
            )
            channels = cfg.conv_out_channels
        features = channels * roi_size * roi_size
        self.shared_fcs = nn.ModuleList(
            nn.Linear(features if i == 0 else cfg.fc_out_channels, cfg.fc_out_channels)
            for i in range(cfg.num_shared_fcs)
        )
        if cfg.num_shared_fcs:
            features = cfg.fc_out_channels
        self.fc_cls = nn.Linear(features, num_classes + 1)
        self.fc_reg = nn.Linear(features, 4 if cfg.reg_class_agnostic else 4 * num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for conv in getattr(self, "shared_convs", ()):
            x = conv(x)
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = F.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)


class MaskHead(nn.Module):
    """mmdet's FCNMaskHead: (N, C, 14, 14) -> mask logits (N, classes or 1, 28, 28)."""

    def __init__(self, cfg: MaskHeadConfig, in_channels: int, num_classes: int):
        super().__init__()
        width = cfg.conv_out_channels
        self.convs = nn.ModuleList(
            ConvReLU(in_channels if i == 0 else width, width) for i in range(cfg.num_convs)
        )
        last = width if cfg.num_convs else in_channels
        self.upsample = nn.ConvTranspose2d(last, width, 2, stride=2)
        self.conv_logits = nn.Conv2d(width, 1 if cfg.class_agnostic else num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        return self.conv_logits(F.relu(self.upsample(x)))


class RoIHead(nn.Module):
    """The box and mask heads: one of each (``bbox_head``, ``mask_head``), or for a cascade
    a list of each (``bbox_head.i``, ``mask_head.i``), as mmdet names them."""

    def __init__(self, cfg: RCNNConfig):
        super().__init__()
        heads = [BBoxHead(h, cfg.fpn_channels, cfg.bbox_roi_size, cfg.num_classes) for h in cfg.bbox_heads]
        self.bbox_head = nn.ModuleList(heads) if cfg.cascade else heads[0]
        if cfg.mask_head is not None:
            masks = [
                MaskHead(cfg.mask_head, cfg.fpn_channels, cfg.num_classes)
                for _ in range(cfg.num_stages if cfg.cascade else 1)
            ]
            self.mask_head = nn.ModuleList(masks) if cfg.cascade else masks[0]

    def box_heads(self) -> list[BBoxHead]:
        heads = self.bbox_head
        return [cast(BBoxHead, h) for h in heads] if isinstance(heads, nn.ModuleList) else [heads]

    def mask_heads(self) -> list[MaskHead]:
        heads = getattr(self, "mask_head", None)
        if heads is None:
            return []
        return [cast(MaskHead, h) for h in heads] if isinstance(heads, nn.ModuleList) else [heads]
