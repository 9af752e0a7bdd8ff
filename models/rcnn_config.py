"""The R-CNN detectors' settings: mmdet's FPN, RPN and (cascade) RoI heads on a DAT backbone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import DATConfig
from .detector_config import DetectorConfig

# the box heads' target_stds of the DAT release's Cascade Mask R-CNN, stage by stage
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
        self.check_out_indices()
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
