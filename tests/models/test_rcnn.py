"""Mask R-CNN and Cascade Mask R-CNN: the parts (anchors, box coding, batched NMS, mask pasting,
static shapes), then stage by stage against mmdet 2.28 itself (../shared/fixtures
mmdet_{mask_rcnn,cascade_mask_rcnn}_mini: neck outputs, RPN proposals, detections, masks)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import create_detector, load_checkpoint
from models.boxes import anchor_grid, batched_nms_keep, delta2bbox
from models.instances import paste_masks
from models.nms import greedy_nms_keep
from models.rcnn import RCNN
from tests.helpers.detection import BOX_RTOL, MASK_TIE, SCORE_TOL, fixture_config, match, tiny_rcnn
from tests.helpers.paths import FIXTURES, official_fixture

NECK_TOL = 1e-4  # max abs, on values up to 26


# --------------------------------------------------------------------------- parts


def test_anchor_grid_is_mmdets_generator():
    anchors = anchor_grid(4, [8], [0.5, 1.0, 2.0], 2, 3)
    assert anchors.shape == (2 * 3 * 3, 4) and anchors.dtype == torch.float32
    wh = anchors[:3, 2:] - anchors[:3, :2]
    # ratio-major; h / w = ratio at area (stride * scale)^2 = 32^2, centred on (0, 0)
    assert (wh[:, 1] / wh[:, 0]).tolist() == pytest.approx([0.5, 1.0, 2.0])
    assert (wh[:, 0] * wh[:, 1]).tolist() == pytest.approx([1024.0] * 3)
    assert torch.equal(anchors[:3, :2], -anchors[:3, 2:])
    # location-major, row by row: (0, 0), (0, 4), (0, 8), (4, 0), ...
    assert torch.equal(anchors[3] - anchors[0], torch.tensor([4.0, 0.0, 4.0, 0.0]))
    assert torch.equal(anchors[9] - anchors[0], torch.tensor([0.0, 4.0, 0.0, 4.0]))


def test_delta2bbox_denormalises_clamps_and_clips():
    rois = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    same = delta2bbox(rois, torch.zeros(1, 4), (0, 0, 0, 0), (0.1, 0.1, 0.2, 0.2))
    assert torch.equal(same, rois)
    # dx = 1 in units of std 0.1: a tenth of the width to the right
    moved = delta2bbox(rois, torch.tensor([[1.0, 0.0, 0.0, 0.0]]), (0, 0, 0, 0), (0.1, 0.1, 0.2, 0.2))
    assert moved.tolist() == [pytest.approx([12.0, 20.0, 32.0, 60.0])]
    # dw clamped at log(1000 / 16): 62.5 times the width at most
    huge = delta2bbox(rois, torch.tensor([[0.0, 0.0, 100.0, 0.0]]), (0, 0, 0, 0), (1, 1, 1, 1))
    assert float(huge[0, 2] - huge[0, 0]) == pytest.approx(20 * 1000 / 16, rel=1e-5)
    # clipped per image to its (height, width): x to [0, w], y to [0, h]
    rois2 = rois.expand(2, 1, 4)
    sizes = torch.tensor([[40.0, 25.0], [100.0, 100.0]])
    clipped = delta2bbox(
        rois2, torch.tensor([0.0, 0.0, 1.0, 1.0]), (0, 0, 0, 0), (1, 1, 1, 1), sizes[:, None]
    )
    assert clipped[0, 0].tolist() == [0.0, 0.0, 25.0, 40.0]
    half_w, half_h = 10 * math.e, 20 * math.e
    assert clipped[1, 0].tolist() == pytest.approx([0.0, 0.0, 20 + half_w, 40 + half_h], abs=1e-4)


def test_batched_nms_suppresses_within_groups_only():
    box = [10.0, 10.0, 50.0, 50.0]
    boxes = torch.tensor([[box, box, [12.0, 10.0, 50.0, 50.0], [200.0, 200.0, 220.0, 230.0], box]])
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.95]])
    groups = torch.tensor([[0, 1, 0, 0, 2]])
    valid = torch.tensor([[True, True, True, True, False]])
    keep = batched_nms_keep(boxes, scores, groups, valid, 0.5, 10)
    # 1: same box, other group, kept; 2: overlaps 0 in its group, suppressed; 4: invalid
    assert keep.tolist() == [[True, True, False, True, False]]
    assert batched_nms_keep(boxes, scores, groups, valid, 0.5, 2).tolist() == [
        [True, True, False, False, False]
    ]


def test_batched_nms_is_per_group_greedy_nms():
    """One call with shifted boxes keeps what NMS of each group on its own keeps."""
    torch.manual_seed(3)
    xy = torch.rand(1, 300, 2) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(1, 300, 2) * 30], -1)
    scores = torch.rand(1, 300)
    groups = torch.randint(0, 4, (1, 300))
    valid = torch.rand(1, 300) > 0.1
    keep = batched_nms_keep(boxes, scores, groups, valid, 0.5, 300)
    for g in range(4):
        members = ((groups[0] == g) & valid[0]).nonzero().squeeze(1)
        alone = greedy_nms_keep(boxes[:, members], scores[None, :, members], 300, 0.5, -1.0)[0, 0] > 0
        assert torch.equal(keep[0, members], alone), g
    assert not keep[~valid].any()


def test_pasting_over_the_box_region_is_pasting_everywhere():
    """mmdet's CPU path computes each mask over its box plus one pixel; outside that every
    pixel of a box with area samples under 0.5, so thresholding the whole image gives the same
    mask. A box without width keeps to its region (the whole image would sample its middle
    column everywhere: mmdet replaces the infinite grid coordinates by 0)."""
    torch.manual_seed(4)
    masks = torch.rand(5, 28, 28)
    masks[0] = 1.0  # saturated: the region's edge is where the box ends
    boxes = torch.tensor(
        [
            [10.3, 5.7, 40.2, 30.9],
            [0.0, 0.0, 60.0, 45.0],
            [50.5, 30.5, 90.0, 70.0],
            [-5.0, -3.0, 12.0, 9.0],
            [20.0, 20.0, 20.0, 25.0],
        ]
    )
    got = paste_masks(masks, boxes, 48, 64)
    ys = torch.arange(48).float() + 0.5
    xs = torch.arange(64).float() + 0.5
    for i, (x0, y0, x1, y1) in enumerate(boxes[:4]):
        gy = ((ys - y0) / (y1 - y0) * 2 - 1).nan_to_num(posinf=0, neginf=0)
        gx = ((xs - x0) / (x1 - x0) * 2 - 1).nan_to_num(posinf=0, neginf=0)
        grid = torch.stack([gx[None].expand(48, -1), gy[:, None].expand(-1, 64)], -1)
        whole = F.grid_sample(masks[i][None, None], grid[None], align_corners=False)[0, 0] >= 0.5
        assert torch.equal(got[i], whole), i
    assert got[0, 6:30, 11:40].all() and not got[0, :, 42:].any()
    assert not got[4, :, :19].any() and not got[4, :, 21:].any()
    soft = paste_masks(masks, boxes, 48, 64, threshold=None)
    assert soft.dtype == torch.float32 and torch.equal(soft >= 0.5, got)


@pytest.mark.parametrize("cascade", [False, True])
def test_one_pass_gives_the_forward_and_the_nms_candidates(cascade):
    """What an export's verification computes in one pass is exactly ``forward`` and
    ``nms_candidates`` run apart."""
    model = tiny_rcnn(cascade, score_threshold=0.0)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        found, (boxes, scores) = model.forward_with_candidates(images)
        want = model(images)
        want_boxes, want_scores = model.nms_candidates(images)
    assert (want.labels >= 0).any()
    for got, expected in zip(found, want):
        assert torch.equal(got, expected)
    assert torch.equal(boxes, want_boxes) and torch.equal(scores, want_scores)


@pytest.mark.parametrize("cascade", [False, True])
def test_outputs_keep_static_shapes_with_padding(cascade):
    """Fewer proposals and detections than slots: the rest are marked, not dropped."""
    model = tiny_rcnn(cascade, rpn_nms_pre=20, rpn_max_per_img=300, max_per_img=50, score_threshold=0.0)
    images = torch.randn(2, 3, 64, 96)
    sizes = torch.tensor([[64.0, 96.0], [50.0, 70.0]])
    with torch.inference_mode():
        features = model.features(images)
        proposals = model.propose(features, sizes)
        out = model(images, sizes, torch.tensor([[2.0, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]]))
    assert proposals.boxes.shape == (2, 300, 4) and proposals.valid.shape == (2, 300)
    count = proposals.valid.sum(1)
    assert (count > 0).all() and (count <= 5 * 20).all()  # at most nms_pre per level survive
    assert (proposals.boxes[~proposals.valid] == 0).all() and (proposals.scores[~proposals.valid] == 0).all()
    # proposals lie inside each image's own size, not the padded input
    assert (proposals.boxes[1, :, 2] <= 70).all() and (proposals.boxes[1, :, 3] <= 50).all()
    assert out.boxes.shape == (2, 50, 4) and out.masks.shape == (2, 50, 28, 28)
    found = out.labels >= 0
    assert found.any(1).all()
    assert (out.scores[~found] == 0).all() and (out.masks[~found] == 0).all()
    assert ((out.masks[found] >= 0) & (out.masks[found] <= 1)).all()
    assert (out.scores[:, :-1] >= out.scores[:, 1:]).all()  # best first
    # image 0 was resized by 2: its boxes come back halved, inside 96 / 2 x 64 / 2
    assert (out.boxes[0, :, 2] <= 48).all() and (out.boxes[0, :, 3] <= 32).all()


def test_mmdet_key_layout():
    keys = set(tiny_rcnn().state_dict())
    assert {
        "neck.lateral_convs.0.conv.weight",
        "neck.fpn_convs.4.conv.weight",
        "rpn_head.rpn_conv.weight",
        "rpn_head.rpn_cls.bias",
        "rpn_head.rpn_reg.weight",
        "roi_head.bbox_head.shared_fcs.1.weight",
        "roi_head.bbox_head.fc_cls.weight",
        "roi_head.bbox_head.fc_reg.bias",
        "roi_head.mask_head.convs.1.conv.weight",
        "roi_head.mask_head.upsample.weight",
        "roi_head.mask_head.conv_logits.bias",
        "backbone.norms.0.norm.weight",
    } <= keys
    keys = set(tiny_rcnn(cascade=True, fpn_extra=None).state_dict())
    assert {
        "roi_head.bbox_head.2.shared_convs.1.conv.weight",
        "roi_head.bbox_head.0.shared_convs.0.bn.running_var",
        "roi_head.bbox_head.1.shared_fcs.0.weight",
        "roi_head.mask_head.2.conv_logits.weight",
    } <= keys
    assert not any(k.startswith("neck.fpn_convs.4") for k in keys)  # max-pooled P6
    assert not any("shared_convs.0.conv.bias" in k for k in keys)  # BN: the conv has no bias


# --------------------------------------------------------------------------- mmdet fixtures


def fixture_model(name: str) -> tuple[RCNN, dict, dict]:
    """The fixture's detector built from its config.py, its checkpoint loaded strictly; the
    expected outputs and img_meta."""
    reference = official_fixture(f"mmdet_{name}_mini")
    folder = FIXTURES / f"mmdet_{name}_mini"
    meta = json.loads((folder / "meta.json").read_text())["img_meta"]
    model = create_detector(folder / "config.py")
    assert model.config == fixture_config(name)
    load_checkpoint(model, reference["checkpoint"])  # strict: mmdet's state_dict, fp16
    return model, reference["expected"], meta


@pytest.fixture(scope="module", params=["mask_rcnn", "cascade_mask_rcnn"])
def run(request) -> dict:
    """Each stage of our detector on the fixture's input, once per architecture."""
    model, expected, meta = fixture_model(request.param)
    sizes = torch.tensor([meta["img_shape"][:2]], dtype=torch.float32)
    factors = torch.tensor([meta["scale_factor"]], dtype=torch.float32)
    with torch.inference_mode():
        features = model.features(expected["input"])
        proposals = model.propose(features, sizes)
        boxes, scores, labels = model.detect(features, proposals, sizes, factors)
        masks = model.segment(features, boxes, labels, factors)
    return dict(
        name=request.param,
        expected=expected,
        meta=meta,
        features=features,
        proposals=proposals,
        boxes=boxes[0],
        scores=scores[0],
        labels=labels[0],
        masks=masks[0],
        factors=factors[0],
    )


