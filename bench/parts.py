"""``python -m bench parts``: where one forward of a classifier spends its CPU time, by part.

Each block's attention (by its class: the N blocks' neighborhood attention, DAT v1's local and
shifted windows, the D blocks' deformable attention), MLPs, local perception units and layer
norms are timed with forward hooks in the calling thread's CPU time (``time.thread_time``), so
that other jobs on a shared machine count far less than in wall time; the rest (stem,
downsampling, residual adds, the head) is the forward's total less the parts. Run it with
``--threads 1``: with more threads the work of the others is not counted.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch
from torch import nn

from models import create_model
from models.dat import DAT

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _part_of(module: nn.Module, lpus: set[int]) -> str | None:
    name = type(module).__name__
    if id(module) in lpus:
        return "local perception units"
    if "Attention" in name:
        return name
    if "MLP" in name:
        return "MLPs"
    if name == "LayerNormProxy":
        return "layer norms"
    return None


def measure(model: nn.Module, inputs: torch.Tensor, repeats: int) -> dict[str, float]:
    """CPU ms per forward, by part, of the fastest of ``repeats`` forwards (after two warm-ups)."""
    if not isinstance(model, DAT):
        raise ValueError("bench parts times the DAT classifiers' blocks")
    lpus = {
        id(unit)
        for stage in model.stages
        if stage.use_lpu and stage.local_perception_units is not None
        for unit in stage.local_perception_units
    }
    parts: dict[str, float] = defaultdict(float)
    started: dict[int, float] = {}

    def before(module: nn.Module, args: tuple) -> None:
        started[id(module)] = time.thread_time()

    def after(module: nn.Module, args: tuple, output: object) -> None:
        parts[_part_of(module, lpus) or ""] += time.thread_time() - started.pop(id(module))

    handles = []
    for module in model.modules():
        if _part_of(module, lpus) is not None:
            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    best: dict[str, float] | None = None
    try:
        with torch.inference_mode():
            for _ in range(2):
                model(inputs)
            for _ in range(repeats):
                parts.clear()
                start = time.thread_time()
                model(inputs)
                total = time.thread_time() - start
                if best is None or total < best["total"]:
                    best = {**parts, "total": total}
    finally:
        for handle in handles:
            handle.remove()
    assert best is not None
    best["rest (stem, downsampling, residual adds, head)"] = best["total"] - sum(
        v for k, v in best.items() if k != "total"
    )
    return {k: round(v * 1e3, 1) for k, v in best.items()}


def run(
    models: list[str], precision: str, batch_size: int, repeats: int, rounds: int = 1
) -> dict[str, dict[str, float]]:
    """Each model's parts (:func:`measure`). With ``rounds`` > 1 the models take turns, and
    each part (the total too) is its fastest over the rounds: on a machine that other jobs
    share, a burst of load then spoils one round of one part, not the figure; the parts no
    longer add up to the total exactly."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    prepared = {}
    for name in models:
        torch.manual_seed(0)
        model = create_model(name, pretrained=False).eval().to(_DTYPES[precision])
        size = model.config.img_size
        prepared[name] = model, torch.randn(batch_size, 3, size, size, dtype=_DTYPES[precision])
    report: dict[str, dict[str, float]] = {name: {} for name in models}
    for _ in range(rounds):
        for name, (model, inputs) in prepared.items():
            for part, ms in measure(model, inputs, repeats).items():
                report[name][part] = min(report[name].get(part, ms), ms)
    return report


def markdown_table(report: dict[str, dict[str, float]]) -> str:
    names = list(report)
    rows = sorted({part for parts in report.values() for part in parts} - {"total"})
    lines = ["| part | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for part in [*rows, "total"]:
        lines.append(f"| {part} | " + " | ".join(str(report[n].get(part, "")) for n in names) + " |")
    return "\n".join(lines)
