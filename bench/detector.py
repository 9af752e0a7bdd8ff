"""What ``python -m bench model`` needs to measure a detector: its test-size input, random
weights that find something, how two variants' detections agree, and where one forward's time
goes (backbone, FPN, RPN, RoI heads, NMS, RoIAlign, mask pasting), eagerly and in ONNX Runtime.

A keep-ratio detector (Mask R-CNN, the mmdet RetinaNet) is measured at its test size: a picture
resized to exactly ``img_scale`` (1333 x 800, landscape) and padded to the divisor, 1344 x 800,
as the torch backend runs it; the exported graph takes it on its square canvas (1344 x 1344),
as the ONNX Runtime and TensorRT backends pad it. A letterboxed RetinaNet takes its canvas.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from models import nms, paste_masks, roi_align
from models.transforms import ImageMeta, KeepRatioResize

# As the mmdet fixtures make random weights detect: class logits of std 1.5 (RetinaNet: mean -2.5)
LOGIT_STD = 1.5
RETINA_LOGIT_MEAN = -2.5


def is_detector(model: torch.nn.Module) -> bool:
    task = getattr(model, "task", None)
    return bool(task is not None and task.finds_objects)


def input_shape(model: torch.nn.Module) -> tuple[int, int]:
    """(height, width) of the model's test input (module docstring)."""
    pipeline = model.info.preprocessing
    if isinstance(pipeline, KeepRatioResize):
        width, height = pipeline.padded_size(max(pipeline.img_scale), min(pipeline.img_scale))
        return height, width
    return model.input_size, model.input_size


def image_meta(height: int, width: int) -> ImageMeta:
    """The input taken as the picture itself (scale factor 1): boxes come back in its pixels."""
    return ImageMeta((height, width), (height, width), (1.0, 1.0, 1.0, 1.0))


def _class_layers(model: torch.nn.Module) -> list[tuple[torch.nn.Module, float]]:
    """The layers whose outputs are class logits, with the mean they are given."""
    layers = []
    for name, module in model.named_modules():
        if name.endswith("fc_cls"):
            layers.append((module, 0.0))
        elif name.endswith("retina_cls"):
            layers.append((module, RETINA_LOGIT_MEAN))
    return layers


@torch.no_grad()
def make_random_weights_detect(model: torch.nn.Module, shape: tuple[int, int] | None = None) -> None:
    """Scales the class layers of a randomly initialised detector so that their logits have std
    1.5 on a random input of ``shape`` (default: its test input), as the mmdet fixtures do: an
    untrained head scores every class near chance and keeps nothing, which would leave NMS,
    the mask head and the comparison with nothing to do."""
    layers = _class_layers(model)
    if not layers:
        return
    outputs: dict[int, torch.Tensor] = {}
    hooks = [
        layer.register_forward_hook(lambda mod, args, out, i=i: outputs.setdefault(i, out.detach()))
        for i, (layer, _) in enumerate(layers)
    ]
    try:
        height, width = shape or input_shape(model)
        model(torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(1)))
    finally:
        for hook in hooks:
            hook.remove()
    for i, (layer, mean) in enumerate(layers):
        logits = outputs.get(i)
        if logits is None:
            continue
        std = float(logits.float().std())
        if std > 0:
            layer.weight.mul_(LOGIT_STD / std)
        if layer.bias is not None:
            layer.bias.fill_(mean)


def outputs_tuple(found) -> tuple[torch.Tensor, ...]:
    """A detector's outputs as float32 (labels as they are), without an absent mask."""
    return tuple(t.float() if t.is_floating_point() else t for t in found if t is not None)


def agreement(reference: tuple[torch.Tensor, ...], outputs: tuple[torch.Tensor, ...], precision: str, config):
    """The share of the reference's detections another variant keeps (same label, box and
    score within the export verification's tolerance for ``precision``), and its box error."""
    from export.validate import compare_detections

    result = compare_detections(
        [t.cpu().numpy() for t in reference],
        [t.cpu().numpy() for t in outputs],
        "fp32" if precision == "fp32" else "fp16",
        config.score_threshold,
        config.iou_threshold,
    )
    return {
        "detections_of_ours_fp32": result.detections,
        "detections_matched_vs_ours_fp32": result.top1_agreement,
        "max_relative_box_error_vs_ours_fp32": result.max_abs_error,
    }


# --------------------------------------------------------------------------- where the time goes


