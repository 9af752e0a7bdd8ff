"""The DAT detection backbone: the official DAT-Detection outputs, the released mmdet key layouts,
the config forms create_backbone takes, and v1 backbones at any size (their window blocks'
padding is checked in test_window_attention.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models import (
    DAT,
    RetinaNet,
    RetinaNetConfig,
    create_backbone,
    create_model,
    get_spec,
    load_checkpoint,
)
from models.layers import ShiftWindowAttention
from tests.helpers.detection import mmdet_model_entry
from tests.helpers.tiny import TINY_CONFIG, TINY_PP_CONFIG

TOL = 1e-4
FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
DETECTION_SHAPES = FIXTURES / "official_dat_pp_detection_state_dict_shapes.json"
MMDET_RETINANET = FIXTURES / "mmdet_retinanet_mini"
# The twelve released DAT-Detection configs (configs/dat/*.py): RetinaNet reads stages 1-3
# (out_indices (1, 2, 3), FPN start_level 1), Mask and Cascade Mask R-CNN all four.
RELEASED = {
    "cmrcn_base_3x_8n_dp08_lr4": "base",
    "cmrcn_small_3x_4n_dp05_lr4": "small",
    "cmrcn_tiny_1x_4n_dp00_lr4": "tiny",
    "cmrcn_tiny_3x_4n_dp01_lr4": "tiny",
    "mrcn_small_1x_4n_dp01_lr4": "small",
    "mrcn_small_3x_4n_dp05_lr4": "small",
    "mrcn_tiny_1x_4n_dp00_lr4": "tiny",
    "mrcn_tiny_3x_4n_dp03_lr4": "tiny",
    "rtn_small_1x_4n_dp01_lr2": "small",
    "rtn_small_3x_4n_dp05_lr2": "small",
    "rtn_tiny_1x_4n_dp00_lr2": "tiny",
    "rtn_tiny_3x_4n_dp02_lr2": "tiny",
}
# rtn_tiny_1x's model.backbone as mmdet passes it to the constructor: the base config
# (retinanet_dat_fpn.py) merged with the model config's changes.
RTN_TINY_BACKBONE = dict(
    type="DAT",
    img_size=224,
    patch_size=4,
    num_classes=1000,
    expansion=4,
    dim_stem=64,
    dims=[64, 128, 256, 512],
    depths=[2, 4, 18, 2],
    heads=[2, 4, 8, 16],
    heads_q=[6, 12, 24, 48],
    window_sizes=[7, 7, 7, 7],
    drop_rate=0.0,
    attn_drop_rate=0.0,
    drop_path_rate=0.0,
    strides=[8, 4, 2, 1],
    offset_range_factor=[-1, -1, -1, -1],
    local_orf=[-1, -1, -1, -1],
    local_kv_sizes=[-1, -1, -1, -1],
    offset_pes=[False, False, False, False],
    stage_spec=[["N", "D"], ["N", "D"] * 2, ["N", "D"] * 9, ["D", "D"]],
    groups=[1, 2, 4, 8],
    use_pes=[True, True, True, True],
    dwc_pes=[False] * 4,
    sr_ratios=[8, 4, 2, 1],
    lower_lr_kvs={},
    fixed_pes=[False] * 4,
    no_offs=[False] * 4,
    ns_per_pts=[4, 4, 4, 4],
    use_dwc_mlps=[True] * 4,
    use_conv_patches=True,
    ksizes=[9, 7, 5, 3],
    ksize_qnas=[3, 3, 3, 3],
    nqs=[2, 2, 2, 2],
    qna_activation="exp",
    deform_groups=[0, 0, 0, 0],
    nat_ksizes=[7, 7, 7, 7],
    layer_scale_values=[-1, -1, -1, -1],
    use_lpus=[True] * 4,
    use_cmt_mlps=[False] * 4,
    out_indices=(1, 2, 3),
    use_checkpoint=True,
    init_cfg=dict(type="Pretrained", checkpoint="<path-to-pretrained-model>"),
)


@pytest.fixture(scope="module")
def detection_shapes() -> dict:
    if not DETECTION_SHAPES.is_file():
        pytest.skip(f"official fixtures not found at {DETECTION_SHAPES.parent}")
    return json.loads(DETECTION_SHAPES.read_text())


def shapes_of(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------- DAT++, official


def test_reproduces_the_official_detection_backbone(pp_det_fixture):
    backbone = create_backbone(pp_det_fixture["config"])
    assert backbone.config.plus_plus and backbone.out_indices == (0, 1, 2, 3)  # from the YAML
    load_checkpoint(backbone, pp_det_fixture["checkpoint"])  # strict: norms.i, no cls_*
    expected = pp_det_fixture["expected"]
    with torch.inference_mode():
        features = backbone(expected["input"])  # 256 x 352: not the 224 of the tables
    assert len(features) == 4
    for i, feature in enumerate(features):
        want = expected[f"feature{i}"]
        assert feature.shape == want.shape
        assert (feature - want).abs().max().item() < TOL, i


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_detection_layouts(name, detection_shapes):
    """The registry's DAT++ config with the release's out_indices builds exactly the
    ``backbone.`` entries of each released checkpoint; RetinaNet's neck and head too."""
    want = detection_shapes[name]
    retina = name.startswith("rtn_")
    config = get_spec(f"dat_pp_{RELEASED[name]}").config
    backbone = create_backbone(config, out_indices=(1, 2, 3) if retina else (0, 1, 2, 3))
    got = {f"backbone.{k}": v for k, v in shapes_of(backbone).items()}
    assert got == {k: v for k, v in want.items() if k.startswith("backbone.")}
    if retina:
        detector = RetinaNet(RetinaNetConfig(config, num_classes=80))
        assert shapes_of(detector) == want


