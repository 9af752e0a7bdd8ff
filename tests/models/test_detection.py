"""RetinaNet on DAT: anchors and box coding as mmdet computes them, NMS semantics, the mmdet
key layout, backbone initialisation, letterboxing and the padded output contract."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from models import DAT, DATConfig, Letterbox, RetinaNet, RetinaNetConfig, create_model, load_backbone
from models.boxes import box_iou
from models.labels import coco_categories
from models.nms import greedy_nms_keep
from models.retinanet_boxes import MAX_LOG_RATIO, base_anchors, decode_boxes, encode_boxes, grid_anchors
from tests.helpers.detection import assert_same_detections
from tests.helpers.paths import FIXTURES
from tests.helpers.tiny import TINY_CONFIG, TINY_PP_CONFIG

DETECTION_SHAPES = FIXTURES / "official_dat_pp_detection_state_dict_shapes.json"


@pytest.fixture(scope="module")
def detector() -> RetinaNet:
    torch.manual_seed(0)
    return create_model("dat_digits_detector", pretrained=False)


def test_anchors_follow_mmdets_generator():
    cfg = RetinaNetConfig(DATConfig())  # the release's settings: octave 4, 3 scales, ratios 0.5/1/2
    anchors = base_anchors(8, cfg)
    assert anchors.shape == (9, 4)
    # ratio-major: (ratio 0.5, scale 1) first; h/w = 0.5 at area (4 * 8)^2
    w, h = anchors[0, 2] - anchors[0, 0], anchors[0, 3] - anchors[0, 1]
    assert float(h / w) == pytest.approx(0.5) and float(w * h) == pytest.approx(32.0**2)
    sides = (anchors[3:6, 2] - anchors[3:6, 0]).tolist()  # ratio 1: 32, 32 * 2^(1/3), 32 * 2^(2/3)
    assert sides == pytest.approx([32.0, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)])
    grid = grid_anchors(8, 3, cfg)
    assert grid.shape == (3 * 3 * 9, 4)
    # location-major (row, column, anchor); centres at (x * stride, y * stride)
    assert torch.allclose(grid[9] - grid[0], torch.tensor([8.0, 0.0, 8.0, 0.0]))
    assert torch.allclose(grid[27] - grid[0], torch.tensor([0.0, 8.0, 0.0, 8.0]))
    assert cfg.strides == (8, 16, 32, 64, 128)


def test_level_sizes_round_up_past_the_backbone():
    cfg = RetinaNetConfig(DATConfig(img_size=1120))
    assert cfg.level_sizes == (140, 70, 35, 18, 9)


def test_box_coding_round_trips_and_clamps():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 45.0, 25.0]])
    boxes = torch.tensor([[1.0, 2.0, 13.0, 18.0], [0.0, 10.0, 50.0, 30.0]])
    deltas = encode_boxes(anchors, boxes)
    assert torch.allclose(decode_boxes(anchors, deltas), boxes, atol=1e-5)
    huge = decode_boxes(anchors[:1], torch.tensor([[0.0, 0.0, 50.0, -50.0]]))
    width, height = float(huge[0, 2] - huge[0, 0]), float(huge[0, 3] - huge[0, 1])
    assert width == pytest.approx(10 * math.exp(MAX_LOG_RATIO), rel=1e-5)
    assert height == pytest.approx(20 * math.exp(-MAX_LOG_RATIO), rel=1e-5)
    clipped = decode_boxes(anchors, torch.tensor([[-5.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]]), 40.0)
    assert clipped.min() >= 0 and clipped.max() <= 40


def test_box_iou():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    assert box_iou(a, b).tolist() == [[pytest.approx(1 / 3), 0.0]]


def test_nms_has_onnx_semantics():
    boxes = torch.tensor(
        [
            [
                [0.0, 0.0, 10.0, 10.0],
                [1.0, 0.0, 11.0, 10.0],
                [0.0, 5.0, 10.0, 15.0],
                [50.0, 50.0, 60.0, 60.0],
                [70.0, 70.0, 70.0, 80.0],
            ]
        ]
    )
    scores = torch.tensor(
        [
            [
                [0.9, 0.8, 0.7, 0.05, 0.6],  # class 0
                [0.0, 0.85, 0.0, 0.3, 0.0],
            ]
        ]
    )  # class 1
    keep = greedy_nms_keep(boxes, scores, max_per_class=10, iou_threshold=0.5, score_threshold=0.05)
    # box 1 overlaps box 0 (IoU 0.82) in class 0 only; box 2 (IoU 1/3) stays; 0.05 is not above
    # the threshold; the zero-area box is kept and suppresses nothing
    assert keep[0].tolist() == [[1, 0, 1, 0, 1], [0, 1, 0, 1, 0]]
    capped = greedy_nms_keep(boxes, scores, max_per_class=1, iou_threshold=0.5, score_threshold=0.05)
    assert capped[0].tolist() == [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0]]


def test_outputs_are_padded_to_max_per_img(detector):
    with torch.no_grad():
        found = detector(torch.randn(2, 3, 128, 128))
    assert found.boxes.shape == (2, 100, 4) and found.scores.shape == found.labels.shape == (2, 100)
    assert found.labels.dtype == torch.int64
    empty = found.labels < 0
    assert torch.all(found.scores[empty] == 0) and torch.all(found.boxes[empty] == 0)
    # An untrained head scores every anchor at the 0.01 prior, under the 0.05 threshold.
    assert empty.all()


def test_detections_come_sorted_and_above_the_threshold(detector):
    with torch.no_grad():
        detector.bbox_head.retina_cls.bias.fill_(0.0)  # every class at about 0.5
        try:
            found = detector(torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(1)))
        finally:
            detector.bbox_head.retina_cls.bias.fill_(-math.log(99))
    kept = found.labels[0] >= 0
    assert kept.sum() == 100
    scores = found.scores[0][kept]
    assert torch.all(scores[:-1] >= scores[1:]) and scores.min() > 0.05
    boxes = found.boxes[0][kept]
    assert boxes.min() >= 0 and boxes.max() <= 128


def test_state_dict_uses_mmdets_names(detector):
    keys = set(detector.state_dict())
    for key in (
        "backbone.patch_proj.0.weight",
        "backbone.norms.1.norm.weight",
        "neck.lateral_convs.0.conv.weight",
        "neck.fpn_convs.4.conv.bias",
        "bbox_head.cls_convs.1.conv.weight",
        "bbox_head.reg_convs.0.conv.bias",
        "bbox_head.retina_cls.weight",
        "bbox_head.retina_reg.bias",
    ):
        assert key in keys, key
    assert not any(k.startswith(("backbone.cls_", "backbone.norms.0.")) or "anchors" in k for k in keys)
    assert detector.bbox_head.retina_cls.out_channels == 9 * 10


def test_mmdet_checkpoints_load_strictly():
    """A checkpoint in a released layout (DAT-Detection's RetinaNet on DAT-T++, every key and
    shape of rtn_tiny_1x) loads strictly into our RetinaNet, each tensor where mmdet keeps it;
    one missing key is named. The layout is the release's, not our own state_dict read back."""
    from models import get_spec, load_checkpoint

    if not DETECTION_SHAPES.is_file():
        pytest.skip(
            f"official fixtures not found at {DETECTION_SHAPES.parent} (they live beside the "
            "repository in ../shared; a plain clone does not have them)"
        )
    released = json.loads(DETECTION_SHAPES.read_text())["rtn_tiny_1x_4n_dp00_lr2"]
    assert {k: v for k, v in released.items() if k.startswith("neck.lateral_convs.")} == {
        "neck.lateral_convs.0.conv.weight": [256, 128, 1, 1],
        "neck.lateral_convs.0.conv.bias": [256],
        "neck.lateral_convs.1.conv.weight": [256, 256, 1, 1],
        "neck.lateral_convs.1.conv.bias": [256],
        "neck.lateral_convs.2.conv.weight": [256, 512, 1, 1],
        "neck.lateral_convs.2.conv.bias": [256],
    }
    generator = torch.Generator().manual_seed(0)
    state = {key: torch.randn(shape, generator=generator) for key, shape in released.items()}
    ours = RetinaNet(RetinaNetConfig(get_spec("dat_pp_tiny").config, num_classes=80))
    load_checkpoint(ours, {"meta": {}, "state_dict": state})  # mmdet's wrapper
    loaded = ours.state_dict()
    for key in (
        "backbone.stages.2.attns.17.rpe_table",
        "backbone.norms.3.norm.weight",
        "neck.fpn_convs.3.conv.weight",
        "bbox_head.retina_cls.bias",
    ):
        assert torch.equal(loaded[key], state[key]), key
    state.pop("neck.fpn_convs.4.conv.bias")
    with pytest.raises(ValueError, match="1 missing: neck.fpn_convs.4.conv.bias"):
        load_checkpoint(ours, state)


