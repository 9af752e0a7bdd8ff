"""Readable ONNX node names: each node named after the module that produced it, e.g.
``stages.2.attns.1/deformable_kv/GridSample``, so a reader of the graph finds stage and block."""

from __future__ import annotations

import ast
from collections import Counter

import onnx_ir as ir

from .symbolics import SEAM_OPS


def _scopes(node: ir.Node) -> list[str]:
    raw = node.metadata_props.get("pkg.torch.onnx.name_scopes")
    try:
        scopes = ast.literal_eval(raw) if raw else []
    except (ValueError, SyntaxError):
        return []
    return [s for s in scopes if isinstance(s, str)]


def _fx_target(node: ir.Node) -> str:
    """'dat.sample_kv.default' from a namespace ending in '/sample_kv_1: dat.sample_kv.default'."""
    namespace = node.metadata_props.get("namespace", "")
    return namespace.rsplit("/", 1)[-1].split(": ", 1)[-1]


def name_nodes(model: ir.Model, wrapper: str = "") -> None:
    """Names every node ``<module path>/<step>/<OpType>``, e.g.
    ``stages.2.attns.1/deformable_kv/GridSample`` or ``stages.0.mlps.1/linear/MatMul``.

    ``<step>`` is the seam name (``deformable_kv``, ``bias_interpolation``, ``neighborhood``,
    ``nms``) for the nodes that translate a seam, otherwise the traced operation's name.
    Repeated names get a numeric suffix. Nodes without export metadata (added by graph
    optimisation) keep their names.
    ``wrapper`` is the attribute under which an export wrapper holds the model (e.g. ``model``);
    it is dropped from the paths so names read the same for every precision.
    """
    taken: Counter = Counter()
    for node in model.graph:
        scopes = _scopes(node)
        node.metadata_props.pop("pkg.torch.onnx.stack_trace", None)  # build-machine paths
        if not scopes:
            continue
        module = next((s for s in reversed(scopes[:-1]) if s), "")
        if wrapper and (module == wrapper or module.startswith(wrapper + ".")):
            module = module[len(wrapper) + 1 :]
        target = _fx_target(node)
        seam = SEAM_OPS.get(target.split(".")[1], "") if target.startswith("dat.") else ""
        base = "/".join(p for p in (module, seam or scopes[-1], node.op_type) if p)
        taken[base] += 1
        node.name = base if taken[base] == 1 else f"{base}_{taken[base] - 1}"
