"""What every detector config shares: the frozen dataclasses of :mod:`models.retinanet_config`
and :mod:`models.rcnn_config` hold a DAT ``backbone`` config."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Self

from .config import DATConfig


class DetectorConfig:
    """What the detectors' frozen dataclass configs share: a DAT ``backbone`` config inside."""

    backbone: DATConfig

    def replace(self, **changes: Any) -> Self:
        return replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)  # type: ignore[call-overload]
        data["backbone"] = self.backbone.to_dict()
        return data
