"""Mask R-CNN and Cascade Mask R-CNN on a DAT backbone, with mmdet 2.x's test-time semantics.

Module and parameter names are mmdet 2.x's (``neck.``, ``rpn_head.rpn_conv/rpn_cls/rpn_reg``,
``roi_head.bbox_head[.i].shared_convs.j.conv/bn``, ``.shared_fcs.j``, ``.fc_cls``, ``.fc_reg``,
``roi_head.mask_head[.i].convs.j.conv``, ``.upsample``, ``.conv_logits``) and the DAT detection
release's backbone (``backbone.norms.i``), so the released checkpoints load strictly.

``detector(images, image_sizes, scale_factors)`` runs ``simple_test`` of mmdet's ``MaskRCNN`` /
``CascadeRCNN`` with ``rescale=True``:

1. FPN features; the RPN takes, per level, its ``nms_pre`` best anchors (sigmoid scores),
   decodes them (clipped to the image's resized size, not the padding), drops boxes without
   width or height beyond ``min_bbox_size``, runs NMS per level and keeps the ``max_per_img``
   best proposals over all levels;
2. RoIAlign of each proposal on the level its scale maps to; the box head's softmax scores
   and class-specific boxes (DeltaXYWH with the head's ``target_stds``, clipped, divided by the
   scale factors back to original pixels); class-aware NMS over (proposal, class) pairs above
   ``score_thr``; the ``max_per_img`` best;
   Cascade: three box heads in turn, each refining the previous one's boxes by its own
   best class (``regress_by_class``); class logits averaged over the stages, boxes from the
   last stage;
3. masks: the kept boxes (times the scale factors, back in input pixels) through RoIAlign and
   the mask head(s); the sigmoid of the detected class's 28 x 28 logits (Cascade: the mean of
   every stage's).

Shapes stay static where that is cheap: proposals (B, K, 4) with a validity mask, detections
(B, M, ...) with label -1 past the last. Every NMS is one batched call of :func:`models.nms.nms_keep`
with mmcv's coordinate-offset trick (each group's boxes shifted by ``group * (max coordinate +
1)``, so boxes of different groups never overlap). :func:`paste_masks` puts the 28 x 28
probabilities into the original image as mmdet's ``_do_paste_mask`` does, thresholded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import DATBackbone
from .boxes import anchor_grid, batched_nms_keep, delta2bbox, top_kept
from .config import DATConfig
from .dat import ModelInfo
from .detection import FPN, DetectorConfig, ImageInstances, instances
from .roi_align import extract_roi_features
from .tasks import DETECTION, INSTANCE_SEGMENTATION
from .transforms import KeepRatioResize, expect_pipeline

CASCADE_TARGET_STDS = ((0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067))


@dataclass(frozen=True)
class BBoxHeadConfig:
    """mmdet's ConvFCBBoxHead: shared convs (3x3, BN and no bias when ``norm``, ReLU), shared
    fcs (ReLU), then ``fc_cls`` (classes + background) and ``fc_reg``. The defaults are
    Shared2FCBBoxHead's; Cascade's DAT configs use 4 convs with BN and 1 fc."""

    num_shared_convs: int = 0
    num_shared_fcs: int = 2
    conv_out_channels: int = 256
    fc_out_channels: int = 1024
    norm: bool = False
    target_means: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    target_stds: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)
    reg_class_agnostic: bool = False


@dataclass(frozen=True)
class MaskHeadConfig:
    """mmdet's FCNMaskHead: ``num_convs`` 3x3 convs (ReLU), a 2x deconv (ReLU), 1x1 logits."""

    num_convs: int = 4
    conv_out_channels: int = 256
    class_agnostic: bool = False