@pytest.mark.slow  # the detector runs once per architecture, ~15 s on 2 cores
def test_neck_outputs(run):
    assert len(run["features"]) == len(run["expected"]["feature_maps"]) == 5
    for ours, want in zip(run["features"], run["expected"]["feature_maps"]):
        assert ours.shape == want.shape
        assert (ours - want.float()).abs().max().item() < NECK_TOL


@pytest.mark.slow
def test_rpn_proposals_as_a_set(run):
    """The 1000 proposals, matched regardless of order (equal scores leave it open). A
    coordinate carries the error of its box's size: a box's tolerance is relative to its
    largest coordinate (a 319-high proposal starting at y = 0.35 moves by 1e-3 there)."""
    want = run["expected"]["proposals"]
    ours = run["proposals"]
    assert ours.valid.all() and len(want) == ours.boxes.shape[1] == 1000
    boxes, scores = ours.boxes[0], ours.scores[0]
    scale = want[:, :4].abs().amax(1, keepdim=True).clamp(min=1)
    close = ((boxes[None] - want[:, None, :4]).abs() / scale[:, None]).amax(-1) <= BOX_RTOL
    close &= (scores[None] - want[:, None, 4]).abs() <= SCORE_TOL
    assert close.any(1).all() and close.any(0).all()
    assert (scores[:-1] >= scores[1:]).all()


