"""PyTorch's side of a verification is computed once per input batch and device, and shared by
every check of one export (export.validate.References)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from export import pipeline, validate
from export.onnx import OnnxExport
from export.options import ExportOptions
from models import KeepRatioResize, ModelInfo
from runtimes.manifest_fields import BatchRange
from tests.helpers.detection import tiny_rcnn


class Counting:
    """Counts the model's passes on the way to the real ones."""

    def __init__(self, model, monkeypatch):
        self.calls: list[tuple[str, int]] = []
        for name in ("forward", "nms_candidates", "forward_with_candidates"):
            real = getattr(model, name, None)
            if real is None:
                continue

            def counted(images, *args, _real=real, _name=name, **kwargs):
                self.calls.append((_name, images.shape[0]))
                return _real(images, *args, **kwargs)

            monkeypatch.setattr(model, name, counted)


def test_equal_inputs_are_computed_once_and_other_inputs_anew(monkeypatch, tiny_model):
    counting = Counting(tiny_model.eval(), monkeypatch)
    references = validate.References(tiny_model)
    x = validate.sample_inputs(tiny_model.input_size, 2)
    first = references.outputs(x)
    assert np.array_equal(references.outputs(x.clone()), first) and len(counting.calls) == 1
    references.outputs(x[:1])  # another batch
    changed = x.clone()
    changed[1, 0, 0, 0] += 1  # the same shape, one value changed
    assert not np.array_equal(references.outputs(changed)[0][1], first[0][1])
    assert counting.calls == [("forward", 2), ("forward", 1), ("forward", 2)]
    with pytest.raises(AssertionError, match="only detectors"):
        references.candidates(x)


def test_a_two_stage_detector_s_outputs_and_candidates_come_from_one_pass(monkeypatch):
    model = tiny_rcnn(score_threshold=0.0)
    counting = Counting(model, monkeypatch)
    references = validate.References(model)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    outputs = references.outputs(x)
    boxes, scores = references.candidates(x)
    assert counting.calls == [("forward_with_candidates", 2)]
    with torch.no_grad():
        want = model.forward_with_candidates(x)
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(outputs, want[0]))
    assert np.array_equal(boxes, want[1][0].numpy()) and np.array_equal(scores, want[1][1].numpy())


def test_references_of_another_model_are_refused(tiny_model):
    other = validate.References(tiny_rcnn())
    with pytest.raises(ValueError, match="another model"):
        validate.verify_runner(
            lambda x: [x],
            tiny_model,
            runtime="onnxruntime",
            artifact="model.onnx",
            precision="fp32",
            batch_sizes=[1],
            references=other,
        )


def test_an_export_runs_pytorch_once_per_verified_batch(monkeypatch, tmp_path):
    """A Mask R-CNN export (graph and ONNX Runtime faked) on seeded inputs at batch sizes 1
    and 2: the detections check before the export and the verification share PyTorch's passes,
    each one giving both the detections and the NMS candidates."""
    model = tiny_rcnn(score_threshold=0.0, max_per_img=10, rpn_max_per_img=50)
    model.info = ModelInfo("tiny_mask_rcnn", KeepRatioResize((64, 64)), model.info.labels)
    counting = Counting(model, monkeypatch)

    def export_onnx(model, path, **kwargs):
        Path(path).write_bytes(b"graph")
        shapes = {"boxes": ["batch", 10, 4], "scores": ["batch", 10], "labels": ["batch", 10]}
        shapes["masks"] = ["batch", 10, 28, 28]
        return OnnxExport(Path(path), "native", "fp32", 18, kwargs["batch"], ["batch", 3, 64, 64], shapes, {})

    def onnxruntime(x):  # PyTorch's own answer, past the counting
        found, _ = type(model).forward_with_candidates(model, torch.from_numpy(x))
        return [t.numpy() for t in found]

    monkeypatch.setattr(pipeline, "load_model", lambda options: model)
    monkeypatch.setattr(pipeline.onnx_export, "export_onnx", export_onnx)
    monkeypatch.setattr(validate, "check_onnx", lambda path: "ok")
    monkeypatch.setattr(validate, "onnxruntime_runner", lambda path, input_name: onnxruntime)
    options = ExportOptions(
        out=tmp_path,
        model="dat_pp_tiny_mask_rcnn_1x",
        random_weights=True,
        batch=BatchRange(1, 2, 2),
        engine=False,
    )
    manifest = pipeline.run_export(options, log=lambda line: None)
    report = manifest.verification["onnxruntime"]
    assert report["passed"] and [r["batch"] for r in report["results"]] == [1, 2]
    assert counting.calls == [("forward_with_candidates", 2), ("forward_with_candidates", 1)]
