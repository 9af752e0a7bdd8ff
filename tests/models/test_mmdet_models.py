"""Detectors from mmdet 2.x configs: what create_detector reads (the fixtures' flattened
configs, the release's configs/dat/*.py with their _base_ chains), what it refuses, and a
Mask R-CNN from its config file and a JPEG to mmdet's masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from models import (
    DETECTION,
    INSTANCE_SEGMENTATION,
    RCNN,
    KeepRatioResize,
    MMDetRetinaNet,
    create_detector,
    create_model,
    get_spec,
    load_checkpoint,
)
from models.mmdet_config import ConfigError, read_mmdet_config
from models.mmdet_models import detector_config
from models.registry import RELEASED_DETECTORS
from tests.helpers.detection import fixture_config
from tests.helpers.paths import FIXTURES, official_fixture

DETECTION_SHAPES = FIXTURES / "official_dat_pp_detection_state_dict_shapes.json"


def fixture_path(name: str):
    path = FIXTURES / f"mmdet_{name}_mini" / "config.py"
    if not path.is_file():
        pytest.skip(f"official fixtures not found at {FIXTURES}")
    return path


@pytest.mark.parametrize("name", ["mask_rcnn", "cascade_mask_rcnn"])
def test_the_fixture_configs(name):
    detector = create_detector(fixture_path(name))
    assert isinstance(detector, RCNN) and not detector.training
    assert detector.config == fixture_config(name)
    assert detector.info.name == "config" and detector.task is INSTANCE_SEGMENTATION
    assert detector.info.preprocessing == KeepRatioResize((480, 320))  # the fixture's test pipeline
    assert len(detector.info.labels) == 80 and detector.info.labels[0] == "person"
    assert detector.info.category_ids[:3] == [1, 2, 3] and detector.info.category_ids[-1] == 90


def test_the_retinanet_fixture_config():
    detector = create_detector(fixture_path("retinanet"))
    assert isinstance(detector, MMDetRetinaNet) and detector.task is DETECTION
    config = detector.config
    assert (config.out_indices, config.fpn_channels, config.feat_channels, config.num_outs) == (
        (1, 2, 3),
        64,
        64,
        5,
    )
    assert (config.nms_pre, config.score_threshold, config.iou_threshold, config.max_per_img) == (
        1000,
        0.05,
        0.5,
        100,
    )
    load_checkpoint(detector, FIXTURES / "mmdet_retinanet_mini" / "checkpoint.pth")  # strict


def test_create_model_takes_a_config_file():
    detector = create_model(fixture_path("mask_rcnn"), score_threshold=0.3)
    assert isinstance(detector, RCNN) and detector.config.score_threshold == 0.3
    assert detector.info.preprocessing.img_scale == (480, 320)


def test_create_backbone_takes_detector_configs():
    from models import create_backbone

    assert create_backbone("dat_pp_small_retinanet_3x").out_indices == (1, 2, 3)  # the stages its FPN reads
    backbone = create_backbone(fixture_path("cascade_mask_rcnn"))
    assert backbone.out_indices == (0, 1, 2, 3) and backbone.config.dims == (32, 64, 128, 256)


def model_dict(path) -> dict:
    return read_mmdet_config(path)["model"]


def test_unsupported_settings_are_named():
    base = model_dict(fixture_path("mask_rcnn"))
    cases = [
        ({**base, "type": "YOLOV3"}, "model type 'YOLOV3' is not supported; supported: MaskRCNN"),
        ({**base, "backbone": {"type": "ResNet", "depth": 50}}, "model.backbone: .*type='DAT'"),
        ({**base, "neck": {**base["neck"], "type": "PAFPN"}}, "model.neck: type 'PAFPN'"),
        ({**base, "neck": {**base["neck"], "in_channels": [64, 64, 128, 256]}}, "not the backbone's"),
        (
            {
                **base,
                "test_cfg": {
                    **base["test_cfg"],
                    "rcnn": {**base["test_cfg"]["rcnn"], "nms": {"type": "soft_nms", "iou_threshold": 0.5}},
                },
            },
            "model.test_cfg.rcnn.nms type 'soft_nms'",
        ),
        (
            {
                **base,
                "roi_head": {
                    **base["roi_head"],
                    "bbox_head": {**base["roi_head"]["bbox_head"], "type": "DoubleConvFCBBoxHead"},
                },
            },
            "box head type 'DoubleConvFCBBoxHead'",
        ),
        (
            {
                **base,
                "roi_head": {
                    **base["roi_head"],
                    "mask_head": {**base["roi_head"]["mask_head"], "upsample_cfg": {"type": "bilinear"}},
                },
            },
            "upsample_cfg",
        ),
        (
            {
                **base,
                "roi_head": {
                    **base["roi_head"],
                    "bbox_roi_extractor": {
                        **base["roi_head"]["bbox_roi_extractor"],
                        "roi_layer": {"type": "RoIAlign", "output_size": 7, "aligned": False},
                    },
                },
            },
            "aligned=False",
        ),
        (
            {
                **base,
                "rpn_head": {
                    **base["rpn_head"],
                    "bbox_coder": {**base["rpn_head"]["bbox_coder"], "target_stds": [1.0, 1.0, 1.0]},
                },
            },
            r"model.rpn_head.bbox_coder.target_stds: 4 values \(x, y, w, h\) expected, got 3",
        ),
    ]
    for model, message in cases:
        with pytest.raises(ConfigError, match=message):
            detector_config(model)
    assert isinstance(detector_config(base), type(create_detector(fixture_path("mask_rcnn")).config))


def test_a_faster_rcnn_has_no_mask_head():
    base = model_dict(fixture_path("mask_rcnn"))
    roi = {k: v for k, v in base["roi_head"].items() if k not in ("mask_head", "mask_roi_extractor")}
    config = detector_config({**base, "type": "FasterRCNN", "roi_head": roi})
    assert config.mask_head is None
    detector = create_detector(
        {
            "model": {**base, "type": "FasterRCNN", "roi_head": roi},
            "test_pipeline": read_mmdet_config(fixture_path("mask_rcnn"))["test_pipeline"],
        }
    )
    assert detector.task is DETECTION and not any(
        k.startswith("roi_head.mask_head") for k in detector.state_dict()
    )
    with pytest.raises(ConfigError, match="needs model.roi_head.mask_head"):
        detector_config({**base, "roi_head": roi})


def test_the_release_configs_build_the_released_layouts(release_configs):
    """configs/dat/*.py: every key and shape of the twelve released checkpoints."""
    if not DETECTION_SHAPES.is_file():
        pytest.skip(f"official fixtures not found at {FIXTURES}")
    shapes = json.loads(DETECTION_SHAPES.read_text())
    for path in sorted((release_configs / "dat").glob("*.py")):
        detector = create_detector(path)
        assert detector.info.preprocessing == KeepRatioResize()  # (1333, 800), pad 32
        got = {k: list(v.shape) for k, v in detector.state_dict().items()}
        assert got == shapes[path.stem], path.stem


@pytest.mark.slow
def test_mask_rcnn_from_its_config_and_a_jpeg():
    """config.py + checkpoint.pth + chelsea.jpg, nothing else: mmdet's 100 detections and
    their masks at the original 451 x 300 (pixels within 1e-3 of the threshold excused)."""
    from tests.helpers.detection import assert_same_detections

    reference = official_fixture("mmdet_mask_rcnn_mini")
    expected = reference["expected"]
    detector = create_detector(fixture_path("mask_rcnn"))
    load_checkpoint(detector, reference["checkpoint"])
    [result] = detector.predict([Image.open(FIXTURES / "chelsea.jpg").convert("RGB")])
    assert_same_detections(result.boxes, result.scores, result.labels, expected)
    height, width = expected["masks_shape"][1:]
    want = torch.from_numpy(
        np.unpackbits(expected["masks_packed"].numpy(), axis=-1)[..., :width].astype(bool)
    )
    assert result.masks.shape == (100, height, width) and result.masks.dtype == torch.bool
    # the same order of detections on both sides once sorted by (label, score)
    ours = sorted(range(100), key=lambda i: (int(result.labels[i]), -float(result.scores[i])))
    theirs = sorted(range(100), key=lambda i: (int(expected["labels"][i]), -float(expected["scores"][i])))
    differ = (result.masks[ours] != want[theirs]).sum().item()
    assert differ <= 20 and want.sum() > 100_000


# --------------------------------------------------------------------------- the registered releases


@pytest.fixture(scope="module")
def detection_shapes() -> dict:
    if not DETECTION_SHAPES.is_file():
        pytest.skip(f"official fixtures not found at {FIXTURES}")
    return json.loads(DETECTION_SHAPES.read_text())


@pytest.mark.parametrize("name", sorted(RELEASED_DETECTORS))
def test_registered_releases_have_the_released_layouts(name, detection_shapes):
    """Each registered release builds every key and shape of its released checkpoint."""
    detector = create_model(name)
    release = RELEASED_DETECTORS[name][3]
    assert {k: list(v.shape) for k, v in detector.state_dict().items()} == detection_shapes[release]
    spec = get_spec(name)
    assert detector.task is spec.task is (DETECTION if "retinanet" in name else INSTANCE_SEGMENTATION)
    assert detector.info.preprocessing == KeepRatioResize() and detector.info.name == name
    assert detector.info.labels[0] == "person" and detector.info.category_ids[-1] == 90


def test_every_release_is_registered(detection_shapes):
    assert sorted(v[3] for v in RELEASED_DETECTORS.values()) == sorted(detection_shapes)
    assert {
        "dat_pp_tiny_mask_rcnn_3x",
        "dat_pp_tiny_cascade_mask_rcnn_1x",
        "dat_pp_small_retinanet_3x",
        "dat_pp_base_cascade_mask_rcnn_3x",
    } <= set(RELEASED_DETECTORS)


def test_registered_releases_are_their_config_files(release_configs):
    """The registry's configs equal what create_detector reads from configs/dat/*.py."""
    for name, (_, _, _, release) in RELEASED_DETECTORS.items():
        assert get_spec(name).config == detector_config(
            read_mmdet_config(release_configs / "dat" / f"{release}.py")["model"]
        ), name