def test_backbone_initialises_from_a_classification_checkpoint():
    torch.manual_seed(0)
    classifier = DAT(DATConfig.from_mapping(TINY_CONFIG))
    detector = RetinaNet(
        RetinaNetConfig(
            DATConfig.from_mapping({**TINY_CONFIG, "img_size": 64}),
            num_classes=3,
            fpn_channels=16,
            feat_channels=16,
            stacked_convs=1,
        )
    )
    norms_before = detector.backbone.norms[3].norm.weight.clone()
    load_backbone(detector, classifier.state_dict())
    ours, theirs = detector.backbone.state_dict(), classifier.state_dict()
    assert torch.equal(ours["stages.0.attns.0.proj_qkv.weight"], theirs["stages.0.attns.0.proj_qkv.weight"])
    # the D blocks' position tables were resampled to the larger feature maps
    key = "stages.3.attns.1.rpe_table"
    assert theirs[key].shape[1:] == (3, 3) and ours[key].shape[1:] == (7, 7)
    assert torch.equal(detector.backbone.norms[3].norm.weight, norms_before)
    with pytest.raises(ValueError, match="mis-shaped"):
        load_backbone(detector, {**theirs, "patch_proj.0.weight": torch.zeros(1)})


def test_load_backbone_renames_layer_scale_to_gamma():
    torch.manual_seed(0)
    classifier = create_model(TINY_PP_CONFIG)
    with torch.no_grad():
        classifier.stages[2].layer_scales[3].weight.uniform_()
    detector = RetinaNet(
        RetinaNetConfig(
            DATConfig.from_mapping(TINY_PP_CONFIG),
            num_classes=2,
            fpn_channels=8,
            feat_channels=8,
            stacked_convs=1,
        )
    )
    load_backbone(detector, classifier.state_dict())
    assert torch.equal(
        detector.backbone.stages[2].layer_scales[3].gamma, classifier.stages[2].layer_scales[3].weight
    )


