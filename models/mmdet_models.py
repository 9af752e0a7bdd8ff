"""Detectors from mmdet 2.x configs: ``detector_from_config(config)`` (and, taking a registered
detector's name as well, :func:`models.create_detector`).

``config`` is a config file (read as data by :mod:`models.mmdet_config`, never executed: the
release's ``configs/dat/*.py`` with their ``_base_`` chain, or a flattened dump) or the mapping
that reading returns. ``model.type`` picks the detector:

- ``MaskRCNN`` / ``FasterRCNN`` / ``CascadeRCNN``: :class:`models.rcnn.RCNN`;
- ``RetinaNet``: :class:`models.mmdet_retinanet.MMDetRetinaNet`.

The backbone is ``model.backbone`` (``type='DAT'``, read by :func:`models.backbone.backbone_config`);
the neck, heads and ``test_cfg`` are read key by key, mmdet's defaults for absent keys, and
anything the detectors do not implement (another neck or head type, soft-NMS, test-time
augmentation, ...) is an error that names it. The test pipeline becomes the model's
:class:`~models.transforms.KeepRatioResize`; 80 classes are COCO's labels and category ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .backbone import backbone_config, build_backbone
from .dat import ModelInfo
from .labels import coco_categories
from .mmdet_config import ConfigError, pipeline_settings, read_mmdet_config
from .mmdet_retinanet import MMDetRetinaNet
from .rcnn import RCNN
from .rcnn_config import BBoxHeadConfig, MaskHeadConfig, RCNNConfig
from .retinanet_config import MMDetRetinaNetConfig
from .transforms import KeepRatioResize

Deltas = tuple[float, float, float, float]  # a box coder's (x, y, w, h) means or stds

SUPPORTED_TYPES = ("MaskRCNN", "FasterRCNN", "CascadeRCNN", "RetinaNet")
_BBOX_HEADS = {  # mmdet's ConvFCBBoxHead subclasses: (shared convs, shared fcs)
    "Shared2FCBBoxHead": (0, 2),
    "Shared4Conv1FCBBoxHead": (4, 1),
    "ConvFCBBoxHead": None,  # as the config says
}
_FPN_EXTRA = {
    False: None,
    True: "on_input",
    "on_input": "on_input",
    "on_lateral": "on_lateral",
    "on_output": "on_output",
}


def detector_from_config(
    config: str | Path | Mapping[str, Any], *, name: str | None = None, labels: list[str] | None = None
) -> RCNN | MMDetRetinaNet:
    """The detector a config file or mapping describes (random weights, eval mode); module docstring."""
    if isinstance(config, Mapping):
        data = dict(config)
        name = name or "detector"
    else:
        data = read_mmdet_config(config)
        name = name or Path(config).stem
    settings = pipeline_settings(data)
    if not settings["keep_ratio"]:
        raise ConfigError("a test Resize without keep_ratio is not supported")
    preprocessing = KeepRatioResize(
        settings["img_scale"], settings["mean"], settings["std"], settings["to_rgb"], settings["size_divisor"]
    )
    model_config = detector_config(_mapping(data, "model"))
    return build(model_config, name, preprocessing, labels)


def build(
    config: RCNNConfig | MMDetRetinaNetConfig,
    name: str,
    preprocessing: KeepRatioResize,
    labels: list[str] | None = None,
) -> RCNN | MMDetRetinaNet:
    category_ids: list[int] = []
    if labels is None:
        if config.num_classes == 80:
            names, ids = coco_categories()
            labels, category_ids = list(names), list(ids)
        else:
            labels = [f"class_{i}" for i in range(config.num_classes)]
    if len(labels) != config.num_classes:
        raise ValueError(f"{len(labels)} labels for {config.num_classes} classes")
    info = ModelInfo(name, preprocessing, list(labels), category_ids)
    if isinstance(config, RCNNConfig):
        return RCNN(config, info).eval()
    return MMDetRetinaNet(config, info).eval()


def detector_config(model: Mapping[str, Any]) -> RCNNConfig | MMDetRetinaNetConfig:
    """Our config for an mmdet ``model`` dict (module docstring)."""
    kind = model.get("type")
    if kind not in SUPPORTED_TYPES:
        raise ConfigError(f"model type {kind!r} is not supported; supported: {', '.join(SUPPORTED_TYPES)}")
    try:
        backbone = build_backbone(*backbone_config(_mapping(model, "backbone")))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model.backbone: {exc}") from None
    neck = _mapping(model, "neck")
    out_indices, extra = _neck(neck, backbone.config.dims, backbone.out_indices)
    test_cfg = dict(model.get("test_cfg") or {})
    if kind == "RetinaNet":
        return _retinanet(model, backbone.config, out_indices, neck, extra, test_cfg)
    return _rcnn(model, kind, backbone.config, out_indices, neck, extra, test_cfg)


def _neck(neck: Mapping[str, Any], dims, out_indices) -> tuple[tuple[int, ...], str | None]:
    _expect(neck, "FPN", "model.neck")
    _unsupported(
        neck,
        "model.neck",
        relu_before_extra_convs=False,
        no_norm_on_lateral=False,
        conv_cfg=None,
        norm_cfg=None,
        act_cfg=None,
    )
    if neck.get("upsample_cfg", {"mode": "nearest"}) != {"mode": "nearest"}:
        raise ConfigError(f"model.neck.upsample_cfg {neck['upsample_cfg']!r} is not supported (nearest only)")
    in_channels = list(neck["in_channels"])
    start = neck.get("start_level", 0)
    end = neck.get("end_level", -1)
    stop = len(in_channels) if end in (-1, len(in_channels) - 1) else end + 1
    used = tuple(range(start, stop))
    if in_channels != list(dims[: len(in_channels)]):
        raise ConfigError(f"model.neck.in_channels {in_channels} are not the backbone's {list(dims)}")
    if not set(used) <= set(out_indices):
        raise ConfigError(f"the FPN reads stages {list(used)}, the backbone normalises {list(out_indices)}")
    extra = neck.get("add_extra_convs", False)
    if extra not in _FPN_EXTRA:
        raise ConfigError(f"model.neck.add_extra_convs={extra!r} is not supported")
    return used, _FPN_EXTRA[extra]


def _retinanet(model, backbone, out_indices, neck, extra, test_cfg) -> MMDetRetinaNetConfig:
    head = _mapping(model, "bbox_head")
    _expect(head, "RetinaHead", "model.bbox_head")
    anchors = _mapping(head, "anchor_generator")
    _expect(anchors, "AnchorGenerator", "model.bbox_head.anchor_generator")
    _unsupported(anchors, "model.bbox_head.anchor_generator", center_offset=0.0, scales=None)
    _delta_coder(head, "model.bbox_head", (0.0,) * 4, (1.0,) * 4)
    if extra != "on_input":
        raise ConfigError("a RetinaNet needs add_extra_convs='on_input'")
    config = MMDetRetinaNetConfig(
        backbone,
        num_classes=head["num_classes"],
        out_indices=out_indices,
        fpn_channels=neck["out_channels"],
        num_outs=neck["num_outs"],
        stacked_convs=head.get("stacked_convs", 4),
        feat_channels=head.get("feat_channels", 256),
        octave_base_scale=float(anchors.get("octave_base_scale", 4)),
        scales_per_octave=anchors.get("scales_per_octave", 3),
        ratios=tuple(float(r) for r in anchors.get("ratios", (0.5, 1.0, 2.0))),
        score_threshold=test_cfg.get("score_thr", 0.05),
        nms_pre=test_cfg.get("nms_pre", 1000),
        iou_threshold=_nms_iou(test_cfg, "model.test_cfg"),
        max_per_img=test_cfg.get("max_per_img", 100),
    )
    if tuple(anchors.get("strides", config.strides)) != config.strides:
        raise ConfigError(
            f"anchor strides {anchors['strides']} are not the FPN levels' {list(config.strides)}"
        )
    return config


def _rcnn(model, kind, backbone, out_indices, neck, extra, test_cfg) -> RCNNConfig:
    rpn = _mapping(model, "rpn_head")
    _expect(rpn, "RPNHead", "model.rpn_head")
    anchors = _mapping(rpn, "anchor_generator")
    _expect(anchors, "AnchorGenerator", "model.rpn_head.anchor_generator")
    _unsupported(anchors, "model.rpn_head.anchor_generator", center_offset=0.0, octave_base_scale=None)
    rpn_means, rpn_stds = _delta_coder(rpn, "model.rpn_head", (0.0,) * 4, (1.0,) * 4)
    rpn_test = _mapping(test_cfg, "rpn", "model.test_cfg")
    rcnn_test = _mapping(test_cfg, "rcnn", "model.test_cfg")
    roi = _mapping(model, "roi_head")
    cascade = kind == "CascadeRCNN"
    _expect(roi, "CascadeRoIHead" if cascade else "StandardRoIHead", "model.roi_head")
    box_extractor = _extractor(roi, "bbox_roi_extractor")
    heads_cfg = roi["bbox_head"]
    stages = roi.get("num_stages", 1) if cascade else 1
    if isinstance(heads_cfg, Mapping):
        heads_cfg = [heads_cfg] * stages
    if len(heads_cfg) != stages:
        raise ConfigError(f"model.roi_head: {len(heads_cfg)} box heads for {stages} stages")
    heads = tuple(_bbox_head(h, f"model.roi_head.bbox_head[{i}]") for i, h in enumerate(heads_cfg))
    num_classes = heads_cfg[0]["num_classes"]
    mask_head, mask_size = None, 14
    if kind != "FasterRCNN":
        masks = roi.get("mask_head")
        if masks is None:
            raise ConfigError(f"a {kind} needs model.roi_head.mask_head")
        if isinstance(masks, list):
            if any(m != masks[0] for m in masks):
                raise ConfigError("cascade mask heads with different settings are not supported")
            masks = masks[0]
        mask_head = _mask_head(masks)
        mask_extractor = _extractor(roi, "mask_roi_extractor")
        if (mask_extractor["strides"], mask_extractor["finest_scale"], mask_extractor["sampling_ratio"]) != (
            box_extractor["strides"],
            box_extractor["finest_scale"],
            box_extractor["sampling_ratio"],
        ):
            raise ConfigError("box and mask RoI extractors that read different levels are not supported")
        mask_size = mask_extractor["size"]
    if rcnn_test.get("mask_thr_binary", 0.5) < 0:
        raise ConfigError("mask_thr_binary < 0 (soft masks) is not supported")
    return RCNNConfig(
        backbone,
        num_classes=num_classes,
        out_indices=out_indices,
        fpn_channels=neck["out_channels"],
        fpn_extra=extra,
        num_outs=neck["num_outs"],
        rpn_channels=rpn.get("feat_channels", 256),
        anchor_scales=tuple(float(s) for s in anchors["scales"]),
        anchor_ratios=tuple(float(r) for r in anchors.get("ratios", (0.5, 1.0, 2.0))),
        anchor_strides=tuple(int(s) for s in anchors["strides"]),
        rpn_target_means=rpn_means,
        rpn_target_stds=rpn_stds,
        rpn_nms_pre=rpn_test.get("nms_pre", 1000),
        rpn_iou_threshold=_nms_iou(rpn_test, "model.test_cfg.rpn"),
        rpn_max_per_img=rpn_test.get("max_per_img", rpn_test.get("max_num", 1000)),
        rpn_min_bbox_size=float(rpn_test.get("min_bbox_size", 0)),
        roi_strides=box_extractor["strides"],
        finest_scale=box_extractor["finest_scale"],
        sampling_ratio=box_extractor["sampling_ratio"],
        bbox_roi_size=box_extractor["size"],
        mask_roi_size=mask_size,
        cascade=cascade,
        bbox_heads=heads,
        mask_head=mask_head,
        score_threshold=rcnn_test.get("score_thr", 0.05),
        iou_threshold=_nms_iou(rcnn_test, "model.test_cfg.rcnn"),
        max_per_img=rcnn_test.get("max_per_img", 100),
        mask_threshold=rcnn_test.get("mask_thr_binary", 0.5),
    )


def _extractor(roi: Mapping[str, Any], key: str) -> dict[str, Any]:
    where = f"model.roi_head.{key}"
    extractor = roi[key]
    if isinstance(extractor, list):
        if any(e != extractor[0] for e in extractor):
            raise ConfigError(f"{where}: different extractors per stage are not supported")
        extractor = extractor[0]
    _expect(extractor, "SingleRoIExtractor", where)
    layer = _mapping(extractor, "roi_layer", where)
    _expect(layer, "RoIAlign", f"{where}.roi_layer")
    _unsupported(layer, f"{where}.roi_layer", aligned=True, pool_mode="avg", use_torchvision=False)
    size = layer["output_size"]
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ConfigError(f"{where}: non-square output_size {size} is not supported")
        size = size[0]
    return {
        "size": int(size),
        "sampling_ratio": int(layer.get("sampling_ratio", 0)),
        "strides": tuple(int(s) for s in extractor["featmap_strides"]),
        "finest_scale": float(extractor.get("finest_scale", 56)),
    }


def _bbox_head(head: Mapping[str, Any], where: str) -> BBoxHeadConfig:
    kind = head.get("type")
    if kind not in _BBOX_HEADS:
        raise ConfigError(
            f"{where}: box head type {kind!r} is not supported; supported: {', '.join(_BBOX_HEADS)}"
        )
    convs, fcs = _BBOX_HEADS[kind] or (head.get("num_shared_convs", 0), head.get("num_shared_fcs", 0))
    for branch in ("num_cls_convs", "num_cls_fcs", "num_reg_convs", "num_reg_fcs"):
        if head.get(branch, 0):
            raise ConfigError(f"{where}: separate class / box branches ({branch}) are not supported")
    _unsupported(head, where, with_avg_pool=False, reg_predictor_cfg=None, cls_predictor_cfg=None)
    norm = head.get("norm_cfg")
    if norm is not None and norm.get("type") not in ("BN", "SyncBN"):
        raise ConfigError(f"{where}: norm {norm.get('type')!r} is not supported (BN / SyncBN)")
    means, stds = _delta_coder(head, where, (0.0,) * 4, (0.1, 0.1, 0.2, 0.2))
    return BBoxHeadConfig(
        num_shared_convs=convs,
        num_shared_fcs=fcs,
        conv_out_channels=head.get("conv_out_channels", 256),
        fc_out_channels=head.get("fc_out_channels", 1024),
        norm=norm is not None,
        target_means=means,
        target_stds=stds,
        reg_class_agnostic=bool(head.get("reg_class_agnostic", False)),
    )


def _mask_head(head: Mapping[str, Any]) -> MaskHeadConfig:
    where = "model.roi_head.mask_head"
    _expect(head, "FCNMaskHead", where)
    _unsupported(
        head,
        where,
        conv_kernel_size=3,
        conv_cfg=None,
        norm_cfg=None,
        predictor_cfg=None,
        upsample_cfg={"type": "deconv", "scale_factor": 2},
    )
    return MaskHeadConfig(
        num_convs=head.get("num_convs", 4),
        conv_out_channels=head.get("conv_out_channels", 256),
        class_agnostic=bool(head.get("class_agnostic", False)),
    )


def _delta_coder(head: Mapping[str, Any], where: str, means: Deltas, stds: Deltas) -> tuple[Deltas, Deltas]:
    coder = head.get("bbox_coder", {"type": "DeltaXYWHBBoxCoder"})
    _expect(coder, "DeltaXYWHBBoxCoder", f"{where}.bbox_coder")
    _unsupported(coder, f"{where}.bbox_coder", clip_border=True, add_ctr_clamp=False)
    return (
        _deltas(coder.get("target_means", means), f"{where}.bbox_coder.target_means"),
        _deltas(coder.get("target_stds", stds), f"{where}.bbox_coder.target_stds"),
    )


def _deltas(values: Any, where: str) -> Deltas:
    floats = [float(v) for v in values]
    if len(floats) != 4:
        raise ConfigError(f"{where}: 4 values (x, y, w, h) expected, got {len(floats)}")
    return floats[0], floats[1], floats[2], floats[3]


def _nms_iou(test_cfg: Mapping[str, Any], where: str) -> float:
    nms = test_cfg.get("nms", {"type": "nms", "iou_threshold": 0.5})
    if nms.get("type", "nms") != "nms":
        raise ConfigError(f"{where}.nms type {nms.get('type')!r} is not supported (nms only)")
    return float(nms.get("iou_threshold", 0.5))


def _mapping(data: Mapping[str, Any], key: str, where: str = "config") -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} has no {key!r} dict")
    return value


def _expect(section: Mapping[str, Any], kind: str, where: str) -> None:
    if section.get("type") != kind:
        raise ConfigError(f"{where}: type {section.get('type')!r} is not supported (expected {kind!r})")


def _unsupported(section: Mapping[str, Any], where: str, **defaults: Any) -> None:
    """Options the detectors implement only at mmdet's default value."""
    for key, default in defaults.items():
        if key in section and section[key] != default:
            raise ConfigError(f"{where}.{key}={section[key]!r} is not supported (only {default!r})")
