"""mmdet 2.x config files read as data: ``read_mmdet_config(path)`` -> a dict of its variables.

A config file is Python, and a server must never execute one. Each top-level assignment is
evaluated by a small interpreter of literal expressions: constants, lists, tuples, dicts,
``dict(...)`` calls (``**other`` included), names assigned earlier in the same file (mmcv
executes each file on its own, so a file sees only its own names) and arithmetic on numbers,
strings and lists (``data_root + 'train2017/'``, ``1.0 / 9.0``). Anything else (imports,
calls, attribute access, ``{{_base_.x}}`` references) is an error naming the file and line.

``_base_`` (a path or a list of paths, relative to the file) is merged as mmcv's ``Config``
merges it: bases in order, a key in two bases is an error, then the file's own dicts merged
into the bases' recursively, where ``_delete_=True`` replaces the base's dict instead.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Not: operator.not_,
}


class ConfigError(ValueError):
    """A config file that cannot be read as data, or that is not a supported model."""


def read_mmdet_config(path: str | Path) -> dict[str, Any]:
    """Every variable of an mmdet 2.x config file, its ``_base_`` chain merged in."""
    return _read(Path(path), ())


def _read(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        raise ConfigError(f"{path}: _base_ files include each other")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    own = _evaluate_file(path)
    bases = own.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    merged: dict[str, Any] = {}
    for base in bases:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: _base_ must name files, got {base!r}")
        data = _read(path.parent / base, (*chain, path))
        duplicated = set(data) & set(merged)
        if duplicated:  # mmcv refuses this too
            raise ConfigError(f"{path}: keys {sorted(duplicated)} are set by more than one base")
        merged.update(data)
    return merge(own, merged)


def merge(child: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """``child`` merged into ``base`` as mmcv merges a config into its bases."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict):
            value = dict(value)
            replace = value.pop(DELETE_KEY, False)
            if key in out and not replace:
                if not isinstance(out[key], dict):
                    raise ConfigError(
                        f"{key}={value!r} merges a dict into the base's non-dict "
                        f"{out[key]!r} (set _delete_=True to replace it)"
                    )
                out[key] = merge(value, out[key])
            else:
                out[key] = _strip_delete(value)
        else:
            out[key] = value
    return out


def _strip_delete(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_delete(v) for k, v in value.items() if k != DELETE_KEY}
    if isinstance(value, list):
        return [_strip_delete(v) for v in value]
    return value


def _evaluate_file(path: Path) -> dict[str, Any]:
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as exc:
        raise ConfigError(f"{path}: not a Python config file ({exc.msg}, line {exc.lineno})") from None
    names: dict[str, Any] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring
        targets = (
            [t.id for t in stmt.targets if isinstance(t, ast.Name)] if isinstance(stmt, ast.Assign) else []
        )
        if isinstance(stmt, ast.Assign) and len(targets) == len(stmt.targets):
            value = _Evaluator(path, names).value(stmt.value)
            for target in targets:
                names[target] = value
            continue
        raise ConfigError(
            f"{path}, line {stmt.lineno}: only assignments of literal values are read "
            f"(found {type(stmt).__name__}); a config file is never executed"
        )
    return {k: v for k, v in names.items() if not k.startswith("__")}