def test_detector_takes_only_its_canvas(detector):
    # the backbone runs at any multiple of its total stride (16 here); the anchors are the canvas's
    with torch.no_grad():
        assert len(detector.backbone(torch.randn(1, 3, 160, 128))) == 3
    with torch.no_grad(), pytest.raises(ValueError, match=r"expects images of shape \(B, 3, 128, 128\)"):
        detector(torch.randn(1, 3, 160, 160))


def test_anchors_stay_float32_in_half_precision():
    model = create_model("dat_digits_detector", pretrained=False)
    exact = model.anchors.clone()
    model.half()
    assert model.anchors.dtype == torch.float32 and torch.equal(model.anchors, exact)


def test_letterbox_keeps_the_aspect_and_pads_with_zero():
    from PIL import Image

    box = Letterbox(64, mean=(0.5,) * 3, std=(0.5,) * 3)
    image = Image.new("RGB", (200, 100), (255, 255, 255))
    assert box.resized_size(200, 100) == (64, 32) and box.scale(200, 100) == (0.32, 0.32)
    x = box(image)
    assert x.shape == (3, 64, 64)
    assert torch.allclose(x[:, :32], torch.ones(1)) and torch.all(x[:, 32:] == 0)
    assert Letterbox.from_dict(box.to_dict()) == box


def test_coco_labels_and_category_ids():
    names, ids = coco_categories()
    assert len(names) == len(ids) == 80 and names[0] == "person" and names[-1] == "toothbrush"
    assert ids[:3] == (1, 2, 3) and ids[-1] == 90 and len(set(ids)) == 80 and 12 not in ids
    model = create_model("dat_tiny_retinanet", pretrained=False, canvas=224)
    assert model.info.labels == list(names) and model.info.category_ids == list(ids)
    assert model.num_classes == 80 and model.input_size == 224


def test_greedy_nms_matches_a_brute_force_reference():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (1, 40, 2))
    boxes = torch.tensor(np.concatenate([xy, xy + rng.uniform(5, 20, (1, 40, 2))], -1), dtype=torch.float32)
    scores = torch.tensor(rng.uniform(0, 1, (1, 2, 40)), dtype=torch.float32)
    keep = greedy_nms_keep(boxes, scores, 100, 0.5, 0.2)
    for c in range(2):
        kept: list[int] = []
        for i in sorted(range(40), key=lambda i: -float(scores[0, c, i])):
            if scores[0, c, i] > 0.2 and all(
                box_iou(boxes[0, [i]], boxes[0, [j]]).item() <= 0.5 for j in kept
            ):
                kept.append(i)
        assert sorted(kept) == torch.nonzero(keep[0, c]).flatten().tolist()


