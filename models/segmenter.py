"""RetinaNet with a mask head: instance segmentation from a one-stage detector.

The detector's boxes are the RoIs. Each kept detection is RoIAligned (14 x 14) on the FPN
level its scale maps to (mmdet's ``SingleRoIExtractor``) and, with ``mask_sees_pixels``, on
the normalised input canvas itself: on a small canvas the finest FPN level (stride 4) holds
a 14-px digit in under four feature pixels, too coarse for its strokes, while the canvas
pixels hold them at full resolution. An mmdet FCN mask head (:class:`models.rcnn_heads.MaskHead`)
turns that into 28 x 28 logits, class-agnostic: a digit read as the wrong class still gets
its own shape, and one set of weights learns from every class's examples.

``segmenter(images)`` returns :class:`~models.instances.InstanceDetections`: the RetinaNet's
boxes, scores and labels exactly as the detector alone gives them, plus ``masks``
(B, M, 28, 28), the sigmoid probabilities over each box (0 in the empty slots). The mask
head runs only on the kept detections, so its cost follows what is found, not
``max_per_img``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .dat import ModelInfo
from .detection import RetinaNet
from .instances import InstanceDetections
from .rcnn_config import MaskHeadConfig
from .rcnn_heads import MaskHead
from .retinanet_config import RetinaNetConfig
from .roi_align import extract_roi_features, roi_align
from .tasks import INSTANCE_SEGMENTATION


@dataclass(frozen=True)
class SegmenterConfig(RetinaNetConfig):
    """:class:`RetinaNetConfig` plus the mask head: ``mask_convs`` 3x3 convs of
    ``mask_channels``, a 2x deconvolution, 1x1 logits (class-agnostic)."""

    mask_convs: int = 2
    mask_channels: int = 64
    mask_roi_size: int = 14  # the masks are twice this: 28 x 28
    mask_sees_pixels: bool = True  # the canvas's RGB joins the pooled features
    finest_scale: float = 56.0  # mmdet's RoI-to-level rule (models.roi_align.map_roi_levels)
    mask_threshold: float = 0.5  # probability from which a pasted pixel belongs to the object

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mask_convs < 0 or self.mask_channels < 1 or self.mask_roi_size < 1:
            raise ValueError("mask_convs must be >= 0, mask_channels and mask_roi_size positive")
        if not 0.0 < self.mask_threshold < 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1), got {self.mask_threshold}")

    @property
    def mask_size(self) -> int:
        return 2 * self.mask_roi_size

    @property
    def mask_head_config(self) -> MaskHeadConfig:
        return MaskHeadConfig(self.mask_convs, self.mask_channels, class_agnostic=True)


class RetinaNetSegmenter(RetinaNet):
    """``segmenter(images)`` -> :class:`InstanceDetections` on the canvas (module docstring)."""

    task = INSTANCE_SEGMENTATION
    config: SegmenterConfig
    # The mask head runs on the kept detections only, a number known at run time: no graph of
    # static shapes holds that (the exporter reads this and refuses the model).
    static_graph = False

    def __init__(self, config: SegmenterConfig, info: ModelInfo | None = None):
        super().__init__(config, info)
        extra = 3 if config.mask_sees_pixels else 0
        self.mask_head = MaskHead(config.mask_head_config, config.fpn_channels + extra, config.num_classes)

    def forward(self, images: torch.Tensor) -> InstanceDetections:  # type: ignore[override]
        features = self.features(images)
        found = self.postprocess(*self.bbox_head(features))
        masks = self.segment(features, images, found.boxes, found.labels >= 0)
        return InstanceDetections(found.boxes, found.scores, found.labels, masks)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The FPN levels (the input's shape checked as :meth:`forward_raw` does)."""
        canvas = self.config.canvas
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, canvas, canvas):
            raise ValueError(
                f"{self.info.name} expects images of shape (B, 3, {canvas}, {canvas}), "
                f"got {tuple(images.shape)}"
            )
        return self.neck(self.backbone(images))

    def pool(self, features: list[torch.Tensor], images: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """The mask head's input for RoIs (N, 5) = (batch index, x1, y1, x2, y2) in canvas
        pixels: (N, C, P, P), P = ``mask_roi_size``."""
        cfg = self.config
        size, levels = cfg.mask_roi_size, len(cfg.out_indices)
        index, boxes = rois[:, 0].long(), rois[:, 1:]
        pooled = features[0].new_zeros(len(rois), features[0].shape[1], size, size)
        # extract_roi_features pools (B, K) boxes; per image here, as images hold different counts
        for b in index.unique().tolist():
            mine = (index == b).nonzero().squeeze(1)
            pooled[mine] = extract_roi_features(
                [f[b : b + 1] for f in features],
                boxes[mine][None],
                size,
                cfg.strides[:levels],
                finest_scale=cfg.finest_scale,
            )
        if cfg.mask_sees_pixels:
            pixels = roi_align(images.to(pooled.dtype), boxes, index, size, 1.0)
            pooled = torch.cat([pooled, pixels], dim=1)
        return pooled

    def mask_logits(self, features: list[torch.Tensor], images: torch.Tensor, rois: torch.Tensor):
        """(N, 28, 28) mask logits for RoIs (N, 5) (training and :meth:`segment`)."""
        return self.mask_head(self.pool(features, images, rois))[:, 0]

    def segment(
        self, features: list[torch.Tensor], images: torch.Tensor, boxes: torch.Tensor, kept: torch.Tensor
    ) -> torch.Tensor:
        """Mask probabilities (B, M, 28, 28) over the kept boxes (B, M, 4); 0 elsewhere."""
        b, m = kept.shape
        size = self.config.mask_size
        masks = boxes.new_zeros(b, m, size, size, dtype=torch.float32)
        where = kept.nonzero()
        if len(where):
            rois = torch.cat([where[:, :1].to(boxes.dtype), boxes[where[:, 0], where[:, 1]]], dim=1)
            masks[where[:, 0], where[:, 1]] = self.mask_logits(features, images, rois).float().sigmoid()
        return masks