@pytest.mark.slow
def test_detections_as_a_set(run):
    pairs = match(run)
    assert len(pairs) == len(run["expected"]["labels"]) == 100  # every slot filled
    assert (run["scores"][:-1] >= run["scores"][1:]).all()


@pytest.mark.slow
def test_masks_pasted_into_the_original_image(run):
    """Every mask equals mmdet's but for pixels whose probability is within MASK_TIE of the
    threshold (mmdet pastes its boxes times the scale factor, divided again)."""
    want = run["expected"]
    height, width = want["masks_shape"][1:]
    masks = torch.from_numpy(np.unpackbits(want["masks_packed"].numpy(), axis=-1)[..., :width].astype(bool))
    boxes = run["boxes"] * run["factors"] / run["factors"]
    pairs = match(run)
    ours = [j for _, j in pairs]
    pasted = paste_masks(run["masks"][ours], boxes[ours], height, width)
    soft = paste_masks(run["masks"][ours], boxes[ours], height, width, threshold=None)
    differ = pasted != masks[[i for i, _ in pairs]]
    assert masks.sum() > 10_000  # the comparison has substance
    assert differ.sum() <= 20
    assert ((soft[differ] - 0.5).abs() <= MASK_TIE).all()


def test_predict_maps_back_to_each_image():
    """predict: the model's pipeline, boxes clipped to each original image, one bool mask per
    detection at that image's size."""
    from PIL import Image

    from models.dat import ModelInfo
    from models.transforms import KeepRatioResize

    model = tiny_rcnn(score_threshold=0.0, max_per_img=10, rpn_max_per_img=100)
    assert model.info.preprocessing == KeepRatioResize()  # mmdet's default pipeline
    model.info = ModelInfo("tiny", KeepRatioResize((96, 64)), model.info.labels)
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (90, 40, 3), dtype=np.uint8)),
    ]
    results = model.predict(images)
    for result, image in zip(results, images):
        n = len(result.scores)
        assert 0 < n <= 10 and result.labels.shape == (n,) and (result.labels >= 0).all()
        assert result.masks.shape == (n, image.height, image.width) and result.masks.dtype == torch.bool
        assert (result.boxes >= 0).all() and (result.boxes[:, 2] <= image.width).all()
        assert (result.boxes[:, 3] <= image.height).all()
