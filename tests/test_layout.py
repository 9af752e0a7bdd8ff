"""The packages import one way: models <- runtimes <- export <- service <- bench, and
models <- training <- bench; nothing imports the tests.

Imports are read from the source (ast), never executed, and every import counts: at module
level, inside a function, or under ``TYPE_CHECKING``; a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# What each package may import of the project besides itself. ``runtimes`` may not exist yet.
ALLOWED = {
    "models": set(),
    "runtimes": {"models"},
    "export": {"models", "runtimes"},
    "service": {"models", "runtimes", "export"},
    "training": {"models"},
    "bench": {"models", "runtimes", "export", "service", "training"},  # everything but the tests
}
PROJECT = {*ALLOWED, "tests"}


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(root: Path, path: Path) -> set[str]:
    """The absolute names of the modules ``path`` imports: ``from a import b`` names ``a.b``
    where that is a module of ``root``, else ``a``."""
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                # ``from a import b``: module a.b, else the name b of module a
                found.add(candidate if is_module(root, candidate) else source)
    return found


def is_module(root: Path, name: str) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def package_modules(root: Path, package: str) -> dict[str, set[str]]:
    """Each module of ``package`` and the modules it imports."""
    return {
        module_name(root, path): imported_modules(root, path)
        for path in sorted((root / package).rglob("*.py"))
    }


def forbidden_imports(root: Path, package: str, allowed: set[str]) -> list[str]:
    """'module -> imported' for each import of a project package ``package`` may not import."""
    return sorted(
        f"{module} -> {target}"
        for module, targets in package_modules(root, package).items()
        for target in targets
        if (top := target.partition(".")[0]) in PROJECT and top not in allowed | {package}
    )


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing
    itself), each sorted: every import cycle lies inside one of them (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def packages_present() -> Iterable[str]:
    return [p for p in ALLOWED if (REPO / p / "__init__.py").is_file()]


@pytest.mark.parametrize("package", packages_present())
def test_each_package_imports_only_the_packages_below_it(package):
    assert forbidden_imports(REPO, package, ALLOWED[package]) == []


def test_no_import_cycle_among_the_modules_of_models():
    assert import_cycles(package_modules(REPO, "models")) == []


def test_the_serving_packages_are_all_checked():
    for package in ("models", "training", "export", "service"):
        assert package in packages_present()
    imported = set().union(*package_modules(REPO, "service").values())
    assert {"models", "export"} <= {name.partition(".")[0] for name in imported}


def test_the_checks_see_a_forbidden_import_and_a_cycle(tmp_path):
    """On a made-up tree: lazy and relative imports count, and both checks report them."""
    files = {
        "models/__init__.py": "from .a import A\n",
        "models/a.py": "from . import b\nA = 1\n",
        "models/b.py": "def f():\n    from .a import A\n    import service.app\n",
        "models/c.py": "from models.sub import d\n",
        "models/sub/__init__.py": "",
        "models/sub/d.py": "from ..c import x\n",
        "service/__init__.py": "",
        "service/app.py": "import models\n",
        "training/__init__.py": "from export import onnx\n",
        "export/__init__.py": "",
        "export/onnx.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert forbidden_imports(tmp_path, "models", ALLOWED["models"]) == ["models.b -> service.app"]
    assert forbidden_imports(tmp_path, "training", ALLOWED["training"]) == ["training -> export.onnx"]
    assert forbidden_imports(tmp_path, "service", ALLOWED["service"]) == []
    assert import_cycles(package_modules(tmp_path, "models")) == [
        ["models.a", "models.b"],
        ["models.c", "models.sub.d"],
    ]
