"""An exported instance segmentation model served from ``--detector-artifacts`` by ONNX Runtime
and, through the TensorRT test double on a fake GPU (tests/helpers/fake_tensorrt.py), by the TensorRT
backend: keep-ratio images padded onto the graph's square canvas, boxes back in each image's
pixels, /detect?masks=rle as the torch backend answers it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask

from export import pipeline
from export.options import ExportOptions
from models import KeepRatioResize, ModelInfo
from runtimes.manifest_fields import BatchRange
from service import create_app
from service.backends.onnxruntime import OnnxRuntimeBackend
from service.backends.torch import TorchBackend
from tests.helpers.app import serve, settings
from tests.helpers.detection import tiny_rcnn
from tests.helpers.fake_cuda import FakeCuda
from tests.helpers.fake_tensorrt import FakeTensorRT
from tests.helpers.images import image_bytes
from tests.helpers.v2 import triton_request, triton_result

pytestmark = [pytest.mark.anyio, pytest.mark.slow]  # the export takes 1-4 min on 2 shared cores

CANVAS = 96


@pytest.fixture(scope="module")
def model():
    """A tiny Mask R-CNN whose pipeline resizes to fit 96 x 96: a square picture fills the
    export's canvas, so the torch backend (each image at its own padded shape) and the graph
    (every image on the canvas) see the same input."""
    detector = tiny_rcnn(max_per_img=10, rpn_max_per_img=100)
    detector.info = ModelInfo("tiny_mask_rcnn", KeepRatioResize((CANVAS, CANVAS)), detector.info.labels)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # random mask weights give the masks a shape
        for parameter in detector.roi_head.mask_head.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=g) * 0.3)
    return detector


@pytest.fixture(scope="module")
def artifacts(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_mask_rcnn")
    options = ExportOptions(
        out=out,
        model="dat_pp_tiny_mask_rcnn_1x",  # stands in for the name; load_model is replaced
        random_weights=True,
        batch=BatchRange(1, 2, 2),
    )
    with pytest.MonkeyPatch.context() as patch:
        FakeCuda(patch)
        FakeTensorRT().install(patch)  # the engine is built and verified through the double
        patch.setattr(pipeline, "load_model", lambda options: model)
        manifest = pipeline.run_export(options, log=lambda line: None)
    for runtime in ("onnxruntime", "tensorrt"):
        assert manifest.verification[runtime]["passed"], manifest.verification[runtime]["summary"]
        assert manifest.verification[runtime]["min_mask_iou"] >= 0.99
    assert manifest.engine_path is not None
    return out


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


async def detections(app, image: Image.Image) -> list[dict]:
    async with serve(app) as client:
        response = await client.post(
            "/detect",
            params={"score_threshold": 0.0, "masks": "rle"},
            content=image_bytes(image),
            headers={"content-type": "image/png"},
        )
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert (result["width"], result["height"]) == image.size
    return result["detections"]


def decoded(detection: dict) -> np.ndarray:
    rle = detection["segmentation"]
    return coco_mask.decode({**rle, "counts": rle["counts"].encode()}).astype(bool)


async def test_onnxruntime_answers_masks_as_torch_does(backend, model, artifacts):
    detector = OnnxRuntimeBackend(artifacts, device="cpu")
    meta = detector.load()
    assert meta.task.has_masks and meta.keeps_ratio and meta.canvas == CANVAS
    image = picture(48, 48)  # resized to 96 x 96: the whole canvas
    want = await detections(create_app(settings(), backend=backend, detector=TorchBackend(model)), image)
    got = await detections(create_app(settings(), backend=backend, detector=detector), image)
    assert len(got) == len(want) > 0
    assert [d["index"] for d in got] == [d["index"] for d in want]
    for g, w in zip(got, want):
        box = np.array([g["box"][k] for k in ("x1", "y1", "x2", "y2")])
        assert np.abs(box - [w["box"][k] for k in ("x1", "y1", "x2", "y2")]).max() <= 0.02  # 2 decimals
        assert abs(g["score"] - w["score"]) < 1e-3
        a, b = decoded(g), decoded(w)
        assert a.shape == (48, 48)
        union = (a | b).sum()
        assert union == 0 or (a & b).sum() / union >= 0.99
    assert any(decoded(d).any() for d in got)


async def test_other_shapes_come_back_in_their_own_pixels(backend, artifacts):
    """A landscape and a portrait picture, each resized to fit and padded onto the canvas:
    boxes and masks in the picture's own pixels, inside it."""
    detector = OnnxRuntimeBackend(artifacts, device="cpu")
    for image in (picture(120, 40, 1), picture(30, 90, 2)):
        found = await detections(create_app(settings(), backend=backend, detector=detector), image)
        assert found
        for d in found:
            assert 0 <= d["box"]["x1"] <= d["box"]["x2"] <= image.width
            assert 0 <= d["box"]["y1"] <= d["box"]["y2"] <= image.height
            assert decoded(d).shape == (image.height, image.width)


async def test_the_tensorrt_backend_answers_as_onnxruntime(backend, fake_tensorrt, artifacts):
    """The engine (the graph, run by the double) through the TensorRT backend on a fake GPU."""
    from service.backends.tensorrt import TensorRTBackend

    image = picture(120, 40, 1)
    engine = TensorRTBackend(artifacts, device="cuda")
    got = await detections(create_app(settings(), backend=backend, detector=engine), image)
    onnx = OnnxRuntimeBackend(artifacts, device="cpu")
    want = await detections(create_app(settings(), backend=backend, detector=onnx), image)
    assert engine.meta.canvas == CANVAS and fake_tensorrt.executed[-1] == {"images": [1, 3, CANVAS, CANVAS]}
    assert got == want and any(decoded(d).any() for d in got)


async def test_v2_answers_the_mask_tensors_and_refuses_inputs_past_the_canvas(backend, artifacts):
    import tritonclient.http as triton

    detector = OnnxRuntimeBackend(artifacts, device="cpu")
    image = picture(48, 48)
    async with serve(create_app(settings(), backend=backend, detector=detector)) as client:
        encoded = triton.InferInput("image_bytes", [1], "BYTES")
        encoded.set_data_from_numpy(np.array([image_bytes(image)], dtype=np.object_))
        outputs = [triton.InferRequestedOutput(name) for name in ("boxes", "masks")]
        body, headers = triton_request([encoded], outputs)
        answered = await client.post("/v2/models/tiny_mask_rcnn/infer", content=body, headers=headers)
        assert answered.status_code == 200, answered.text
        result = triton_result(answered)
        tensor = triton.InferInput("images", [1, 3, 128, 96], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 3, 128, 96), np.float32))
        body, headers = triton_request([tensor])
        refused = await client.post("/v2/models/tiny_mask_rcnn/infer", content=body, headers=headers)
    found = await detections(create_app(settings(), backend=backend, detector=detector), image)
    masks, boxes = result.as_numpy("masks"), result.as_numpy("boxes")
    assert masks.shape == (1, 10, 28, 28) and len(found) > 0
    assert np.allclose(
        boxes[0, : len(found)], [[d["box"][k] for k in ("x1", "y1", "x2", "y2")] for d in found], atol=0.01
    )
    assert refused.status_code == 400
    assert "does not fit the exported graph's 96 x 96 canvas" in refused.text
