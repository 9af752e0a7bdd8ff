"""Where things are: the repository, and the official reference fixtures beside it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"
MINI = FIXTURES / "dat_v1_mini"


def official_fixture(name: str) -> dict:
    """An official reference folder of ``../shared/fixtures``: its config file (YAML where
    there is one), checkpoint and expected outputs; skips where the fixtures are absent."""
    folder = FIXTURES / name
    if not folder.is_dir():
        pytest.skip(
            f"official fixtures not found at {FIXTURES} (they live beside the repo in "
            "../shared; a plain clone does not have them)"
        )
    config = folder / "config.yaml"
    return {
        "config": config if config.is_file() else folder / "config.json",
        "checkpoint": folder / "checkpoint.pth",
        "expected": torch.load(folder / "expected.pt", weights_only=True),
    }