class _Clock:
    """Self wall and process CPU seconds per named part, summed over one forward: a part
    timed inside another (a seam inside the RPN) is taken out of it and counted under its own
    name and its caller's, e.g. ``nms (rpn)``."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._open: list[str] = []

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        if self._open:
            name = f"{name} ({self._open[-1]})"
        self._open.append(name)
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            self._open.pop()
            for table, spent in ((self.wall, wall), (self.cpu, cpu)):
                table[name] = table.get(name, 0.0) + spent
                if self._open:
                    table[self._open[-1]] = table.get(self._open[-1], 0.0) - spent

    def timed(self, name: str, fn: Callable) -> Callable:
        def run(*args, **kwargs):
            with self.part(name):
                return fn(*args, **kwargs)

        return run


def _rcnn_forward(model, x: torch.Tensor, clock: _Clock) -> None:
    """One R-CNN forward, part by part, as ``RCNN.forward`` runs it, then the masks pasted at
    the input's size as the server pastes them for ``masks=rle``."""
    sizes, factors = model._meta(x, None, None)
    with clock.part("backbone"):
        stages = model.backbone(x)
    with clock.part("fpn"):
        features = model.neck(stages)
    with clock.part("rpn"):
        proposals = model.propose(features, sizes)
    with clock.part("box head"):
        boxes, scores, labels = model.detect(features, proposals, sizes, factors)
    if model.config.mask_head is None:
        return
    with clock.part("mask head"):
        masks = model.segment(features, boxes, labels, factors)
    with clock.part("mask pasting"):
        for b in range(x.shape[0]):
            kept = labels[b] >= 0
            paste_masks(masks[b][kept].float(), boxes[b][kept], x.shape[2], x.shape[3])


def eager_breakdown(model, x: torch.Tensor, repeats: int = 1) -> dict:
    """Median wall and CPU seconds of each part of an R-CNN forward over ``repeats`` runs
    (after one untimed): NMS and RoIAlign are timed at their seams and taken out of the parts
    that call them."""
    runs = []
    for i in range(repeats + 1):
        clock = _Clock()
        with (
            torch.inference_mode(),
            nms.override(clock.timed("nms", nms.greedy_nms_keep)),
            roi_align.override(clock.timed("roialign", roi_align.roi_align)),
        ):
            _rcnn_forward(model, x, clock)
        if i:
            runs.append(clock)
    return _summary(runs)


def _summary(runs: list[_Clock]) -> dict:
    """Per part the median over the runs, and the total of the medians."""
    names = list(dict.fromkeys(name for run in runs for name in run.wall))
    out: dict = {}
    for which in ("wall", "cpu"):
        table = {
            name: statistics.median(getattr(run, which).get(name, 0.0) for run in runs) for name in names
        }
        out[f"{which}_s"] = table
    return out


# ONNX nodes are named after the module that made them (export.symbolics.name_nodes)
_GRAPH_PARTS = (
    ("backbone", "backbone"),
    ("neck", "fpn"),
    ("rpn_head", "rpn"),
    ("roi_head.bbox_head", "box head"),
    ("roi_head.mask_head", "mask head"),
)
_GRAPH_OPS = {"NonMaxSuppression": "nms", "RoiAlign": "roialign"}


def _graph_part(node: str, op_type: str) -> str:
    if op_type in _GRAPH_OPS:
        return _GRAPH_OPS[op_type]
    for prefix, part in _GRAPH_PARTS:
        if node.startswith(prefix):
            return part
    return "other (decoding, top-k, level masks)"


def onnxruntime_breakdown(path: str | Path, x: np.ndarray, threads: int | None, repeats: int = 1) -> dict:
    """Milliseconds of each part of the exported graph's forward on ``x`` (ONNX Runtime's
    profiler, node by node, median of ``repeats`` runs after one untimed), by the module
    that made each node; fused nodes count where their name puts them."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for _ in range(repeats + 1):
        session.run(None, {name: x})
    profile = Path(session.end_profiling())
    try:
        events = json.loads(profile.read_text())
    finally:
        profile.unlink(missing_ok=True)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    per_run: list[dict[str, float]] = []
    for run in runs[1:]:  # the first is the untimed one
        start, end = run["ts"], run["ts"] + run["dur"]
        parts: dict[str, float] = {}
        for e in events:
            if (
                e.get("cat") != "Node"
                or not e["name"].endswith("_kernel_time")
                or not start <= e["ts"] <= end
            ):
                continue
            part = _graph_part(e["name"][: -len("_kernel_time")], e.get("args", {}).get("op_name", ""))
            parts[part] = parts.get(part, 0.0) + e["dur"] / 1000
        parts["run (wall)"] = run["dur"] / 1000
        per_run.append(parts)
    names = list(dict.fromkeys(n for p in per_run for n in p))
    return {"ms": {n: statistics.median(p.get(n, 0.0) for p in per_run) for n in names}}


def on_canvas(x: torch.Tensor, canvas: int) -> torch.Tensor:
    """The batch padded with zeros, right and bottom, onto the exported graph's square canvas."""
    out = x.new_zeros(x.shape[0], 3, canvas, canvas)
    out[:, :, : x.shape[2], : x.shape[3]] = x
    return out


