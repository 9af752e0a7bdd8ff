"""Service test fixtures: a tiny random DAT and its config file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models import create_model
from tests.helpers.backends import CountingBackend
from tests.helpers.tiny import LABELS, TINY_CONFIG


@pytest.fixture(scope="session")
def tiny_model():
    torch.manual_seed(0)
    return create_model(TINY_CONFIG, labels=LABELS)


@pytest.fixture
def tiny_config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"config": TINY_CONFIG}))
    return path


@pytest.fixture
def backend(tiny_model) -> CountingBackend:
    """A fresh instrumented torch backend over the shared tiny model."""
    return CountingBackend(tiny_model)
