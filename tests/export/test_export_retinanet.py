"""The released RetinaNet's kind (mmdet 2.x semantics, keep-ratio pipeline) exports whole and
ONNX Runtime keeps PyTorch's detections, on the mmdet fixture's detector and picture."""

from __future__ import annotations

import pytest
import torch

from export.pipeline import run_export
from models import DETECTION, create_model, load_checkpoint
from models.transforms import KeepRatioResize, expect_pipeline
from tests.helpers.export import mmdet_fixture_export
from tests.helpers.paths import FIXTURES, official_fixture

FOLDER = FIXTURES / "mmdet_retinanet_mini"


@pytest.fixture(scope="module")
def detector():
    reference = official_fixture("mmdet_retinanet_mini")  # skips where the fixtures are absent
    model = create_model(FOLDER / "config.py")
    load_checkpoint(model, reference["checkpoint"])
    return model.eval()


def test_the_export_canvas_is_the_pipelines(detector):
    """An export takes the square canvas every image of the keep-ratio pipeline fits in, not
    the backbone's classification size."""
    assert detector.input_size == expect_pipeline(detector.info.preprocessing, KeepRatioResize).canvas == 480


def test_the_nms_candidates_are_the_pairs_forward_chooses_from(detector):
    """Verification's near-tie rule reads these: every detection is one of them, with its score
    under its own class."""
    images = torch.randn(1, 3, 480, 480) * 0.5
    with torch.no_grad():
        found = detector(images)
        boxes, scores = detector.nms_candidates(images)
    assert scores.shape[:2] == (1, detector.num_classes) and boxes.shape[1] == scores.shape[2]
    kept = found.labels[0] >= 0
    assert kept.sum() > 0
    for box, score, label in zip(found.boxes[0][kept], found.scores[0][kept], found.labels[0][kept]):
        same = (boxes[0] == box).all(dim=1) & (scores[0, label] == score)
        assert same.any()


@pytest.mark.slow  # ~40 s on 2 cores
def test_the_pipeline_exports_and_verifies_the_detections(tmp_path):
    options = mmdet_fixture_export("retinanet", tmp_path)
    manifest = run_export(options, log=lambda line: None)
    assert manifest.task is DETECTION and manifest.status == "ok"
    assert list(manifest.input.shape) == ["batch", 3, 480, 480]
    assert [list(o.shape) for o in manifest.outputs] == [["batch", 100, 4], ["batch", 100], ["batch", 100]]
    report = manifest.verification["onnxruntime"]
    assert report["passed"] and report["top1_agreement"] == 1.0, report["summary"]
    assert [r["detections"] for r in report["results"]] == [100, 200]
