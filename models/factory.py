"""The builders that take a registered name as well as a config: :func:`create_model`,
:func:`create_backbone` and :func:`create_detector`.

They sit above the registry (the named configs and their lookup), which itself builds on the
backbone, detection and mmdet modules, so that none of those has to import the registry back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .backbone import DATBackbone, backbone_config, build_backbone, file_out_indices
from .config import DATConfig
from .dat import DAT, ModelInfo
from .detection import RetinaNet
from .labels import imagenet_labels
from .mmdet_models import build, detector_from_config
from .mmdet_retinanet import MMDetRetinaNet
from .rcnn import RCNN
from .rcnn_config import RCNNConfig
from .registry import ModelSpec, get_spec, list_models, resolve_config
from .retinanet_config import MMDetRetinaNetConfig, RetinaNetConfig
from .segmenter import RetinaNetSegmenter, SegmenterConfig
from .transforms import KeepRatioResize, Letterbox, Preprocessing, expect_pipeline


def create_backbone(
    config: str | Path | Mapping[str, Any] | DATConfig = "dat_tiny",
    out_indices: Sequence[int] | None = None,
    **overrides: Any,
) -> DATBackbone:
    """Builds the detection backbone (random weights, eval mode) of

    - a registered name: a classifier's config, or a registered detector's backbone and its
      ``out_indices``;
    - an official YAML file, or a JSON file with a ``config`` mapping;
    - a ``MODEL.DAT`` mapping (official key names), or a :class:`DATConfig`;
    - an mmdet ``model.backbone`` dict (``type='DAT'`` and the DAT-Detection constructor's
      keywords): DAT++ semantics, as that code has, and its defaults for absent keys.

    ``out_indices`` (default: the file's or mapping's ``out_indices``, else 0-3) selects the
    stages returned and normalised. As :meth:`DATConfig.from_mapping` decides, a mapping or
    file that has ``out_indices`` was written for the DAT++ constructors and is DAT++ unless
    it says ``plus_plus: false``; for a v1 config pass ``out_indices`` as the argument.
    ``overrides`` replace config fields (e.g. ``img_size``).
    """
    name, listed = "dat_backbone", None
    if isinstance(config, DATConfig):
        cfg = config
    elif isinstance(config, Mapping):
        cfg, listed = backbone_config(config)
    else:
        name, resolved, spec = resolve_config(config)
        if isinstance(resolved, DATConfig):
            cfg = resolved
            if spec is None:  # a file: its out_indices, which DATConfig drops
                listed = file_out_indices(Path(config))
        else:  # a registered detector: its backbone and the stages its neck reads
            cfg, listed = resolved.backbone, resolved.out_indices
    if overrides:
        cfg = cfg.replace(**overrides)
    return build_backbone(cfg, out_indices if out_indices is not None else listed, name)


def create_detector(
    config: str | Path | Mapping[str, Any], *, name: str | None = None, labels: list[str] | None = None
) -> RCNN | MMDetRetinaNet:
    """The detector an mmdet 2.x config file or mapping describes (random weights, eval mode;
    :mod:`models.mmdet_models`), or the registered mmdet-style detector of that name."""
    if isinstance(config, str) and not config.endswith(".py") and not Path(config).is_file():
        spec = get_spec(config)  # raises for unknown names
        if not isinstance(spec.config, (RCNNConfig, MMDetRetinaNetConfig)):
            raise ValueError(f"{config!r} is not an mmdet-style detector")
        detector = create_model(config, labels=labels, pretrained=False)
        assert isinstance(detector, (RCNN, MMDetRetinaNet))  # as its config, checked above
        return detector
    return detector_from_config(config, name=name, labels=labels)


def create_model(
    model: str | Path | Mapping[str, Any] = "dat_tiny",
    *,
    labels: list[str] | None = None,
    pretrained: bool = True,
    **overrides: Any,
) -> DAT | RetinaNet | RetinaNetSegmenter | MMDetRetinaNet | RCNN:
    """Builds a DAT classifier (or, for a registered detector, a RetinaNet / R-CNN) in eval mode.

    ``model`` is a registered name (:func:`list_models`), a path to an official YAML (or a
    JSON with a ``config`` mapping), an mmdet 2.x config file (``.py``, read as data:
    :func:`models.mmdet_models.detector_from_config`), or a mapping with the official
    ``MODEL.DAT`` keys.
    ``overrides`` replace config fields (e.g. ``num_classes=10``, ``img_size=384``; for a
    detector its RetinaNet fields, and ``canvas`` for the backbone's image size).
    Registered models that ship weights in the repo load them unless ``pretrained=False``.
    """
    if isinstance(model, (str, Path)) and str(model).endswith(".py") and model not in list_models():
        detector = detector_from_config(model, labels=labels)
        if overrides:
            config = detector.config.replace(**overrides)
            assert isinstance(config, (RCNNConfig, MMDetRetinaNetConfig))  # replace keeps the class
            pipeline = expect_pipeline(detector.info.preprocessing, KeepRatioResize)
            detector = build(config, detector.info.name, pipeline, labels)
        return detector
    name, config, spec = resolve_config(model)
    if isinstance(config, (RCNNConfig, MMDetRetinaNetConfig)):
        config = config.replace(**overrides) if overrides else config
        # no labels: COCO's (with their category ids) for 80 classes, as every release
        pipeline = expect_pipeline(spec.preprocessing, KeepRatioResize) if spec else KeepRatioResize()
        return build(config, name, pipeline, labels)
    if isinstance(config, RetinaNetConfig):
        return _create_detector(name, config, spec, labels, pretrained, overrides)
    if overrides:
        config = config.replace(**overrides)
    if spec is not None and isinstance(spec.config, DATConfig) and config.img_size == spec.config.img_size:
        preprocessing = spec.preprocessing  # which may differ from img_size (dat_pp_base_384)
    else:
        preprocessing = Preprocessing(input_size=config.img_size)
    labels = _labels(spec, labels, config.num_classes)
    model_ = DAT(config, ModelInfo(name, preprocessing, labels))
    if pretrained and spec is not None and spec.weights is not None and not overrides:
        from .checkpoint import load_checkpoint

        load_checkpoint(model_, spec.weights)
    return model_.eval()


def _labels(spec: ModelSpec | None, labels: list[str] | None, num_classes: int) -> list[str]:
    if labels is None:
        if spec is not None and len(spec.labels()) == num_classes:
            labels = list(spec.labels())
        elif num_classes == 1000:
            labels = list(imagenet_labels())
        else:
            labels = [f"class_{i}" for i in range(num_classes)]
    if len(labels) != num_classes:
        raise ValueError(f"{len(labels)} labels for {num_classes} classes")
    return list(labels)


def _create_detector(
    name: str,
    config: RetinaNetConfig,
    spec: ModelSpec | None,
    labels: list[str] | None,
    pretrained: bool,
    overrides: dict[str, Any],
) -> RetinaNet:
    overrides = dict(overrides)
    if "canvas" in overrides:
        config = config.replace(backbone=config.backbone.replace(img_size=overrides.pop("canvas")))
    if overrides:
        config = config.replace(**overrides)
    preprocessing = (
        expect_pipeline(spec.preprocessing, Letterbox) if spec is not None else Letterbox(config.canvas)
    )
    if preprocessing.input_size != config.canvas:
        preprocessing = replace(preprocessing, input_size=config.canvas)
    labels = _labels(spec, labels, config.num_classes)
    category_ids: list[int] = []
    if spec is not None and spec.category_ids is not None and labels == list(spec.labels()):
        category_ids = list(spec.category_ids())
    info = ModelInfo(name, preprocessing, labels, category_ids)
    detector = (
        RetinaNetSegmenter(config, info) if isinstance(config, SegmenterConfig) else RetinaNet(config, info)
    )
    if pretrained and spec is not None and spec.weights is not None and config == spec.config:
        from .checkpoint import load_checkpoint

        load_checkpoint(detector, spec.weights)
    return detector.eval()
