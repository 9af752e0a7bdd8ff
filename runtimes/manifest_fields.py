"""The typed fields a manifest is made of: the dynamic batch range, a graph's tensors, the
artifact files; each read from JSON with the type checks that name a malformed field
(:class:`ManifestError`). :mod:`runtimes.manifest` puts them together."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TypeVar


class ManifestError(ValueError):
    """The manifest or an artifact it lists is missing, foreign, failed or altered."""


@dataclass(frozen=True)
class BatchRange:
    """The dynamic batch axis: the smallest, the most common (TensorRT tunes for it), largest."""

    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self) -> None:
        values = (self.min, self.opt, self.max)
        if not all(isinstance(v, int) for v in values) or not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(
                f"batch range must satisfy 1 <= min <= opt <= max, got "
                f"min={self.min} opt={self.opt} max={self.max}"
            )

    @property
    def dynamic(self) -> bool:
        return self.max > self.min

    def clip(self, size: int) -> int:
        return min(max(size, self.min), self.max)

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    @classmethod
    def from_dict(cls, data: dict) -> BatchRange:
        return cls(*(typed(data[key], int, f"batch {key}") for key in ("min", "opt", "max")))


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: ``shape`` has ``"batch"`` for the dynamic axis."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    layout: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "layout": self.layout}

    @classmethod
    def from_dict(cls, data: dict) -> TensorSpec:
        name = typed(data["name"], str, "a tensor name")
        shape = tuple(typed(data["shape"], list, f"the shape of {name}"))
        return cls(
            name, typed(data["dtype"], str, f"the dtype of {name}"), shape, str(data.get("layout", ""))
        )


@dataclass(frozen=True)
class Artifact:
    """One file of the export. ``sha256``/``bytes`` are filled in by :func:`write_manifest`.

    ``kind`` is ``onnx`` or ``tensorrt``; ``grid_sample`` the seam translation it carries;
    ``source`` (engines) the ONNX file it was built from; ``extra`` runtime facts such as the
    TensorRT version and GPU an engine was built for (engines only run there).
    """

    file: str
    kind: str
    grid_sample: str
    sha256: str = ""
    bytes: int = 0
    source: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Artifact:
        return cls(
            file=typed(data["file"], str, "an artifact's file"),
            kind=str(data["kind"]),
            grid_sample=str(data["grid_sample"]),
            sha256=str(data.get("sha256", "")),
            bytes=int(data.get("bytes", 0)),
            source=data.get("source"),
            extra=typed(data.get("extra") or {}, dict, "an artifact's extra"),
        )


_T = TypeVar("_T")
_JSON_KINDS = {dict: "an object", list: "an array", str: "a string", int: "an integer"}


def typed(value: object, kind: type[_T], what: str) -> _T:
    """``value`` where it has the JSON type a field needs, else the error naming the field."""
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ManifestError(f"malformed manifest: {what} must be {_JSON_KINDS[kind]}, not {value!r:.40}")
    return value
