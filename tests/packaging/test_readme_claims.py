"""The README's claims say what the committed tests and logs show, no more."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_the_parity_claim_is_the_bound_the_parity_tests_assert():
    bounds = {
        re.search(r"^TOL = (\S+)$", (REPO / "tests/models" / name).read_text(), re.M)[1]
        for name in ("test_parity.py", "test_parity_pp.py")
    }
    assert len(bounds) == 1
    (bound,) = bounds
    models = README[README.index("- **`models/`**") : README.index("- **`export/`**")]
    claim = re.search(r"official code's logits within (\S+) \(max abs", models)
    assert claim and claim[1] == bound, "the models/ bullet must state the bound the parity tests assert"
    assert "tests/models/test_parity.py" in models


def test_the_gpu_test_claim_is_what_the_committed_log_shows():
    log = (REPO / "bench/results/h100/pytest_gpu-run2.log").read_text()
    passed = log.count(".")
    assert set(log.strip()) == {"."}  # passes only: no summary line, the run did not finish
    words = {5: "five"}
    assert f"`bench/results/h100/pytest_gpu-run2.log` holds {words[passed]} passes" in README
    assert "passed on that machine" not in README
