"""POST /detect: boxes mapped back to the original image, parameters, formats, errors."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from service import create_app
from service.backends import BackendError
from tests.helpers.app import serve, settings
from tests.helpers.backends import CANVAS, CountingBackend, FixedDetector
from tests.helpers.images import image_bytes
from tests.helpers.metrics import metric

pytestmark = pytest.mark.anyio


def picture(width: int, height: int) -> bytes:
    return image_bytes(Image.new("RGB", (width, height), (200, 200, 200)))


@pytest.fixture
async def client(backend: CountingBackend):
    app = create_app(settings(), backend=backend, detector=FixedDetector())
    async with serve(app) as client:
        yield client


async def test_boxes_come_back_in_the_original_images_pixels(client):
    # 256 x 128 fits the 128 canvas at scale 0.5 as 128 x 64, padded below.
    response = await client.post("/detect", content=picture(256, 128), headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    body = response.json()
    result = body["results"][0]
    assert (result["width"], result["height"]) == (256, 128)
    (found,) = result["detections"]  # the 0.2 and 0.1 ones fall under the default threshold 0.5
    assert found["box"] == {"x1": 20.0, "y1": 40.0, "x2": 120.0, "y2": 128.0}  # y2 clipped from 200
    assert (found["label"], found["index"], found["category_id"], found["score"]) == (
        "3",
        3,
        4,
        pytest.approx(0.9),
    )
    assert body["model"]["name"] == "fixed_detector" and body["timing"]["batch_size"] == 1


async def test_score_threshold_and_max_detections_filter(client):
    response = await client.post(
        "/detect",
        params={"score_threshold": 0.05},
        files=[("files", ("a.png", picture(128, 128), "image/png"))],
    )
    detections = response.json()["results"][0]["detections"]
    assert [d["label"] for d in detections] == ["3", "7", "1"]  # best first
    response = await client.post(
        "/detect",
        params={"score_threshold": 0.05, "max_detections": 2},
        content=picture(128, 128),
        headers={"content-type": "image/png"},
    )
    assert [d["label"] for d in response.json()["results"][0]["detections"]] == ["3", "7"]


async def test_a_box_left_in_the_padding_is_dropped(client):
    # 128 x 64 fills the canvas's upper half: the 1's box (y from 100) lies in the padding.
    response = await client.post(
        "/detect",
        params={"score_threshold": 0.05},
        content=picture(128, 64),
        headers={"content-type": "image/png"},
    )
    assert [d["label"] for d in response.json()["results"][0]["detections"]] == ["3", "7"]


async def test_coco_results_format(client):
    response = await client.post(
        "/detect",
        params={"format": "coco"},
        files=[
            ("files", ("a.png", picture(256, 128), "image/png")),
            ("files", ("b.png", picture(128, 128), "image/png")),
        ],
    )
    assert response.status_code == 200
    assert response.json() == [
        {"image_id": 0, "category_id": 4, "bbox": [20.0, 40.0, 100.0, 88.0], "score": pytest.approx(0.9)},
        {"image_id": 1, "category_id": 4, "bbox": [10.0, 20.0, 50.0, 80.0], "score": pytest.approx(0.9)},
    ]


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"max_detections": 101}, "between 1 and 100"),
        ({"max_detections": 0}, "max_detections"),
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"format": "voc"}, "format"),
    ],
)
async def test_bad_parameters_are_422(client, params, fragment):
    response = await client.post(
        "/detect", params=params, content=picture(64, 64), headers={"content-type": "image/png"}
    )
    assert response.status_code == 422 and fragment in response.text


async def test_bad_images_get_the_same_errors_as_classify(client):
    response = await client.post("/detect", content=b"not an image", headers={"content-type": "image/png"})
    assert response.status_code == 400 and response.json()["error"]["type"] == "bad_image"
    response = await client.post("/detect", content=b"x", headers={"content-type": "text/plain"})
    assert response.status_code == 415


async def test_no_detector_is_404_and_classify_still_works(backend):
    async with serve(create_app(settings(), backend=backend)) as client:
        response = await client.post(
            "/detect", content=picture(64, 64), headers={"content-type": "image/png"}
        )
        assert response.status_code == 404 and "no detector" in response.json()["error"]["message"]
        models = (await client.get("/models")).json()["models"]
        assert [m["task"] for m in models] == ["classification"]
        assert (
            await client.post("/classify", content=picture(32, 32), headers={"content-type": "image/png"})
        ).status_code == 200


async def test_models_lists_the_detector(client):
    models = (await client.get("/models")).json()["models"]
    assert [(m["task"], m["name"]) for m in models] == [
        ("classification", "dat"),
        ("detection", "fixed_detector"),
    ]


async def test_v2_serves_the_detectors_tensors(client):
    metadata = (await client.get("/v2/models/fixed_detector")).json()
    assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == [
        ("boxes", "FP32", [-1, 100, 4]),
        ("scores", "FP32", [-1, 100]),
        ("labels", "INT64", [-1, 100]),
    ]
    x = np.zeros((2, 3, CANVAS, CANVAS), np.float32)
    request = {
        "inputs": [{"name": "images", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]
    }
    response = await client.post("/v2/models/fixed_detector/infer", json=request)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    labels = np.array(outputs["labels"]["data"]).reshape(outputs["labels"]["shape"])
    boxes = np.array(outputs["boxes"]["data"]).reshape(outputs["boxes"]["shape"])
    assert (
        labels.shape == (2, 100) and labels[:, :3].tolist() == [[3, 7, 1]] * 2 and (labels[:, 3:] == -1).all()
    )
    assert boxes[1, 0].tolist() == [10, 20, 60, 100]  # canvas pixels, as the exported graph gives them
    request["outputs"] = [{"name": "labels", "parameters": {"classification": 2}}]
    refused = await client.post("/v2/models/fixed_detector/infer", json=request)
    assert refused.status_code == 400 and "classifier" in refused.json()["error"]


async def test_each_batcher_reports_under_its_task(client):
    await client.post("/detect", content=picture(64, 64), headers={"content-type": "image/png"})
    text = (await client.get("/metrics")).text
    assert metric(text, "dat_batch_size_count", task="detection") == 1
    assert metric(text, "dat_batch_size_count", task="classification") == 0
    assert 'dat_queue_images{task="detection"} 0.0' in text


async def test_openapi_describes_both_response_formats(client):
    schema = (await client.get("/openapi.json")).json()
    ok = schema["paths"]["/detect"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    refs = json.dumps(ok)
    assert "#/components/schemas/DetectResponse" in refs and "#/components/schemas/CocoDetection" in refs
    assert {"DetectResponse", "CocoDetection", "Detection", "Box"} <= set(schema["components"]["schemas"])


async def test_a_classifier_cannot_be_the_detector(backend, tiny_model):
    app = create_app(settings(), backend=backend, detector=CountingBackend(tiny_model))
    app.state.service.on_fatal = lambda _: None
    async with serve(app, wait_ready=False):
        with pytest.raises(BackendError, match="is a classification model; it cannot serve as the detection"):
            await app.state.service.wait_ready()


PNG = {"content-type": "image/png"}


class AccentedDetector(FixedDetector):
    """FixedDetector whose labels are 600 two-byte letters long."""

    def load(self):
        self.meta = replace(super().load(), labels=tuple(f"{d}{'é' * 600}" for d in "0123456789"))
        return self.meta


async def test_the_response_limit_counts_bytes_not_characters(backend):
    async def answer(**limits):
        async with serve(
            create_app(settings(**limits), backend=backend, detector=AccentedDetector())
        ) as client:
            return await client.post(
                "/detect", content=picture(256, 128), headers={"content-type": "image/png"}
            )

    size = len((await answer()).content)  # in bytes: the 600 letters count 1200
    assert size > 1300
    response = await answer(max_response_bytes=size - 100)  # fewer characters than that, not bytes
    assert response.status_code == 413, response.text
