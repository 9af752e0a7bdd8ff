"""The embedded default detector, served as `make serve` serves it, finds the digits: boxes on
the sample scenes, and held-out mAP@0.5 through POST /detect."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import numpy as np
import pytest

from service import create_app
from tests.helpers.app import serve, settings
from training.detection_eval import iou_matrix, mean_average_precision
from training.scenes import held_out_scenes

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
HELD_OUT = 150  # scenes of 2-6 digits, about 600 objects
pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def detector_app(**overrides):
    return create_app(settings(detector="dat_digits_detector", warmup=True, max_batch_size=8, **overrides))


def _found(result: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    detections = result["detections"]
    boxes = np.array([[d["box"][k] for k in ("x1", "y1", "x2", "y2")] for d in detections]).reshape(-1, 4)
    return boxes, np.array([d["score"] for d in detections]), np.array([d["index"] for d in detections])


async def test_sample_scenes_get_a_box_on_every_digit():
    truth = json.loads((SAMPLES / "scenes.json").read_text())
    assert len(truth) >= 3, "the README's sample scenes are missing"
    async with serve(detector_app()) as client:
        for name, entry in truth.items():
            response = await client.post(
                "/detect", content=(SAMPLES / name).read_bytes(), headers={"content-type": "image/png"}
            )
            assert response.status_code == 200, response.text
            result = response.json()["results"][0]
            assert [result["width"], result["height"]] == entry["size"]
            boxes, scores, labels = _found(result)
            want = np.array([o["box"] for o in entry["objects"]], np.float64)
            assert boxes.size, f"{name}: nothing found"
            iou = iou_matrix(want, boxes)
            for k, obj in enumerate(entry["objects"]):
                on_it = np.flatnonzero(iou[k] >= 0.5)
                assert on_it.size, f"{name}: digit {obj['label']} not found"
                best = on_it[np.argmax(scores[on_it])]  # class-aware NMS may add a second reading
                assert str(labels[best]) == obj["label"], f"{name}: {obj['label']} read as {labels[best]}"
            # nothing found on empty paper
            assert (iou.max(axis=0) >= 0.5).all(), f"{name}: a box where there is no digit"


async def test_held_out_map_through_the_http_api():
    """mAP@0.5 >= 0.7 on held-out scenes (held-out scans only), posted as PNGs by several
    clients at once, 4 images per request, so batches mix requests."""
    scenes = held_out_scenes(HELD_OUT)
    per_request = 4
    async with serve(detector_app()) as client:
        clients = asyncio.Semaphore(4)

        async def detect(start: int) -> list[dict]:
            async with clients:
                files = [
                    ("files", (f"{i}.png", _png(scenes[i][0]), "image/png"))
                    for i in range(start, min(start + per_request, len(scenes)))
                ]
                response = await client.post(
                    "/detect", files=files, params={"score_threshold": 0.05, "max_detections": 100}
                )
                assert response.status_code == 200, response.text
                return response.json()["results"]

        answers = await asyncio.gather(*(detect(s) for s in range(0, len(scenes), per_request)))
    results = [r for chunk in answers for r in chunk]
    assert len(results) == len(scenes)
    found = [_found(r) for r in results]
    value = mean_average_precision(found, [(boxes, labels) for _, boxes, labels in scenes])
    print(f"held-out mAP@0.5 through /detect over {len(scenes)} scenes: {value:.4f}")
    assert value >= 0.7


async def test_concurrent_requests_each_get_their_own_detections():
    scenes = held_out_scenes(6)
    bodies = [_png(image) for image, _, _ in scenes]
    async with serve(detector_app(max_queue_delay_ms=200)) as client:

        async def detect(body: bytes) -> dict:
            response = await client.post("/detect", content=body, headers={"content-type": "image/png"})
            assert response.status_code == 200, response.text
            return response.json()

        alone = [await detect(body) for body in bodies]
        together = await asyncio.gather(*(detect(body) for body in bodies))
    assert max(r["timing"]["batch_size"] for r in together) > 1
    for a, b in zip(alone, together):
        ba, sa, la = _found(a["results"][0])
        bb, sb, lb = _found(b["results"][0])
        assert np.array_equal(la, lb) and np.allclose(ba, bb, atol=0.02) and np.allclose(sa, sb, atol=1e-4)
