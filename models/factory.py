"""The builders that take a registered name as well as a config: :func:`create_backbone` and
:func:`create_detector`.

They sit above the registry, which itself builds on the backbone, detection and mmdet
modules, so that none of those has to import the registry back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .backbone import DATBackbone, backbone_config, build_backbone, file_out_indices
from .config import DATConfig
from .mmdet_models import detector_from_config
from .mmdet_retinanet import MMDetRetinaNet, MMDetRetinaNetConfig
from .rcnn import RCNN
from .rcnn_config import RCNNConfig
from .registry import create_model, get_spec, resolve_config


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
