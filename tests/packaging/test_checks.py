"""What CI checks: `make check` (ruff, the format, mypy, the tests), run by .ci/run after the venv
set-up, and mypy over every package the project installs but the benchmarks."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib

from tests.helpers.paths import REPO


def _make(*args: str, stamp: str = "") -> list[str]:
    """The commands ``make -n ARGS`` would print (none is run); ``stamp``: the venv's set-up
    stamp (empty: the venv taken as set up)."""
    # Run under CI's own `make check`, a nested make would print "Entering directory" lines
    # and take the outer make's flags: a clean environment for make, and no directory lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", f"STAMP={stamp}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return out.splitlines()


def test_ci_runs_make_check_which_runs_every_check_then_the_tests(tmp_path):
    ci = (REPO / ".ci/run").read_text()
    assert re.search(r"^make check\b", ci, re.M)
    commands = _make("check")
    tools = [
        next((t for t in ("ruff check", "ruff format --check", "mypy", "pytest") if t in c), None)
        for c in commands
    ]
    assert [t for t in tools if t] == ["ruff check", "ruff format --check", "mypy", "pytest"]
    # on a clean clone (no stamp yet) the venv is set up first, as for make test
    assert "scripts/setup-venv.sh" in _make("check", stamp=str(tmp_path / "stamp"))[0]


def test_mypy_covers_every_installed_package_but_the_benchmarks():
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    installed = {pattern.rstrip("*") for pattern in include["include"]}
    present = {p for p in installed if (REPO / p / "__init__.py").is_file()}
    (mypy,) = [c for c in _make("typecheck") if "mypy" in c]
    assert set(mypy.split("mypy", 1)[1].split()) == present - {"bench"}
