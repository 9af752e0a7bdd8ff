"""RetinaNet on a DAT backbone: RetinaHead and the exportable detector, in pure PyTorch (its
settings: :mod:`models.retinanet_config`; the FPN neck: :mod:`models.fpn`; anchors and box
coding: :mod:`models.retinanet_boxes`; mmdet's test-time variant: :mod:`models.mmdet_retinanet`).

Module and parameter names follow mmdet 2.x's RetinaNet (``backbone.``, ``neck.lateral_convs.i.conv``,
``neck.fpn_convs.i.conv``, ``bbox_head.cls_convs.i.conv``, ``bbox_head.retina_cls``, ...) and the
DAT detection release's backbone (``backbone.norms.i``), so checkpoints in that layout load
strictly. The defaults are the release's RetinaNet settings (``retinanet_dat_fpn.py``).

``detector(images)`` returns a fixed number of detections per image (static shapes, so the
whole detector exports to ONNX with ``NonMaxSuppression``): ``boxes`` (B, M, 4) as x1, y1, x2, y2
in canvas pixels, ``scores`` (B, M) and ``labels`` (B, M), best first. Slots past the image's
last detection hold score 0 and label -1. Post-processing, in float32:

1. per level: sigmoid class scores; the ``nms_pre`` anchors with the highest class score
   (mmdet's ONNX-export variant of the per-level top-k, which keeps shapes static);
2. DeltaXYWH decoding of those anchors' boxes (means 0, stds 1, dw/dh clamped at
   log(1000/16)), clipped to the canvas;
3. class-aware NMS (:mod:`models.nms`) over the levels together, scores above
   ``score_threshold``, IoU ``iou_threshold``;
4. the ``max_per_img`` best surviving (class, box) pairs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import torch
import torch.nn as nn

from .backbone import DATBackbone
from .dat import ModelInfo
from .fpn import FPN, ConvModule
from .nms import nms_keep
from .retinanet_boxes import decode_boxes, grid_anchors
from .retinanet_config import RetinaNetConfig
from .tasks import DETECTION
from .transforms import Letterbox

PRIOR_PROBABILITY = 0.01  # RetinaNet's initial foreground probability


class Detections(NamedTuple):
    boxes: torch.Tensor  # (B, M, 4) float32, x1 y1 x2 y2 in canvas pixels
    scores: torch.Tensor  # (B, M) float32, 0 past the last detection
    labels: torch.Tensor  # (B, M) int64, -1 past the last detection


class RetinaHead(nn.Module):
    """Two towers of 3x3 conv + ReLU, shared across levels; sigmoid classes, box deltas."""

    def __init__(
        self, num_classes: int, in_channels: int, feat_channels: int, stacked_convs: int, num_anchors: int
    ):
        super().__init__()
        self.num_classes = num_classes

        def tower() -> nn.ModuleList:
            return nn.ModuleList(
                ConvModule(in_channels if i == 0 else feat_channels, feat_channels, 3, relu=True)
                for i in range(stacked_convs)
            )

        self.cls_convs = tower()
        self.reg_convs = tower()
        self.retina_cls = nn.Conv2d(feat_channels, num_anchors * num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(feat_channels, num_anchors * 4, 3, padding=1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(cast(torch.Tensor, module.bias))  # every conv here has one
        prior = -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
        nn.init.constant_(cast(torch.Tensor, self.retina_cls.bias), prior)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Levels -> class logits (B, N, C) and deltas (B, N, 4), N = all anchors, level-major."""
        logits, deltas = [], []
        for x in features:
            c, r = x, x
            for conv in self.cls_convs:
                c = conv(c)
            for conv in self.reg_convs:
                r = conv(r)
            b = x.shape[0]
            logits.append(self.retina_cls(c).permute(0, 2, 3, 1).reshape(b, -1, self.num_classes))
            deltas.append(self.retina_reg(r).permute(0, 2, 3, 1).reshape(b, -1, 4))
        return torch.cat(logits, dim=1), torch.cat(deltas, dim=1)


