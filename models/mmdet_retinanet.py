"""RetinaNet as mmdet 2.x tests it, on the same modules and keys as :class:`models.detection.RetinaNet`:
any padded size, mmdet's per-level (anchor, class) top-k and its keep-ratio pipeline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .boxes import anchor_grid, class_candidates, class_nms, delta2bbox
from .dat import ModelInfo
from .detection import Detections, RetinaNet
from .instances import ImageInstances, instances
from .retinanet_config import RetinaNetConfig
from .transforms import KeepRatioResize, expect_pipeline


class MMDetRetinaNet(RetinaNet):
    """RetinaNet as mmdet 2.x tests it (``RetinaHead.simple_test``, the DAT detection release's
    RetinaNet configs), the same modules and keys as :class:`RetinaNet`:

    ``detector(images, image_sizes=None, scale_factors=None)``: images (B, 3, H, W) normalised,
    H and W multiples of 32 (mmdet's padded batch); ``image_sizes`` (B, 2) each resized image's
    (height, width) inside the padding, ``scale_factors`` (B, 4) mmdet's (w, h, w, h).

    Per level the ``nms_pre`` best (anchor, class) pairs above ``score_threshold`` (mmdet 2.x's
    ``filter_scores_and_topk``, not the best anchors), decoded and clipped to the image's own
    size; all levels divided by the scale factors, class-aware NMS (mmcv's offsets), the
    ``max_per_img`` best. Returns :class:`Detections` in original pixels (input pixels without
    scale factors), label -1 past the last.
    """

    def __init__(self, config: RetinaNetConfig, info: ModelInfo | None = None):
        super().__init__(
            config,
            info
            or ModelInfo("retinanet", KeepRatioResize(), [f"class_{i}" for i in range(config.num_classes)]),
        )

    @property
    def input_size(self) -> int:
        """Side of the square canvas an export takes (:attr:`KeepRatioResize.canvas`), as for
        the R-CNNs: every image its pipeline makes fits, padded with zeros."""
        return expect_pipeline(self.info.preprocessing, KeepRatioResize).canvas

    def forward(
        self,
        images: torch.Tensor,
        image_sizes: torch.Tensor | None = None,
        scale_factors: torch.Tensor | None = None,
    ) -> Detections:
        pairs = self._pairs(images, image_sizes, scale_factors)
        return Detections(*class_nms(*pairs, self.config.iou_threshold, self.config.max_per_img))

    @torch.no_grad()
    def nms_candidates(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For an export's verification: the (anchor, class) pairs NMS chooses from, on
        ``images`` as ``forward`` without sizes takes them: boxes (B, N, 4) and class scores
        (B, C, N), each pair scored for its own class only (0 elsewhere and where invalid)."""
        return class_candidates(*self._pairs(images, None, None), self.num_classes)

    def _pairs(
        self, images: torch.Tensor, image_sizes: torch.Tensor | None, scale_factors: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per level the ``nms_pre`` best (anchor, class) pairs above the score threshold: their
        boxes (B, N, 4) in original pixels, scores, classes and validity (B, N)."""
        cfg = self.config
        b, _, height, width = images.shape
        sizes = (
            torch.tensor([[height, width]], dtype=torch.float32).expand(b, 2)
            if image_sizes is None
            else image_sizes.float()
        ).to(images.device)
        factors = (torch.ones(b, 4) if scale_factors is None else scale_factors.float()).to(images.device)
        scales = [
            cfg.octave_base_scale * 2 ** (i / cfg.scales_per_octave) for i in range(cfg.scales_per_octave)
        ]
        boxes, scores, labels, valid = [], [], [], []
        for level, x in enumerate(self.neck(self.backbone(images))):
            logits, deltas = self.bbox_head([x])  # (B, h*w*A, C), (B, h*w*A, 4)
            level_scores = logits.float().sigmoid().flatten(1)  # (anchor, class) pairs
            above = level_scores > cfg.score_threshold
            masked = torch.where(above, level_scores, torch.full_like(level_scores, -math.inf))
            best, index = masked.topk(min(cfg.nms_pre, masked.shape[1]), dim=1)
            anchor = torch.div(index, cfg.num_classes, rounding_mode="floor")
            anchors = anchor_grid(cfg.strides[level], scales, cfg.ratios, x.shape[2], x.shape[3], x.device)
            picked = torch.gather(deltas.float(), 1, anchor[..., None].expand(-1, -1, 4))
            boxes.append(delta2bbox(anchors[anchor], picked, (0.0,) * 4, (1.0,) * 4, sizes[:, None]))
            scores.append(torch.where(torch.isfinite(best), best, torch.zeros_like(best)))
            labels.append(index % cfg.num_classes)
            valid.append(torch.isfinite(best))
        return (
            torch.cat(boxes, 1) / factors[:, None, :],
            torch.cat(scores, 1),
            torch.cat(labels, 1),
            torch.cat(valid, 1),
        )

    @torch.inference_mode()
    def predict(self, images: Sequence[Any]) -> list[ImageInstances]:
        """RGB PIL images -> each one's detections in its own pixels, through the model's
        :class:`~models.transforms.KeepRatioResize` pipeline."""
        pipeline = expect_pipeline(self.info.preprocessing, KeepRatioResize)
        batch, sizes, factors, metas = pipeline.batch(list(images))
        device = next(self.parameters()).device
        found = self(batch.to(device), sizes, factors)
        return [
            instances(found.boxes[i], found.scores[i], found.labels[i], meta.original_size)
            for i, meta in enumerate(metas)
        ]
