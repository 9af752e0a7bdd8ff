"""--skip-if-current: compose re-runs the export at every start; it must only redo stale work."""

from __future__ import annotations

import json

from export.options import ExportOptions
from export.provenance import stale_reason
from runtimes.manifest_fields import BatchRange
from tests.helpers.export import MINI_BATCH


def _options(mini, out, **changes):
    base = dict(
        out=out,
        config=mini["config"],
        checkpoint=mini["checkpoint"],
        batch=BatchRange(*MINI_BATCH),
        engine=False,
        grid_sample="native",
    )
    return ExportOptions(**{**base, **changes})


def test_a_matching_verified_export_is_current(mini, mini_native):
    assert stale_reason(_options(mini, mini_native)) is None


def test_any_difference_makes_it_stale(mini, mini_native, tmp_path):
    assert "precision" in stale_reason(_options(mini, mini_native, precision="fp16"))
    assert "batch range" in stale_reason(_options(mini, mini_native, batch=BatchRange(1, 2, 9)))
    assert "grid-sample" in stale_reason(_options(mini, mini_native, grid_sample="decomposed"))
    other = tmp_path / "other.pth"
    other.write_bytes(mini["checkpoint"].read_bytes() + b"\0")  # different bytes, different hash
    assert "weights" in stale_reason(_options(mini, mini_native, checkpoint=other))
    assert stale_reason(_options(mini, tmp_path / "empty")) is not None


def test_a_tampered_or_failed_export_is_stale(mini, mini_native, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in mini_native.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["status"] = "failed"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert stale_reason(_options(mini, copy)) is not None


def test_cli_skips_current_exports(export_cli, mini, mini_native):
    done = export_cli(
        "--config",
        str(mini["config"]),
        "--checkpoint",
        str(mini["checkpoint"]),
        "--out",
        str(mini_native),
        "--grid-sample",
        "native",
        "--no-engine",
        "--min-batch",
        str(MINI_BATCH[0]),
        "--opt-batch",
        str(MINI_BATCH[1]),
        "--max-batch",
        str(MINI_BATCH[2]),
        "--skip-if-current",
    )
    assert done.returncode == 0, done.stderr
    assert "is current: nothing to do" in done.stdout