def test_the_released_configs_are_listed(detection_shapes):
    assert sorted(detection_shapes) == sorted(RELEASED)


def test_an_mmdet_backbone_dict_builds_the_release(detection_shapes):
    backbone = create_backbone(RTN_TINY_BACKBONE)
    assert backbone.out_indices == (1, 2, 3) and backbone.config.plus_plus
    # the registry's DAT-T++, but for what only unbuilt blocks read (P blocks' sr_ratios)
    assert backbone.config.replace(sr_ratios=(-1,) * 4, drop_path_rate=0.2) == get_spec("dat_pp_tiny").config
    want = detection_shapes["rtn_tiny_1x_4n_dp00_lr2"]
    assert {f"backbone.{k}": v for k, v in shapes_of(backbone).items()} == {
        k: v for k, v in want.items() if k.startswith("backbone.")
    }


def test_mmdets_retinanet_neck_from_its_backbone_dict():
    """mmdet's RetinaNet on DAT++ (FPN in_channels all four stages, start_level 1, extra convs
    on_input) is our out_indices (1, 2, 3) RetinaNet: its five neck outputs, at 320 x 480."""
    if not MMDET_RETINANET.is_dir():
        pytest.skip(f"official fixtures not found at {FIXTURES}")
    neck = mmdet_model_entry(MMDET_RETINANET / "config.py", "neck")
    assert (neck["start_level"], neck["add_extra_convs"]) == (1, "on_input")
    backbone = create_backbone(mmdet_model_entry(MMDET_RETINANET / "config.py", "backbone"))
    assert backbone.out_indices == (1, 2, 3)
    detector = RetinaNet(
        RetinaNetConfig(
            backbone.config,
            num_classes=80,
            out_indices=backbone.out_indices,
            fpn_channels=neck["out_channels"],
            feat_channels=64,
            num_outs=neck["num_outs"],
        )
    )
    load_checkpoint(detector, MMDET_RETINANET / "checkpoint.pth")  # strict, mmdet's state_dict
    expected = torch.load(MMDET_RETINANET / "expected.pt", weights_only=True)
    with torch.inference_mode():
        levels = detector.neck(detector.backbone(expected["input"]))  # not the square canvas
    assert len(levels) == len(expected["feature_maps"]) == 5
    for level, want in zip(levels, expected["feature_maps"]):
        assert level.shape == want.shape
        assert (level - want.float()).abs().max().item() < TOL


def test_an_mmdet_backbone_dict_takes_the_release_defaults():
    # absent keys are the DAT-Detection constructor's: L/D blocks, offset ranges 1-4, no PEs
    backbone = create_backbone({"type": "DAT", "groups": [1, 1, 3, 6], "strides": [1, 1, 1, 1]})
    config = backbone.config
    assert config.plus_plus and backbone.out_indices == (0, 1, 2, 3)
    assert config.stage_spec == (("L", "D"), ("L", "D"), ("L", "D") * 3, ("L", "D"))
    assert config.offset_range_factor == (1, 2, 3, 4) and config.use_pes == (False,) * 4
    assert not any("rpe_table" in k for k in backbone.state_dict())
    with pytest.raises(ValueError, match="type='DAT'"):
        create_backbone({"type": "ResNet", "depth": 50})


def test_layer_scale_is_named_gamma():
    backbone = create_backbone(TINY_PP_CONFIG)
    keys = backbone.state_dict().keys()
    assert "stages.0.layer_scales.0.gamma" in keys
    assert not any("layer_scales" in k and k.endswith(".weight") for k in keys)
    assert "stages.0.layer_scales.0.weight" in create_model(TINY_PP_CONFIG).state_dict()


def test_dat_plus_plus_backbone_runs_at_other_sizes():
    backbone = create_backbone(TINY_PP_CONFIG)  # tables built at 64
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 96, 160))
    assert [tuple(f.shape) for f in features] == [
        (1, 16, 24, 40),
        (1, 32, 12, 20),
        (1, 64, 6, 10),
        (1, 128, 3, 5),
    ]
    assert all(torch.isfinite(f).all() for f in features)


# --------------------------------------------------------------------------- config forms


