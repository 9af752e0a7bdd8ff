"""/detect and /v2 with an instance segmentation model (mmdet's Mask R-CNN semantics): images
of their own shapes batched together, masks pasted at each image's size, RLE and polygons,
the COCO format, the response-size limit; and the mmdet fixture end to end through HTTP."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import torch
import tritonclient.http as triton
from PIL import Image
from pycocotools import mask as coco_mask

from models import KeepRatioResize, ModelInfo, paste_masks
from service import create_app, postprocess
from service import masks as service_masks
from service.backends.torch import TorchBackend
from tests.helpers.app import serve, settings
from tests.helpers.detection import MASK_TIE, match, tiny_rcnn
from tests.helpers.images import image_bytes
from tests.helpers.paths import FIXTURES, official_fixture
from tests.helpers.v2 import triton_request, triton_result

pytestmark = pytest.mark.anyio

SIZES = [(70, 50), (40, 90), (70, 50)]  # two shapes: the first and last pictures share a forward


@pytest.fixture(scope="module")
def model():
    detector = tiny_rcnn(score_threshold=0.0, max_per_img=10, rpn_max_per_img=100)
    detector.info = ModelInfo("tiny_mask_rcnn", KeepRatioResize((96, 64)), detector.info.labels)
    # Its mask head as initialised answers one value per box; random weights give masks a shape.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in detector.roi_head.mask_head.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=g) * 0.3)
    return detector


def pictures() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in SIZES]


@pytest.fixture
async def client(backend, model):
    detector = TorchBackend(model, device="cpu")
    # a long queue delay: the three concurrent requests below fill one batch
    overrides = dict(max_queue_delay_ms=2000.0, max_batch_size=3, max_images_per_request=3)
    app = create_app(settings(**overrides), backend=backend, detector=detector)
    async with serve(app) as client:
        yield client


async def detect(client, image: Image.Image, **params):
    return await client.post(
        "/detect",
        params={"score_threshold": 0.0, **params},
        content=image_bytes(image),
        headers={"content-type": "image/png"},
    )


async def test_each_image_of_a_batch_gets_its_own_detections_and_masks(client, model):
    images = pictures()
    responses = await asyncio.gather(*(detect(client, image, masks="rle") for image in images))
    alone = [model.predict([image])[0] for image in images]  # each image run by itself
    for response, image, want in zip(responses, images, alone):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["timing"]["batch_size"] == 3  # batched with the other two
        result = body["results"][0]
        assert (result["width"], result["height"]) == image.size
        found = result["detections"]
        assert len(found) == len(want.scores) > 0
        boxes = np.array([[d["box"][k] for k in ("x1", "y1", "x2", "y2")] for d in found])
        np.testing.assert_allclose(boxes, want.boxes.numpy(), atol=0.006)
        assert [d["index"] for d in found] == want.labels.tolist()
        assert [d["label"] for d in found] == [model.info.labels[i] for i in want.labels.tolist()]
        areas = want.masks.flatten(1).sum(1)
        assert (areas > 0).any() and (areas < image.width * image.height).all()
        for d, mask in zip(found, want.masks.numpy()):
            rle = d["segmentation"]
            assert rle["size"] == [image.height, image.width]
            assert np.array_equal(coco_mask.decode({**rle, "counts": rle["counts"].encode()}), mask)


async def test_polygons_trace_the_rle_masks(client):
    image = pictures()[0]
    rle = (await detect(client, image, masks="rle")).json()["results"][0]["detections"]
    polygons = (await detect(client, image, masks="polygon")).json()["results"][0]["detections"]
    assert any(p["segmentation"] for p in polygons)
    for with_rle, with_polygons in zip(rle, polygons):
        mask = coco_mask.decode(
            {**with_rle["segmentation"], "counts": with_rle["segmentation"]["counts"].encode()}
        )
        for polygon in with_polygons["segmentation"]:
            assert len(polygon) >= 6 and len(polygon) % 2 == 0
            xy = np.array(polygon).reshape(-1, 2).astype(int)
            assert mask[xy[:, 1], xy[:, 0]].all()  # every vertex is a pixel of the mask
        if not mask.any():
            assert with_polygons["segmentation"] == []


async def test_masks_none_by_default_and_coco_results_carry_segmentation(client):
    image = pictures()[1]
    plain = (await detect(client, image)).json()["results"][0]["detections"]
    assert plain and all(d["segmentation"] is None for d in plain)
    coco = (await detect(client, image, format="coco")).json()
    assert coco and all("segmentation" not in d for d in coco)
    coco = (await detect(client, image, format="coco", masks="rle")).json()
    assert [d["bbox"][:2] for d in coco] == [[d["box"]["x1"], d["box"]["y1"]] for d in plain]
    assert all(d["segmentation"]["size"] == [image.height, image.width] for d in coco)


async def test_a_response_over_the_limit_is_refused(backend, model):
    app = create_app(settings(max_response_bytes=1024), backend=backend, detector=TorchBackend(model))
    async with serve(app) as client:
        response = await detect(client, pictures()[0], masks="polygon")
    assert response.status_code == 413
    assert "over the limit of 1,024 (max_response_bytes)" in response.json()["error"]["message"]


class CountedPaste:
    """``service.masks.paste`` that counts its calls; the first one can take ``first_s``."""

    def __init__(self, first_s: float = 0.0) -> None:
        self.calls, self.first_s, self.paste = 0, first_s, service_masks.paste

    def __call__(self, *args):
        self.calls += 1
        if self.calls == 1:
            time.sleep(self.first_s)
        return self.paste(*args)


async def test_masks_over_max_mask_pixels_are_refused_before_any_is_pasted(backend, model, monkeypatch):
    image = pictures()[0]  # 70 x 50: 3,500 pixels a mask, 10 detections at score_threshold 0
    paste = CountedPaste()
    monkeypatch.setattr(postprocess.mask_codec, "paste", paste)
    app = create_app(settings(max_mask_pixels=3 * 3500), backend=backend, detector=TorchBackend(model))
    async with serve(app) as client:
        refused = await detect(client, image, masks="polygon")
        assert paste.calls == 0
        within = await detect(client, image, masks="rle", max_detections=3)
        boxes_only = await detect(client, image)
    assert refused.status_code == 413
    message = refused.json()["error"]["message"]
    assert "35,000 mask pixels" in message and "limit of 10,500 (max_mask_pixels)" in message
    assert within.status_code == 200 and paste.calls == 3
    assert boxes_only.status_code == 200 and len(boxes_only.json()["results"][0]["detections"]) == 10


async def test_masks_stop_at_the_deadline(backend, model, monkeypatch):
    """The first mask takes the whole deadline: a 504, and the other nine are not pasted."""
    paste = CountedPaste(first_s=3.1)
    monkeypatch.setattr(postprocess.mask_codec, "paste", paste)
    async with serve(create_app(settings(), backend=backend, detector=TorchBackend(model))) as client:
        response = await detect(client, pictures()[0], masks="rle", timeout_ms=3000)
    assert response.status_code == 504, response.text
    assert "pasting masks (1 of 10 done)" in response.json()["error"]["message"]
    assert paste.calls == 1


async def test_v2_returns_the_mask_tensors(client, model):
    meta = (await client.get("/v2/models/tiny_mask_rcnn")).json()
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {
        "boxes": [-1, 10, 4],
        "scores": [-1, 10],
        "labels": [-1, 10],
        "masks": [-1, 10, 28, 28],
    }
    assert meta["inputs"][0]["shape"] == [-1, 3, -1, -1]
    image = pictures()[0]
    result = await v2_infer(client, "tiny_mask_rcnn", image_bytes(image))
    masks, boxes = result.as_numpy("masks"), result.as_numpy("boxes")
    assert masks.shape == (1, 10, 28, 28)
    want = model.predict([image])[0]
    n = len(want.scores)
    pasted = paste_masks(torch.tensor(masks[0, :n]), torch.tensor(boxes[0, :n]), image.height, image.width)
    assert torch.equal(pasted, want.masks) and (masks[0, n:] == 0).all()


async def v2_infer(client, model: str, encoded: bytes) -> triton.InferResult:
    """The boxes and masks of one encoded image, asked for as tritonclient asks."""
    tensor = triton.InferInput("image_bytes", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([encoded], dtype=np.object_))
    outputs = [triton.InferRequestedOutput(name) for name in ("boxes", "masks")]
    body, headers = triton_request([tensor], outputs)
    response = await client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    return triton_result(response)


async def test_masks_need_an_instance_segmentation_model(backend):
    async with serve(create_app(settings(detector="dat_digits_detector"), backend=backend)) as client:
        response = await detect(client, pictures()[0], masks="rle")
        schema = (await client.get("/openapi.json")).json()
    assert response.status_code == 422
    assert "masks=rle needs an instance segmentation model" in response.json()["error"]["message"]
    params = {p["name"]: p for p in schema["paths"]["/detect"]["post"]["parameters"]}
    assert params["masks"]["schema"]["enum"] == ["none"]  # the document says so too


async def test_openapi_documents_the_masks_parameter(client):
    schema = (await client.get("/openapi.json")).json()
    params = {p["name"]: p for p in schema["paths"]["/detect"]["post"]["parameters"]}
    assert params["masks"]["schema"]["enum"] == ["none", "rle", "polygon"]
    assert "RleMask" in schema["components"]["schemas"]


async def fixture_detections(backend, name: str, **params) -> tuple[dict, list[dict], bytes]:
    """``--detector config.py --detector-checkpoint checkpoint.pth`` of an mmdet fixture: the
    reference, and the detections /detect finds in its picture with ``params``."""
    reference = official_fixture(f"mmdet_{name}_mini")
    folder = FIXTURES / f"mmdet_{name}_mini"
    overrides = dict(
        detector=str(folder / "config.py"),
        detector_checkpoint=str(reference["checkpoint"]),
        default_timeout_ms=120_000,  # detections are checked here, not deadlines: a busy CPU takes >10 s
    )
    photo = (FIXTURES / "chelsea.jpg").read_bytes()
    async with serve(create_app(settings(**overrides), backend=backend)) as client:
        response = await client.post(
            "/detect",
            params={"score_threshold": 0.0, **params},
            content=photo,
            headers={"content-type": "image/jpeg"},
        )
        assert response.status_code == 200, response.text
        extra = await v2_infer(client, "config", photo) if params.get("masks") else None
    found = response.json()["results"][0]["detections"]
    want = reference["expected"]
    # /detect leaves out boxes without area (mmdet keeps them, clipped flat against an edge)
    flat = (want["boxes"][:, 2] <= want["boxes"][:, 0]) | (want["boxes"][:, 3] <= want["boxes"][:, 1])
    run = {
        "expected": {**want, **{k: want[k][~flat] for k in ("boxes", "scores", "labels")}},
        "labels": torch.tensor([d["index"] for d in found]),
        "boxes": torch.tensor([[d["box"][k] for k in ("x1", "y1", "x2", "y2")] for d in found]),
        "scores": torch.tensor([d["score"] for d in found]),
    }
    pairs = match(run, box_atol=0.006)  # the response rounds boxes to 2 decimals
    assert len(pairs) == len(found) > 50
    return run, found, extra


@pytest.mark.slow  # the fixture's RetinaNet at 480 x 320 on the CPU
async def test_mmdet_fixture_retinanet_through_http(backend):
    """A keep-ratio detector without masks: the fixture's detections, as mmdet found them (39 of
    its 100 are boxes clipped flat, which /detect leaves out)."""
    run, _, _ = await fixture_detections(backend, "retinanet")
    assert len(run["labels"]) == 61


@pytest.mark.slow  # the fixture's detector at 480 x 320 on the CPU, ~10 s each
@pytest.mark.parametrize("name", ["mask_rcnn", "cascade_mask_rcnn"])
async def test_mmdet_fixture_masks_through_http(backend, name):
    """The fixture's 100 detections and masks through /detect?masks=rle, as mmdet 2.28 found
    them (pixels may differ only where the probability is within MASK_TIE of the threshold, as
    in the model's own tests)."""
    run, found, tensors = await fixture_detections(backend, name, masks="rle")
    want = run["expected"]
    pairs = match(run, box_atol=0.006)
    height, width = want["masks_shape"][1:]
    expected = np.unpackbits(want["masks_packed"].numpy(), axis=-1)[..., :width].astype(bool)
    ours = np.stack(
        [
            coco_mask.decode({**d["segmentation"], "counts": d["segmentation"]["counts"].encode()})
            for d in found
        ]
    )
    assert len(found) == 100 and ours.shape == (100, height, width)
    # the probabilities of the v2 tensors, pasted unthresholded: what a differing pixel must be near
    probabilities = torch.tensor(tensors.as_numpy("masks")[0])
    boxes = torch.tensor(tensors.as_numpy("boxes")[0])
    soft = paste_masks(probabilities, boxes, height, width, threshold=None).numpy()
    differ = ours[[j for _, j in pairs]] != expected[[i for i, _ in pairs]]
    assert expected.sum() > 10_000 and differ.sum() <= 20
    assert (np.abs(soft[[j for _, j in pairs]][differ] - 0.5) <= MASK_TIE).all()
