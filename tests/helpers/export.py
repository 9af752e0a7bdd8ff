"""The export CLI as a process, the batch range the official mini fixture is exported with,
the export options of an mmdet fixture detector, and the PyTorch references an export
computed, kept for a test to reuse."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from export.options import ExportOptions
from runtimes.manifest_fields import BatchRange
from tests.helpers.paths import FIXTURES, REPO, official_fixture

# Batch range of the fixture exports: 1, 2 and 7 must run, 8 keeps verification quick.
MINI_BATCH = (1, 2, 8)


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m export ARGS`` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "export", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def mmdet_fixture_export(name: str, tmp: Path) -> ExportOptions:
    """The export of the mmdet fixture ``mmdet_{name}_mini`` (skipped where the fixtures are
    absent) at batch 1-2, verified on the fixtures' chelsea and its mirror image (written to
    ``tmp``), without an engine."""
    official_fixture(f"mmdet_{name}_mini")
    folder = FIXTURES / f"mmdet_{name}_mini"
    with Image.open(FIXTURES / "chelsea.jpg") as image:
        ImageOps.mirror(image.convert("RGB")).save(tmp / "mirrored.png")
    return ExportOptions(
        out=tmp / "export",
        config=folder / "config.py",
        checkpoint=folder / "checkpoint.pth",
        verify_images=(FIXTURES / "chelsea.jpg", tmp / "mirrored.png"),
        batch=BatchRange(1, 2, 2),
        engine=False,
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