def test_config_forms_and_out_indices(tmp_path):
    # a registered detector: its backbone, and the stages its neck reads
    backbone = create_backbone("dat_digits_detector")
    detector = create_model("dat_digits_detector", pretrained=False)
    assert backbone.out_indices == (1, 2, 3) and backbone.config == detector.config.backbone
    assert shapes_of(backbone) == {
        k.removeprefix("backbone."): v for k, v in shapes_of(detector).items() if k.startswith("backbone.")
    }
    # a classifier: every stage by default, or the argument's
    assert create_backbone("dat_tiny").out_indices == (0, 1, 2, 3)
    assert create_backbone("dat_digits", out_indices=[2, 3]).out_indices == (2, 3)
    # a JSON file's out_indices (DAT++ by its keys unless it says otherwise); the argument wins
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"config": {**TINY_CONFIG, "out_indices": [1, 3], "plus_plus": False}}))
    from_file = create_backbone(path)
    assert from_file.out_indices == (1, 3) and not from_file.config.plus_plus
    assert [k for k in from_file.state_dict() if k.startswith("norms.")] == [
        "norms.1.norm.weight",
        "norms.1.norm.bias",
        "norms.3.norm.weight",
        "norms.3.norm.bias",
    ]
    assert create_backbone(path, out_indices=(0,)).out_indices == (0,)
    unmarked = {k: v for k, v in TINY_CONFIG.items() if k != "plus_plus"}  # no plus_plus key: DAT++
    assert create_backbone({**unmarked, "out_indices": [2]}).config.plus_plus
    with pytest.raises(ValueError, match="increasing stage indices"):
        create_backbone("dat_digits", out_indices=(3, 1))
    assert not hasattr(backbone, "cls_head") and not hasattr(backbone, "cls_norm")


# --------------------------------------------------------------------------- v1: any size


@pytest.fixture(scope="module")
def v1_pair() -> tuple[DAT, torch.nn.Module]:
    """The tiny v1 DAT and its backbone with the same weights (random output norms)."""
    torch.manual_seed(0)
    classifier = create_model(TINY_CONFIG)
    backbone = create_backbone(TINY_CONFIG, out_indices=(0, 1, 2, 3))
    missing, unexpected = backbone.load_state_dict(classifier.state_dict(), strict=False)
    assert all(k.startswith("norms.") for k in missing) and len(missing) == 8
    assert all(k.startswith("cls_") for k in unexpected)
    with torch.no_grad():
        for norm in backbone.norms:
            norm.norm.weight.normal_()
            norm.norm.bias.normal_()
    return classifier, backbone


@pytest.mark.parametrize("size", [(32, 32), (32, 64), (64, 32)])
def test_v1_backbone_is_the_classifiers_stages_plus_norms(v1_pair, size, monkeypatch):
    """At sizes every stage's map divides into windows, nothing is padded: the backbone is
    the classifier's stage outputs, normalised. The classifier only runs at 32 x 32; its
    check is lifted here to run its stages at the others."""
    classifier, backbone = v1_pair
    monkeypatch.setattr(classifier, "_check_input", lambda x: None)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        stages, _, _ = classifier._stages(x)
        features = backbone(x)
    for i, (feature, stage) in enumerate(zip(features, stages)):
        want = backbone.norms[i](stage).permute(0, 3, 1, 2)
        assert feature.shape == (2, TINY_CONFIG["dims"][i], size[0] // 2 // 2**i, size[1] // 2 // 2**i)
        assert torch.equal(feature, want), i


def test_v1_backbone_runs_where_windows_do_not_fit(v1_pair):
    """32 x 48: stage 2 is 4 x 6 with 4-wide windows, stage 3 2 x 3 with 2-wide: both padded."""
    classifier, backbone = v1_pair
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        features = backbone(x)
    assert [tuple(f.shape) for f in features] == [
        (1, 16, 16, 24),
        (1, 32, 8, 12),
        (1, 64, 4, 6),
        (1, 128, 2, 3),
    ]
    assert all(torch.isfinite(f).all() for f in features)
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 3, 32, 32\)"):
        classifier(x)  # a classifier keeps its exact size
    with pytest.raises(ValueError, match="divisible by 16"):
        backbone(torch.randn(1, 3, 32, 40))


def test_v1_backbone_pads_its_shifted_windows():
    """DAT-T's windows (7) at a detection size: every S block pads (200 x 304 -> 203 x 308 at
    stage 0, ...); a tiny DAT with DAT-T's windows shows it at 96 x 160."""
    config = {
        **TINY_CONFIG,
        "img_size": 224,
        "window_sizes": [7, 7, 7, 7],
        "stage_spec": [["L", "S"], ["L", "S"], ["L", "S"], ["L", "D"]],
        "patch_size": 4,
    }
    backbone = create_backbone(config, out_indices=(1, 2, 3))
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 96, 160))
    assert [tuple(f.shape[2:]) for f in features] == [(12, 20), (6, 10), (3, 5)]
    assert all(torch.isfinite(f).all() for f in features)
    masks = {
        size
        for block in backbone.modules()
        if isinstance(block, ShiftWindowAttention)
        for size in block._other_masks
    }
    assert masks == {(28, 42), (14, 21), (7, 14)}
