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


@pytest.mark.parametrize("kwargs, words", [
    ({"max_batch_size": 0}, "greater than or equal to 1"),
    ({"max_images_per_request": 9, "max_batch_size": 8}, "must not exceed max_batch_size"),
    ({"max_queue_size": 4, "max_images_per_request": 8}, "must hold at least one full request"),
    ({"backend": "tensorrt"}, "needs --artifacts"),
    ({"precision": "int8"}, "precision"),
])
def test_inconsistent_settings_are_refused(kwargs, words):
    with pytest.raises(ValidationError, match=words):
        Settings(**kwargs)


def test_the_readme_lists_every_setting():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in Settings.model_fields:
        flag, env = f"`--{name.replace('_', '-')}`", f"`DAT_{name.upper()}`"
        assert f"| {flag} | {env} |" in readme, name
