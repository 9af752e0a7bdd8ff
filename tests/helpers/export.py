"""The export CLI as a process, the batch range the official mini fixture is exported with,
and the PyTorch references an export computed, kept for a test to reuse."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.helpers.paths import REPO

# Batch range of the fixture exports: 1, 2 and 7 must run, 8 keeps verification quick.
MINI_BATCH = (1, 2, 8)


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m export ARGS`` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "export", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@contextlib.contextmanager
def kept_references() -> Iterator[list]:
    """Every ``export.validate.References`` made inside, kept: an export's PyTorch outputs, so
    that a test checking more on the same inputs need not run the model again."""
    from export import validate

    kept: list[validate.References] = []

    class Kept(validate.References):
        def __init__(self, model):
            super().__init__(model)
            kept.append(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validate, "References", Kept)
        yield kept
