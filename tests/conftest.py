"""Shared test helpers: the official fixtures beside the repo, and small models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.tiny import TINY_CONFIG

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"
MINI = FIXTURES / "dat_v1_mini"


def pytest_collection_modifyitems(config, items):
    """GPU tests skip cleanly where CUDA is absent."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mini_fixture() -> dict:
    """The official DAT v1 'mini' reference: config, checkpoint path and expected outputs."""
    if not MINI.is_dir():
        pytest.skip(f"official fixtures not found at {FIXTURES} (they live beside the repo in "
                    "../shared; a plain clone does not have them)")
    return {
        "config": json.loads((MINI / "config.json").read_text())["config"],
        "checkpoint": MINI / "checkpoint.pth",
        "expected": torch.load(MINI / "expected.pt", weights_only=True),
    }


@pytest.fixture(scope="session")
def official_shapes() -> dict:
    path = FIXTURES / "official_dat_v1_state_dict_shapes.json"
    if not path.is_file():
        pytest.skip(f"official fixtures not found at {FIXTURES}")
    return json.loads(path.read_text())



@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    from models import create_model
    return create_model(TINY_CONFIG)