# --------------------------------------------------------------------------- mmdet's test semantics


def mmdet_retinanet_fixture():
    """The mmdet_retinanet_mini detector as MMDetRetinaNet (its config's backbone and neck)."""
    from models import MMDetRetinaNet, MMDetRetinaNetConfig, create_backbone, load_checkpoint
    from models.dat import ModelInfo
    from models.transforms import KeepRatioResize
    from tests.helpers.detection import mmdet_model_entry
    from tests.helpers.paths import official_fixture

    reference = official_fixture("mmdet_retinanet_mini")
    config = FIXTURES / "mmdet_retinanet_mini" / "config.py"
    backbone = create_backbone(mmdet_model_entry(config, "backbone"))
    detector = MMDetRetinaNet(
        MMDetRetinaNetConfig(backbone.config, out_indices=(1, 2, 3), fpn_channels=64, feat_channels=64),
        ModelInfo("retinanet_mini", KeepRatioResize((480, 320))),
    )
    load_checkpoint(detector, reference["checkpoint"])
    return detector.eval(), reference["expected"]


@pytest.mark.slow
def test_mmdet_retinanet_reproduces_mmdet():
    """mmdet 2.28's RetinaNet on DAT++ at 320 x 480 (original 451 x 300): all 100 detections,
    from the fixture's input and from chelsea.jpg through the model's own pipeline."""
    from PIL import Image

    detector, expected = mmdet_retinanet_fixture()
    sizes = torch.tensor([[319.0, 480.0]])
    factors = torch.tensor([[480 / 451, 319 / 300] * 2])
    with torch.inference_mode():
        found = detector(expected["input"], sizes, factors)
    assert (found.labels[0] >= 0).all()
    assert_same_detections(found.boxes[0], found.scores[0], found.labels[0], expected)
    [result] = detector.predict([Image.open(FIXTURES / "chelsea.jpg").convert("RGB")])
    assert_same_detections(result.boxes, result.scores, result.labels, expected)
    assert (result.boxes[:, 2] <= 451).all() and (result.boxes[:, 3] <= 300).all()


def test_mmdet_retinanet_takes_the_best_anchor_class_pairs():
    """Per level the nms_pre best (anchor, class) pairs above the threshold, one anchor
    possibly several times: not the best anchors' every class."""
    from models import MMDetRetinaNet, MMDetRetinaNetConfig

    torch.manual_seed(0)
    config = MMDetRetinaNetConfig(
        DATConfig.from_mapping(dict(TINY_PP_CONFIG)),
        num_classes=3,
        fpn_channels=16,
        feat_channels=16,
        stacked_convs=1,
        nms_pre=4,
        max_per_img=30,
        score_threshold=0.2,
    )
    detector = MMDetRetinaNet(config).eval()
    with torch.no_grad():
        detector.bbox_head.retina_reg.weight.zero_()
        detector.bbox_head.retina_reg.bias.zero_()  # boxes are the anchors
        detector.bbox_head.retina_cls.bias.zero_()  # scores about 0.5: every pair a candidate
        found = detector(torch.randn(1, 3, 64, 96))
    kept = found.labels[0] >= 0
    # at most nms_pre pairs per level (the best anchors' every class would give up to 3 x 20)
    assert 5 < kept.sum() <= 5 * 4
    assert (found.scores[0][kept] > 0.2).all() and (found.scores[0][~kept] == 0).all()
    assert found.boxes.shape == (1, 30, 4)
    widths = found.boxes[0][kept, 2] - found.boxes[0][kept, 0]
    assert (widths > 0).all()  # anchor-sized boxes, clipped to the 96 x 64 input
    assert (found.boxes[0][kept, 2] <= 96).all() and (found.boxes[0][kept, 3] <= 64).all()


@pytest.mark.parametrize("out_indices", [(2, 1), (), (0, 4), (1, 1)])
@pytest.mark.parametrize("config_class", ["RetinaNetConfig", "RCNNConfig"])
def test_detector_configs_refuse_backbone_stages_that_are_not_increasing_stage_indices(
    config_class, out_indices
):
    from models.rcnn_config import RCNNConfig

    config = {"RetinaNetConfig": RetinaNetConfig, "RCNNConfig": RCNNConfig}[config_class]
    with pytest.raises(ValueError, match="out_indices must be increasing stage indices 0-3"):
        config(backbone=DATConfig(), out_indices=out_indices)
