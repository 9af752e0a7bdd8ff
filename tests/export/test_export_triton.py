"""Triton model repositories from exports, checked with Triton's own model-config schema
(``model_config.proto``, shipped by tritonclient) and against the ONNX graph itself."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from export.triton import TritonOptions, TritonRepositoryError, model_config, write_repository
from runtimes.hashing import sha256_file
from runtimes.manifest import Manifest
from runtimes.manifest_fields import Artifact, BatchRange, TensorSpec


def parse(text: str) -> model_config_pb2.ModelConfig:
    """Triton's parser: unknown fields or enum values, bad syntax raise ParseError."""
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _check_model_folder(folder, manifest: Manifest, config) -> None:
    assert sorted(p.name for p in folder.iterdir()) == ["1", "config.pbtxt", "labels.txt"]
    assert [p.name for p in (folder / "1").iterdir()] == ["model.onnx"]
    assert sha256_file(folder / "1" / "model.onnx") == manifest.artifacts["onnx"].sha256
    assert (folder / "labels.txt").read_text().splitlines() == list(manifest.labels)
    assert config.output[0].label_filename == "labels.txt"


@pytest.mark.slow
def test_the_default_models_repository_is_a_valid_triton_model_config(digits_cli):
    out, repository, done = digits_cli
    assert done.returncode == 0, done.stderr
    assert f"Triton model repository: {repository / 'dat_digits'}" in done.stdout
    manifest = Manifest.load(out)
    folder = repository / "dat_digits"
    config = parse((folder / "config.pbtxt").read_text())
    assert config.name == "dat_digits" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 8  # the verified range's max (--max-batch 8)
    (inp,) = config.input
    (out_,) = config.output
    assert (inp.name, inp.data_type, list(inp.dims)) == ("images", model_config_pb2.TYPE_FP32, [3, 32, 32])
    assert inp.format == model_config_pb2.ModelInput.FORMAT_NCHW
    assert (out_.name, out_.data_type, list(out_.dims)) == ("logits", model_config_pb2.TYPE_FP32, [10])
    assert list(config.dynamic_batching.preferred_batch_size) == [8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 5000
    (group,) = config.instance_group
    assert group.count == 1 and group.kind == model_config_pb2.ModelInstanceGroup.KIND_AUTO
    _check_model_folder(folder, manifest, config)

    # the config describes the graph Triton will load: names, dims, and a full batch runs
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (graph_in,), (graph_out,) = session.get_inputs(), session.get_outputs()
    assert (graph_in.name, graph_in.shape[1:]) == (inp.name, list(inp.dims))
    assert (graph_out.name, graph_out.shape[1:]) == (out_.name, list(out_.dims))
    x = np.zeros((config.max_batch_size, *inp.dims), np.float32)
    assert session.run([out_.name], {inp.name: x})[0].shape == (config.max_batch_size, *out_.dims)


def test_repository_from_an_existing_export(export_cli, cli, mini_native, tmp_path):
    repository = tmp_path / "models"
    done = export_cli(
        "--out", str(mini_native), "--triton", str(repository), "--triton-only", "--name", "dat_v1_mini"
    )
    assert done.returncode == 0, done.stderr
    assert "Exporting" not in done.stdout  # nothing was exported again
    folder = repository / "dat_v1_mini"
    config = parse((folder / "config.pbtxt").read_text())
    assert config.name == "dat_v1_mini" and list(config.input[0].dims) == [3, 224, 224]
    assert config.max_batch_size == 8
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 8]
    _check_model_folder(folder, Manifest.load(mini_native), config)
    # written again: replaced, not merged
    (folder / "stale.txt").write_text("x")
    assert (
        cli(
            "--out", str(mini_native), "--triton", str(repository), "--triton-only", "--name", "dat_v1_mini"
        ).returncode
        == 0
    )
    assert not (folder / "stale.txt").exists()
    assert [p.name for p in repository.iterdir()] == ["dat_v1_mini"]  # no work folder left behind


def test_triton_only_errors(cli, tmp_path):
    done = cli("--out", str(tmp_path), "--triton-only")
    assert done.returncode == 2 and "--triton-only needs --triton DIR" in done.stderr
    done = cli("--out", str(tmp_path / "nothing"), "--triton", str(tmp_path / "r"), "--triton-only")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "Triton repository: export directory not found" in done.stderr


@pytest.fixture
def manifest(mini_native, tmp_path) -> Manifest:
    """The mini export's manifest over stand-in files, to vary it freely."""
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    data = json.loads((mini_native / "manifest.json").read_text())
    return Manifest.from_dict(data, directory=tmp_path)


def test_a_tensorrt_engine_is_served_on_the_gpu(manifest, tmp_path):
    (tmp_path / "model.plan").write_bytes(b"plan")
    engine = Artifact("model.plan", "tensorrt", "native", extra={"tensorrt": "10.9", "device": "H100"})
    with_engine = dataclasses.replace(manifest, artifacts={**manifest.artifacts, "engine": engine})
    config = parse(model_config(with_engine))  # auto: the engine
    assert config.platform == "tensorrt_plan"
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    folder = write_repository(with_engine, tmp_path / "repo")
    assert (folder / "1" / "model.plan").read_bytes() == b"plan"
    onnx = parse(model_config(with_engine, TritonOptions(platform="onnxruntime")))
    assert onnx.platform == "onnxruntime_onnx"
    with pytest.raises(TritonRepositoryError, match="no TensorRT engine"):
        model_config(manifest, TritonOptions(platform="tensorrt"))


def test_fp16_static_batch_and_impossible_requests(manifest, tmp_path):
    half = dataclasses.replace(manifest, input=dataclasses.replace(manifest.input, dtype="float16"))
    assert parse(model_config(half)).input[0].data_type == model_config_pb2.TYPE_FP16
    fixed = dataclasses.replace(
        manifest,
        batch=BatchRange(4, 4, 4),
        input=TensorSpec("images", "float32", (4, 3, 224, 224), "NCHW"),
        outputs=(TensorSpec("logits", "float32", (4, 10)),),
    )
    config = parse(model_config(fixed))
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [4, 3, 224, 224]
    assert not config.HasField("dynamic_batching")
    with pytest.raises(TritonRepositoryError, match="verified from batch 2"):
        model_config(dataclasses.replace(manifest, batch=BatchRange(2, 4, 8)))
    with pytest.raises(TritonRepositoryError, match="cannot name a folder"):
        write_repository(manifest, tmp_path / "repo", TritonOptions(name="../escape"))
    quoted = parse(model_config(manifest, TritonOptions(name='odd "name"\\')))
    assert quoted.name == 'odd "name"\\'
