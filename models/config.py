"""DAT hyper-parameters, named exactly as the ``MODEL.DAT`` section of the official YAML files.

One config describes both generations of the official code: DAT v1 (the CVPR 2022 release)
and DAT++ (the release's head, ``MODEL.NAME: dat_plus_plus``). ``plus_plus`` selects the
DAT++ semantics where the two codes differ on the same options: the convolutional stem, the
residual depth-wise MLP and its key layout, and the ``D`` block's reference points, query
grid, offset range and clamping (see :mod:`models.deformable`). It is our own key: the
official YAML says it through ``MODEL.NAME``, and a bare mapping through the keys only the
DAT++ constructor has (:func:`DATConfig.from_mapping`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_STAGES = 4
BLOCK_KINDS = {
    "L": "window attention",
    "S": "shifted window attention",
    "D": "deformable attention",
    "N": "neighborhood attention",
}
# Block kinds the official class also builds, none used by a released model.
_UNSUPPORTED_BLOCKS = {
    "P": "pyramid attention",
    "Q": "QnA attention",
    "X": "ConvNeXt block",
    "E": "slide attention",
    "A": "local deformable attention",
}

# Keywords of the official constructors that change nothing at inference, or only configure
# the block kinds above (which are refused by name): accepted and dropped.
IGNORED_KEYS = frozenset(
    {
        "lower_lr_kvs",
        "use_checkpoint",
        "init_cfg",
        "pretrained",
        "type",
        "out_indices",
        "heads_q",
        "ksize_qnas",
        "nqs",
        "qna_activation",  # Q blocks
        "local_orf",
        "local_kv_sizes",
        "offset_pes",  # A blocks
    }
)
# Keywords only the DAT++ constructors take (the classifier's and the detection backbone's):
# a mapping that has one was written for DAT++.
PLUS_PLUS_KEYS = frozenset(
    {
        "ksizes",
        "nat_ksizes",
        "use_lpus",
        "layer_scale_values",
        "log_cpb",
        "lower_lr_kvs",
        "heads_q",
        "ksize_qnas",
        "nqs",
        "qna_activation",
        "deform_groups",
        "use_cmt_mlps",
        "local_orf",
        "local_kv_sizes",
        "offset_pes",
        "use_checkpoint",
        "out_indices",
    }
)
PLUS_PLUS_NAME = "dat_plus_plus"  # MODEL.NAME of the official DAT++ YAML files


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
    # DAT++ options (the official defaults; v1 behaves as if they were these values).
    ksizes: tuple[int, ...] = (9, 7, 5, 3)  # depth-wise kernel of each stage's offset network
    nat_ksizes: tuple[int, ...] = (3, 3, 3, 3)  # neighborhood of the N blocks
    use_lpus: tuple[bool, ...] = (False, False, False, False)  # local perception units
    layer_scale_values: tuple[float, ...] = (-1, -1, -1, -1)  # LayerScale init; <= 0: none
    log_cpb: tuple[bool, ...] = (False, False, False, False)  # log-spaced continuous bias MLP
    deform_groups: tuple[int, ...] = (0, 0, 0, 0)  # detection backbone; unused by its blocks
    use_cmt_mlps: tuple[bool, ...] = (False, False, False, False)
    plus_plus: bool = False  # DAT++ semantics (module docstring)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):  # freeze lists coming from YAML / JSON
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
                object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        per_stage = (
            "dims",
            "depths",
            "stage_spec",
            "heads",
            "window_sizes",
            "groups",
            "use_pes",
            "dwc_pes",
            "strides",
            "offset_range_factor",
            "no_offs",
            "fixed_pes",
            "use_dwc_mlps",
            "ksizes",
            "nat_ksizes",
            "use_lpus",
            "layer_scale_values",
            "log_cpb",
            "use_cmt_mlps",
        )
        for name in per_stage:
            if len(getattr(self, name)) != _STAGES:
                raise ValueError(f"DAT config: {name} needs one entry per stage ({_STAGES})")
        if self.img_size % (self.patch_size * 2 ** (_STAGES - 1)):
            raise ValueError(
                f"DAT config: img_size {self.img_size} must be divisible by "
                f"patch_size * 8 = {self.patch_size * 8}"
            )
        if self.plus_plus and self.use_conv_patches and self.patch_size % 4:
            raise ValueError(
                "DAT config: the DAT++ convolutional stem needs a patch_size "
                f"divisible by 4 (two stride-{self.patch_size // 2} convs), got "
                f"{self.patch_size}"
            )
        for i in range(_STAGES):
            self._validate_stage(i)

    def _validate_stage(self, i: int) -> None:
        fmap = self.stage_size(i)
        spec, depth = self.stage_spec[i], self.depths[i]
        if len(spec) != depth:
            raise ValueError(f"DAT config: stage {i} has depth {depth} but stage_spec {spec}")
        for kind in sorted(set(spec)):
            if kind in _UNSUPPORTED_BLOCKS:
                raise ValueError(
                    f"DAT config: stage {i} uses '{kind}' blocks "
                    f"({_UNSUPPORTED_BLOCKS[kind]}), which no released DAT model "
                    "uses and this implementation does not support"
                )
            if kind not in BLOCK_KINDS:
                raise ValueError(f"DAT config: stage {i} has unknown block kind {kind!r}")
        if self.dims[i] % self.heads[i]:
            raise ValueError(
                f"DAT config: stage {i} dim {self.dims[i]} is not divisible by heads {self.heads[i]}"
            )
        if {"L", "S"} & set(spec) and fmap % self.window_sizes[i]:
            raise ValueError(
                f"DAT config: stage {i} feature map {fmap}x{fmap} is not divisible by window "
                f"size {self.window_sizes[i]} (img_size {self.img_size})"
            )
        if "N" in spec:
            k = self.nat_ksizes[i]
            if k < 3 or k % 2 == 0:
                raise ValueError(f"DAT config: stage {i} neighborhood size {k} must be odd and at least 3")
            if not self.plus_plus:
                raise ValueError(
                    f"DAT config: stage {i} has N blocks, which only DAT++ has; "
                    "set plus_plus (MODEL.NAME: dat_plus_plus)"
                )
        if self.use_cmt_mlps[i] and self.use_dwc_mlps[i]:
            raise ValueError(
                f"DAT config: stage {i} uses use_cmt_mlps, which no released DAT "
                "model uses and this implementation does not support"
            )
        if (self.use_lpus[i] or self.layer_scale_values[i] > 0 or self.log_cpb[i]) and not self.plus_plus:
            raise ValueError(
                f"DAT config: stage {i} uses DAT++ options (use_lpus, "
                "layer_scale_values, log_cpb) in a DAT v1 config"
            )
        if "D" in spec:
            g = self.groups[i]
            if g <= 0 or self.dims[i] % g or self.heads[i] % g:
                raise ValueError(
                    f"DAT config: stage {i} offset groups {g} must divide both "
                    f"dim {self.dims[i]} and heads {self.heads[i]}"
                )
            if self.strides[i] <= 0:
                raise ValueError(f"DAT config: stage {i} needs a positive stride for D blocks")
            if self.ksizes[i] < 1:
                raise ValueError(f"DAT config: stage {i} offset kernel {self.ksizes[i]} must be positive")
            if self.dwc_pes[i] or self.fixed_pes[i]:
                raise ValueError(
                    f"DAT config: stage {i} uses dwc_pes/fixed_pes, which the released DAT "
                    "models do not use and this implementation does not support"
                )
            if self.plus_plus and self.no_offs[i]:
                raise ValueError(
                    f"DAT config: stage {i} uses no_offs, which no released DAT++ "
                    "model uses and this implementation does not support"
                )

    def stage_size(self, stage: int) -> int:
        """Side of the (square) feature map that stage ``stage`` works on at ``img_size``."""
        return self.img_size // self.patch_size // 2**stage

    @property
    def windowed(self) -> bool:
        """Whether any stage has L/S blocks, which fix the input size to ``img_size``."""
        return any({"L", "S"} & set(spec) for spec in self.stage_spec)

    def replace(self, **changes: Any) -> DATConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            return [plain(x) for x in v] if isinstance(v, tuple) else v

        return {k: plain(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any], plus_plus: bool | None = None) -> DATConfig:
        """From a ``MODEL.DAT`` mapping (official key names). Unknown keys are an error;
        :data:`IGNORED_KEYS` are dropped. Without ``plus_plus`` (nor a ``plus_plus`` key), a
        mapping is DAT++ when it has a key only the DAT++ constructors take or an ``N`` block."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(mapping) - known - IGNORED_KEYS
        if unknown:
            raise ValueError(f"DAT config: unknown keys {sorted(unknown)}")
        data = {k: v for k, v in mapping.items() if k in known}
        if plus_plus is not None:
            data["plus_plus"] = plus_plus
        elif "plus_plus" not in data:
            specs = data.get("stage_spec", ())
            data["plus_plus"] = bool(PLUS_PLUS_KEYS & set(mapping)) or any("N" in s for s in specs)
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> DATConfig:
        """From an official YAML file (``MODEL.DAT`` section) or a bare mapping file."""
        with open(path) as f:
            data = yaml.safe_load(f)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a DAT config (expected a mapping)")
        plus_plus = None
        if "MODEL" in data:
            model = data["MODEL"]
            if model.get("TYPE", "dat") != "dat" or "DAT" not in model:
                raise ValueError(f"{path}: MODEL.TYPE must be 'dat' with a MODEL.DAT section")
            plus_plus = model.get("NAME") == PLUS_PLUS_NAME or None
            data = model["DAT"]
        elif "config" in data and isinstance(data["config"], dict):  # our fixture / JSON layout
            data = data["config"]
        return cls.from_mapping(data, plus_plus=plus_plus)
