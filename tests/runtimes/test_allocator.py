"""The host allocator's settings: glibc keeps freed memory for the next batch, unless the
environment already says otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtimes import allocator

REPO = Path(__file__).resolve().parents[2]

# Holds 200 MB in 20 MB tensors, frees them and prints how many MB the process gave back.
_PROBE = """
import sys
import torch
from runtimes.allocator import keep_freed_memory
print(keep_freed_memory())
def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
held = [torch.ones(5 * 2**20) for _ in range(10)]
peak = resident_mb()
del held
print(round(peak - resident_mb()))
"""

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or allocator._glibc() is None, reason="needs glibc"
)


def _probe(**env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**clean, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    applied, returned = done.stdout.split()
    return applied, int(returned)


@glibc
def test_freed_memory_stays_for_reuse():
    applied, returned = _probe()
    assert applied == "True"
    assert returned < 20


@glibc
def test_the_environment_wins():
    # glibc's own default (a trim threshold of 128 KiB here): the freed memory goes back at once
    applied, returned = _probe(MALLOC_TRIM_THRESHOLD_="131072")
    assert applied == "False"
    assert returned >= 150
