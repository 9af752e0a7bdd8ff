"""Settings: one class, read from DAT_* environment variables and CLI flags (flags win)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service import Settings


def test_defaults_serve_the_embedded_model_on_loopback():
    s = Settings()
    assert (s.model, s.backend, s.host, s.port) == ("dat_digits", "auto", "127.0.0.1", 8000)
    assert s.max_images_per_request <= s.max_batch_size <= s.max_queue_size


def test_environment_then_flags(monkeypatch):
    monkeypatch.setenv("DAT_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("DAT_MAX_IMAGES_PER_REQUEST", "2")
    monkeypatch.setenv("DAT_PORT", "9001")
    s = Settings()
    assert (s.max_batch_size, s.max_images_per_request, s.port) == (4, 2, 9001)
    s = Settings(_cli_parse_args=["--port", "9002", "--max-queue-delay-ms", "1.5", "--no-warmup"])
    assert (s.port, s.max_batch_size, s.max_queue_delay_s, s.warmup) == (9002, 4, 0.0015, False)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"max_batch_size": 0}, "greater than or equal to 1"),
        ({"max_images_per_request": 9, "max_batch_size": 8}, "must not exceed max_batch_size"),
        ({"max_queue_size": 4, "max_images_per_request": 8}, "must hold at least one full request"),
        ({"backend": "tensorrt"}, "needs --artifacts"),
        ({"precision": "int8"}, "precision"),
    ],
)
def test_inconsistent_settings_are_refused(kwargs, words):
    with pytest.raises(ValidationError, match=words):
        Settings(**kwargs)


def test_device_is_normalised_once_for_every_backend(monkeypatch):
    """compose and k8s set DAT_DEVICE=cuda; torch.cuda.set_device refuses an index-less device."""
    import torch

    from tests.helpers.fake_cuda import FakeCuda

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU
    assert Settings(device="auto").device == "cpu"
    with pytest.raises(ValidationError, match="device cuda requested but CUDA is not available"):
        Settings(device="cuda")
    with pytest.raises(ValidationError, match="device must be cpu, cuda, cuda:N or auto, not 'tpu'"):
        Settings(device="tpu")
    FakeCuda(monkeypatch, count=2)
    assert [Settings(device=d).device for d in ("auto", "cuda", "CUDA:1", "cuda:0", "cpu")] == [
        "cuda:0",
        "cuda:0",
        "cuda:1",
        "cuda:0",
        "cpu",
    ]
    monkeypatch.setenv("DAT_DEVICE", "cuda")
    assert Settings().device == "cuda:0"
    with pytest.raises(
        ValidationError,
        match=r"device cuda:2 requested but this machine has 2 GPUs "
        r"\(cuda:0 to cuda:1\)",
    ):
        Settings(device="cuda:2")


def test_a_gpu_that_is_not_there_is_a_settings_error(monkeypatch, capsys):
    from service.__main__ import main
    from tests.helpers.fake_cuda import FakeCuda

    FakeCuda(monkeypatch, count=1)
    assert main(["--device", "cuda:3", "--port", "0", "--detector", "none", "--no-warmup"]) == 2
    err = capsys.readouterr().err
    assert "invalid settings" in err and "device cuda:3 requested but this machine has 1 GPU (cuda:0)" in err


def test_workers_are_front_ends_unless_the_gpu_decodes():
    """Front ends preprocess on their CPUs: with --gpu-decode / --gpu-preprocess the processes
    that own the GPU decode, so --workers N starts replicas."""
    from service.__main__ import worker_mode

    assert worker_mode(Settings(workers=2)) == "frontends"
    assert worker_mode(Settings(workers=2, worker_mode="replicas")) == "replicas"
    assert worker_mode(Settings(workers=2, gpu_decode=True)) == "replicas"
    assert worker_mode(Settings(workers=2, gpu_preprocess=True)) == "replicas"
    with pytest.raises(ValidationError, match="frontend_slots"):
        Settings(frontend_slots=4, max_images_per_request=8)
