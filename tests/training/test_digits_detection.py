"""The embedded digits detector: scenes, mAP, assignment and loss, committed weights, samples."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from models import RetinaNetConfig, create_model, get_spec
from training.detection_eval import (
    average_precision,
    class_average_precisions,
    iou_matrix,
    mean_average_precision,
)
from training.detector_loss import IGNORED, NEGATIVE, assign_anchors, detection_loss
from training.detector_training import detect, evaluate, to_batch
from training.digits_detection import main
from training.scene_samples import make_samples, read_samples
from training.scenes import TRAIN_STYLE, held_out_scenes, make_scene, render_scene

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"


@pytest.fixture(scope="module")
def detector():
    return create_model("dat_digits_detector")


# --------------------------------------------------------------------------- scenes


def test_scenes_are_deterministic():
    for split in ("train", "held_out"):
        a = make_scene(np.random.default_rng(7), split)
        b = make_scene(np.random.default_rng(7), split)
        assert a[0].tobytes() == b[0].tobytes()
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[2], b[2])
    first = held_out_scenes(3)
    assert all(x[0].tobytes() == y[0].tobytes() for x, y in zip(first, held_out_scenes(5)[:3]))


def test_scene_boxes_inside_the_picture_and_tight_around_the_ink():
    rng = np.random.default_rng(0)
    sizes, counts, heights = set(), [], []
    for _ in range(40):
        (image, boxes, labels), alpha = render_scene(rng, "train", TRAIN_STYLE)
        w, h = image.size
        sizes.add((w, h))
        assert image.mode == "RGB" and alpha.shape == (h, w)
        assert boxes.dtype == np.float32 and boxes.shape == (len(labels), 4)
        assert labels.dtype == np.int64 and set(labels.tolist()) <= set(range(10))
        counts.append(len(labels))
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        ink = alpha >= 0.35 * 0.75  # the ink level a digit is boxed at, times its faintest print
        for x1, y1, x2, y2 in boxes.astype(int):
            crop = ink[y1:y2, x1:x2]
            # every edge of the box touches ink (tight), and the box holds a fair amount of it
            assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()
            assert crop.mean() > 0.1
        heights.extend((boxes[:, 3] - boxes[:, 1]) * 128 / max(w, h))
    assert len(sizes) > 30 and any(w > h for w, h in sizes) and any(w < h for w, h in sizes)
    assert min(counts) >= 1 and max(counts) >= 5
    assert 10 < min(heights) < 20 and 40 < max(heights) < 55  # at the 128 canvas


def test_single_digit_box_holds_all_of_its_ink():
    rng = np.random.default_rng(1)
    for _ in range(20):
        (image, boxes, labels), alpha = render_scene(rng, "held_out", replace(TRAIN_STYLE, digits=(1, 1)))
        assert len(labels) == 1
        x1, y1, x2, y2 = boxes[0].astype(int)
        outside = alpha >= 0.35
        outside[y1:y2, x1:x2] = False
        assert not outside.any()


def test_both_page_polarities():
    dark = []
    for image, _, _ in held_out_scenes(20):
        dark.append(np.asarray(image).mean() < 128)
    assert 3 <= sum(dark) <= 17


def test_held_out_scenes_use_only_held_out_scans(monkeypatch):
    import training.scenes as scenes
    from training.digit_ink import digit_scans

    train, _ = digit_scans("train")
    held, _ = digit_scans("held_out")
    assert not set(map(bytes, train.reshape(len(train), -1))) & set(map(bytes, held.reshape(len(held), -1)))
    used: list[bytes] = []
    original = scenes.scan_ink_padded
    monkeypatch.setattr(
        scenes, "scan_ink_padded", lambda p: used.append(np.asarray(p).tobytes()) or original(p)
    )
    monkeypatch.setattr(scenes, "font_glyph", lambda *a: pytest.fail("typed digit in a held-out scene"))
    made = held_out_scenes(30)
    held_set = {p.tobytes() for p in held}
    assert len(used) == sum(len(labels) for _, _, labels in made) or len(used) >= len(made)
    assert used and all(p in held_set for p in used)


# --------------------------------------------------------------------------- mAP


def _gt():
    return [
        (np.array([[10, 10, 30, 40], [50, 10, 70, 40]], np.float32), np.array([3, 5])),
        (np.array([[0, 0, 20, 20]], np.float32), np.array([3])),
    ]


def test_map_perfect_predictions():
    gt = _gt()
    predictions = [(boxes, np.linspace(0.9, 0.5, len(labels)), labels) for boxes, labels in gt]
    assert mean_average_precision(predictions, gt) == pytest.approx(1.0)
    # padding slots (label -1) are ignored, and so are classes without ground truth
    padded = [(np.vstack([b, np.zeros((2, 4))]), np.r_[s, 0, 0], np.r_[y, -1, -1]) for b, s, y in predictions]
    padded[0] = (np.vstack([padded[0][0], [[0, 0, 5, 5]]]), np.r_[padded[0][1], 0.99], np.r_[padded[0][2], 7])
    assert mean_average_precision(padded, gt) == pytest.approx(1.0)
    assert set(class_average_precisions(padded, gt)) == {3, 5}


def test_iou_matrix_in_float64_and_zero_for_empty_boxes():
    iou = iou_matrix([[0, 0, 2, 2], [5, 5, 5, 5]], np.array([[1, 0, 3, 2], [5, 5, 5, 5]], np.float32))
    assert iou.dtype == np.float64 and iou.shape == (2, 2)
    np.testing.assert_array_equal(iou, [[1 / 3, 0.0], [0.0, 0.0]])
    assert iou_matrix([1, 1, 4, 4], [1, 1, 4, 4]).tolist() == [[1.0]]  # a single box is (1, 4)


def test_map_boxes_shifted_off_or_wrong_labels():
    gt = _gt()
    shifted = [(boxes + 100, np.ones(len(labels)), labels) for boxes, labels in gt]
    assert mean_average_precision(shifted, gt) == 0.0
    wrong = [(boxes, np.ones(len(labels)), (labels + 1) % 10) for boxes, labels in gt]
    assert mean_average_precision(wrong, gt) == 0.0
    assert mean_average_precision([(np.zeros((0, 4)), [], [])] * 2, gt) == 0.0


def test_map_false_positive_ranked_between_two_hits():
    # class 3 has two objects; ranking: hit (0.9), false positive (0.8), hit (0.7).
    # recall 0.5 / 0.5 / 1, precision 1 / 0.5 / 2/3: the envelope is 1 up to recall 0.5 and
    # 2/3 after it, so 51 of the 101 recall points see 1 and 50 see 2/3.
    gt = [(np.array([[10, 10, 30, 40], [50, 10, 70, 40]]), np.array([3, 3]))]
    predictions = [
        (
            np.array([[10, 10, 30, 40], [100, 100, 120, 130], [50, 12, 70, 42]]),
            np.array([0.9, 0.8, 0.7]),
            np.array([3, 3, 3]),
        )
    ]
    assert average_precision(predictions, gt, 3) == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert average_precision(predictions, gt, 4) is None
    # a duplicate of an already matched object is a false positive too
    duplicate = [
        (
            np.array([[10, 10, 30, 40], [11, 10, 31, 40], [50, 10, 70, 40]]),
            np.array([0.9, 0.8, 0.7]),
            np.array([3, 3, 3]),
        )
    ]
    assert average_precision(duplicate, gt, 3) == pytest.approx((51 + 50 * 2 / 3) / 101)
    # IoU threshold: the second hit overlaps its object by 0.82
    assert average_precision(predictions, gt, 3, iou_threshold=0.9) == pytest.approx(51 / 101)


# --------------------------------------------------------------------------- training pieces


def test_anchor_equal_to_a_ground_truth_is_positive():
    anchors = torch.tensor(
        [[0, 0, 10, 10], [0, 0, 9, 10], [20, 20, 40, 40], [0, 0, 30, 30], [4, 0, 14, 10]], dtype=torch.float32
    )
    assigned = assign_anchors(anchors, torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    assert assigned.tolist() == [0, 0, NEGATIVE, NEGATIVE, IGNORED]  # IoU 1, 0.9, 0, 0.11, 0.43
    # a ground truth no anchor reaches 0.5 with still gets its best anchor
    assigned = assign_anchors(anchors, torch.tensor([[20.0, 20.0, 60.0, 60.0]]))
    assert assigned.tolist() == [NEGATIVE, NEGATIVE, 0, NEGATIVE, NEGATIVE]
    assert (assign_anchors(anchors, torch.zeros(0, 4)) == NEGATIVE).all()


@pytest.mark.slow
def test_loss_is_finite_and_decreases_on_one_batch():
    torch.manual_seed(0)
    model = create_model("dat_digits_detector", pretrained=False).train()
    scenes = [make_scene(np.random.default_rng([3, i])) for i in range(2)]
    images, targets = to_batch(model, scenes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    losses = []
    for _ in range(8):
        logits, deltas = model.forward_raw(images)
        loss, parts = detection_loss(logits, deltas, model.anchors, targets)
        assert torch.isfinite(loss) and parts["pos"] >= sum(len(y) for _, y in targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.92 * losses[0]  # measured: 1.747 -> 1.54 in 8 steps


# --------------------------------------------------------------------------- committed weights


def test_committed_weights_and_record(detector):
    spec = get_spec("dat_digits_detector")
    assert spec.weights is not None and spec.weights.is_file()
    assert spec.weights.stat().st_size < 8_000_000
    record = json.loads(spec.weights.with_suffix(".json").read_text())
    assert record["held_out_map50"] >= 0.7 and record["held_out_scenes"] >= 200
    assert record["command"].startswith("python -m training.digits_detection train")
    # The record predates DAT++'s keys: read back, it must be the same config.
    assert RetinaNetConfig.from_mapping(record["config"]) == detector.config
    assert detector.info.labels == [str(d) for d in range(10)]


@pytest.mark.slow
def test_held_out_map_of_the_committed_weights(detector):
    assert evaluate(detector, held_out_scenes(100)) >= 0.7


@pytest.mark.slow
def test_sample_scenes_are_found(detector):
    """Every digit of every sample gets a box of its label (IoU >= 0.5) scoring at least 0.3
    (below the service's default threshold), and no box that high lies where there is no digit
    (class-aware NMS may keep a second reading of the same digit)."""
    scenes = read_samples(SAMPLES)
    names = json.loads((SAMPLES / "scenes.json").read_text())
    assert len(scenes) >= 3 and all(name.startswith("scene_") and name.endswith(".png") for name in names)
    found = detect(detector, [image for image, _, _ in scenes])
    for name, (image, boxes, labels), (pred_boxes, scores, pred_labels) in zip(names, scenes, found):
        assert list(image.size) == names[name]["size"] and min(image.size) >= 100 and len(labels) >= 3
        confident = scores >= 0.3
        iou = iou_matrix(boxes, pred_boxes[confident])
        for k, label in enumerate(labels):
            hits = (iou[k] >= 0.5) & (pred_labels[confident] == label)
            assert hits.any(), f"{name}: digit {label} at {boxes[k].tolist()} not found"
        assert (iou.max(axis=0) >= 0.5).all(), f"{name}: a box where there is no digit"


def test_samples_match_their_generator():
    truth = json.loads((SAMPLES / "scenes.json").read_text())
    stored = dict(zip(truth, read_samples(SAMPLES)))
    made = make_samples()
    assert list(made) == list(truth)
    for name, (image, boxes, labels) in made.items():
        difference = np.abs(np.asarray(stored[name][0], np.int16) - np.asarray(image, np.int16))
        assert difference.max() <= 1, name
        np.testing.assert_allclose(stored[name][1], boxes, atol=0.05)
        np.testing.assert_array_equal(stored[name][2], labels)


def test_command_line_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--out", "--steps", "--seed", "--batch-size", "--held-out"):
        assert option in out
