"""Named DAT configurations and their lookup (``create_model`` builds them: :mod:`models.factory`).

Each variant is data: the official ``MODEL.DAT`` hyper-parameters plus the evaluation
preprocessing and labels that go with its released checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import DATConfig
from .labels import coco_categories, imagenet_labels
from .rcnn_config import CASCADE_TARGET_STDS, BBoxHeadConfig, RCNNConfig
from .retinanet_config import MMDetRetinaNetConfig, RetinaNetConfig
from .segmenter import SegmenterConfig
from .tasks import CLASSIFICATION, DETECTION, INSTANCE_SEGMENTATION, Task
from .transforms import KeepRatioResize, Letterbox, Preprocessing


@dataclass(frozen=True)
class ModelSpec:
    config: DATConfig | RetinaNetConfig | RCNNConfig  # a classifier or a detector (or segmenter)
    preprocessing: Preprocessing | Letterbox | KeepRatioResize
    labels: Callable[[], tuple[str, ...] | list[str]] = imagenet_labels
    weights: Path | None = None  # embedded weights shipped in the repo, if any
    description: str = ""
    category_ids: Callable[[], tuple[int, ...]] | None = None  # detectors: ids for COCO output

    @property
    def task(self) -> Task:
        if isinstance(self.config, RCNNConfig):
            return INSTANCE_SEGMENTATION if self.config.mask_head is not None else DETECTION
        if isinstance(self.config, SegmenterConfig):
            return INSTANCE_SEGMENTATION
        return DETECTION if isinstance(self.config, RetinaNetConfig) else CLASSIFICATION


_DEEP_STAGE3 = (("L", "S"), ("L", "S"), ("L", "D") * 9, ("L", "D"))

_REGISTRY: dict[str, ModelSpec] = {
    "dat_tiny": ModelSpec(
        DATConfig(drop_path_rate=0.2),
        Preprocessing(224),
        description="DAT-T, ImageNet-1k, 224 (official dat_tiny.yaml)",
    ),
    "dat_small": ModelSpec(
        DATConfig(depths=(2, 2, 18, 2), stage_spec=_DEEP_STAGE3, drop_path_rate=0.3),
        Preprocessing(224),
        description="DAT-S, ImageNet-1k, 224 (official dat_small.yaml)",
    ),
    "dat_base": ModelSpec(
        DATConfig(
            dim_stem=128,
            dims=(128, 256, 512, 1024),
            depths=(2, 2, 18, 2),
            stage_spec=_DEEP_STAGE3,
            heads=(4, 8, 16, 32),
            groups=(-1, -1, 4, 8),
            drop_path_rate=0.5,
        ),
        Preprocessing(224),
        description="DAT-B, ImageNet-1k, 224 (official dat_base.yaml)",
    ),
}


def _backbone_config(name: str) -> DATConfig:
    """The config of a registered classifier, which a detector here is built on."""
    config = _REGISTRY[name].config
    if not isinstance(config, DATConfig):
        raise TypeError(f"{name} is a detector, not a backbone")
    return config


_REGISTRY["dat_base_384"] = ModelSpec(
    _REGISTRY["dat_base"].config.replace(img_size=384, window_sizes=(12, 12, 12, 12)),
    Preprocessing(384),
    description="DAT-B, ImageNet-1k, 384 (official dat_base_384.yaml)",
)


# DAT++ (arXiv 2309.01430): every checkpoint the official release offers today. Its evaluation
# transform is v1's at 224 (resize 256, centre crop); the 384 model's YAML sets TEST.CROP False,
# a plain bicubic resize to 384, and keeps img_size 224: its tables are built at 224 and read
# in normalised coordinates at any size.
_PP_STAGE_SPEC = (("N", "D"), ("N", "D") * 2, ("N", "D") * 9, ("D", "D"))
DAT_PP_TINY = DATConfig(
    dim_stem=64,
    dims=(64, 128, 256, 512),
    depths=(2, 4, 18, 2),
    stage_spec=_PP_STAGE_SPEC,
    heads=(2, 4, 8, 16),
    groups=(1, 2, 4, 8),
    use_pes=(True,) * 4,
    strides=(8, 4, 2, 1),
    offset_range_factor=(-1, -1, -1, -1),
    use_dwc_mlps=(True,) * 4,
    use_lpus=(True,) * 4,
    use_conv_patches=True,
    ksizes=(9, 7, 5, 3),
    nat_ksizes=(7, 7, 7, 7),
    drop_path_rate=0.2,
    plus_plus=True,
)
_REGISTRY["dat_pp_tiny"] = ModelSpec(
    DAT_PP_TINY,
    Preprocessing(224),
    description="DAT-T++, ImageNet-1k, 224 (official configs/dat_tiny.yaml, dat_plus_plus)",
)
_REGISTRY["dat_pp_small"] = ModelSpec(
    DAT_PP_TINY.replace(
        dim_stem=96, dims=(96, 192, 384, 768), heads=(3, 6, 12, 24), groups=(1, 2, 3, 6), drop_path_rate=0.4
    ),
    Preprocessing(224),
    description="DAT-S++, ImageNet-1k, 224 (official configs/dat_small.yaml, dat_plus_plus)",
)
_REGISTRY["dat_pp_base"] = ModelSpec(
    DAT_PP_TINY.replace(
        dim_stem=128,
        dims=(128, 256, 512, 1024),
        heads=(4, 8, 16, 32),
        groups=(2, 4, 8, 16),
        drop_path_rate=0.7,
    ),
    Preprocessing(224),
    description="DAT-B++, ImageNet-1k, 224 (official configs/dat_base.yaml, dat_plus_plus)",
)
_REGISTRY["dat_pp_base_384"] = ModelSpec(
    _REGISTRY["dat_pp_base"].config.replace(drop_path_rate=0.6),
    Preprocessing(384, crop_pct=1.0),
    description="DAT-B++, ImageNet-1k, 384 (official configs/dat_base_384.yaml, dat_plus_plus)",
)


# The embedded default classifier: a small DAT (L/S blocks early, D blocks with offset groups
# and position bias later) trained on handwritten digits by ``python -m training.digits train``.
WEIGHTS_DIR = Path(__file__).parent / "weights"
DIGITS_CONFIG = DATConfig(
    img_size=32,
    patch_size=2,
    num_classes=10,
    dim_stem=16,
    dims=(16, 32, 64, 128),
    depths=(2, 2, 2, 2),
    stage_spec=(("L", "S"), ("L", "S"), ("L", "D"), ("L", "D")),
    heads=(1, 2, 4, 8),
    window_sizes=(4, 4, 4, 2),
    groups=(-1, -1, 2, 4),
    use_pes=(False, False, True, True),
    strides=(-1, -1, 1, 1),
    offset_range_factor=(-1, -1, 2, 2),
    drop_path_rate=0.1,
)
_REGISTRY["dat_digits"] = ModelSpec(
    DIGITS_CONFIG,
    Preprocessing(
        input_size=32, crop_pct=1.0, interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    ),
    labels=lambda: tuple("0123456789"),
    weights=WEIGHTS_DIR / "dat_digits.safetensors",
    description="small DAT with deformable attention, handwritten digits 0-9, 32 "
    "(trained by python -m training.digits train)",
)


# Detectors: RetinaNet on DAT, the DAT detection release's settings. The canvas is the square
# an image is letterboxed into; 1120 = 5 * 224 keeps every stage a multiple of the 7-wide windows.
COCO_CANVAS = 1120
for _backbone, _title in (("dat_tiny", "DAT-T"), ("dat_small", "DAT-S")):
    _REGISTRY[f"{_backbone}_retinanet"] = ModelSpec(
        RetinaNetConfig(_backbone_config(_backbone).replace(img_size=COCO_CANVAS, drop_path_rate=0.0)),
        Letterbox(COCO_CANVAS),
        labels=lambda: coco_categories()[0],
        category_ids=lambda: coco_categories()[1],
        description=f"RetinaNet + FPN on {_title}, COCO's 80 classes, canvas {COCO_CANVAS} "
        f"(weights: an mmdet-layout checkpoint, or an ImageNet {_title} backbone "
        f"through models.detection.load_backbone)",
    )

# The embedded default detector: the default classifier's backbone on a 128 canvas, a slim
# FPN and head, trained on scenes of several digits by ``python -m training.digits_detection train``.
DIGITS_DETECTOR_CONFIG = RetinaNetConfig(
    DIGITS_CONFIG.replace(img_size=128), num_classes=10, fpn_channels=64, feat_channels=64, stacked_convs=2
)
_REGISTRY["dat_digits_detector"] = ModelSpec(
    DIGITS_DETECTOR_CONFIG,
    Letterbox(128, interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    labels=lambda: tuple("0123456789"),
    weights=WEIGHTS_DIR / "dat_digits_detector.safetensors",
    description="RetinaNet on the small digits DAT: finds and reads the digits in an image "
    "(trained by python -m training.digits_detection train)",
)
# The same detector (its weights copied, frozen) plus a mask head trained on the scenes' glyph
# pixels by ``python -m training.digits_segmentation train``: the same boxes, and their masks.
_REGISTRY["dat_digits_segmenter"] = ModelSpec(
    SegmenterConfig(**vars(DIGITS_DETECTOR_CONFIG)),  # the detector, field for field
    _REGISTRY["dat_digits_detector"].preprocessing,
    labels=lambda: tuple("0123456789"),
    weights=WEIGHTS_DIR / "dat_digits_segmenter.safetensors",
    description="dat_digits_detector plus a mask head: finds the digits in an image and masks "
    "each one's ink (trained by python -m training.digits_segmentation train)",
)


# The DAT detection release (LeapLabTHU/DAT-Detection, configs/dat/*.py): COCO detectors on the
# DAT++ backbones, mmdet 2.x's test semantics and pipeline (resize to fit 1333 x 800 keeping
# the aspect ratio, pad to 32). The 1x and 3x schedules differ only in training (drop path).
# name: (backbone, architecture, drop_path_rate, the release's config)
RELEASED_DETECTORS = {
    "dat_pp_tiny_mask_rcnn_1x": ("dat_pp_tiny", "mask_rcnn", 0.0, "mrcn_tiny_1x_4n_dp00_lr4"),
    "dat_pp_tiny_mask_rcnn_3x": ("dat_pp_tiny", "mask_rcnn", 0.3, "mrcn_tiny_3x_4n_dp03_lr4"),
    "dat_pp_small_mask_rcnn_1x": ("dat_pp_small", "mask_rcnn", 0.1, "mrcn_small_1x_4n_dp01_lr4"),
    "dat_pp_small_mask_rcnn_3x": ("dat_pp_small", "mask_rcnn", 0.5, "mrcn_small_3x_4n_dp05_lr4"),
    "dat_pp_tiny_cascade_mask_rcnn_1x": (
        "dat_pp_tiny",
        "cascade_mask_rcnn",
        0.0,
        "cmrcn_tiny_1x_4n_dp00_lr4",
    ),
    "dat_pp_tiny_cascade_mask_rcnn_3x": (
        "dat_pp_tiny",
        "cascade_mask_rcnn",
        0.1,
        "cmrcn_tiny_3x_4n_dp01_lr4",
    ),
    "dat_pp_small_cascade_mask_rcnn_3x": (
        "dat_pp_small",
        "cascade_mask_rcnn",
        0.5,
        "cmrcn_small_3x_4n_dp05_lr4",
    ),
    "dat_pp_base_cascade_mask_rcnn_3x": (
        "dat_pp_base",
        "cascade_mask_rcnn",
        0.8,
        "cmrcn_base_3x_8n_dp08_lr4",
    ),
    "dat_pp_tiny_retinanet_1x": ("dat_pp_tiny", "retinanet", 0.0, "rtn_tiny_1x_4n_dp00_lr2"),
    "dat_pp_tiny_retinanet_3x": ("dat_pp_tiny", "retinanet", 0.2, "rtn_tiny_3x_4n_dp02_lr2"),
    "dat_pp_small_retinanet_1x": ("dat_pp_small", "retinanet", 0.1, "rtn_small_1x_4n_dp01_lr2"),
    "dat_pp_small_retinanet_3x": ("dat_pp_small", "retinanet", 0.5, "rtn_small_3x_4n_dp05_lr2"),
}
_ARCHITECTURES = {
    "mask_rcnn": "Mask R-CNN",
    "cascade_mask_rcnn": "Cascade Mask R-CNN",
    "retinanet": "RetinaNet",
}


def _released_detector(
    backbone: str, architecture: str, drop_path_rate: float
) -> RCNNConfig | MMDetRetinaNetConfig:
    # the release's constructor builds every stage's sr_ratios (unused by N and D blocks)
    dat = _backbone_config(backbone).replace(sr_ratios=(8, 4, 2, 1), drop_path_rate=drop_path_rate)
    if architecture == "retinanet":
        return MMDetRetinaNetConfig(dat)  # out_indices 1-3, P3-P7 from C5: the defaults
    if architecture == "mask_rcnn":
        return RCNNConfig(dat)  # the defaults are mask_rcnn_dat_fpn.py's
    heads = tuple(
        BBoxHeadConfig(num_shared_convs=4, num_shared_fcs=1, norm=True, target_stds=stds)
        for stds in CASCADE_TARGET_STDS
    )
    return RCNNConfig(dat, fpn_extra=None, cascade=True, bbox_heads=heads)


for _name, (_backbone, _architecture, _drop_path, _release) in RELEASED_DETECTORS.items():
    _REGISTRY[_name] = ModelSpec(
        _released_detector(_backbone, _architecture, _drop_path),
        KeepRatioResize(),
        labels=lambda: coco_categories()[0],
        category_ids=lambda: coco_categories()[1],
        description=f"{_ARCHITECTURES[_architecture]} + FPN on DAT-{_backbone[7].upper()}++, COCO's 80 "
        f"classes (DAT-Detection configs/dat/{_release}.py; weights: its released .pth)",
    )


def register_model(name: str, spec: ModelSpec) -> None:
    _REGISTRY[name] = spec


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        by_task: dict[Task, list[str]] = {}
        for known in list_models():  # classifiers first: the list is long, and cut in one-line errors
            by_task.setdefault(_REGISTRY[known].task, []).append(known)
        listing = "; ".join(
            f"{task}: {', '.join(names)}"
            for task, names in sorted(by_task.items(), key=lambda item: item[0] is not CLASSIFICATION)
        )
        raise KeyError(f"unknown model {name!r}; known models, {listing}") from None


def resolve_config(model: str | Path | Mapping[str, Any]) -> tuple[str, Any, ModelSpec | None]:
    """A registered name, an official YAML / JSON config file, an mmdet 2.x config file (.py,
    its detector's config), or a ``MODEL.DAT`` mapping."""
    if isinstance(model, Mapping):
        return "dat", DATConfig.from_mapping(dict(model)), None
    if isinstance(model, str) and model in _REGISTRY:
        spec = _REGISTRY[model]
        return model, spec.config, spec
    path = Path(model)
    if path.suffix == ".py":  # an mmdet config, read as data
        from .mmdet_config import read_mmdet_config
        from .mmdet_models import detector_config

        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return path.stem, detector_config(read_mmdet_config(path)["model"]), None
    if path.suffix in (".yaml", ".yml", ".json") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return path.stem, DATConfig.from_yaml(path), None
    get_spec(str(model))  # raises the "unknown model" error
    raise AssertionError("unreachable")