@dataclass(frozen=True)
class RCNNConfig(DetectorConfig):
    """A DAT backbone plus mmdet's FPN, RPN and (cascade) RoI heads; the defaults are the DAT
    detection release's Mask R-CNN (``mask_rcnn_dat_fpn.py``)."""

    backbone: DATConfig
    num_classes: int = 80
    out_indices: tuple[int, ...] = (0, 1, 2, 3)
    fpn_channels: int = 256
    fpn_extra: str | None = "on_input"  # FPN add_extra_convs; None: max-pooled extra levels
    num_outs: int = 5
    rpn_channels: int = 256
    anchor_scales: tuple[float, ...] = (8.0,)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    anchor_strides: tuple[int, ...] = (4, 8, 16, 32, 64)
    rpn_target_means: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    rpn_target_stds: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    rpn_nms_pre: int = 1000
    rpn_iou_threshold: float = 0.7
    rpn_max_per_img: int = 1000
    rpn_min_bbox_size: float = 0.0
    roi_strides: tuple[int, ...] = (4, 8, 16, 32)  # levels the RoI extractors read
    finest_scale: float = 56.0
    sampling_ratio: int = 0
    bbox_roi_size: int = 7
    mask_roi_size: int = 14
    cascade: bool = False
    bbox_heads: tuple[BBoxHeadConfig, ...] = (BBoxHeadConfig(),)
    mask_head: MaskHeadConfig | None = field(default_factory=MaskHeadConfig)
    score_threshold: float = 0.05
    iou_threshold: float = 0.5
    max_per_img: int = 100
    mask_threshold: float = 0.5

    def __post_init__(self) -> None:
        if (
            not self.out_indices
            or list(self.out_indices) != sorted(set(self.out_indices))
            or not all(0 <= i < 4 for i in self.out_indices)
        ):
            raise ValueError(f"out_indices must be increasing stage indices 0-3, got {self.out_indices}")
        if self.num_outs < len(self.out_indices) or len(self.anchor_strides) != self.num_outs:
            raise ValueError("num_outs must cover the backbone stages used and match the anchor strides")
        if self.fpn_extra not in (None, "on_input", "on_lateral", "on_output"):
            raise ValueError(
                f"fpn_extra must be None, 'on_input', 'on_lateral' or 'on_output', got {self.fpn_extra!r}"
            )
        if not self.bbox_heads or (not self.cascade and len(self.bbox_heads) != 1):
            raise ValueError("a Mask R-CNN has one box head; a cascade one per stage")
        if len(self.roi_strides) > self.num_outs:
            raise ValueError("the RoI extractors read more levels than the FPN has")

    @property
    def num_stages(self) -> int:
        return len(self.bbox_heads)

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any]) -> RCNNConfig:
        data = dict(mapping)
        data["backbone"] = DATConfig.from_mapping(dict(data["backbone"]))
        data["bbox_heads"] = tuple(_frozen(BBoxHeadConfig, h) for h in data.get("bbox_heads", [{}]))
        if data.get("mask_head") is not None:
            data["mask_head"] = _frozen(MaskHeadConfig, data["mask_head"])
        for key, value in data.items():
            if isinstance(value, list):
                data[key] = tuple(value)
        return cls(**data)


def _frozen(kind, value):
    if isinstance(value, kind):
        return value
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in dict(value).items()})


class Proposals(NamedTuple):
    boxes: torch.Tensor  # (B, K, 4) input pixels, best first
    scores: torch.Tensor  # (B, K)
    valid: torch.Tensor  # (B, K) bool: False in the slots past the image's last proposal


class InstanceDetections(NamedTuple):
    boxes: torch.Tensor  # (B, M, 4) float32, x1 y1 x2 y2 (original pixels with scale_factors)
    scores: torch.Tensor  # (B, M) float32, 0 past the last detection
    labels: torch.Tensor  # (B, M) int64, -1 past the last detection
    masks: torch.Tensor | None = None  # (B, M, S, S) float32 mask probabilities, 0 past the last


# --------------------------------------------------------------------------- modules


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


# --------------------------------------------------------------------------- detector


