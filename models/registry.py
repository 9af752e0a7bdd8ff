"""Named DAT configurations and ``create_model``.

Each variant is data: the official ``MODEL.DAT`` hyper-parameters plus the evaluation
preprocessing and labels that go with its released checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .config import DATConfig
from .dat import DAT, ModelInfo
from .transforms import Preprocessing

LABELS_DIR = Path(__file__).parent / "labels"


@cache
def imagenet_labels() -> tuple[str, ...]:
    """ImageNet-1k class names in training order (sorted WordNet ids): the first lemma."""
    lines = (LABELS_DIR / "imagenet1k.txt").read_text().splitlines()
    return tuple(line.split("\t", 1)[1].split(",")[0].strip() for line in lines)


def read_labels(path: str | Path) -> list[str]:
    """One label per line (blank lines ignored)."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class ModelSpec:
    config: DATConfig
    preprocessing: Preprocessing
    labels: Callable[[], tuple[str, ...] | list[str]] = imagenet_labels
    weights: Path | None = None  # embedded weights shipped in the repo, if any
    description: str = ""


_DEEP_STAGE3 = (("L", "S"), ("L", "S"), ("L", "D") * 9, ("L", "D"))

_REGISTRY: dict[str, ModelSpec] = {
    "dat_tiny": ModelSpec(DATConfig(drop_path_rate=0.2), Preprocessing(224),
                          description="DAT-T, ImageNet-1k, 224 (official dat_tiny.yaml)"),
    "dat_small": ModelSpec(DATConfig(depths=(2, 2, 18, 2), stage_spec=_DEEP_STAGE3,
                                     drop_path_rate=0.3), Preprocessing(224),
                           description="DAT-S, ImageNet-1k, 224 (official dat_small.yaml)"),
    "dat_base": ModelSpec(DATConfig(dim_stem=128, dims=(128, 256, 512, 1024), depths=(2, 2, 18, 2),
                                    stage_spec=_DEEP_STAGE3, heads=(4, 8, 16, 32),
                                    groups=(-1, -1, 4, 8), drop_path_rate=0.5),
                          Preprocessing(224),
                          description="DAT-B, ImageNet-1k, 224 (official dat_base.yaml)"),
}
_REGISTRY["dat_base_384"] = ModelSpec(
    _REGISTRY["dat_base"].config.replace(img_size=384, window_sizes=(12, 12, 12, 12)),
    Preprocessing(384), description="DAT-B, ImageNet-1k, 384 (official dat_base_384.yaml)")


# The embedded default classifier: a small DAT (L/S blocks early, D blocks with offset groups
# and position bias later) trained on handwritten digits by ``python -m models.demo train``.
WEIGHTS_DIR = Path(__file__).parent / "weights"
DIGITS_CONFIG = DATConfig(
    img_size=32, patch_size=2, num_classes=10, dim_stem=16, dims=(16, 32, 64, 128),
    depths=(2, 2, 2, 2), stage_spec=(("L", "S"), ("L", "S"), ("L", "D"), ("L", "D")),
    heads=(1, 2, 4, 8), window_sizes=(4, 4, 4, 2), groups=(-1, -1, 2, 4),
    use_pes=(False, False, True, True), strides=(-1, -1, 1, 1),
    offset_range_factor=(-1, -1, 2, 2), drop_path_rate=0.1)
_REGISTRY["dat_digits"] = ModelSpec(
    DIGITS_CONFIG,
    Preprocessing(input_size=32, crop_pct=1.0, interpolation="bicubic",
                  mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    labels=lambda: tuple("0123456789"),
    weights=WEIGHTS_DIR / "dat_digits.safetensors",
    description="small DAT with deformable attention, handwritten digits 0-9, 32 "
                "(trained by python -m models.demo train)")


def register_model(name: str, spec: ModelSpec) -> None:
    _REGISTRY[name] = spec


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def resolve_config(model: str | Path | Mapping[str, Any]) -> tuple[str, DATConfig, ModelSpec | None]:
    """A registered name, an official YAML / JSON config file, or a ``MODEL.DAT`` mapping."""
    if isinstance(model, Mapping):
        return "dat", DATConfig.from_mapping(dict(model)), None
    if isinstance(model, str) and model in _REGISTRY:
        spec = _REGISTRY[model]
        return model, spec.config, spec
    path = Path(model)
    if path.suffix in (".yaml", ".yml", ".json") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return path.stem, DATConfig.from_yaml(path), None
    get_spec(str(model))  # raises the "unknown model" error
    raise AssertionError("unreachable")


def create_model(model: str | Path | Mapping[str, Any] = "dat_tiny", *,
                 labels: list[str] | None = None, pretrained: bool = True,
                 **overrides: Any) -> DAT:
    """Builds a DAT in eval mode.

    ``model`` is a registered name (:func:`list_models`), a path to an official YAML (or a
    JSON with a ``config`` mapping), or a mapping with the official ``MODEL.DAT`` keys.
    ``overrides`` replace config fields (e.g. ``num_classes=10``, ``img_size=384``).
    Registered models that ship weights in the repo load them unless ``pretrained=False``.
    """
    name, config, spec = resolve_config(model)
    if overrides:
        config = config.replace(**overrides)
    if spec is not None and config.img_size == spec.preprocessing.input_size:
        preprocessing = spec.preprocessing
    else:
        preprocessing = Preprocessing(input_size=config.img_size)
    if labels is None:
        if spec is not None and len(spec.labels()) == config.num_classes:
            labels = list(spec.labels())
        elif config.num_classes == 1000:
            labels = list(imagenet_labels())
        else:
            labels = [f"class_{i}" for i in range(config.num_classes)]
    if len(labels) != config.num_classes:
        raise ValueError(f"{len(labels)} labels for {config.num_classes} classes")
    model_ = DAT(config, ModelInfo(name, preprocessing, list(labels)))
    if pretrained and spec is not None and spec.weights is not None and not overrides:
        from .checkpoint import load_checkpoint
        load_checkpoint(model_, spec.weights)
    return model_.eval()
