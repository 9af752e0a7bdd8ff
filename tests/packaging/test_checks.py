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
        next((t for t in ("ruff check", "ruff format --check", "mypy", "scripts/test.sh") if t in c), None)
        for c in commands
    ]
    assert [t for t in tools if t] == ["ruff check", "ruff format --check", "mypy", "scripts/test.sh"]
    # on a clean clone (no stamp yet) the venv is set up first, as for make test
    assert "scripts/setup-venv.sh" in _make("check", stamp=str(tmp_path / "stamp"))[0]


def _test_sh(tmp_path, *args: str, exit_codes: tuple[int, ...] = (0, 0)) -> tuple[int, list[list[str]]]:
    """scripts/test.sh ARGS with a stand-in for Python that records each pytest it is asked to
    run and exits with the next of ``exit_codes``."""
    tmp_path.mkdir(exist_ok=True)
    log = tmp_path / "calls"
    codes = " ".join(map(str, exit_codes))
    fake = tmp_path / "python"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {log}\n'
        f"codes=({codes}); exit ${{codes[$(( $(wc -l < {log}) - 1 ))]}}\n"
    )
    fake.chmod(0o755)
    result = subprocess.run(
        [REPO / "scripts/test.sh", *args], env={**os.environ, "PY": str(fake)}, timeout=30, check=False
    )
    calls = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return result.returncode, calls


def test_make_test_runs_the_export_tests_two_at_a_time_then_the_server_tests_alone(tmp_path):
    code, calls = _test_sh(tmp_path, "-q")
    assert code == 0
    first, second = calls
    assert first[:6] == ["-m", "pytest", "-n", "2", "--dist", "loadfile"] and first[-1] == "-q"
    assert second[:3] == ["-m", "pytest", "-q"]
    serial = second[3:]
    assert first[6:-1] == [f"--ignore={path}" for path in serial]  # the second part: what the first leaves
    service = {str(p.relative_to(REPO)) for p in (REPO / "tests/service").glob("test_*.py")}
    # the service tests that start no server and time nothing join the first part; the rest,
    # and the benchmarks, run alone
    assert service - set(serial) == {
        "tests/service/test_backends.py",
        "tests/service/test_gpu_contract.py",
        "tests/service/test_masks_exported.py",
        "tests/service/test_default_model.py",
        "tests/service/test_default_detector.py",
    }
    assert serial[0] == "tests/bench" and set(serial[1:]) <= service
    # a failing first part stops there with its status; pytest's 5 (nothing selected) is no failure
    assert _test_sh(tmp_path / "a", exit_codes=(1, 0)) == (1, [calls[0][:-1]])
    assert _test_sh(tmp_path / "b", "-k", "batcher", exit_codes=(5, 0))[0] == 0
    assert _test_sh(tmp_path / "c", exit_codes=(0, 2))[0] == 2
    # tests named: just those, in one pytest
    named = "tests/service/test_batcher.py::test_the_delay_runs_from_the_oldest_request"
    assert _test_sh(tmp_path / "d", named, "-q") == (0, [["-m", "pytest", named, "-q"]])


def test_mypy_covers_every_installed_package_but_the_benchmarks():
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    installed = {pattern.rstrip("*") for pattern in include["include"]}
    present = {p for p in installed if (REPO / p / "__init__.py").is_file()}
    (mypy,) = [c for c in _make("typecheck") if "mypy" in c]
    assert set(mypy.split("mypy", 1)[1].split()) == present - {"bench"}
