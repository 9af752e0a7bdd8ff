"""The RetinaNet detectors' settings: a DAT backbone plus the DAT detection release's RetinaNet
(``retinanet_dat_fpn.py``), for the exportable detector and for mmdet's test-time variant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import DATConfig
from .detector_config import DetectorConfig


@dataclass(frozen=True)
class RetinaNetConfig(DetectorConfig):
    """A DAT backbone (``backbone.img_size`` is the square canvas) plus RetinaNet's settings."""

    backbone: DATConfig
    num_classes: int = 80
    out_indices: tuple[int, ...] = (1, 2, 3)  # backbone stages feeding the FPN (C3-C5)
    fpn_channels: int = 256
    num_outs: int = 5  # P3-P7; levels past C5 come from stride-2 convs, the first on C5
    stacked_convs: int = 4
    feat_channels: int = 256
    octave_base_scale: float = 4.0
    scales_per_octave: int = 3
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    score_threshold: float = 0.05
    nms_pre: int = 1000
    iou_threshold: float = 0.5
    max_per_img: int = 100

    def __post_init__(self) -> None:
        self.check_out_indices()
        if self.num_outs < len(self.out_indices):
            raise ValueError("num_outs must be at least the number of backbone stages used")
        if self.num_classes < 1 or self.max_per_img < 1 or self.nms_pre < 1:
            raise ValueError("num_classes, max_per_img and nms_pre must be positive")

    @property
    def canvas(self) -> int:
        return self.backbone.img_size

    @property
    def num_anchors(self) -> int:
        """Anchors per location."""
        return self.scales_per_octave * len(self.ratios)

    @property
    def strides(self) -> tuple[int, ...]:
        first = [self.backbone.patch_size * 2**i for i in self.out_indices]
        extra = [first[-1] * 2 ** (k + 1) for k in range(self.num_outs - len(first))]
        return tuple(first + extra)

    @property
    def level_sizes(self) -> tuple[int, ...]:
        """Side of each level's square feature map (a stride-2 3x3 conv halves, rounding up)."""
        sizes = [self.canvas // s for s in self.strides[: len(self.out_indices)]]
        while len(sizes) < self.num_outs:
            sizes.append((sizes[-1] + 1) // 2)
        return tuple(sizes)

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any]) -> RetinaNetConfig:
        data = dict(mapping)
        data["backbone"] = DATConfig.from_mapping(dict(data["backbone"]))
        for key in ("out_indices", "ratios"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


@dataclass(frozen=True)
class MMDetRetinaNetConfig(RetinaNetConfig):
    """:class:`RetinaNetConfig` for :class:`~models.mmdet_retinanet.MMDetRetinaNet` (mmdet's test
    semantics, any size); ``backbone.img_size`` is the size its position tables were built at,
    not a canvas."""
