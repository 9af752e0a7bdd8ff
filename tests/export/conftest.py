"""Export test fixtures: the official DAT v1 'mini' model and its exports, made once per run.

The official fixtures live beside the repository in ``../shared``; tests that need them skip
with a clear reason where they are absent.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers.export import MINI_BATCH, run_cli
from tests.helpers.paths import official_fixture
from tests.helpers.tiny import TINY_CONFIG


@pytest.fixture(scope="session")
def mini() -> dict:
    """The official DAT v1 'mini' reference, its config as the JSON file the CLI takes."""
    return official_fixture("dat_v1_mini")


@pytest.fixture(scope="session")
def mini_model(mini):
    from models import create_model, load_checkpoint

    model = create_model(mini["config"])
    load_checkpoint(model, mini["checkpoint"])
    return model.eval()


def _api_export(mini, tmp_path_factory, name: str, **options):
    from export.options import ExportOptions
    from export.pipeline import run_export
    from runtimes.manifest_fields import BatchRange

    out = tmp_path_factory.mktemp(name)
    run_export(
        ExportOptions(
            out=out,
            config=mini["config"],
            checkpoint=mini["checkpoint"],
            batch=BatchRange(*MINI_BATCH),
            engine=False,
            **options,
        ),
        log=lambda line: None,
    )
    return out


@pytest.fixture(scope="session")
def mini_native(mini, tmp_path_factory) -> Path:
    """The fixture model exported through the library API, native GridSample, fp32."""
    return _api_export(mini, tmp_path_factory, "native", grid_sample="native")


@pytest.fixture(scope="session")
def mini_fp16(mini, tmp_path_factory) -> Path:
    return _api_export(mini, tmp_path_factory, "fp16", grid_sample="native", precision="fp16")


@pytest.fixture(scope="session")
def mini_decomposed_cli(mini, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The fixture model exported by a real ``python -m export`` run, decomposed sampling."""
    out = tmp_path_factory.mktemp("decomposed")
    done = run_cli(
        "--config",
        str(mini["config"]),
        "--checkpoint",
        str(mini["checkpoint"]),
        "--out",
        str(out),
        "--grid-sample",
        "decomposed",
        "--min-batch",
        str(MINI_BATCH[0]),
        "--opt-batch",
        str(MINI_BATCH[1]),
        "--max-batch",
        str(MINI_BATCH[2]),
    )
    return out, done


@pytest.fixture(scope="session")
def pp_fp16(pp_fixture, tmp_path_factory) -> Path:
    """``dat_pp_mini`` exported as a float16 graph (the fp32 one is ``pp_export``)."""
    from export.options import ExportOptions
    from export.pipeline import run_export
    from runtimes.manifest_fields import BatchRange

    out = tmp_path_factory.mktemp("pp-fp16")
    run_export(
        ExportOptions(
            out=out,
            config=pp_fixture["config"],
            checkpoint=pp_fixture["checkpoint"],
            batch=BatchRange(*MINI_BATCH),
            grid_sample="native",
            precision="fp16",
            engine=False,
        ),
        log=lambda line: None,
    )
    return out


@pytest.fixture(scope="session")
def digits_cli(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """The default model (embedded dat_digits) exported once by a real ``python -m export`` run,
    with a Triton model repository beside it: (export folder, repository, the run)."""
    import models

    weights = models.get_spec("dat_digits").weights
    if weights is None or not weights.is_file():
        pytest.skip("the embedded dat_digits weights are not in models/weights")
    out, repository = tmp_path_factory.mktemp("digits"), tmp_path_factory.mktemp("triton")
    done = run_cli("--out", str(out), "--max-batch", "8", "--triton", str(repository))
    return out, repository, done


@pytest.fixture(scope="session")
def export_cli():
    """Runs ``python -m export ARGS`` in a subprocess from the repository root."""
    return run_cli


@pytest.fixture
def cli(capsys):
    """``python -m export ARGS`` as ``main(ARGS)`` in this process: the same exit status and
    output, without a Python start and a torch import (seconds of CPU) per call."""
    from export.__main__ import main

    def run(*args: str) -> subprocess.CompletedProcess:
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's refusals
            code = exc.code
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["python", "-m", "export", *args], code, out.out, out.err)

    return run


@pytest.fixture
def small_config_file(tmp_path) -> Path:
    path = tmp_path / "small.json"
    path.write_text(json.dumps({"config": TINY_CONFIG}))
    return path
