"""The export pipeline's decisions with the slow parts faked: fallback, failure, stale files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export import loading, pipeline
from export import validate as validate_mod
from export.__main__ import main
from export.onnx import OnnxExport
from export.options import ExportError, ExportOptions
from export.verification import BatchResult, Verification
from models import DETECTION
from runtimes.manifest import MANIFEST_NAME, Manifest, ManifestError
from runtimes.manifest_fields import BatchRange
from tests.helpers.detection import tiny_rcnn


class Fakes:
    """Stands in for export_onnx / verify_onnx; ``failing`` names modes that fail parity."""

    def __init__(self, failing=()):
        self.failing = failing
        self.exported: list[tuple[str, str]] = []

    def export_onnx(self, model, path, *, grid_sample, precision, opset, batch):
        Path(path).write_bytes(f"{grid_sample} graph".encode())
        self.exported.append((grid_sample, Path(path).name))
        size, classes = model.input_size, model.num_classes
        return OnnxExport(
            Path(path),
            grid_sample,
            precision,
            opset,
            batch,
            ["batch", 3, size, size],
            {"logits": ["batch", classes]},
            {"GridSample": 4 if grid_sample == "native" else 0},
        )

    def verify_onnx(self, path, model, *, precision, batch_sizes, input_name, images=None, references=None):
        mode = Path(path).read_text().split()[0]
        passed = mode not in self.failing
        results = [BatchResult(b, 1e-7 if passed else 0.3, 1.0, 1e-4, passed) for b in batch_sizes]
        return Verification(
            "onnxruntime",
            Path(path).name,
            precision,
            "max_abs_error <= 0.0001",
            checker="ok",
            results=results,
        )


@pytest.fixture
def fakes(monkeypatch):
    def install(failing=()):
        fake = Fakes(failing)
        monkeypatch.setattr(pipeline.onnx_export, "export_onnx", fake.export_onnx)
        monkeypatch.setattr(validate_mod, "verify_onnx", fake.verify_onnx)
        return fake

    return install


def _options(out, config, **changes):
    return ExportOptions(
        out=out, config=config, random_weights=True, engine=False, batch=BatchRange(1, 2, 4), **changes
    )


def test_auto_falls_back_to_decomposed_when_onnxruntime_disagrees(fakes, tmp_path, small_config_file):
    fake = fakes(failing=("native",))
    m = pipeline.run_export(_options(tmp_path, small_config_file), log=lambda line: None)
    assert fake.exported == [("native", "model.onnx"), ("decomposed", "model.onnx")]
    assert m.status == "ok" and m.grid_sample == "auto"
    assert m.artifacts["onnx"].grid_sample == "decomposed"
    assert m.weights["source"] == "random" and any("random weights" in n for n in m.notes)


def test_explicit_native_does_not_fall_back(fakes, tmp_path, small_config_file):
    fake = fakes(failing=("native",))
    with pytest.raises(pipeline.VerificationFailed, match="onnxruntime: FAILED"):
        pipeline.run_export(
            _options(tmp_path, small_config_file, grid_sample="native"), log=lambda line: None
        )
    assert fake.exported == [("native", "model.onnx")]
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert data["status"] == "failed"
    assert data["verification"]["onnxruntime"]["passed"] is False
    with pytest.raises(ManifestError, match="failed verification"):
        Manifest.load(tmp_path)


def test_failed_verification_exits_non_zero(fakes, tmp_path, small_config_file, capsys):
    fakes(failing=("native", "decomposed"))
    code = main(
        [
            "--config",
            str(small_config_file),
            "--random-weights",
            "--no-engine",
            "--out",
            str(tmp_path),
            "--max-batch",
            "4",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "verification failed" in err[0]
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["status"] == "failed"


def test_a_stale_manifest_never_survives_a_failed_export(monkeypatch, tmp_path, small_config_file, capsys):
    (tmp_path / MANIFEST_NAME).write_text("{}")

    def crash(*args, **kwargs):
        raise RuntimeError("exporter crashed\nsecond line")

    monkeypatch.setattr(pipeline.onnx_export, "export_onnx", crash)
    code = main(
        ["--config", str(small_config_file), "--random-weights", "--no-engine", "--out", str(tmp_path)]
    )
    assert code == 1 and not (tmp_path / MANIFEST_NAME).exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "python -m export: error: export failed: RuntimeError: exporter crashed "
        "(rerun with --debug for the traceback)"
    ]


def test_checkpoint_provenance_and_name(fakes, tmp_path, mini):
    fakes()
    m = pipeline.run_export(
        ExportOptions(
            out=tmp_path,
            config=mini["config"],
            checkpoint=mini["checkpoint"],
            name="dat_v1_mini",
            engine=False,
            batch=BatchRange(1, 1, 1),
        ),
        log=lambda line: None,
    )
    assert m.model_name == "dat_v1_mini"
    assert m.weights["source"] == "checkpoint" and m.weights["file"] == "checkpoint.pth"
    assert len(m.weights["sha256"]) == 64
    assert m.batch == BatchRange(1, 1, 1)


def test_unsupported_task_is_a_request_error(tmp_path):
    with pytest.raises(ExportError, match="detection"):
        pipeline.run_export(ExportOptions(out=tmp_path, task="detection"))


def test_without_onnxruntime_the_export_stops_at_once_naming_the_extras(
    monkeypatch, tmp_path, small_config_file, capsys
):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # neither the cpu nor the gpu extra
    code = main(["--config", str(small_config_file), "--random-weights", "--out", str(tmp_path / "out")])
    assert code == 2 and not (tmp_path / "out").exists()
    err = capsys.readouterr().err
    assert "ONNX Runtime is not installed" in err and "dat-serve[cpu]" in err


def test_an_rcnn_detector_is_refused_at_load_naming_what_exports(tmp_path, monkeypatch):
    """A Faster R-CNN's task (detection) exports, but only RetinaNet's and the mask R-CNNs'
    graphs are written: the export says so at once instead of failing later."""
    import models

    faster = tiny_rcnn(mask_head=None)
    assert faster.task is DETECTION
    monkeypatch.setattr(models, "create_model", lambda *args, **kwargs: faster)
    with pytest.raises(ExportError, match="R-CNN detector without a mask head, which only the torch backend"):
        loading.load_model(ExportOptions(out=tmp_path, model="dat_digits"))


def test_the_digits_segmenter_is_refused_at_load_naming_what_exports(tmp_path):
    """Its task (instance segmentation) exports for the mask R-CNNs, but the segmenter's
    mask head on RetinaNet has no ONNX graph: a clear refusal, not a tracing error."""
    with pytest.raises(ExportError, match="dat_digits_segmenter .*only the torch backend"):
        loading.load_model(ExportOptions(out=tmp_path, model="dat_digits_segmenter"))


def test_a_model_stating_data_dependent_shapes_is_refused_whatever_its_class(tmp_path, monkeypatch):
    """The refusal reads what the model states (``static_graph``), not its class."""
    import models

    classifier = models.create_model("dat_digits", pretrained=False)
    classifier.static_graph = False
    monkeypatch.setattr(models, "create_model", lambda *args, **kwargs: classifier)
    with pytest.raises(ExportError, match="data-dependent number of detections"):
        loading.load_model(ExportOptions(out=tmp_path, model="dat_digits"))
