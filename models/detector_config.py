"""What every detector config shares: the frozen dataclasses of :mod:`models.retinanet_config`
and :mod:`models.rcnn_config` hold a DAT ``backbone`` config."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Self

from .config import DATConfig


class DetectorConfig:
    """What the detectors' frozen dataclass configs share: a DAT ``backbone`` config inside."""

    backbone: DATConfig
    out_indices: tuple[int, ...]

    def check_out_indices(self) -> None:
        """The backbone stages the neck reads: increasing, each one of DAT's four."""
        indices = self.out_indices
        if not indices or list(indices) != sorted(set(indices)) or not all(0 <= i < 4 for i in indices):
            raise ValueError(f"out_indices must be increasing stage indices 0-3, got {indices}")

    def replace(self, **changes: Any) -> Self:
        return replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)  # type: ignore[call-overload]
        data["backbone"] = self.backbone.to_dict()
        return data
