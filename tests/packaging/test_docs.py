"""The docs stay true: links resolve, the settings table is the code's, claims match tests and logs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code, where links are links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, -N for repeats."""
    seen: dict[str, int] = {}
    anchors = set()
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(page.read_text())) if not re.match(r"[a-z][a-z+.-]*:", t)]


def test_the_anchor_rule_is_githubs():
    page = REPO / "docs" / "api.md"
    assert {"the-page-at-", "metrics-with---workers", "slow-clients"} <= _anchors(page)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    links = _relative_links(page)
    assert links or page.name != "README.md", "no links found: the link pattern is broken"
    broken = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link} (no such file)")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link} (no heading #{anchor} in {target.relative_to(REPO)})")
    assert not broken, f"{page.relative_to(REPO)}: " + ", ".join(broken)


def test_the_readme_indexes_every_docs_page():
    readme = (REPO / "README.md").read_text()
    missing = [p.name for p in PAGES[1:] if f"](docs/{p.name})" not in readme]
    assert not missing, f"README.md's documentation index lacks {missing}"


def _settings_table():
    spec = importlib.util.spec_from_file_location("settings_table", REPO / "scripts" / "settings_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_settings_table_is_the_one_settings_renders():
    table = _settings_table()
    documented = table.documented((REPO / "docs" / "settings.md").read_text())
    assert documented == table.render(), (
        "docs/settings.md is out of date: python scripts/settings_table.py --write"
    )


def test_the_settings_table_names_every_field_flag_and_variable():
    from service.settings import Settings

    table = _settings_table()
    documented = table.documented((REPO / "docs" / "settings.md").read_text())
    for name, field in Settings.model_fields.items():
        flag, env = f"`--{name.replace('_', '-')}`", f"`DAT_{name.upper()}`"
        row = next((r for r in documented.splitlines() if r.startswith(f"| {name} |")), None)
        assert row is not None, f"docs/settings.md has no row for {name}"
        assert flag in row and env in row, row
        if name not in table.MACHINE_DEFAULTS:
            default = "unset" if field.default is None else str(field.default).lower()
            assert default in row.lower(), row
    table.check_machine_defaults()


def test_the_parity_claim_is_the_bound_the_parity_tests_assert():
    bounds = {
        re.search(r"^TOL = (\S+)$", (REPO / "tests/models" / name).read_text(), re.M)[1]
        for name in ("test_parity.py", "test_parity_pp.py")
    }
    assert len(bounds) == 1
    (bound,) = bounds
    models = (REPO / "docs" / "models.md").read_text()
    claim = re.search(r"official code's logits within (\S+) \(max abs", models)
    assert claim and claim[1] == bound, "docs/models.md must state the bound the parity tests assert"
    assert "tests/models/test_parity.py" in models
    row = next(r for r in (REPO / "README.md").read_text().splitlines() if r.startswith("| parity"))
    assert f"logits within {bound} (max abs)" in row and "tests/models/test_parity.py" in row


def test_the_gpu_test_claim_is_what_the_committed_log_shows():
    log = (REPO / "bench/results/h100/pytest_gpu-run2.log").read_text()
    passed = log.count(".")
    assert set(log.strip()) == {"."}  # passes only: no summary line, the run did not finish
    words = {5: "five"}
    benchmarks = (REPO / "docs" / "benchmarks.md").read_text()
    claim = re.search(r"pytest_gpu-run2\.log`\]\([^)]*\) holds (\w+) passes", benchmarks)
    assert claim and claim[1] == words[passed]
    assert "passed on that machine" not in benchmarks
