"""``python -m export``: help, one-line errors with their exit codes, a real run. The process
itself runs for the help, one error and the real runs; the other refusals go through its
``main`` in this process (the ``cli`` fixture)."""

from __future__ import annotations

import importlib.util
import json

import pytest


def _one_line_error(done, code: int, *fragments: str) -> None:
    assert done.returncode == code, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("python -m export: error: ")
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_explains_each_option(export_cli):
    done = export_cli("--help")
    assert done.returncode == 0
    for option in (
        "--model",
        "--config",
        "--checkpoint",
        "--out",
        "--fp16",
        "--opset",
        "--min-batch",
        "--opt-batch",
        "--max-batch",
        "--grid-sample",
        "--task",
        "--engine",
        "--no-engine",
        "--triton",
        "--triton-only",
        "--triton-platform",
        "exit status",
    ):
        assert option in done.stdout


def test_unknown_model(export_cli, tmp_path):
    _one_line_error(
        export_cli("--model", "dat_huge", "--out", str(tmp_path)), 2, "unknown model 'dat_huge'", "dat_tiny"
    )


def test_missing_files(cli, tmp_path):
    missing = str(tmp_path / "missing.yaml")
    _one_line_error(cli("--config", missing, "--out", str(tmp_path)), 2, "config file not found", missing)
    _one_line_error(
        cli("--model", "dat_tiny", "--checkpoint", str(tmp_path / "x.pth"), "--out", str(tmp_path)),
        2,
        "checkpoint file not found",
    )


def test_checkpoint_that_does_not_fit(cli, tmp_path, mini):
    _one_line_error(
        cli("--model", "dat_tiny", "--checkpoint", str(mini["checkpoint"]), "--out", str(tmp_path)),
        2,
        "checkpoint does not fit the model",
    )
    assert not (tmp_path / "manifest.json").exists()


def test_not_a_checkpoint(cli, tmp_path, small_config_file):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00garbage")
    _one_line_error(
        cli("--config", str(small_config_file), "--checkpoint", str(junk), "--out", str(tmp_path)),
        2,
        "junk.pth",
    )


def test_model_without_weights_needs_a_checkpoint(cli, tmp_path):
    _one_line_error(
        cli("--model", "dat_tiny", "--out", str(tmp_path)), 2, "no embedded weights", "--checkpoint"
    )


def test_bad_options(cli, tmp_path):
    _one_line_error(
        cli("--opset", "20", "--grid-sample", "native", "--out", str(tmp_path)), 2, "linear", "nearest"
    )
    _one_line_error(cli("--opset", "12", "--out", str(tmp_path)), 2, "opset 12")
    _one_line_error(
        cli("--min-batch", "8", "--max-batch", "2", "--out", str(tmp_path)), 2, "min <= opt <= max"
    )
    _one_line_error(cli("--max-batch", "0", "--out", str(tmp_path)), 2, "at least 1")
    _one_line_error(cli("--grid-sample", "bicubic", "--out", str(tmp_path)), 2, "bicubic")
    _one_line_error(cli("--model", "dat_tiny"), 2, "--out")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_requested_engine_without_tensorrt(cli, tmp_path, small_config_file):
    _one_line_error(
        cli("--config", str(small_config_file), "--random-weights", "--engine", "--out", str(tmp_path)),
        3,
        "TensorRT engine was requested",
    )
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.slow
def test_small_model_export_without_tensorrt(export_cli, tmp_path, small_config_file):
    """Without --engine a missing TensorRT is said plainly and the ONNX part completes."""
    out = tmp_path / "out"
    done = export_cli(
        "--config",
        str(small_config_file),
        "--random-weights",
        "--out",
        str(out),
        "--max-batch",
        "4",
        "--opt-batch",
        "2",
        "--verify-batches",
        "3",
    )
    assert done.returncode == 0, done.stderr
    for step in ("[1] Loading the model", "Exporting ONNX", "Verifying", "done in", "export ok"):
        assert step in done.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "ok"
    assert [r["batch"] for r in manifest["verification"]["onnxruntime"]["results"]] == [1, 2, 3, 4]
    if importlib.util.find_spec("tensorrt") is None:
        assert "TensorRT" in done.stdout and any("tensorrt" in n for n in manifest["notes"])


@pytest.mark.slow
def test_default_model_is_the_embedded_classifier(digits_cli):
    out, _, done = digits_cli
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["name"] == "dat_digits" and manifest["labels"] == list("0123456789")
