"""One minimum Python everywhere: pyproject (pip's check and ruff's target), the README, the
venv set-up script and the CPU image; and it is at least what the code needs."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _minimum() -> tuple[int, int]:
    spec = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    major, minor = re.fullmatch(r">=(\d+)\.(\d+)", spec).groups()
    return int(major), int(minor)


def test_the_minimum_python_is_stated_alike_everywhere():
    major, minor = _minimum()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["tool"]["ruff"]["target-version"] == f"py{major}{minor}"
    assert f"Python {major}.{minor}+" in (REPO / "README.md").read_text()
    setup = (REPO / "scripts/setup-venv.sh").read_text()
    assert f"MIN_PYTHON={major}.{minor}" in setup
    base = re.search(r"ARG CPU_BASE=python:(\d+)\.(\d+)", (REPO / "Dockerfile").read_text())
    assert (int(base[1]), int(base[2])) >= (major, minor)


def test_the_minimum_covers_what_the_request_path_uses():
    uses_timeout = [
        p.relative_to(REPO) for p in (REPO / "service").rglob("*.py") if "asyncio.timeout(" in p.read_text()
    ]
    if uses_timeout:  # asyncio.timeout came in Python 3.11
        assert _minimum() >= (3, 11), f"{uses_timeout} use asyncio.timeout"


def test_setup_refuses_an_older_python_with_the_reason(tmp_path):
    old = tmp_path / "python3.10"
    old.write_text(
        '#!/bin/sh\n[ "$1" = -c ] && { echo 3.10; exit 0; }\n'
        'echo "python3.10 must not be used: $*" >&2; exit 1\n'
    )
    old.chmod(0o755)
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["bash", str(REPO / "scripts/setup-venv.sh")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHON": str(old), "VENV": str(venv)},
        timeout=60,
    )
    assert done.returncode != 0
    major, minor = _minimum()
    assert f"needs Python {major}.{minor} or newer" in done.stderr and "3.10" in done.stderr
    assert "must not be used" not in done.stderr and not venv.exists()
