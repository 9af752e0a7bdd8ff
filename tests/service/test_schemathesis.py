"""Schemathesis against a real server: requests drawn from its OpenAPI document (examples,
the coverage of every constraint, then random ones, valid and invalid) and every answer checked
against the document: valid requests accepted, invalid ones refused, every status and body
declared. The hooks give the image routes real images; schemathesis.toml says what a document
cannot say."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers.paths import REPO
from tests.helpers.server import start, stop, wait_ready

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
EXAMPLES = 12  # per operation and phase: about 30 s on 2 cores


def test_the_server_keeps_what_its_openapi_document_promises(tiny_config_file, tmp_path):
    # the tiny classifier (torch: points) and the embedded detector, so /detect is there too
    process, url = start("--model", str(tiny_config_file), "--no-warmup", "--max-queue-delay-ms", "1")
    threading.Thread(target=process.stderr.read, daemon=True).start()  # its log: never blocks it
    try:
        wait_ready(process, url)
        env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.service.schemathesis_hooks",
            "PYTHONPATH": str(REPO),
            "NO_COLOR": "1",
        }
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                str(HERE / "schemathesis.toml"),
                "run",
                f"{url}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                str(EXAMPLES),
                "--seed",
                "19",
                "--workers",
                "1",
                "--request-timeout",
                "20",
                "--max-failures",
                "20",
            ],
            # in tmp_path: schemathesis keeps a crash cache in .schemathesis/ and replays it
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        stop(process)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-12000:]
    assert "Tested: 15" in report or "Tested: 14" in report, report[-3000:]
