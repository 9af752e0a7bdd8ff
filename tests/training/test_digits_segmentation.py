"""The embedded digits segmenter: masked scenes, mask AP, mask targets, the frozen detector
inside it, the committed weights' held-out masks, the drawing CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from models import RetinaNetSegmenter, create_model, get_spec, load_checkpoint
from models.roi_align import roi_align
from training.detection_eval import (
    encode_masks,
    mask_iou,
    mask_mean_average_precision,
    mean_average_precision,
)
from training.digits_segmentation import main
from training.scenes import held_out_masked_scenes, held_out_scenes, make_masked_scene, make_scene
from training.segmenter_training import _crop, evaluate, from_detector, train

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")
pytest.importorskip("pycocotools", reason="mask IoU is pycocotools'")

WEIGHTS = get_spec("dat_digits_segmenter").weights


# --------------------------------------------------------------------------- scenes


def test_masked_scenes_are_the_same_pages_and_each_mask_fills_its_box():
    plain, masked = held_out_scenes(4), held_out_masked_scenes(4)
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    pairs = [*zip(plain, masked), (make_scene(rng_a), make_masked_scene(rng_b))]
    for (image, boxes, labels), ((image2, boxes2, labels2), masks) in pairs:
        assert image.tobytes() == image2.tobytes()
        np.testing.assert_array_equal(boxes, boxes2)
        np.testing.assert_array_equal(labels, labels2)
        assert masks.dtype == bool and masks.shape == (len(boxes), image.height, image.width)
        for mask, box in zip(masks, boxes):
            rows, cols = np.nonzero(mask)
            assert [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1] == box.tolist()


# --------------------------------------------------------------------------- mask AP


def _box_masks(boxes, height=40, width=50) -> np.ndarray:
    masks = np.zeros((len(boxes), height, width), bool)
    for m, (x1, y1, x2, y2) in zip(masks, np.asarray(boxes, int)):
        m[y1:y2, x1:x2] = True
    return masks


def test_mask_ap_of_rectangles_is_the_box_ap():
    truth_boxes = [np.array([[2, 2, 12, 22], [20, 5, 40, 15]]), np.array([[5, 5, 25, 30]])]
    truth_labels = [np.array([1, 2]), np.array([1])]
    # a hit, a near miss (IoU 0.45), a wrong class, a duplicate
    found_boxes = [
        np.array([[2, 2, 12, 20], [20, 5, 29, 15], [20, 5, 40, 15]]),
        np.array([[5, 5, 25, 30]] * 2),
    ]
    found_scores = [np.array([0.9, 0.8, 0.3]), np.array([0.7, 0.6])]
    found_labels = [np.array([1, 2, 3]), np.array([1, 1])]
    boxes = mean_average_precision(
        list(zip(found_boxes, found_scores, found_labels)), list(zip(truth_boxes, truth_labels))
    )
    masks = mask_mean_average_precision(
        [(encode_masks(_box_masks(b)), s, y) for b, s, y in zip(found_boxes, found_scores, found_labels)],
        [(encode_masks(_box_masks(b)), y) for b, y in zip(truth_boxes, truth_labels)],
    )
    assert 0 < boxes < 1
    assert masks == pytest.approx(boxes)


def test_mask_iou_follows_the_pixels_not_the_box():
    ring = np.zeros((1, 30, 30), bool)
    ring[0, 5:25, 5:25] = True
    ring[0, 8:22, 8:22] = False  # same tight box as the filled square, 204 of its 400 pixels
    filled = _box_masks([[5, 5, 25, 25]], 30, 30)
    assert mask_iou(encode_masks(ring), encode_masks(filled))[0, 0] == pytest.approx(204 / 400)
    assert mask_iou(encode_masks(ring), []).shape == (1, 0)
    perfect = [(encode_masks(ring), [0.9], [4])]
    assert mask_mean_average_precision(perfect, [(encode_masks(ring), [4])], 0.75) == 1.0
    assert (
        mask_mean_average_precision([(encode_masks(filled), [0.9], [4])], [(encode_masks(ring), [4])], 0.75)
        == 0
    )


def test_mask_target_is_roi_align_of_the_page_mask():
    page = torch.from_numpy(make_masked_scene(np.random.default_rng(5))[1][0]).float()
    rows, cols = torch.nonzero(page, as_tuple=True)
    box = torch.tensor([cols.min() - 3.5, rows.min() + 1.25, cols.max() + 2.0, rows.max() - 0.5])
    ours = _crop(page, box, 28)
    # mmcv's RoIAlign with one sample per bin at its centre is the same bilinear sample
    mmcv = roi_align(page[None, None], box[None], torch.zeros(1), 28, 1.0, sampling_ratio=1)[0, 0]
    torch.testing.assert_close(ours, mmcv, atol=1e-4, rtol=0)
    assert 0 < (ours >= 0.5).float().mean() < 1


# --------------------------------------------------------------------------- the model


def test_registered_as_instance_segmentation_on_the_detectors_config():
    spec = get_spec("dat_digits_segmenter")
    assert str(spec.task) == "instance_segmentation"
    detector = get_spec("dat_digits_detector")
    assert spec.preprocessing == detector.preprocessing
    assert {k: v for k, v in vars(spec.config).items() if k in vars(detector.config)} == vars(detector.config)
    model = create_model("dat_digits_segmenter", pretrained=False)
    assert isinstance(model, RetinaNetSegmenter) and str(model.task) == "instance_segmentation"


def test_from_detector_refuses_another_checkpoint():
    with pytest.raises(ValueError, match="not a dat_digits_detector checkpoint"):
        from_detector(get_spec("dat_digits").weights)


@pytest.mark.slow
def test_training_moves_the_mask_head_only(tmp_path):
    torch.manual_seed(0)
    before = from_detector().state_dict()
    record = train(tmp_path / "s.safetensors", steps=2, batch_size=2, eval_every=0, log=lambda m: None)
    after = create_model("dat_digits_segmenter", pretrained=False)
    load_checkpoint(after, tmp_path / "s.safetensors")
    changed = {k for k, v in after.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("mask_head.") for k in changed)
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["steps"] == 2 and saved["model"] == "dat_digits_segmenter" == record["model"]


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="no committed segmenter weights")
def test_committed_segmenter_gives_the_detectors_boxes_and_masks_in_them():
    detector, segmenter = create_model("dat_digits_detector"), create_model("dat_digits_segmenter")
    letterbox = detector.info.preprocessing
    images = torch.stack([letterbox(image) for image, _, _ in held_out_scenes(4)])
    with torch.inference_mode():
        boxes = detector(images)
        found = segmenter(images)
    for a, b in zip(boxes, found[:3]):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    kept = found.labels >= 0
    assert found.masks.shape == (*found.labels.shape, 28, 28)
    assert (found.masks[~kept] == 0).all() and ((found.masks >= 0) & (found.masks <= 1)).all()
    # a digit's mask is neither empty nor its whole box
    covered = (found.masks[kept & (found.scores > 0.5)] >= 0.5).float().mean(dim=(1, 2))
    assert len(covered) and (covered > 0.1).all() and (covered < 0.9).all()


@pytest.mark.slow
@pytest.mark.skipif(not WEIGHTS.is_file(), reason="no committed segmenter weights")
def test_committed_segmenter_held_out_masks():
    """On held-out scenes: mask mAP@0.5 >= 0.7, and @0.75 >= 0.5, which masks that fill their
    whole box (about 0.02) or the untrained head do not reach."""
    scores = evaluate(create_model("dat_digits_segmenter"), held_out_masked_scenes(60))
    assert scores["mask_map50"] >= 0.7
    assert scores["mask_map75"] >= 0.5


@pytest.mark.slow
@pytest.mark.skipif(not WEIGHTS.is_file(), reason="no committed segmenter weights")
def test_draw_writes_both_panels(tmp_path, capsys):
    out = tmp_path / "drawn.png"
    assert main(["draw", "--out", str(out), "--scene", "scene_small.png"]) == 0
    with Image.open(out) as image:
        assert image.size == (2 * 160 + 8, 112)
        left, right = np.asarray(image)[:, :160], np.asarray(image)[:, 168:]
    assert (left != right).any()  # the masks are drawn on the right
    with pytest.raises(SystemExit):
        main(["draw", "--out", str(out), "--scene", "nope.png"])
    assert "unknown sample scene" in capsys.readouterr().err
