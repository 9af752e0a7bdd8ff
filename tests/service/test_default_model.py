"""The embedded default model, served exactly as `make serve` serves it, answers correctly."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from service import create_app
from tests.helpers.app import serve, settings
from training.classifier_data import held_out_split
from training.classifier_samples import sample_label

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


async def test_held_out_top1_through_the_http_api(tmp_path):
    """>= 95% top-1 on the fixed held-out digits, each posted as a PNG to the default server
    (default backend: the cached, verified ONNX export on CPU), several clients at once."""
    images, labels = held_out_split()
    app = create_app(settings(warmup=True, export_cache=tmp_path / "exports", max_batch_size=16))
    per_request = 8
    async with serve(app) as client:
        models = (await client.get("/models")).json()["models"][0]
        assert models["name"] == "dat_digits"

        clients = asyncio.Semaphore(4)  # 4 x 8 images stay within the bounded queue

        async def classify(start: int) -> list[int]:
            async with clients:
                return await _classify(start)

        async def _classify(start: int) -> list[int]:
            files = [
                ("files", (f"{i}.png", _png(images[i]), "image/png"))
                for i in range(start, min(start + per_request, len(images)))
            ]
            response = await client.post("/classify", files=files, params={"top_k": 1})
            assert response.status_code == 200, response.text
            return [int(r["predictions"][0]["label"]) for r in response.json()["results"]]

        answers = await asyncio.gather(*(classify(s) for s in range(0, len(images), per_request)))
    predicted = [label for chunk in answers for label in chunk]
    assert len(predicted) == len(labels) == 360
    accuracy = sum(p == t for p, t in zip(predicted, labels)) / len(labels)
    print(f"held-out top-1 through HTTP ({models['backend']}): {accuracy:.4f}")
    assert accuracy >= 0.95


async def test_samples_get_their_digit(tmp_path):
    paths = sorted((REPO / "samples").glob("digit_*"))
    assert len(paths) >= 4, "the README's sample images are missing"
    app = create_app(settings(backend="torch"))
    async with serve(app) as client:
        for path in paths:
            content_type = "image/jpeg" if path.suffix == ".jpg" else "image/png"
            response = await client.post(
                "/classify", content=path.read_bytes(), headers={"content-type": content_type}
            )
            assert response.status_code == 200, response.text
            top = response.json()["results"][0]["predictions"][0]["label"]
            assert top == sample_label(path), path.name
