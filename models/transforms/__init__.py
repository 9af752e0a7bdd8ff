"""Evaluation preprocessing, defined once: the service, export validation and tests import it
from here.

Three kinds, each a frozen dataclass that turns an RGB PIL image into a normalised float32
tensor and round-trips through its ``to_dict`` form (manifests store it):

- :class:`Preprocessing`: the classifiers' resize and centre crop (:mod:`.classification`);
- :class:`Letterbox`: the RetinaNet detectors' square canvas (:mod:`.letterbox`);
- :class:`KeepRatioResize`: mmdet 2.x's test pipeline, with :class:`ImageMeta` (:mod:`.keep_ratio`).
"""

from __future__ import annotations

from typing import TypeVar

from .classification import Preprocessing
from .keep_ratio import ImageMeta, KeepRatioResize
from .letterbox import Letterbox

__all__ = [
    "ImageMeta",
    "KeepRatioResize",
    "Letterbox",
    "Preprocessing",
    "expect_pipeline",
    "preprocessing_from_dict",
]

_Kind = TypeVar("_Kind")


def preprocessing_from_dict(data: dict) -> Preprocessing | Letterbox | KeepRatioResize:
    """Reads any kind back from its ``to_dict`` form (manifests store it)."""
    if data.get("mode") == Letterbox.mode:
        return Letterbox.from_dict(data)
    if data.get("mode") == KeepRatioResize.mode:
        return KeepRatioResize.from_dict(data)
    return Preprocessing.from_dict(data)


def expect_pipeline(transform: object, kind: type[_Kind]) -> _Kind:
    """``transform`` where only one kind will do (a RetinaNet's :class:`Letterbox`, an mmdet
    detector's :class:`KeepRatioResize`), or a TypeError naming both."""
    if not isinstance(transform, kind):
        raise TypeError(f"expected a {kind.__name__} pipeline, got {type(transform).__name__}")
    return transform
