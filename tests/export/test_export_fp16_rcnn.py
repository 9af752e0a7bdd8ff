"""A float16 Mask R-CNN is verified by overlap, against how well PyTorch's own float16 model
agrees with float32 (export.overlap): the fixture's float16 export passes, and the same graph
with one RoIAlign attribute broken fails."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from export.overlap import MARGIN, compare_by_overlap

# --------------------------------------------------------------------------- the rule alone


def _detections(boxes, scores, labels, masks=None) -> list[np.ndarray]:
    out = [
        np.asarray(boxes, np.float32)[None],
        np.asarray(scores, np.float32)[None],
        np.asarray(labels)[None],
    ]
    if masks is not None:
        out.append(np.asarray(masks, np.float32)[None])
    return out


def _scene(n: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 300, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(40, 120, (n, 2))], 1)
    scores = np.linspace(0.9, 0.3, n)
    labels = rng.integers(0, 3, n)
    masks = rng.uniform(0, 1, (n, 28, 28))
    return boxes, scores, labels, masks


def test_detections_that_moved_a_little_match_and_missing_ones_are_held_to_pytorch_float16():
    boxes, scores, labels, masks = _scene()
    reference = _detections(boxes, scores, labels, masks)
    # float16's kind of difference: boxes a pixel off (IoU > 0.9), scores 5e-3, masks 1e-3
    moved = _detections(boxes + 1.0, scores - 5e-3, labels, masks + 1e-3)
    assert compare_by_overlap(reference, moved, moved).passed
    # two of twenty detections lost (and others in their slots) where PyTorch float16 lost none:
    # within the margin
    lost = _detections(np.concatenate([boxes[:-2] + 1, boxes[:2] + 200]), scores, labels, masks)
    assert 2 / 20 <= MARGIN and compare_by_overlap(reference, lost, moved).passed
    # four lost: beyond it, and the share of the artifact's own detections matched drops alike
    lost4 = _detections(np.concatenate([boxes[:-4] + 1, boxes[:4] + 200]), scores, labels, masks)
    result = compare_by_overlap(reference, lost4, moved)
    assert not result.passed and result.top1_agreement == 0.8
    # ... unless PyTorch's own float16 model loses as many
    assert compare_by_overlap(reference, lost4, lost4).passed


def test_labels_scores_overlap_and_masks_each_count():
    boxes, scores, labels, masks = _scene()
    reference = _detections(boxes, scores, labels, masks)
    bar = _detections(boxes + 1.0, scores, labels, masks + 1e-3)
    assert not compare_by_overlap(reference, _detections(boxes, scores, (labels + 1) % 3, masks), bar).passed
    assert not compare_by_overlap(reference, _detections(boxes, scores - 0.05, labels, masks), bar).passed
    assert not compare_by_overlap(reference, _detections(boxes + 8.0, scores, labels, masks), bar).passed
    noisy = np.clip(masks + np.random.default_rng(1).normal(0, 0.05, masks.shape), 0, 1)
    result = compare_by_overlap(reference, _detections(boxes, scores, labels, noisy), bar)
    assert not result.passed and result.top1_agreement == 1.0 and result.mask_error > 0.03
    nan = boxes.copy()
    nan[3] = np.nan
    assert not compare_by_overlap(reference, _detections(nan, scores, labels, masks), bar).passed


def test_a_float16_model_far_from_float32_still_leaves_a_floor():
    boxes, scores, labels, masks = _scene()
    reference = _detections(boxes, scores, labels, masks)
    half_gone = _detections(np.concatenate([boxes[:8], boxes[:12] + 200]), scores, labels, masks)
    assert not compare_by_overlap(reference, half_gone, half_gone).passed  # under the 0.5 floor


# --------------------------------------------------------------------------- the fixture's export


@pytest.fixture(scope="module")
def float16_export(tmp_path_factory):
    """The fixture's float16 export, and the PyTorch references its verification computed
    (``references.model`` the model it loaded)."""
    from export.pipeline import ExportOptions, run_export
    from runtimes.manifest import BatchRange
    from tests.helpers.export import kept_references
    from tests.helpers.paths import FIXTURES, official_fixture

    official_fixture("mmdet_mask_rcnn_mini")  # skips where the fixtures are absent
    folder = FIXTURES / "mmdet_mask_rcnn_mini"
    options = ExportOptions(
        out=tmp_path_factory.mktemp("fp16") / "export",
        config=folder / "config.py",
        checkpoint=folder / "checkpoint.pth",
        verify_images=(FIXTURES / "chelsea.jpg",),
        precision="fp16",
        grid_sample="native",
        batch=BatchRange(1, 1, 1),
        engine=False,
    )
    with kept_references() as kept:
        manifest = run_export(options, log=lambda line: None)
    (references,) = kept
    return manifest, references


@pytest.mark.slow  # exports and verifies the fixture in float16: ~5 min on 2 shared cores
def test_the_float16_mask_rcnn_verifies_and_a_broken_roi_align_fails(float16_export, tmp_path):
    import torch
    from PIL import Image

    from export.validate import verify_onnx
    from tests.helpers.paths import FIXTURES

    manifest, references = float16_export
    model = references.model
    report = manifest.verification["onnxruntime"]
    assert manifest.status == "ok" and report["passed"], report["summary"]
    assert report["top1_agreement"] >= 0.85 and "PyTorch float16" in report["tolerance_rule"]
    # the same graph, its RoIAlign without mmcv's half-pixel offset (aligned=False)
    graph = onnx.load(str(manifest.onnx_path))
    for node in graph.graph.node:
        for attribute in node.attribute if node.op_type == "RoiAlign" else ():
            if attribute.name == "coordinate_transformation_mode":
                attribute.s = b"output_half_pixel"
    onnx.save(graph, str(tmp_path / "broken.onnx"))
    with Image.open(FIXTURES / "chelsea.jpg") as image:
        x = model.info.preprocessing(image.convert("RGB"))
    canvas = torch.zeros(1, 3, 480, 480)
    canvas[0, :, : x.shape[1], : x.shape[2]] = x
    broken = verify_onnx(  # on the export's own picture: PyTorch's outputs as its verification had them
        tmp_path / "broken.onnx",
        model,
        precision="fp16",
        batch_sizes=[1],
        input_name="images",
        images=canvas,
        references=references,
    )
    assert not broken.passed and broken.top1_agreement < 0.5, broken.summary()
