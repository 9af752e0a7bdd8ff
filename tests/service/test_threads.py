"""ATen runs on an OpenMP team only on the inference threads: a team on any other thread makes
libgomp stop spinning at barriers, and the inference threads then sleep at every op."""

from __future__ import annotations

import threading

import pytest
import torch

from service import create_app
from service.runtime import keep_aten_serial
from tests.helpers.app import serve, settings
from tests.helpers.backends import CountingBackend
from tests.helpers.images import sample_png


def in_new_thread(fn):
    result = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join()
    return result[0]


def serial_then_count() -> int:
    keep_aten_serial()
    return torch.get_num_threads()


def test_keep_aten_serial_changes_the_calling_thread_alone():
    default = in_new_thread(torch.get_num_threads)
    assert in_new_thread(serial_then_count) == 1
    # at::set_num_threads also moves the default that new threads start with: it is put back
    assert in_new_thread(torch.get_num_threads) == default


@pytest.mark.anyio
async def test_decoding_threads_are_serial_and_the_inference_thread_keeps_its_count(tiny_model):
    backend = CountingBackend(tiny_model, threads=2)
    app = create_app(settings(), backend=backend)
    async with serve(app) as client:
        response = await client.post(
            "/classify", content=sample_png(0), headers={"content-type": "image/png"}
        )
        decoding = await app.state.service.offload(torch.get_num_threads)
    assert response.status_code == 200
    assert decoding == 1
    assert backend.describe()["threads"] == 2  # counted on the inference thread, after loading