class RCNN(nn.Module):
    """Mask R-CNN or Cascade Mask R-CNN (module docstring).

    ``detector(images, image_sizes=None, scale_factors=None)``: images (B, 3, H, W) normalised,
    H and W multiples of 32; ``image_sizes`` (B, 2) the (height, width) of each resized image
    inside its padding (default: H, W); ``scale_factors`` (B, 4) mmdet's (w, h, w, h) resize
    factors (default: 1, boxes in input pixels)."""

    def __init__(self, config: RCNNConfig, info: ModelInfo | None = None):
        super().__init__()
        self.config = cfg = config
        self.task = INSTANCE_SEGMENTATION if cfg.mask_head is not None else DETECTION
        self.info = info or ModelInfo(
            "rcnn", KeepRatioResize(), [f"class_{i}" for i in range(cfg.num_classes)]
        )
        self.backbone = DATBackbone(cfg.backbone, cfg.out_indices)
        self.neck = FPN(
            [cfg.backbone.dims[i] for i in cfg.out_indices],
            cfg.fpn_channels,
            cfg.num_outs,
            extra=cfg.fpn_extra,
        )
        self.rpn_head = RPNHead(
            cfg.fpn_channels, cfg.rpn_channels, len(cfg.anchor_scales) * len(cfg.anchor_ratios)
        )
        self.roi_head = RoIHead(cfg)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def input_size(self) -> int:
        """Side of the square canvas an export takes (:attr:`KeepRatioResize.canvas`): every
        image its pipeline makes fits, padded with zeros; eager calls take any padded size."""
        return expect_pipeline(self.info.preprocessing, KeepRatioResize).canvas

    def forward(
        self,
        images: torch.Tensor,
        image_sizes: torch.Tensor | None = None,
        scale_factors: torch.Tensor | None = None,
    ) -> InstanceDetections:
        sizes, factors = self._meta(images, image_sizes, scale_factors)
        features = self.features(images)
        proposals = self.propose(features, sizes)
        boxes, scores, labels = self.detect(features, proposals, sizes, factors)
        masks = None
        if self.config.mask_head is not None:
            masks = self.segment(features, boxes, labels, factors)
        return InstanceDetections(boxes, scores, labels, masks)

    @torch.inference_mode()
    def predict(self, images: Sequence[Any]) -> list[ImageInstances]:
        """RGB PIL images -> each one's detections in its own pixels, through the model's
        :class:`~models.transforms.KeepRatioResize` pipeline; masks pasted at its size."""
        pipeline = expect_pipeline(self.info.preprocessing, KeepRatioResize)
        batch, sizes, factors, metas = pipeline.batch(list(images))
        device = next(self.parameters()).device
        found = self(batch.to(device), sizes, factors.to(device))
        out = []
        for i, meta in enumerate(metas):
            result = instances(found.boxes[i], found.scores[i], found.labels[i], meta.original_size)
            if found.masks is not None:
                kept = found.labels[i] >= 0
                # mmdet pastes its RoIs (the boxes times the scale factors) divided again, unclipped
                factor = factors[i].to(device)
                boxes = found.boxes[i][kept] * factor / factor
                result = result._replace(
                    masks=paste_masks(
                        found.masks[i][kept], boxes, *meta.original_size, self.config.mask_threshold
                    ).cpu()
                )
            out.append(result)
        return out

    def _meta(
        self, images: torch.Tensor, image_sizes: torch.Tensor | None, scale_factors: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = images.shape
        if image_sizes is None:
            image_sizes = torch.tensor([[h, w]], dtype=torch.float32).expand(b, 2)
        if scale_factors is None:
            scale_factors = torch.ones(b, 4)
        return (image_sizes.to(images.device, torch.float32), scale_factors.to(images.device, torch.float32))

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The FPN's ``num_outs`` levels (the backbone checks the size)."""
        return self.neck(self.backbone(images))

    def propose(self, features: Sequence[torch.Tensor], image_sizes: torch.Tensor) -> Proposals:
        """mmdet's RPNHead.simple_test_rpn: (B, rpn_max_per_img) proposals, best first."""
        cfg = self.config
        boxes, scores, levels = [], [], []
        for level, (logits, deltas) in enumerate(self.rpn_head(features)):
            b, _, h, w = logits.shape
            level_scores = logits.permute(0, 2, 3, 1).reshape(b, -1).float().sigmoid()
            level_deltas = deltas.permute(0, 2, 3, 1).reshape(b, -1, 4).float()
            anchors = anchor_grid(
                cfg.anchor_strides[level], cfg.anchor_scales, cfg.anchor_ratios, h, w, logits.device
            )
            if cfg.rpn_nms_pre > 0 and cfg.rpn_nms_pre < level_scores.shape[1]:
                level_scores, top = level_scores.topk(cfg.rpn_nms_pre, dim=1)
                level_deltas = torch.gather(level_deltas, 1, top[..., None].expand(-1, -1, 4))
                level_anchors = anchors[top]
            else:
                level_anchors = anchors.expand(b, -1, -1)
            boxes.append(
                delta2bbox(
                    level_anchors,
                    level_deltas,
                    cfg.rpn_target_means,
                    cfg.rpn_target_stds,
                    image_sizes[:, None, :],
                )
            )
            scores.append(level_scores)
            levels.append(torch.full_like(level_scores, level, dtype=torch.long))
        boxes_, scores_, levels_ = torch.cat(boxes, 1), torch.cat(scores, 1), torch.cat(levels, 1)
        wh = boxes_[..., 2:] - boxes_[..., :2]
        valid = (wh > cfg.rpn_min_bbox_size).all(dim=-1)
        keep = batched_nms_keep(boxes_, scores_, levels_, valid, cfg.rpn_iou_threshold, cfg.rpn_max_per_img)
        best, index, found = top_kept(scores_, keep, cfg.rpn_max_per_img)
        picked = torch.gather(boxes_, 1, index[..., None].expand(-1, -1, 4))
        return Proposals(picked * found[..., None], best, found)

    def _box_forward(
        self, stage: int, features: Sequence[torch.Tensor], rois: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        b, k = rois.shape[:2]
        pooled = extract_roi_features(
            features, rois, cfg.bbox_roi_size, cfg.roi_strides, cfg.sampling_ratio, cfg.finest_scale
        )
        logits, deltas = self.roi_head.box_heads()[stage](pooled)
        return logits.float().view(b, k, -1), deltas.float().view(b, k, -1, 4)

    def detect(
        self,
        features: Sequence[torch.Tensor],
        proposals: Proposals,
        image_sizes: torch.Tensor,
        scale_factors: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The box head(s) on the proposals, then class-aware NMS: boxes (B, M, 4) divided by
        the scale factors, scores (B, M), labels (B, M) (-1 past the last), best first."""
        cfg = self.config
        boxes, scores, classes, valid = self._classify(features, proposals, image_sizes, scale_factors)
        keep = batched_nms_keep(boxes, scores, classes, valid, cfg.iou_threshold, cfg.max_per_img)
        best, index, found = top_kept(scores, keep, cfg.max_per_img)
        picked = torch.gather(boxes, 1, index[..., None].expand(-1, -1, 4)) * found[..., None]
        labels = torch.where(found, torch.gather(classes, 1, index), torch.full_like(index, -1))
        return picked, best, labels

    def _classify(
        self,
        features: Sequence[torch.Tensor],
        proposals: Proposals,
        image_sizes: torch.Tensor,
        scale_factors: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the final NMS chooses from, one entry per (proposal, class) pair: boxes
        (B, K * C, 4) divided by the scale factors, scores, classes and validity (B, K * C)."""
        cfg = self.config
        heads = self.roi_head.box_heads()
        rois, sizes = proposals.boxes, image_sizes[:, None, None, :]
        stage_logits = []
        for stage, head in enumerate(heads):
            logits, deltas = self._box_forward(stage, features, rois)
            stage_logits.append(logits)
            if stage < len(heads) - 1:  # regress_by_class: refine by this stage's best class
                label = logits[..., :-1].argmax(dim=-1)
                if not head.config.reg_class_agnostic:
                    deltas = torch.gather(deltas, 2, label[..., None, None].expand(-1, -1, 1, 4))
                rois = delta2bbox(
                    rois,
                    deltas[:, :, 0],
                    head.config.target_means,
                    head.config.target_stds,
                    image_sizes[:, None, :],
                )
        last = heads[-1].config
        # mmdet averages the stages' logits, then takes the softmax
        scores = F.softmax(
            torch.stack(stage_logits).mean(dim=0) if len(stage_logits) > 1 else stage_logits[0], dim=-1
        )[..., :-1]
        boxes = delta2bbox(rois[:, :, None, :], deltas, last.target_means, last.target_stds, sizes)
        boxes = boxes / scale_factors[:, None, None, :]
        b, k, c = scores.shape
        boxes = boxes.expand(b, k, c, 4).reshape(b, k * c, 4)
        scores = scores.reshape(b, k * c)
        classes = torch.arange(c, device=scores.device).repeat(k).expand(b, -1)
        valid = (scores > cfg.score_threshold) & proposals.valid.repeat_interleave(c, dim=1)
        return boxes, scores, classes, valid

    @torch.no_grad()
    def nms_candidates(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For an export's verification: the (proposal, class) pairs the final NMS chooses
        from, on ``images`` as ``forward`` without sizes takes them: boxes (B, N, 4) and class
        scores (B, C, N), each pair scored for its own class only (0 elsewhere and where
        invalid)."""
        sizes, factors = self._meta(images, None, None)
        features = self.features(images)
        boxes, scores, classes, valid = self._classify(
            features, self.propose(features, sizes), sizes, factors
        )
        own = F.one_hot(classes, self.num_classes).transpose(1, 2).to(scores.dtype)  # (B, C, N)
        return boxes.float(), (own * (scores * valid)[:, None, :]).float()

    def segment(
        self,
        features: Sequence[torch.Tensor],
        boxes: torch.Tensor,
        labels: torch.Tensor,
        scale_factors: torch.Tensor,
    ) -> torch.Tensor:
        """Mask probabilities (B, M, 28, 28) of each detection's class: the detections (original
        pixels) times the scale factors are the RoIs, as mmdet's simple_test_mask."""
        cfg = self.config
        b, m = labels.shape
        rois = boxes * scale_factors[:, None, :]
        pooled = extract_roi_features(
            features, rois, cfg.mask_roi_size, cfg.roi_strides, cfg.sampling_ratio, cfg.finest_scale
        )
        found = labels >= 0
        channel = labels.clamp(min=0).reshape(-1)
        probabilities = []
        for head in self.roi_head.mask_heads():
            logits = head(pooled).float()
            if logits.shape[1] > 1:
                logits = logits[torch.arange(b * m, device=logits.device), channel]
            else:
                logits = logits[:, 0]
            probabilities.append(logits.sigmoid())
        masks = torch.stack(probabilities).mean(dim=0) if len(probabilities) > 1 else probabilities[0]
        return masks.view(b, m, *masks.shape[1:]) * found[..., None, None]


def paste_masks(
    masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int, threshold: float | None = 0.5
) -> torch.Tensor:
    """mmdet 2.x's ``_do_paste_mask`` + threshold: (M, S, S) probabilities, (M, 4) boxes in the
    target image's pixels -> (M, height, width) bool (``>= threshold``), or the float32
    probabilities with ``threshold=None``. Pixel centres are sampled bilinearly
    (``grid_sample``, zeros outside the mask) over each box's pixels plus one, as mmdet's CPU
    path; every pixel further out samples under 0.5 (and is 0 here)."""
    dtype = torch.float32 if threshold is None else torch.bool
    out = torch.zeros(masks.shape[0], height, width, dtype=dtype, device=masks.device)
    boxes = boxes.float()
    for i in range(masks.shape[0]):
        x0, y0, x1, y1 = boxes[i]
        left = max(int(math.floor(float(x0))) - 1, 0)
        top = max(int(math.floor(float(y0))) - 1, 0)
        right = min(int(math.ceil(float(x1))) + 1, width)
        bottom = min(int(math.ceil(float(y1))) + 1, height)
        if right <= left or bottom <= top:
            continue
        ys = torch.arange(top, bottom, device=masks.device).to(torch.float32) + 0.5
        xs = torch.arange(left, right, device=masks.device).to(torch.float32) + 0.5
        ys = (ys - y0) / (y1 - y0) * 2 - 1
        xs = (xs - x0) / (x1 - x0) * 2 - 1
        ys = torch.where(torch.isinf(ys), torch.zeros_like(ys), ys)  # a box without height
        xs = torch.where(torch.isinf(xs), torch.zeros_like(xs), xs)
        grid = torch.stack([xs[None, :].expand(len(ys), -1), ys[:, None].expand(-1, len(xs))], dim=-1)
        pasted = F.grid_sample(masks[i][None, None].float(), grid[None], align_corners=False)[0, 0]
        out[i, top:bottom, left:right] = pasted if threshold is None else pasted >= threshold
    return out
