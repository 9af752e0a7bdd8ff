"""--backend simulated: a batch takes batch / images_per_second without using the CPU, answers
zeros of the model's shape, and says it is a simulation in /models and /metrics."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from service import create_app
from service.backends import create_backend, create_detector_backend
from service.backends.base import BackendError, DetectionOutput
from service.backends.simulated import SimulatedBackend
from tests.helpers.app import serve, settings
from tests.helpers.images import sample_png
from tests.helpers.metrics import metric


def test_a_batch_sleeps_its_share_of_a_second_without_using_the_cpu():
    backend = SimulatedBackend("dat_digits", images_per_second=200)
    meta = backend.load()
    images = torch.zeros(10, 3, meta.input_size, meta.input_size)
    backend.run(images)  # warm
    wall, cpu = time.perf_counter(), time.thread_time()
    outputs = backend.run(images)
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    assert 0.05 <= wall < 0.2  # 10 images at 200 img/s
    assert cpu < 0.01
    assert len(outputs) == 10
    assert all(o.logits.shape == (len(meta.labels),) and not o.logits.any() for o in outputs)
    assert backend.describe()["simulated"] == {"images_per_second": 200.0}
    assert (backend.name, backend.precision, meta.version) == ("simulated", "simulated", "simulated")


def test_a_simulated_detector_finds_nothing():
    backend = SimulatedBackend("dat_digits_detector", images_per_second=1000)
    meta = backend.load()
    assert meta.task.finds_objects
    (out,) = backend.run(backend.sample_batch(1))
    assert isinstance(out, DetectionOutput) and out.boxes.shape == (0, 4) and out.labels.size == 0


def test_the_settings_choose_it_for_both_models_and_refuse_a_speed_of_nothing():
    s = settings(backend="simulated", simulated_ips=1234, detector="dat_digits_detector")
    for backend in (create_backend(s), create_detector_backend(s)):
        assert isinstance(backend, SimulatedBackend) and backend.images_per_second == 1234
    with pytest.raises(ValidationError, match="simulated_ips"):
        settings(backend="simulated", simulated_ips=0)
    with pytest.raises(BackendError, match="images_per_second > 0"):
        SimulatedBackend("dat_digits", images_per_second=-1)


@pytest.mark.anyio
async def test_the_server_names_the_simulation_in_models_and_metrics():
    app = create_app(settings(backend="simulated", simulated_ips=5000))
    async with serve(app) as client:
        response = await client.post(
            "/classify", content=sample_png(1), headers={"content-type": "image/png"}
        )
        described = (await client.get("/models")).json()["models"][0]
        text = (await client.get("/metrics")).text
    assert response.status_code == 200
    probabilities = [p["probability"] for p in response.json()["results"][0]["predictions"]]
    assert np.allclose(probabilities, probabilities[0])  # zero logits: a uniform answer
    assert (described["backend"], described["precision"]) == ("simulated", "simulated")
    assert described["simulated"] == {"images_per_second": 5000.0}
    assert metric(text, "dat_simulated_backend_images_per_second", task="classification") == 5000
    assert metric(text, "dat_inference_images_total", task="classification") == 1


@pytest.mark.anyio
async def test_a_real_backends_metrics_carry_no_simulation(backend):
    from tests.helpers.app import served

    async with served(backend) as client:
        text = (await client.get("/metrics")).text
    assert "dat_simulated_backend_images_per_second{" not in text


@pytest.mark.parametrize("shared", [False, True])
def test_replicas_take_turns_on_one_simulated_device(tmp_path, monkeypatch, shared):
    """With the device lock (``--workers N --worker-mode replicas`` sets it) two backends'
    batches run one after the other, as on one GPU; without it, side by side."""
    from concurrent.futures import ThreadPoolExecutor

    from service.backends.simulated import DEVICE_LOCK

    if shared:
        monkeypatch.setenv(DEVICE_LOCK, str(tmp_path / "device.lock"))
    backends = [SimulatedBackend("dat_digits", images_per_second=100) for _ in range(2)]
    images = torch.zeros(10, 3, 32, 32)  # 0.1 s each
    for backend in backends:
        backend.load()
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda b: b.run(images), backends))
    wall = time.perf_counter() - started
    assert (wall >= 0.2) if shared else (wall < 0.18)
