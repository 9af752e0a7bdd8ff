"""Mask R-CNN and Cascade Mask R-CNN export whole (RPN, NMS, RoIAlign, the box and mask heads of
every stage) and ONNX Runtime keeps PyTorch's detections and masks, on the mmdet fixtures'
detectors and their picture; the RoIAlign translation on its own against our mmcv kernel."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image, ImageOps

from export import symbolics
from export.parity import MASK_IOU, MASK_TIE, compare_detections, compare_masks
from export.pipeline import run_export
from models import INSTANCE_SEGMENTATION
from models import roi_align as roi_module
from models.roi_align import roi_align
from runtimes.manifest import Manifest
from tests.helpers.export import kept_references, mmdet_fixture_export
from tests.helpers.paths import FIXTURES

# --------------------------------------------------------------------------- RoIAlign alone


class _Pool(torch.nn.Module):
    def __init__(self, sampling_ratio: int):
        super().__init__()
        self.sampling_ratio = sampling_ratio

    def forward(self, features, boxes, batch_index):
        return roi_module.pool_rois(features, boxes, batch_index, 7, 0.125, self.sampling_ratio)


def _export_pool(sampling_ratio: int, path) -> onnx.ModelProto:
    example = (torch.randn(2, 4, 24, 32), torch.rand(9, 4) * 100, torch.zeros(9, dtype=torch.long))
    n = torch.export.Dim("rois", min=2, max=4096)
    with torch.no_grad(), symbolics.opaque_seams():
        program = torch.export.export(
            _Pool(sampling_ratio), example, dynamic_shapes=(None, {0: n}, {0: n}), strict=False
        )
    onnx_program = torch.onnx.export(
        program,
        dynamo=True,
        opset_version=18,
        input_names=["features", "boxes", "batch_index"],
        custom_translation_table=symbolics.translation_table("native", 18),
    )
    onnx_program.save(str(path))
    return onnx.load(str(path))


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_onnx_roi_align_is_mmcvs(sampling_ratio, tmp_path):
    """ONNX's adaptive sampling (ratio 0: ceil(roi side / P) per RoI and axis), half-pixel
    offset and out-of-map rule are mmcv's aligned kernel: ONNX Runtime reproduces ours to
    float32 rounding, empty, inverted and out-of-image boxes included."""
    model = _export_pool(sampling_ratio, tmp_path / "pool.onnx")
    (node,) = [n for n in model.graph.node if n.op_type == "RoiAlign"]
    torch.manual_seed(1)
    features = torch.randn(2, 4, 24, 32)
    xy = torch.rand(300, 2) * torch.tensor([280.0, 210.0]) - 10
    wh = torch.rand(300, 2) ** 3 * torch.tensor([256.0, 192.0])
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[:4] = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0],
            [30.0, 40.0, 20.0, 35.0],
            [-90.0, -60.0, -20.0, -9.0],
            [-50.0, -50.0, 400.0, 300.0],
        ]
    )
    batch_index = torch.randint(0, 2, (300,))
    want = roi_align(features, boxes, batch_index, 7, 0.125, sampling_ratio)
    session = ort.InferenceSession(str(tmp_path / "pool.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(
        None, {"features": features.numpy(), "boxes": boxes.numpy(), "batch_index": batch_index.numpy()}
    )[0]
    assert np.abs(got - want.numpy()).max() < 2e-6
    assert np.abs(want.numpy()).max() > 1  # the RoIs sample something


# --------------------------------------------------------------------------- the fixtures' detectors

ROI_STRIDES = (4, 8, 16, 32)


@pytest.fixture(scope="module", params=["mask_rcnn", "cascade_mask_rcnn"])
def exported(request, tmp_path_factory):
    """The fixture detector exported by the pipeline at batch 1-2 and verified on two pictures
    (the fixtures' chelsea and its mirror image); the PyTorch references the pipeline computed
    (``references.model`` the model it loaded)."""
    name = request.param
    options = mmdet_fixture_export(name, tmp_path_factory.mktemp(name))
    with kept_references() as kept:
        manifest = run_export(options, log=lambda line: None)
    (references,) = kept
    return name, manifest, references


@pytest.mark.slow  # each architecture exports and verifies in ~3-4 min on 2 shared cores
def test_the_pipeline_verifies_detections_and_masks(exported):
    _, manifest, _ = exported
    assert manifest.task is INSTANCE_SEGMENTATION and manifest.status == "ok"
    assert manifest.output_names == ("boxes", "scores", "labels", "masks")
    assert [list(o.shape) for o in manifest.outputs] == [
        ["batch", 100, 4],
        ["batch", 100],
        ["batch", 100],
        ["batch", 100, 28, 28],
    ]
    assert list(manifest.input.shape) == ["batch", 3, 480, 480]  # the pipeline's canvas
    report = manifest.verification["onnxruntime"]
    assert report["passed"] and report["top1_agreement"] == 1.0, report["summary"]
    assert [r["batch"] for r in report["results"]] == [1, 2]
    assert [r["detections"] for r in report["results"]] == [100, 200]  # every slot filled
    # a small mask loses much IoU to one near-tie pixel (Mask R-CNN's 45-pixel mask: 0.978;
    # Cascade's smallest on the mirrored picture: 0.75), which the rule excuses
    assert 0.5 <= report["min_mask_iou"] <= 1.0
    assert "mask IoU" in report["tolerance_rule"] and "min mask IoU" in report["summary"]
    assert Manifest.load(manifest.directory).preprocessing.canvas == 480


@pytest.mark.slow
def test_roi_align_nodes_keep_their_attributes(exported):
    """Every RoIAlign of the graph is one ONNX RoiAlign with mmcv's aligned semantics pinned:
    a change of mode, offset, sampling or level scales breaks parity with mmdet."""
    name, manifest, _ = exported
    graph = onnx.load(str(manifest.onnx_path))
    nodes = [n for n in graph.graph.node if n.op_type == "RoiAlign"]
    stages = 3 if name == "cascade_mask_rcnn" else 1
    assert len(nodes) == len(ROI_STRIDES) * (stages + 1)  # per level: each box head, the mask RoIs
    seen = set()
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["mode"] == b"avg" and attrs["coordinate_transformation_mode"] == b"half_pixel"
        assert attrs["sampling_ratio"] == 0  # the release configs' adaptive sampling
        assert attrs["output_height"] == attrs["output_width"]
        seen.add((attrs["output_height"], round(1 / attrs["spatial_scale"])))
        assert "roi_align/RoiAlign" in node.name
    assert seen == {(size, stride) for size in (7, 14) for stride in ROI_STRIDES}
    assert sum(n.op_type == "NonMaxSuppression" for n in graph.graph.node) == 2  # RPN, final
    assert next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 16


@pytest.mark.slow
def test_onnxruntime_masks_are_pytorchs(exported):
    """Directly, not through the verification: the same labels in the same slots, mask
    probabilities within 1e-3, pasted masks of IoU >= 0.99 but for near-ties, at batch 2 of
    two pictures."""
    _, manifest, references = exported
    model = references.model
    pictures = []
    with Image.open(FIXTURES / "chelsea.jpg") as image:
        for picture in (image.convert("RGB"), ImageOps.mirror(image.convert("RGB"))):
            x, _ = model.info.preprocessing.prepare(picture)
            canvas = torch.zeros(3, 480, 480)
            canvas[:, : x.shape[1], : x.shape[2]] = x
            pictures.append(canvas)
    images = torch.stack(pictures)
    want = references.outputs(images)  # PyTorch's batch 2 as the verification computed it
    session = ort.InferenceSession(str(manifest.onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": images.numpy()})
    assert np.array_equal(got[2], want[2]) and (want[2] >= 0).all()
    assert np.abs(got[3] - want[3]).max() < 1e-3
    assert np.abs(got[0] - want[0]).max() < 1e-3 * 480
    ious = []
    for b in range(2):
        for i in range(100):
            iou, near_ties_only = compare_masks(
                (want[3][b, i], want[0][b, i]), (got[3][b, i], got[0][b, i]), MASK_TIE["fp32"]
            )
            assert iou >= MASK_IOU["fp32"] or near_ties_only, (b, i, iou)
            ious.append(iou)
    assert np.mean(np.array(ious) >= MASK_IOU["fp32"]) >= 0.9  # the near-ties: small masks only
    assert (want[3] >= 0.5).sum() > 10_000  # the masks have substance


# --------------------------------------------------------------------------- the mask comparison


def _detections(masks: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    n = len(boxes)
    return [
        boxes[None].astype(np.float32),
        np.linspace(0.9, 0.6, n, dtype=np.float32)[None],
        np.arange(n)[None],
        masks[None].astype(np.float32),
    ]


def test_mask_comparison_catches_a_changed_mask():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 28, 28))
    boxes = np.array([[10, 10, 60, 80], [100, 20, 180, 60], [5, 5, 25, 12]], np.float32)
    reference = _detections(masks, boxes)
    same = compare_detections(reference, _detections(masks, boxes), "fp32", 0.05)
    assert same.passed and same.min_mask_iou == 1.0
    # a probability moved by the fp32 tolerance's order keeps the mask; a flipped region does not
    nudged = masks + np.where(np.abs(masks - 0.5) > 1e-3, 1e-4, 0)
    assert compare_detections(reference, _detections(nudged, boxes), "fp32", 0.05).passed
    flipped = masks.copy()
    flipped[1, :6] = 1 - flipped[1, :6]
    result = compare_detections(reference, _detections(flipped, boxes), "fp32", 0.05)
    assert not result.passed and result.min_mask_iou < 0.9 and result.top1_agreement == 1.0
    # box-only outputs: no mask figure
    assert compare_detections(reference[:3], reference[:3], "fp32", 0.05).min_mask_iou is None


def test_a_small_mask_may_lose_a_near_tie_pixel_only():
    """A 6 x 6-pixel mask: one pixel flipped costs 3% of IoU. Excused where its probability is
    within MASK_TIE of 0.5, not where it is far from it."""
    box = np.array([10, 10, 16, 16], np.float32)
    masks = np.full((1, 28, 28), 0.9, np.float32)
    boxes = box[None]
    reference = _detections(masks, boxes)
    tie = masks.copy()
    tie[0, :5, :5] = 0.5 + 1e-3  # the top-left pixel's samples, just above the threshold
    flipped_tie = tie.copy()
    flipped_tie[0, :5, :5] = 0.5 - 1e-3
    close = compare_detections(_detections(tie, boxes), _detections(flipped_tie, boxes), "fp32", 0.05)
    assert close.min_mask_iou < MASK_IOU["fp32"] and close.passed
    far = masks.copy()
    far[0, :5, :5] = 0.1
    result = compare_detections(reference, _detections(far, boxes), "fp32", 0.05)
    assert result.min_mask_iou < MASK_IOU["fp32"] and not result.passed


def test_compare_masks():
    full = np.ones((28, 28), np.float32)
    box = np.array([0, 0, 10, 10], np.float32)
    assert compare_masks((full, box), (full, box), 5e-3) == (1.0, True)
    assert compare_masks((full * 0, box), (full * 0, box), 5e-3) == (1.0, True)  # both empty
    assert compare_masks((full, box), (full * 0, box), 5e-3) == (0.0, False)
    half, _ = compare_masks((full, box), (full, np.array([0, 0, 10, 5], np.float32)), 5e-3)
    assert half == pytest.approx(0.5, abs=0.05)
