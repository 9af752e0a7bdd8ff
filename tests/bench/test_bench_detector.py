"""``bench model`` on detectors: random heads scaled so that something is found, the input at
the detector's test size, and one forward's time split by part (seams apart from callers)."""

from __future__ import annotations

import torch

from bench import detector as bench_detector
from models.transforms import KeepRatioResize
from tests.helpers.detection import tiny_rcnn


def test_random_class_logits_are_scaled_to_the_fixtures_spread_and_detections_follow():
    model = tiny_rcnn()
    head = model.roi_head.bbox_head.fc_cls
    seen = []
    head.register_forward_hook(lambda module, args, out: seen.append(out.std().item()))
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(x)
        bench_detector.make_random_weights_detect(model, (64, 96))
        found = model(x)
    assert seen[0] < 0.2  # an untrained head: logits near 0, every class near chance
    # seen[1]: the calibration image (another random one), before the scaling; this picture's
    # logits grow several times over (their spread varies from picture to picture)
    assert seen[2] > 3 * seen[0]
    assert (found.labels >= 0).sum() > 0 and float(head.bias.detach().abs().max()) == 0.0


def test_a_keep_ratio_detector_is_measured_at_its_test_size_padded():
    model = tiny_rcnn()
    model.info.preprocessing = KeepRatioResize(img_scale=(1333, 800))
    assert bench_detector.input_shape(model) == (800, 1344)  # 1333 padded to 32, landscape
    x = torch.ones(2, 3, 800, 1344)
    canvas = bench_detector.on_canvas(x, 1344)
    assert canvas.shape == (2, 3, 1344, 1344) and canvas[:, :, 800:].abs().sum() == 0


def test_the_breakdown_times_every_part_and_takes_the_seams_out_of_their_callers():
    model = tiny_rcnn()
    bench_detector.make_random_weights_detect(model, (64, 96))
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    report = bench_detector.eager_breakdown(model, x, repeats=1)
    parts = set(report["cpu_s"])
    assert {"backbone", "fpn", "rpn", "box head", "mask head", "mask pasting"} <= parts
    assert {"nms (rpn)", "nms (box head)", "roialign (box head)", "roialign (mask head)"} <= parts
    assert all(v >= 0 for v in report["wall_s"].values())
    table = bench_detector.breakdown_table({"input": [64, 96], "eager-fp32": report})
    assert "| nms (rpn) |" in table and "Outside the backbone" in table


def test_detections_agree_with_themselves_and_not_with_moved_boxes():
    model = tiny_rcnn()
    bench_detector.make_random_weights_detect(model, (64, 96))
    with torch.no_grad():
        found = bench_detector.outputs_tuple(model(torch.randn(1, 3, 64, 96)))
    same = bench_detector.agreement(found, found, "fp32", model.config)
    assert same["detections_matched_vs_ours_fp32"] == 1.0 and same["detections_of_ours_fp32"] > 0
    moved = (found[0] + 5.0, *found[1:])
    assert bench_detector.agreement(found, moved, "fp32", model.config)["detections_matched_vs_ours_fp32"] < 1
