"""``python -m bench neighborhood``: the N blocks' attention alone, per way of computing it.

Runs the neighborhood attention of a model's N blocks (one call per block shape, weighted by
how many blocks have it) at a batch size, in turns, and reports ms per forward of the model's
N blocks and each variant's largest difference from NATTEN's definition:

``blocked (default)``, ``blocked-RxC``
    the model's own path (:func:`models.neighborhood.blocked_neighborhood_attention`), with its
    default tiles (:func:`models.neighborhood.tile_shape`) or with tiles of R x C queries on
    every map.
``windows``
    every query's k x k window gathered (``unfold``-like indexing), then one batched matmul:
    the literal "gather the windows and run one attention".
``flex``
    ``torch.nn.attention.flex_attention`` with a neighborhood block mask and the bias as a
    score modification, compiled (where torch supports it on the device).
"""

from __future__ import annotations

import collections
import statistics
import time
from collections.abc import Callable

import torch

from models import create_model
from models import neighborhood as nb
from models.neighborhood import NeighborhoodAttention

AttentionFn = Callable[..., torch.Tensor]


def block_shapes(model_name: str, batch: int) -> list[tuple[tuple[int, int, int, int, int], int, int]]:
    """((B, heads, H, W, head_dim), kernel, count) of every N-block shape at the input size."""
    model = create_model(model_name, pretrained=False)
    size = model.input_size // model.config.patch_size
    shapes: collections.Counter = collections.Counter()
    for stage, block in ((s, b) for s, st in enumerate(model.stages) for b in st.attns):
        if isinstance(block, NeighborhoodAttention):
            side = max(size >> stage, block.kernel)
            shapes[((batch, block.heads, side, side, block.head_dim), block.kernel)] += 1
    return [(shape, kernel, count) for (shape, kernel), count in shapes.items()]


def windows_attention(q, k, v, rpb, kernel, scale):
    """Each query's window of keys gathered, then one attention per query."""
    B, heads, H, W, d = q.shape
    rows = torch.tensor(nb.window_starts(H, kernel), device=q.device)[:, None] + torch.arange(
        kernel, device=q.device
    )
    cols = torch.tensor(nb.window_starts(W, kernel), device=q.device)[:, None] + torch.arange(
        kernel, device=q.device
    )
    index = (rows[:, None, :, None] * W + cols[None, :, None, :]).reshape(H * W, kernel * kernel)
    qi = torch.arange(H, device=q.device)
    qj = torch.arange(W, device=q.device)
    bias_rows = rows - qi[:, None] + kernel - 1  # (H, k)
    bias_cols = cols - qj[:, None] + kernel - 1
    bias = rpb[:, bias_rows[:, None, :, None], bias_cols[None, :, None, :]].reshape(heads, H * W, -1)
    keys = k.flatten(2, 3)[:, :, index]  # (B, heads, HW, k*k, d)
    values = v.flatten(2, 3)[:, :, index]
    logits = torch.einsum("bhqd,bhqkd->bhqk", q.flatten(2, 3) * scale, keys) + bias.to(q.dtype)
    out = torch.einsum("bhqk,bhqkd->bhqd", logits.float().softmax(-1).to(q.dtype), values)
    return out.view(B, heads, H, W, d)