class _Evaluator:
    def __init__(self, path: Path, names: Mapping[str, Any]):
        self.path, self.names = path, names

    def fail(self, node: ast.AST, what: str) -> ConfigError:
        return ConfigError(
            f"{self.path}, line {getattr(node, 'lineno', '?')}: {what} is not read "
            "(config files are read as data, never executed)"
        )

    def value(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.List):
            return [self.value(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(self.value(e) for e in node.elts)
        if isinstance(node, ast.Dict):
            out: dict[Any, Any] = {}
            for key, value in zip(node.keys, node.values):
                if key is None:  # {**other}
                    out.update(self.mapping(value))
                else:
                    out[self.value(key)] = self.value(value)
            return out
        if isinstance(node, ast.Name):
            if node.id not in self.names:
                raise self.fail(node, f"the name {node.id!r} (not assigned earlier in this file)")
            return _copy(self.names[node.id])
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            if node.args:
                raise self.fail(node, "dict() with positional arguments")
            out = {}
            for keyword in node.keywords:
                if keyword.arg is None:  # dict(**other)
                    out.update(self.mapping(keyword.value))
                else:
                    out[keyword.arg] = self.value(keyword.value)
            return out
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self.value(node.left), self.value(node.right)
            if not all(isinstance(v, (int, float, str, list, tuple)) for v in (left, right)):
                raise self.fail(node, "arithmetic on these values")
            try:
                return _BINARY[type(node.op)](left, right)
            except (TypeError, ZeroDivisionError) as exc:
                raise self.fail(node, f"this arithmetic ({exc})") from None
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            operand = self.value(node.operand)
            if not isinstance(operand, (int, float, bool)):
                raise self.fail(node, "this unary operation")
            return _UNARY[type(node.op)](operand)
        raise self.fail(node, f"this {type(node).__name__} expression")

    def mapping(self, node: ast.expr) -> dict[str, Any]:
        value = self.value(node)
        if not isinstance(value, dict):
            raise self.fail(node, "** of a non-dict")
        return value


def _copy(value: Any) -> Any:
    """A fresh copy: one name used in two places must not alias (merging mutates nothing, but
    callers may)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def pipeline_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The test pipeline's resize, normalisation and padding: ``img_scale`` (long, short edge
    bounds as mmcv's (w, h) tuple), ``keep_ratio``, ``mean`` / ``std`` (0-255 scale), ``to_rgb``,
    ``size_divisor``. Reads ``data.test.pipeline``, else ``test_pipeline``."""
    data = config.get("data")
    pipeline = None
    if isinstance(data, dict) and isinstance(data.get("test"), dict):
        pipeline = data["test"].get("pipeline")
    if pipeline is None:
        pipeline = config.get("test_pipeline")
    if not isinstance(pipeline, list):
        raise ConfigError("the config has no test pipeline (data.test.pipeline or test_pipeline)")
    steps = list(pipeline)
    settings: dict[str, Any] = {}
    flat: list[dict[str, Any]] = []
    for step in steps:
        if step.get("type") == "MultiScaleFlipAug":
            if step.get("flip"):
                raise ConfigError("test-time flip augmentation is not supported")
            scale = step.get("img_scale", step.get("scale_factor"))
            if isinstance(scale, list):
                if len(scale) != 1:
                    raise ConfigError(f"multi-scale testing is not supported (img_scale={scale!r})")
                scale = scale[0]
            settings["img_scale"] = scale
            flat.extend(step.get("transforms", []))
        else:
            flat.append(step)
    for step in flat:
        kind = step.get("type")
        if kind == "Resize":
            if "img_scale" in step:
                scale = step["img_scale"]
                settings["img_scale"] = scale[0] if isinstance(scale, list) and len(scale) == 1 else scale
            settings["keep_ratio"] = step.get("keep_ratio", True)
        elif kind == "Normalize":
            settings.update(mean=tuple(step["mean"]), std=tuple(step["std"]), to_rgb=step.get("to_rgb", True))
        elif kind == "Pad":
            if "size" in step:
                raise ConfigError("padding to a fixed size is not supported (only size_divisor)")
            settings["size_divisor"] = step.get("size_divisor", 1)
    missing = {"img_scale", "mean", "std"} - set(settings)
    if missing:
        raise ConfigError(f"the test pipeline lacks {sorted(missing)}")
    if not isinstance(settings["img_scale"], (list, tuple)) or len(settings["img_scale"]) != 2:
        raise ConfigError(f"img_scale must be a (long, short) pair, got {settings['img_scale']!r}")
    settings["img_scale"] = tuple(settings["img_scale"])
    settings.setdefault("keep_ratio", True)
    settings.setdefault("size_divisor", 1)
    settings.setdefault("to_rgb", True)
    return settings
