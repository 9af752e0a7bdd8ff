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
1)``, so boxes of different groups never overlap). :func:`models.instances.paste_masks` puts the
28 x 28 probabilities into the original image as mmdet's ``_do_paste_mask`` does, thresholded.

The settings are :class:`~models.rcnn_config.RCNNConfig`; the heads, :mod:`models.rcnn_heads`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import DATBackbone
from .boxes import anchor_grid, batched_nms_keep, class_candidates, class_nms, delta2bbox, top_kept
from .dat import ModelInfo
from .fpn import FPN
from .instances import ImageInstances, InstanceDetections, instances, paste_masks
from .rcnn_config import RCNNConfig
from .rcnn_heads import RoIHead, RPNHead
from .roi_align import extract_roi_features
from .tasks import DETECTION, INSTANCE_SEGMENTATION
from .transforms import KeepRatioResize, expect_pipeline


class Proposals(NamedTuple):
    boxes: torch.Tensor  # (B, K, 4) input pixels, best first
    scores: torch.Tensor  # (B, K)
    valid: torch.Tensor  # (B, K) bool: False in the slots past the image's last proposal


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
        return self._select(*self._classify(features, proposals, image_sizes, scale_factors))

    def _select(
        self, boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class-aware NMS over :meth:`_classify`'s pairs: the ``max_per_img`` best."""
        return class_nms(boxes, scores, classes, valid, self.config.iou_threshold, self.config.max_per_img)

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
        classified = self._classify(features, self.propose(features, sizes), sizes, factors)
        return class_candidates(*classified, self.num_classes)

    @torch.no_grad()
    def forward_with_candidates(
        self, images: torch.Tensor
    ) -> tuple[InstanceDetections, tuple[torch.Tensor, torch.Tensor]]:
        """``self(images)`` and :meth:`nms_candidates` from one pass: an export's verification
        needs both, and the backbone is most of the cost of either."""
        sizes, factors = self._meta(images, None, None)
        features = self.features(images)
        classified = self._classify(features, self.propose(features, sizes), sizes, factors)
        boxes, scores, labels = self._select(*classified)
        masks = None
        if self.config.mask_head is not None:
            masks = self.segment(features, boxes, labels, factors)
        candidates = class_candidates(*classified, self.num_classes)
        return InstanceDetections(boxes, scores, labels, masks), candidates

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
