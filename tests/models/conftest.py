"""Model test fixtures: the DAT detection release's own config files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

RELEASE_MIRROR = Path("/work/.mirror/LeapLabTHU+DAT-Detection/repo")


@pytest.fixture(scope="session")
def release_configs(tmp_path_factory) -> Path:
    """The DAT detection release's configs folder (from its mirror, where this machine has one)."""
    if not (RELEASE_MIRROR / "HEAD").is_file() or shutil.which("git") is None:
        pytest.skip(f"the DAT-Detection mirror is not at {RELEASE_MIRROR}")
    out = tmp_path_factory.mktemp("release")
    archive = subprocess.run(
        ["git", "-C", str(RELEASE_MIRROR), "archive", "HEAD", "configs"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out / "configs"
