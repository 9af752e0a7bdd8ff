"""``python -m bench`` run as a user runs it, from the repository root."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers.paths import REPO


def run_bench(*args: str, timeout: float = 300) -> str:
    """The command's standard output; a failed run fails the test with its error's tail."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
