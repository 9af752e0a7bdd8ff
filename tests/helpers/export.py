"""The export CLI as a process, and the batch range the official mini fixture is exported with."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers.paths import REPO

# Batch range of the fixture exports: 1, 2 and 7 must run, 8 keeps verification quick.
MINI_BATCH = (1, 2, 8)


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m export ARGS`` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "export", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
