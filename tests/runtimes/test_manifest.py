"""The manifest: what export writes and the service reads, and every way it refuses a bad export folder."""

from __future__ import annotations

import json

import pytest

from models import CLASSIFICATION, Preprocessing
from runtimes.manifest import MANIFEST_NAME, Manifest, ManifestError, read_manifest, write_manifest
from runtimes.manifest_fields import Artifact, BatchRange, TensorSpec


def _manifest(status: str = "ok", **changes) -> Manifest:
    fields = dict(
        status=status,
        task=CLASSIFICATION,
        model_name="dat_test",
        model_config={"img_size": 32},
        preprocessing=Preprocessing(32, crop_pct=1.0),
        labels=("a", "b", "c"),
        precision="fp32",
        opset=18,
        grid_sample="auto",
        input=TensorSpec("images", "float32", ("batch", 3, 32, 32), "NCHW"),
        outputs=(TensorSpec("logits", "float32", ("batch", 3)),),
        batch=BatchRange(1, 4, 16),
        artifacts={"onnx": Artifact("model.onnx", "onnx", "native")},
        verification={
            "onnxruntime": {
                "passed": status == "ok",
                "summary": "onnxruntime: ok",
                "max_abs_error": float("inf") if status != "ok" else 1e-7,
            }
        },
        tools={"torch": "x"},
        created="2026-01-01T00:00:00+00:00",
    )
    fields.update(changes)
    return Manifest(**fields)


@pytest.fixture
def export_dir(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"not really onnx")
    write_manifest(tmp_path, _manifest())
    return tmp_path


def test_round_trip(export_dir):
    m = Manifest.load(export_dir)
    assert m.onnx_path == export_dir / "model.onnx" and m.engine_path is None
    assert (m.input_name, m.output_name, m.input_dtype, m.image_size) == ("images", "logits", "float32", 32)
    assert m.preprocessing == Preprocessing(32, crop_pct=1.0)
    assert m.labels == ("a", "b", "c") and m.num_classes == 3
    assert m.batch == BatchRange(1, 4, 16)
    assert m.artifacts["onnx"].sha256 and m.artifacts["onnx"].bytes == len(b"not really onnx")
    assert read_manifest(export_dir) == m


def test_engine_path_and_info(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"graph")
    (tmp_path / "model.plan").write_bytes(b"engine")
    artifacts = {
        "onnx": Artifact("model.onnx", "onnx", "native"),
        "engine": Artifact(
            "model.plan",
            "tensorrt",
            "decomposed",
            source="model.onnx",
            extra={"tensorrt": "11.0", "device": "GPU"},
        ),
    }
    write_manifest(tmp_path, _manifest(artifacts=artifacts))
    m = Manifest.load(tmp_path)
    assert m.engine_path == tmp_path / "model.plan"
    assert m.engine_info == {"tensorrt": "11.0", "device": "GPU"}


def test_hash_mismatch_is_refused(export_dir):
    (export_dir / "model.onnx").write_bytes(b"not really onnx!")
    with pytest.raises(ManifestError, match="sha256"):
        Manifest.load(export_dir)
    assert Manifest.load(export_dir, verify_hashes=False).status == "ok"


def test_missing_things_are_refused(export_dir, tmp_path_factory):
    with pytest.raises(ManifestError, match="not found"):
        Manifest.load(export_dir / "nope")
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(ManifestError, match="no manifest.json"):
        Manifest.load(empty)
    (export_dir / "model.onnx").unlink()
    with pytest.raises(ManifestError, match="missing"):
        Manifest.load(export_dir)


def test_failed_export_is_refused(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    write_manifest(tmp_path, _manifest(status="failed"))
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert data["status"] == "failed"
    assert data["verification"]["onnxruntime"]["max_abs_error"] == "inf"  # still valid JSON
    with pytest.raises(ManifestError, match="failed verification"):
        Manifest.load(tmp_path)
    assert Manifest.load(tmp_path, allow_failed=True).status == "failed"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(format="something else"), "not a"),
        (lambda d: d.update(version=99), "version"),
        (lambda d: d.pop("labels"), "missing field"),
        (lambda d: d.update(labels=["a"]), "1 labels for 3 outputs"),
        (lambda d: d["preprocessing"].update(input_size=64), "preprocessing"),
        (lambda d: d["batch"].update(min=9), "batch range"),
        (lambda d: d["batch"].update(max=4.5), "batch max must be an integer, not 4.5"),
        (lambda d: d.update(inputs=[]), "exactly one input"),
        (lambda d: d.update(artifacts=["model.onnx"]), "artifacts must be an object"),
        (lambda d: d["artifacts"].update(onnx="model.onnx"), "artifact onnx must be an object"),
        (lambda d: d["artifacts"].pop("onnx"), "lists no onnx artifact"),
        (lambda d: d["artifacts"]["onnx"].update(file="/etc/passwd"), "not inside the export directory"),
        (lambda d: d["artifacts"]["onnx"].update(file="../model.onnx"), "not inside the export directory"),
        (lambda d: d.update(labels="abc"), "labels must be an array, not 'abc'"),
        (lambda d: d["inputs"][0].update(shape=32), "the shape of images must be an array"),
        (lambda d: d["inputs"][0].update(shape=["batch", 32, 32]), r"is not \(batch, 3, size, size\)"),
        (
            lambda d: d.update(preprocessing={"mode": "keep_ratio"}),
            "makes 1344px inputs but the graph takes 32px",
        ),
        (lambda d: d.update(task="segmentation"), "unknown task 'segmentation'; known tasks: classification"),
        (lambda d: d.update(task=["detection"]), "task must be a string"),
        (
            lambda d: d.update(task="instance_segmentation"),
            r"instance_segmentation graphs have outputs \['boxes', 'scores', 'labels', 'masks'\]",
        ),
        (
            lambda d: d.update(task="detection"),
            r"detection graphs have outputs \['boxes', 'scores', 'labels'\]",
        ),
        (lambda d: d["outputs"][0].update(name="probabilities"), r"the manifest lists \['probabilities'\]"),
        (lambda d: d.update(precision="int8"), "precision 'int8' is none of fp32, fp16"),
        (lambda d: d.update(status="maybe"), "status 'maybe' is none of ok, failed"),
        (lambda d: d.update(category_ids=[1]), "1 category ids for 3 labels"),
    ],
)
def test_inconsistent_manifest_is_refused(export_dir, edit, message):
    path = export_dir / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=message):
        Manifest.load(export_dir)


def test_unparsable_manifest(export_dir):
    (export_dir / MANIFEST_NAME).write_text("{")
    with pytest.raises(ManifestError, match="unreadable"):
        Manifest.load(export_dir)


def test_a_manifest_without_the_artifact_asked_for():
    manifest = _manifest(artifacts={})
    with pytest.raises(ManifestError, match="lists no onnx artifact"):
        print(manifest.onnx_path)


def test_paths_in_figures_are_written_as_strings(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    write_manifest(tmp_path, _manifest(notes=(tmp_path / "model.onnx",)))
    assert Manifest.load(tmp_path).notes == (str(tmp_path / "model.onnx"),)


def test_write_requires_the_files(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        write_manifest(tmp_path, _manifest())


def test_batch_range():
    assert BatchRange(1, 8, 32).clip(64) == 32 and BatchRange(2, 2, 4).clip(1) == 2
    assert not BatchRange(4, 4, 4).dynamic
    for bad in ((0, 1, 2), (3, 2, 4), (1, 5, 4)):
        with pytest.raises(ValueError):
            BatchRange(*bad)
