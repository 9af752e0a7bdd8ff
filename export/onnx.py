"""PyTorch DAT -> ONNX with our seam translations and a dynamic batch axis.

The graph is traced with ``torch.export`` (non-strict) while :func:`symbolics.opaque_seams`
and :class:`trace_policy.ExportPolicy` are active, then translated by the default (dynamo) ONNX
exporter with our ``custom_translation_table``. The legacy TorchScript exporter is never used:
on DAT it produced logits off by 0.2.

Precision
    ``fp32``: the model as it is.
    ``fp16``: a float16 graph for TensorRT's strongly typed networks. Weights and activations
    are float16, except float32 islands with explicit Casts: every LayerNorm, the attention
    softmax with its bias/mask addition, the sampling-position math (offsets, reference
    points, the bias-table read, which the model keeps in float32) and both grid samplings.
    The graph's input and output stay **float32** (cast inside the graph), so a client feeds
    and reads the same tensors for either precision.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from runtimes.manifest import INPUT_NAME, PRECISIONS
from runtimes.manifest_fields import BatchRange

from . import symbolics
from .node_names import name_nodes
from .trace_policy import ExportPolicy

if TYPE_CHECKING:
    from models import DAT, RCNN, RetinaNet

BATCH_AXIS = "batch"
DEFAULT_OPSET = 18
# 18 is what the exporter writes natively; others go through ONNX's version converter.
SUPPORTED_OPSETS = range(18, 22)


class _Float16Graph(nn.Module):
    """Float32 in, float16 model, float32 out (integer outputs such as labels as they are)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model).half().eval()

    def forward(self, x: torch.Tensor):
        out = self.model(x.to(torch.float16))
        if isinstance(out, torch.Tensor):
            return out.float()
        return tuple(t.float() if t.is_floating_point() else t for t in out)


@dataclass
class OnnxExport:
    path: Path
    grid_sample: str
    precision: str
    opset: int
    batch: BatchRange
    input_shape: list  # e.g. ["batch", 3, 224, 224]
    output_shapes: dict[str, list]  # name -> shape, in the graph's order
    node_counts: dict[str, int]


def _quiet_exporter() -> None:
    # The exporter logs a warning per missing optional torchvision op; not our concern.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)


def _rename_batch_axis(model, symbols: set[str]) -> None:
    """Gives the dynamic axis a readable name (the exporter writes e.g. ``s77``)."""
    import onnx_ir as ir

    values = [*model.graph.inputs, *model.graph.outputs]
    values += [v for node in model.graph for v in node.outputs]
    for value in values:
        if value.shape is None:
            continue
        dims = [ir.SymbolicDim(BATCH_AXIS) if str(d) in symbols else d for d in value.shape]
        value.shape = ir.Shape(dims)


def export_onnx(
    model: DAT | RetinaNet | RCNN,
    path: str | Path,
    *,
    grid_sample: str = "native",
    precision: str = "fp32",
    opset: int = DEFAULT_OPSET,
    batch: BatchRange | None = None,
) -> OnnxExport:
    """Exports ``model`` (a DAT classifier or detector, eval mode) to ``path``; returns what was
    written. The outputs are named by the model's task (``model.task.output_names``).

    Raises ValueError for options that cannot be honoured (opset, precision, grid mode).
    """
    import onnx_ir as ir

    batch = batch or BatchRange()
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(
            f"opset {opset} is not supported; choose {SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1}"
        )
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    table = symbolics.translation_table(grid_sample, opset)
    _quiet_exporter()

    size = model.input_size
    output_names = list(model.task.output_names)
    traced = _Float16Graph(model) if precision == "fp16" else model.eval()
    example = torch.randn(batch.clip(2) if batch.dynamic else batch.min, 3, size, size)
    dynamic_shapes = None
    if batch.dynamic:
        dim = torch.export.Dim(BATCH_AXIS, min=batch.min, max=batch.max)
        dynamic_shapes = ({0: dim},)
    with warnings.catch_warnings():
        # torch's own pytree deprecation notice, raised inside torch.export; not actionable here.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        with (
            torch.no_grad(),
            symbolics.opaque_seams(),
            ExportPolicy(fp32_islands=precision == "fp16"),
        ):
            program = torch.export.export(traced, (example,), dynamic_shapes=dynamic_shapes, strict=False)
        onnx_program = torch.onnx.export(
            program,
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=output_names,
            custom_translation_table=table,
            verbose=False,
        )

    if onnx_program is None:  # only the legacy exporter (dynamo=False) returns nothing
        raise RuntimeError("torch.onnx.export returned no ONNX program")
    graph_model = onnx_program.model
    symbols = {str(d) for d in graph_model.graph.inputs[0].shape or () if not isinstance(d, int)}
    _rename_batch_axis(graph_model, symbols)
    name_nodes(graph_model, wrapper="model" if precision == "fp16" else "")
    graph_model.producer_name = "dat-serve export"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ir.save(graph_model, path)

    counts: dict[str, int] = {}
    for node in graph_model.graph:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1

    def shape_of(value) -> list:
        return [d if isinstance(d, int) else str(d) for d in value.shape]

    return OnnxExport(
        path=path,
        grid_sample=grid_sample,
        precision=precision,
        opset=opset,
        batch=batch,
        input_shape=shape_of(graph_model.graph.inputs[0]),
        output_shapes={str(v.name): shape_of(v) for v in graph_model.graph.outputs},
        node_counts=dict(sorted(counts.items())),
    )