def flex_attention_fn(device: str) -> AttentionFn | None:
    """Neighborhood attention as ``flex_attention`` (compiled), or None where it is missing."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError:
        return None
    compiled = torch.compile(flex_attention, dynamic=False)
    cache: dict = {}

    def run(q, k, v, rpb, kernel, scale):
        B, heads, H, W, d = q.shape
        key = (H, W, kernel)
        if key not in cache:
            rows = torch.tensor(nb.window_starts(H, kernel), device=q.device)
            cols = torch.tensor(nb.window_starts(W, kernel), device=q.device)

            def inside(b, h, qi, ki):
                qr, qc, kr, kc = qi // W, qi % W, ki // W, ki % W
                dr, dc = kr - rows[qr], kc - cols[qc]
                return (dr >= 0) & (dr < kernel) & (dc >= 0) & (dc < kernel)

            cache[key] = create_block_mask(inside, None, None, H * W, H * W, device=device)
        table = rpb.to(q.dtype)

        def bias(score, b, h, qi, ki):
            # evaluated for masked-out pairs of a partial block too: keep the index in the table
            row = (ki // W - qi // W + kernel - 1).clamp(0, 2 * kernel - 2)
            col = (ki % W - qi % W + kernel - 1).clamp(0, 2 * kernel - 2)
            return score + table[h, row, col]

        out = compiled(
            q.flatten(2, 3),
            k.flatten(2, 3),
            v.flatten(2, 3),
            score_mod=bias,
            block_mask=cache[key],
            scale=scale,
        )
        return out.view(B, heads, H, W, d)

    return run


def natten_reference(q, k, v, rpb, kernel, scale):
    """The definition, in float32, by the windows variant (its gather is exact)."""
    return windows_attention(q.float(), k.float(), v.float(), rpb.float(), kernel, scale)


def run(
    model_name: str,
    batch: int,
    device: str,
    dtype: torch.dtype,
    tiles: tuple[tuple[int, int], ...],
    repeats: int,
    flex: bool,
    progress: Callable[[str], None] = print,
) -> dict:
    torch.manual_seed(0)
    shapes = block_shapes(model_name, batch)
    inputs = []
    for shape, kernel, count in shapes:
        q, k, v = (torch.randn(shape, device=device, dtype=dtype) for _ in range(3))
        inputs.append(
            (
                q,
                k,
                v,
                torch.randn(shape[1], 2 * kernel - 1, 2 * kernel - 1, device=device),
                kernel,
                shape[-1] ** -0.5,
                count,
            )
        )
    variants: dict[str, AttentionFn] = {"blocked (default)": nb.blocked_neighborhood_attention}
    for rows, cols in tiles:
        variants[f"blocked-{rows}x{cols}"] = _blocked((rows, cols))
    variants["windows"] = windows_attention
    if flex and (fn := flex_attention_fn(device)) is not None:
        variants["flex"] = fn
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def forward(fn: AttentionFn) -> None:
        for q, k, v, rpb, kernel, scale, count in inputs:
            for _ in range(count):
                fn(q, k, v, rpb, kernel, scale)

    report: dict = {
        "model": model_name,
        "batch": batch,
        "device": device,
        "dtype": str(dtype),
        "shapes": [{"shape": list(s), "kernel": kern, "blocks": c} for s, kern, c in shapes],
        "variants": {},
    }
    durations: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for name, fn in variants.items():
            errors = []
            for q, k, v, rpb, kernel, scale, _ in inputs:
                want = natten_reference(q, k, v, rpb, kernel, scale)
                errors.append(float((fn(q, k, v, rpb, kernel, scale).float() - want).abs().max()))
            report["variants"][name] = {"max_abs_diff_vs_definition": max(errors)}
            forward(fn)  # warm-up (and compilation)
        for _ in range(repeats):  # in turns: a slow spell of the host slows every variant
            for name, fn in variants.items():
                sync()
                start = time.perf_counter()
                forward(fn)
                sync()
                durations[name].append((time.perf_counter() - start) * 1000)
    for name, ds in durations.items():
        report["variants"][name].update(ms_median=statistics.median(ds), ms_min=min(ds), ms_max=max(ds))
        progress(
            f"  {name:20s} {statistics.median(ds):8.1f} ms (min {min(ds):.1f}, max {max(ds):.1f}), "
            f"max |diff| {report['variants'][name]['max_abs_diff_vs_definition']:.1e}"
        )
    return report


def _blocked(tile: tuple[int, int]) -> AttentionFn:
    def run(q, k, v, rpb, kernel, scale):
        return nb.blocked_neighborhood_attention(q, k, v, rpb, kernel, scale, tile=tile)

    return run


def markdown_table(report: dict) -> str:
    lines = [
        f"{report['model']}'s N blocks, batch {report['batch']}, {report['device']} "
        f"{report['dtype']}: ms per forward (median of turns)",
        "",
        "| variant | ms | min-max | max abs diff vs NATTEN's definition |",
        "|---|---:|---:|---:|",
    ]
    for name, r in report["variants"].items():
        lines.append(
            f"| {name} | {r['ms_median']:.1f} | {r['ms_min']:.1f}-{r['ms_max']:.1f} | "
            f"{r['max_abs_diff_vs_definition']:.1e} |"
        )
    return "\n".join(lines)
