"""The settings table of docs/settings.md, rendered from ``service.settings.Settings``.

Flags and environment variables are read from the command-line parser the server itself
builds (pydantic-settings), so the table names exactly what ``python -m service`` accepts.

    python scripts/settings_table.py            # print the table
    python scripts/settings_table.py --write    # replace it in docs/settings.md
    python scripts/settings_table.py --check    # exit 1 when docs/settings.md differs
"""

from __future__ import annotations

import argparse
import html
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "settings.md"
BEGIN = "<!-- settings table: rendered by scripts/settings_table.py, do not edit by hand -->"
END = "<!-- end of settings table -->"
sys.path.insert(0, str(REPO))  # this checkout's service, not an installed copy

# Defaults computed from the machine at import time: the table states the rule, not this
# machine's value. ``check_machine_defaults`` keeps each rule tied to the code.
MACHINE_DEFAULTS = {
    "threads": "half the cores (at least 1)",
    "preprocess_workers": "the cores, at most 4",
}


def _cli_options() -> dict[str, tuple[list[str], str]]:
    """Field name -> (its flags, its environment variable), as the server's parser has them."""
    from pydantic_settings import CliSettingsSource

    from service.settings import Settings

    parser = CliSettingsSource(Settings).root_parser
    options = {}
    for action in parser._actions:  # argparse keeps no public list of its options
        env = re.search(r"\[env: (\S+)\]", action.help or "")
        if env:
            options[action.dest] = (list(action.option_strings), env[1])
    return options


def check_machine_defaults() -> None:
    """Raises when a machine-dependent default no longer follows the rule the table states."""
    from service.settings import CPU_CORES, DEFAULT_WORKERS, Settings

    fields = Settings.model_fields
    if fields["threads"].default is not None or Settings().cpu_threads != max(1, CPU_CORES // 2):
        raise AssertionError("threads: the default is no longer half the cores; update MACHINE_DEFAULTS")
    if fields["preprocess_workers"].default != DEFAULT_WORKERS or DEFAULT_WORKERS != max(
        1, min(4, CPU_CORES)
    ):
        raise AssertionError("preprocess_workers: the default is no longer the cores, at most 4")


def _default(name: str, value: object) -> str:
    if name in MACHINE_DEFAULTS:
        return MACHINE_DEFAULTS[name]
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    """Markdown table cell: a '|' would end the cell, '<key>' would vanish as an HTML tag."""
    return html.escape(text, quote=False).replace("|", "\\|")


def render() -> str:
    from service.settings import Settings

    options = _cli_options()
    rows = [
        "| setting | flag | environment | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        if name not in options:
            raise AssertionError(f"setting {name!r} has no command-line flag")
        flags, env = options[name]
        flag = " / ".join(f"`{f}`" for f in flags)
        rows.append(
            f"| {name} | {flag} | `{env}` | {_default(name, field.default)} | "
            f"{_cell(field.description or '')} |"
        )
    return "\n".join(rows) + "\n"


def _span(text: str) -> tuple[int, int]:
    """Where the table lies in a settings.md text: between the markers."""
    try:
        start = text.index(BEGIN) + len(BEGIN)
        return start, text.index(END, start)
    except ValueError:
        raise ValueError(f"{DOC.relative_to(REPO)} lacks the settings table's markers") from None


def documented(text: str) -> str:
    """The table of a settings.md text."""
    start, end = _span(text)
    return text[start:end].strip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"replace the table in {DOC.relative_to(REPO)}")
    mode.add_argument("--check", action="store_true", help="exit 1 when the documented table differs")
    args = parser.parse_args(argv)
    table = render()
    if not (args.write or args.check):
        print(table, end="")
        return 0
    text = DOC.read_text()
    if args.check:
        if documented(text) != table:
            print(f"{DOC.relative_to(REPO)} is out of date: python scripts/settings_table.py --write")
            return 1
        return 0
    start, end = _span(text)
    DOC.write_text(f"{text[:start]}\n\n{table}\n{text[end:]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