def is_exported(variant: str) -> bool:
    from .exported import BACKENDS

    return variant.split("-", 1)[0] in BACKENDS


def agreements(ours: torch.nn.Module, x: torch.Tensor, outputs: dict, first: str) -> dict[str, dict]:
    """Each variant's detections against our fp32 on the same input: the exported graphs take
    it on their canvas, so theirs are compared with our fp32 on that canvas (one more forward)."""
    on_the_canvas = None
    result = {}
    for name, found in outputs.items():
        reference = outputs[first]
        if is_exported(name):
            if on_the_canvas is None:
                on_the_canvas = outputs_tuple(ours(on_canvas(x, ours.input_size)))
            reference = on_the_canvas
        precision = name.rsplit("-", 1)[-1]
        result[name] = agreement(reference, found, precision, ours.config)
    return result


def padded(outputs, detections: int) -> tuple[torch.Tensor, ...]:
    """A backend's per-image detections -> the graph's padded (B, M, ...) tensors, label -1
    in the empty slots."""
    b = len(outputs)
    boxes, scores = torch.zeros(b, detections, 4), torch.zeros(b, detections)
    labels = torch.full((b, detections), -1, dtype=torch.long)
    with_masks = outputs and outputs[0].masks is not None
    masks = torch.zeros(b, detections, *outputs[0].masks.shape[1:]) if with_masks else None
    for i, o in enumerate(outputs):
        k = len(o.labels)
        boxes[i, :k], scores[i, :k] = torch.from_numpy(o.boxes), torch.from_numpy(o.scores)
        labels[i, :k] = torch.from_numpy(o.labels)
        if masks is not None:
            masks[i, :k] = torch.from_numpy(o.masks)
    return (boxes, scores, labels) + ((masks,) if masks is not None else ())


def breakdowns(model, folder: Path, threads: int | None, repeats: int, progress: Callable) -> dict:
    """Eager fp32 at the test input and, where the fp32 export is in ``folder``, ONNX Runtime
    on its canvas: each part's time for one image."""
    height, width = input_shape(model)
    x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(2))
    out = {"input": [height, width], "eager-fp32": eager_breakdown(model, x, repeats)}
    graph = folder / "export-fp32" / "model.onnx"
    if graph.is_file():
        progress("  ... and in ONNX Runtime")
        canvas = on_canvas(x, model.input_size).numpy()
        out["onnxruntime-fp32"] = {
            "input": list(canvas.shape[2:]),
            **onnxruntime_breakdown(graph, canvas, threads, repeats),
        }
    return out


def breakdown_table(breakdown: dict) -> str:
    eager = breakdown["eager-fp32"]
    ort = breakdown.get("onnxruntime-fp32", {}).get("ms", {})
    cpu, wall = eager["cpu_s"], eager["wall_s"]
    total_cpu = sum(cpu.values())
    total_ort = sum(v for k, v in ort.items() if k != "run (wall)")
    height, width = breakdown["input"]
    lines = [
        f"One image, eager at {width} x {height}"
        + (", ONNX Runtime on its square canvas" if ort else "")
        + ": time per part (the seams, NMS and RoIAlign, apart from their callers)",
        "",
        "| part | eager CPU s | share | eager wall s | ONNX Runtime ms | share |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in list(dict.fromkeys([*cpu, *(k for k in ort if k != "run (wall)")])):
        o = ort.get(name)
        lines.append(
            f"| {name} | {cpu.get(name, 0.0):.2f} | {cpu.get(name, 0.0) / total_cpu:.0%} | "
            f"{wall.get(name, 0.0):.2f} | "
            + (f"{o:.0f} | {o / total_ort:.0%} |" if o is not None and total_ort else "- | - |")
        )
    outside = 1 - sum(cpu.get(k, 0.0) for k in ("backbone",)) / total_cpu
    lines.append("")
    lines.append(f"Outside the backbone (eager CPU time): {outside:.0%}")
    if ort:
        ort_outside = 1 - ort.get("backbone", 0.0) / total_ort
        lines.append(f"Outside the backbone (ONNX Runtime node time): {ort_outside:.0%}")
    return "\n".join(lines)
