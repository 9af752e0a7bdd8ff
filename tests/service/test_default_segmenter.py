"""The embedded segmenter served as the detector: the detector's boxes, each with its digit's
mask, and held-out mask mAP through POST /detect?masks=rle."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest

from models import get_spec
from service import create_app
from tests.helpers.app import serve, settings
from training.detection_eval import encode_masks, mask_mean_average_precision
from training.scenes import held_out_masked_scenes

pytest.importorskip("pycocotools", reason="masks=rle is pycocotools'")
HELD_OUT = 100  # scenes of 2-6 digits, about 400 objects
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.skipif(
        not get_spec("dat_digits_segmenter").weights.is_file(), reason="no committed segmenter weights"
    ),
]


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def segmenter_app(**overrides):
    return create_app(
        settings(
            **{
                "detector": "dat_digits_segmenter",
                "warmup": True,
                "max_batch_size": 8,
                "default_timeout_ms": 120_000,  # accuracy is checked here, not deadlines (a busy CPU)
                **overrides,
            }
        )
    )


async def test_held_out_mask_map_through_the_http_api():
    """Mask mAP@0.5 >= 0.7 on held-out scenes posted as PNGs by several clients at once, and
    @0.75 >= 0.5, which masks filling their whole box (about 0.02) do not reach."""
    scenes = held_out_masked_scenes(HELD_OUT)
    per_request = 4
    async with serve(segmenter_app()) as client:
        clients = asyncio.Semaphore(4)

        async def detect(start: int) -> list[dict]:
            async with clients:
                files = [
                    ("files", (f"{i}.png", _png(scenes[i][0][0]), "image/png"))
                    for i in range(start, min(start + per_request, len(scenes)))
                ]
                response = await client.post(
                    "/detect",
                    files=files,
                    params={"score_threshold": 0.05, "max_detections": 100, "masks": "rle"},
                )
                assert response.status_code == 200, response.text
                return response.json()["results"]

        answers = await asyncio.gather(*(detect(s) for s in range(0, len(scenes), per_request)))
    results = [r for chunk in answers for r in chunk]
    assert len(results) == len(scenes)
    found = [
        (
            [d["segmentation"] for d in r["detections"]],
            [d["score"] for d in r["detections"]],
            [d["index"] for d in r["detections"]],
        )
        for r in results
    ]
    for ((image, _, _), _), r in zip(scenes, results):
        assert all(d["segmentation"]["size"] == [image.height, image.width] for d in r["detections"])
    truth = [(encode_masks(masks), labels) for (_, _, labels), masks in scenes]
    at50 = mask_mean_average_precision(found, truth, 0.5)
    at75 = mask_mean_average_precision(found, truth, 0.75)
    print(f"held-out mask mAP through /detect over {len(scenes)} scenes: @0.5 {at50:.4f}, @0.75 {at75:.4f}")
    assert at50 >= 0.7
    assert at75 >= 0.5


async def test_the_segmenters_boxes_are_the_detectors():
    (scene, _), *_ = held_out_masked_scenes(1)
    body = _png(scene[0])
    answers = []
    for app, params in (
        (create_app(settings(detector="dat_digits_detector")), {}),
        (segmenter_app(warmup=False), {"masks": "polygon"}),
    ):
        async with serve(app) as client:
            response = await client.post(
                "/detect", content=body, headers={"content-type": "image/png"}, params=params
            )
            assert response.status_code == 200, response.text
            answers.append(response.json()["results"][0]["detections"])
    boxes, masked = answers
    assert boxes and [d["box"] for d in boxes] == [d["box"] for d in masked]
    for d in masked:
        points = np.concatenate([np.reshape(p, (-1, 2)) for p in d["segmentation"]])
        box = d["box"]
        # a mask is pasted over its box plus one pixel, as mmdet's
        assert (points >= [box["x1"] - 1, box["y1"] - 1]).all() and (
            points <= [box["x2"] + 1, box["y2"] + 1]
        ).all()
