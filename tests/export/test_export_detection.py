"""A detector exports whole (decoding and NonMaxSuppression included) and ONNX Runtime keeps
the same detections as PyTorch."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.onnx import export_onnx
from export.parity import compare_detections
from export.validate import verify_onnx
from models import DETECTION, create_model
from runtimes.manifest import Manifest
from runtimes.manifest_fields import BatchRange
from tests.helpers.export import run_cli
from tests.helpers.paths import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def busy_detector():
    """The digits detector's architecture with random weights and a class head scaled up, so
    that it finds many objects with well separated scores in any input."""
    torch.manual_seed(0)
    model = create_model("dat_digits_detector", pretrained=False)
    with torch.no_grad():
        model.bbox_head.retina_cls.weight.normal_(0, 0.5)
        model.bbox_head.retina_cls.bias.fill_(-3.0)
        model.bbox_head.retina_reg.weight.normal_(0, 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def exported(busy_detector, tmp_path_factory):
    path = tmp_path_factory.mktemp("detector") / "model.onnx"
    result = export_onnx(busy_detector, path, batch=BatchRange(1, 2, 4))
    return path, result


def images(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, 128, 128, generator=torch.Generator().manual_seed(batch))


def test_graph_holds_decoding_and_nms(exported):
    path, result = exported
    graph = onnx.load(path)
    ops = {n.op_type for n in graph.graph.node}
    assert {"NonMaxSuppression", "ScatterND", "TopK", "GridSample"} <= ops
    assert [o.name for o in graph.graph.output] == ["boxes", "scores", "labels"]
    assert result.output_shapes == {
        "boxes": ["batch", 100, 4],
        "scores": ["batch", 100],
        "labels": ["batch", 100],
    }
    nms = next(n for n in graph.graph.node if n.op_type == "NonMaxSuppression")
    assert nms.name.endswith("nms/NonMaxSuppression")


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_keeps_the_same_detections(exported, busy_detector, batch):
    path, _ = exported
    x = images(batch)
    with torch.no_grad():
        want = [t.numpy() for t in busy_detector(x)]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})
    kept = want[2] >= 0
    assert kept.sum(1).min() >= 10  # a comparison of substance, image by image
    assert np.array_equal(got[2], want[2])  # same labels in the same slots
    assert np.allclose(got[0], want[0], rtol=1e-3, atol=1e-3)  # boxes in canvas pixels
    assert np.abs(got[1] - want[1]).max() < 1e-4
    result = compare_detections(want, got, "fp32", busy_detector.config.score_threshold)
    assert result.passed and result.top1_agreement == 1.0 and result.detections == kept.sum()


def test_the_exporters_verification_agrees(exported, busy_detector):
    path, _ = exported
    report = verify_onnx(path, busy_detector, precision="fp32", batch_sizes=[1, 3], input_name="images")
    assert report.passed and report.task is DETECTION, report.summary()
    assert all(r.detections > 0 for r in report.results)


def test_comparison_catches_a_moved_box_or_a_wrong_label(busy_detector):
    with torch.no_grad():
        want = [t.numpy() for t in busy_detector(images(1))]
    moved = [want[0].copy(), want[1], want[2]]
    moved[0][0, 0] += 2.0
    assert not compare_detections(want, moved, "fp32", 0.05).passed
    relabelled = [want[0], want[1], want[2].copy()]
    relabelled[2][0, 0] = (relabelled[2][0, 0] + 1) % 10
    assert not compare_detections(want, relabelled, "fp32", 0.05).passed


def test_cli_exports_the_trained_detector_verified_on_the_sample_scenes(cli, tmp_path):
    out = tmp_path / "detector"
    scenes = sorted(str(p) for p in (REPO / "samples").glob("scene_*.png"))
    done = run_cli(
        "--model",
        "dat_digits_detector",
        "--out",
        str(out),
        "--max-batch",
        "4",
        "--no-engine",
        "--verify-images",
        *scenes,
    )
    assert done.returncode == 0, done.stderr
    manifest = Manifest.load(out)
    assert manifest.task is DETECTION and manifest.output_names == ("boxes", "scores", "labels")
    report = manifest.verification["onnxruntime"]
    # batches 1, 2 and 4 of the scenes (repeated to fill a batch): every digit kept alike
    assert report["passed"] and report["top1_agreement"] == 1.0
    assert [r["batch"] for r in report["results"]] == [1, 2, 4]
    assert min(r["detections"] for r in report["results"]) >= 5  # the first page has 5 digits
    assert [o.dtype for o in manifest.outputs] == ["float32", "float32", "int64"]
    assert manifest.preprocessing.to_dict()["mode"] == "letterbox"
    data = json.loads((out / "manifest.json").read_text())
    assert data["outputs"][1]["shape"] == ["batch", 100]
    wrong = cli("--model", "dat_digits_detector", "--task", "classification", "--out", str(tmp_path / "x"))
    assert wrong.returncode == 2 and "is a detection model" in wrong.stderr

    # ... and a Triton repository for it, checked with Triton's own model-config schema
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from export.triton import write_repository

    folder = write_repository(manifest, tmp_path / "repository")
    config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("boxes", model_config_pb2.TYPE_FP32, [100, 4]),
        ("scores", model_config_pb2.TYPE_FP32, [100]),
        ("labels", model_config_pb2.TYPE_INT64, [100]),
    ]
    assert config.max_batch_size == 4 and not any(o.label_filename for o in config.output)


def test_an_nms_tie_is_excused_only_between_boxes_pytorch_considered():
    a, b = [10.0, 10.0, 50.0, 50.0], [12.0, 10.0, 52.0, 50.0]  # IoU 0.9: NMS keeps one of them

    def kept(box, score):
        return [
            np.array([[box, [0, 0, 0, 0]]], np.float32),
            np.array([[score, 0]], np.float32),
            np.array([[4, -1]]),
        ]

    reference, runtime = kept(a, 0.8), kept(b, 0.80005)
    candidates = (np.array([[a, b]], np.float32), np.zeros((1, 10, 2), np.float32))
    candidates[1][0, 4] = [0.8, 0.80005]
    assert compare_detections(reference, runtime, "fp32", 0.05, 0.5, candidates).passed
    assert not compare_detections(reference, runtime, "fp32", 0.05, 0.5).passed  # no candidates
    elsewhere = (candidates[0] + 30, candidates[1])  # b was never a candidate
    assert not compare_detections(reference, runtime, "fp32", 0.05, 0.5, elsewhere).passed


def test_a_verification_that_compared_no_detection_fails():
    """A detector that finds nothing in the inputs matches any runtime that also finds nothing:
    such a check proves nothing and must not pass."""
    untrained = create_model("dat_digits_detector", pretrained=False).eval()  # scores at the 0.01 prior

    def same_as_pytorch(x):
        with torch.no_grad():
            return [t.numpy() for t in untrained(torch.from_numpy(x))]

    from export.validate import verify_runner

    report = verify_runner(
        same_as_pytorch,
        untrained,
        runtime="onnxruntime",
        artifact="model.onnx",
        precision="fp32",
        batch_sizes=[1, 2],
    )
    assert [r.detections for r in report.results] == [0, 0]
    assert not report.passed and "found no objects" in report.error and "--verify-images" in report.error
    assert "FAILED" in report.summary()


def test_a_detector_export_needs_pictures_it_finds_objects_in(cli, tmp_path, monkeypatch):
    from PIL import Image

    from export import pipeline
    from export.options import ExportError, ExportOptions

    blank = tmp_path / "blank.png"
    Image.new("RGB", (96, 96), "white").save(blank)
    done = cli(
        "--model",
        "dat_digits_detector",
        "--out",
        str(tmp_path / "out"),
        "--max-batch",
        "2",
        "--no-engine",
        "--verify-images",
        str(blank),
    )
    assert done.returncode == 2, done.stderr
    assert "the detector found no objects in the 1 --verify-images" in done.stderr
    assert not (tmp_path / "out").exists()  # refused before the slow part
    # seeded random inputs, where no --verify-images are given: an untrained head finds nothing
    untrained = create_model("dat_digits_detector", pretrained=False).eval()
    monkeypatch.setattr(pipeline, "load_model", lambda options: untrained)
    with pytest.raises(ExportError, match="found no objects in seeded random inputs.*--verify-images"):
        pipeline.run_export(
            ExportOptions(
                out=tmp_path / "random", model="dat_digits_detector", engine=False, batch=BatchRange(1, 1, 2)
            ),
            log=lambda line: None,
        )
    assert not (tmp_path / "random").exists()