class RetinaNet(nn.Module):
    """``detector(images)`` -> :class:`Detections`; images (B, 3, S, S) normalised, S = canvas."""

    task = DETECTION
    anchors: torch.Tensor  # a buffer

    def __init__(self, config: RetinaNetConfig, info: ModelInfo | None = None):
        super().__init__()
        self.config = cfg = config
        self.info = info or ModelInfo(
            "retinanet", Letterbox(cfg.canvas), [f"class_{i}" for i in range(cfg.num_classes)]
        )
        self.backbone = DATBackbone(cfg.backbone, cfg.out_indices)
        self.neck = FPN([cfg.backbone.dims[i] for i in cfg.out_indices], cfg.fpn_channels, cfg.num_outs)
        self.bbox_head = RetinaHead(
            cfg.num_classes, cfg.fpn_channels, cfg.feat_channels, cfg.stacked_convs, cfg.num_anchors
        )
        # Derived from the config, never saved: mmdet checkpoints hold no anchors either.
        self.register_buffer("anchors", self._make_anchors(), persistent=False)
        self.level_sizes = tuple(n * n * cfg.num_anchors for n in cfg.level_sizes)

    def _make_anchors(self, device: torch.device | str = "cpu") -> torch.Tensor:
        cfg = self.config
        return torch.cat([grid_anchors(s, n, cfg) for s, n in zip(cfg.strides, cfg.level_sizes)]).to(device)

    def _apply(self, fn, recurse=True):
        # Anchors stay exact float32 in a half-precision model (fp16 rounds a 1120 px
        # coordinate by up to 0.5 px): rebuilt, not cast back.
        super()._apply(fn, recurse)
        self.anchors = self._make_anchors(self.anchors.device)
        return self

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def input_size(self) -> int:
        """Side of the square canvas the detector takes."""
        return self.config.canvas

    def forward_raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (B, N, C) and box deltas (B, N, 4) for every anchor (training)."""
        canvas = self.config.canvas
        # The backbone takes other sizes; the anchors are the canvas's.
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, canvas, canvas):
            raise ValueError(
                f"{self.info.name} expects images of shape (B, 3, {canvas}, {canvas}), "
                f"got {tuple(images.shape)}"
            )
        return self.bbox_head(self.neck(self.backbone(images)))

    def forward(self, images: torch.Tensor) -> Detections:
        logits, deltas = self.forward_raw(images)
        return self.postprocess(logits, deltas)

    def postprocess(self, logits: torch.Tensor, deltas: torch.Tensor) -> Detections:
        cfg = self.config
        boxes_, scores_ = self.candidates(logits, deltas)
        keep = nms_keep(boxes_, scores_, cfg.max_per_img, cfg.iou_threshold, cfg.score_threshold)
        kept = (scores_ * keep).flatten(1)  # (B, C*K)
        best, index = kept.topk(min(cfg.max_per_img, kept.shape[1]), dim=1)
        candidates = boxes_.shape[1]
        labels = torch.div(index, candidates, rounding_mode="floor")
        picked = torch.gather(boxes_, 1, (index % candidates)[..., None].expand(-1, -1, 4))
        found = best > cfg.score_threshold
        return Detections(
            picked * found[..., None], best * found, torch.where(found, labels, torch.full_like(labels, -1))
        )

    @torch.no_grad()
    def nms_candidates(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For an export's verification: what NMS chooses from on ``images`` (:meth:`candidates`)."""
        return self.candidates(*self.forward_raw(images))

    def candidates(self, logits: torch.Tensor, deltas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What NMS chooses from: per level the ``nms_pre`` best anchors' decoded boxes
        (B, K, 4) and class scores (B, C, K), float32."""
        cfg = self.config
        logits, deltas = logits.float(), deltas.float()
        boxes, scores = [], []
        start = 0
        for size in self.level_sizes:
            level = slice(start, start + size)
            start += size
            level_scores = logits[:, level].sigmoid()  # (B, n, C)
            k = min(cfg.nms_pre, size)
            _, top = level_scores.amax(dim=-1).topk(k, dim=1)  # (B, k)
            scores.append(torch.gather(level_scores, 1, top[..., None].expand(-1, -1, cfg.num_classes)))
            anchors = self.anchors[level][top]  # (B, k, 4)
            level_deltas = torch.gather(deltas[:, level], 1, top[..., None].expand(-1, -1, 4))
            boxes.append(decode_boxes(anchors, level_deltas, float(cfg.canvas)))
        return torch.cat(boxes, dim=1), torch.cat(scores, dim=1).transpose(1, 2)


_LAYER_SCALE = re.compile(r"(\.layer_scales\.\d+)\.weight$")


def load_backbone(detector: RetinaNet, source: Any) -> RetinaNet:
    """Initialises the backbone from an ImageNet DAT checkpoint (official .pth, safetensors or a
    state dict); its classifier is dropped, position tables are resampled to the canvas, and
    the detection-only output norms keep their initial values. Any other mismatch raises."""
    from .checkpoint import adapt_state_dict, read_state_dict

    # The classifier's LayerScale parameter is ``weight``, the backbone's ``gamma``.
    state = {
        _LAYER_SCALE.sub(r"\1.gamma", k): v
        for k, v in read_state_dict(source).items()
        if not k.startswith(("cls_norm.", "cls_head."))
    }
    backbone = detector.backbone
    fresh = {k: v for k, v in backbone.state_dict().items() if k.startswith("norms.")}
    adapted = adapt_state_dict(backbone, {**fresh, **state})
    backbone.load_state_dict(adapted, strict=True)
    return detector
