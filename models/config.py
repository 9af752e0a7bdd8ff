"""DAT hyper-parameters, named exactly as the ``MODEL.DAT`` section of the official YAML files."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Keys of the official constructor that only matter for training-time options we do not
# implement (sr_ratios, ns_per_pts) are accepted and kept for round-tripping.
_STAGES = 4


@dataclass(frozen=True)
class DATConfig:
    img_size: int = 224
    patch_size: int = 4
    num_classes: int = 1000
    expansion: int = 4
    dim_stem: int = 96
    dims: tuple[int, ...] = (96, 192, 384, 768)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    stage_spec: tuple[tuple[str, ...], ...] = (("L", "S"), ("L", "S"), ("L", "D") * 3, ("L", "D"))
    heads: tuple[int, ...] = (3, 6, 12, 24)
    window_sizes: tuple[int, ...] = (7, 7, 7, 7)
    groups: tuple[int, ...] = (-1, -1, 3, 6)
    use_pes: tuple[bool, ...] = (False, False, True, True)
    dwc_pes: tuple[bool, ...] = (False, False, False, False)
    strides: tuple[int, ...] = (-1, -1, 1, 1)
    sr_ratios: tuple[int, ...] = (-1, -1, -1, -1)
    offset_range_factor: tuple[float, ...] = (-1, -1, 2, 2)
    no_offs: tuple[bool, ...] = (False, False, False, False)
    fixed_pes: tuple[bool, ...] = (False, False, False, False)
    use_dwc_mlps: tuple[bool, ...] = (False, False, False, False)
    ns_per_pts: tuple[int, ...] = (4, 4, 4, 4)
    use_conv_patches: bool = False
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):  # freeze lists coming from YAML / JSON
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
                object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        per_stage = ("dims", "depths", "stage_spec", "heads", "window_sizes", "groups", "use_pes",
                     "dwc_pes", "strides", "offset_range_factor", "no_offs", "fixed_pes",
                     "use_dwc_mlps")
        for name in per_stage:
            if len(getattr(self, name)) != _STAGES:
                raise ValueError(f"DAT config: {name} needs one entry per stage ({_STAGES})")
        if self.img_size % (self.patch_size * 2 ** (_STAGES - 1)):
            raise ValueError(f"DAT config: img_size {self.img_size} must be divisible by "
                             f"patch_size * 8 = {self.patch_size * 8}")
        for i in range(_STAGES):
            fmap = self.stage_size(i)
            spec, depth = self.stage_spec[i], self.depths[i]
            if len(spec) != depth:
                raise ValueError(f"DAT config: stage {i} has depth {depth} but stage_spec {spec}")
            unknown = set(spec) - {"L", "S", "D"}
            if unknown:
                raise ValueError(f"DAT config: stage {i} has unknown block kinds {sorted(unknown)}")
            if self.dims[i] % self.heads[i]:
                raise ValueError(f"DAT config: stage {i} dim {self.dims[i]} is not divisible by "
                                 f"heads {self.heads[i]}")
            if {"L", "S"} & set(spec) and fmap % self.window_sizes[i]:
                raise ValueError(
                    f"DAT config: stage {i} feature map {fmap}x{fmap} is not divisible by window "
                    f"size {self.window_sizes[i]} (img_size {self.img_size})")
            if "D" in spec:
                g = self.groups[i]
                if g <= 0 or self.dims[i] % g or self.heads[i] % g:
                    raise ValueError(f"DAT config: stage {i} offset groups {g} must divide both "
                                     f"dim {self.dims[i]} and heads {self.heads[i]}")
                if self.strides[i] <= 0:
                    raise ValueError(f"DAT config: stage {i} needs a positive stride for D blocks")
                if self.dwc_pes[i] or self.fixed_pes[i]:
                    raise ValueError(
                        f"DAT config: stage {i} uses dwc_pes/fixed_pes, which the released DAT "
                        "models do not use and this implementation does not support")

    def stage_size(self, stage: int) -> int:
        """Side of the (square) feature map that stage ``stage`` works on."""
        return self.img_size // self.patch_size // 2**stage

    def replace(self, **changes: Any) -> DATConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            return [plain(x) for x in v] if isinstance(v, tuple) else v
        return {k: plain(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any]) -> DATConfig:
        """From a ``MODEL.DAT`` mapping (official key names). Unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(mapping) - known
        if unknown:
            raise ValueError(f"DAT config: unknown keys {sorted(unknown)}")
        return cls(**mapping)

    @classmethod
    def from_yaml(cls, path: str | Path) -> DATConfig:
        """From an official YAML file (``MODEL.DAT`` section) or a bare mapping file."""
        with open(path) as f:
            data = yaml.safe_load(f)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a DAT config (expected a mapping)")
        if "MODEL" in data:
            model = data["MODEL"]
            if model.get("TYPE", "dat") != "dat" or "DAT" not in model:
                raise ValueError(f"{path}: MODEL.TYPE must be 'dat' with a MODEL.DAT section")
            data = model["DAT"]
        elif "config" in data and isinstance(data["config"], dict):  # our fixture / JSON layout
            data = data["config"]
        return cls.from_mapping(data)


