"""``python -m bench model``: images/s and latency of DAT per precision and batch size.

Measures our PyTorch model (eager fp32, bf16, fp16; with ``--cuda-graphs`` and ``--compile``
as graphs and compiled), with ``--exported`` its export under ONNX Runtime and TensorRT, and
with ``--official`` the official implementation under the same conditions (fp32 and
autocast), in one process so that the ratios are comparable. Each variant's top-1 is compared
with our fp32 on the same inputs. Detectors run at their test size, with random heads scaled to
find objects, their detections compared with our fp32's, and ``--breakdown`` splits one
forward by part (:mod:`bench.detector`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from models import create_model

from . import detector as bench_detector
from .machine import machine_description
from .timing import Measurement, measure, measure_interleaved, paired_speedups

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _variants(
    model_name: str,
    precisions: list[str],
    device: str,
    official_dir: str | None,
    compile_mode: str | None = None,
    graphs_max_batch: int = 0,
    exported: tuple[str, ...] = (),
    export_folder: Path | None = None,
    max_batch: int = 8,
    threads: int | None = None,
    progress: Callable[[str], None] = print,
    beside: tuple[str, ...] = (),
) -> dict[str, tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]]:
    """name -> (module, forward on an fp32 batch). ``graphs_max_batch``: also our model as the
    service's torch backend runs it with ``--cuda-graphs`` (CUDA only). ``exported``: also our
    model exported with the same weights, under those serving backends (into ``export_folder``).
    ``beside``: other registered models in the same precisions, named ``<model>-<precision>``."""
    base, variants = _precision_variants(
        "ours", model_name, precisions, device, compile_mode, graphs_max_batch
    )
    if exported:
        from .exported import exported_variants

        variants.update(
            exported_variants(
                base, model_name, exported, precisions, device, max_batch, export_folder, threads, progress
            )
        )
    for name in beside:  # another model, same precisions (and graphs): ratios between architectures
        other = create_model(name, pretrained=False)
        if other.task != base.task or other.input_size != base.input_size:
            raise ValueError(
                f"--beside {name}: a {other.task} model at {other.input_size}px cannot "
                f"take {model_name}'s {base.task} inputs at {base.input_size}px"
            )
        variants.update(_precision_variants(name, name, precisions, device, None, graphs_max_batch)[1])
    if official_dir:
        from .official import OfficialLogits, load_official_dat

        official = OfficialLogits(load_official_dat(official_dir)(**base.config.to_dict()))
        official.official.load_state_dict(base.state_dict())
        official = official.to(device).eval()
        variants["official-fp32"] = (official, official)
        autocast_dtype = torch.float16 if device.startswith("cuda") else torch.bfloat16
        tag = "fp16" if autocast_dtype == torch.float16 else "bf16"

        def autocast_forward(x, m=official, d=autocast_dtype):
            with torch.autocast(device.split(":")[0], dtype=d):
                return m(x).float()

        variants[f"official-autocast-{tag}"] = (official, autocast_forward)
    return variants


def _precision_variants(
    label: str,
    model_name: str,
    precisions: list[str],
    device: str,
    compile_mode: str | None,
    graphs_max_batch: int,
) -> tuple[torch.nn.Module, dict[str, tuple[torch.nn.Module, Callable]]]:
    """One registered model (random weights, the same in every precision) as ``<label>-<precision>``,
    and with ``graphs_max_batch`` on CUDA as the service's ``--cuda-graphs`` (and, with
    ``compile_mode``, ``--torch-compile``) runs it; returns the fp32 model too."""
    base = create_model(model_name, pretrained=False).to(device)
    if bench_detector.is_detector(base):  # random weights that find something: NMS and masks work
        bench_detector.make_random_weights_detect(base)
    variants: dict[str, tuple[torch.nn.Module, Callable]] = {}
    for precision in precisions:
        dtype = _DTYPES[precision]
        if dtype == torch.float32:
            model = base
        else:
            model = create_model(model_name, pretrained=False).to(device, dtype)
            model.load_state_dict(base.state_dict())
        variants[f"{label}-{precision}"] = (model, _forward(model, dtype))
        graphs_here = bool(graphs_max_batch) and device.startswith("cuda")
        if compile_mode and not graphs_here:  # with graphs: compiled as the service runs it, below
            compiled = torch.compile(model, mode=None if compile_mode == "default" else compile_mode)
            variants[f"{label}-{precision}-compiled"] = (
                model,
                lambda x, m=compiled, d=dtype: m(x.to(d)).float(),
            )
        if graphs_here:
            from service.backends.torch import CudaGraphs  # as the service's --cuda-graphs runs it

            # with --compile, also as the service's --torch-compile: the largest bucket compiled
            for compiled in (False, True) if compile_mode else (False,):
                with torch.inference_mode():
                    graphs = CudaGraphs(
                        model, graphs_max_batch, model.input_size, device, dtype, compiled=compiled
                    )
                    graphs.check_against(model)
                variants[f"{label}-{precision}-graphs" + ("-compiled" if compiled else "")] = (
                    model,
                    lambda x, g=graphs, d=dtype: g.run(x.to(d))[0].float(),
                )
    return base, variants


def _forward(model: torch.nn.Module, dtype: torch.dtype) -> Callable:
    """The model on an fp32 batch in ``dtype``: logits, or a detector's outputs, as float32."""
    if bench_detector.is_detector(model):
        return lambda x: bench_detector.outputs_tuple(model(x.to(dtype)))
    return lambda x: model(x.to(dtype)).float()


def run(
    model_name: str,
    batch_sizes: tuple[int, ...],
    precisions: tuple[str, ...] = ("fp32", "bf16"),
    device: str = "cpu",
    official_dir: str | None = None,
    warmup: int = 2,
    repeats: int = 5,
    min_seconds: float = 0.0,
    progress: Callable[[str], None] = print,
    compile_mode: str | None = None,
    cuda_graphs: bool = False,
    interleave: bool = False,
    exported: tuple[str, ...] = (),
    threads: int | None = None,
    beside: tuple[str, ...] = (),
    breakdown: bool = False,
) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
        torch.manual_seed(0)
        variants = _variants(
            model_name,
            list(precisions),
            device,
            official_dir,
            compile_mode,
            max(batch_sizes) if cuda_graphs else 0,
            exported,
            Path(folder),
            max(batch_sizes),
            threads,
            progress,
            beside,
        )
        report = _measure(
            variants,
            model_name,
            batch_sizes,
            device,
            warmup,
            repeats,
            min_seconds,
            progress,
            interleave,
            beside,
        )
        base = next(iter(variants.values()))[0]
        if breakdown and bench_detector.is_detector(base):
            progress("  where one forward's time goes, batch 1 ...")
            report["breakdown"] = bench_detector.breakdowns(
                base, Path(folder), threads, max(1, repeats // 2), progress
            )
        return report


def _owner(variant: str, beside: tuple[str, ...]) -> str | None:
    """The ``beside`` model a variant measures, or None for ours (and the official model)."""
    return next((name for name in beside if variant.startswith(f"{name}-")), None)


def _measure(
    variants: dict,
    model_name: str,
    batch_sizes: tuple[int, ...],
    device: str,
    warmup: int,
    repeats: int,
    min_seconds: float,
    progress: Callable[[str], None],
    interleave: bool,
    beside: tuple[str, ...] = (),
) -> dict:
    sync = _synchronizer(device)
    ours = next(iter(variants.values()))[0]  # the first variant is ours
    height, width = (
        bench_detector.input_shape(ours) if bench_detector.is_detector(ours) else (ours.input_size,) * 2
    )
    check = torch.randn(max(batch_sizes), 3, height, width, device=device)
    results: list[Measurement] = []
    speedups: list[dict] = []
    agreement: dict[str, dict] = {}
    with torch.inference_mode():
        first = next(iter(variants))
        outputs = {name: forward(check) for name, (_, forward) in variants.items()}
        if bench_detector.is_detector(ours):
            agreement = bench_detector.agreements(ours, check, outputs, first)
        for name, logits in outputs.items() if not agreement else ():
            owner = _owner(name, beside)  # a beside model's variants against its own fp32
            reference = outputs[f"{owner}-fp32" if f"{owner}-fp32" in outputs else first]
            agreement[name] = {
                "top1_agreement_with_ours_fp32": float(
                    (logits.argmax(1) == reference.argmax(1)).float().mean()
                ),
                "max_abs_diff_vs_ours_fp32": float((logits - reference).abs().max()),
            }
        for batch in batch_sizes if interleave else ():
            x = check[:batch]
            progress(f"  all variants, taking turns, batch {batch:4d} ...")
            measured = measure_interleaved(
                {name: lambda f=forward, x=x: f(x) for name, (_, forward) in variants.items()},
                batch,
                warmup=warmup,
                repeats=repeats,
                synchronize=sync,
            )
            for m in measured:
                progress(_summary_line(m))
            results.extend(measured)
            speedups.extend(paired_speedups(measured, _speedup_reference(variants)))
            for m in measured:  # each of ours over a beside model in the same precision
                owner = _owner(m.variant, beside)
                if owner:
                    ours = "ours-" + m.variant[len(owner) + 1 :]
                    speedups.extend(r for r in paired_speedups(measured, m.variant) if r["variant"] == ours)
        for name, (_, forward) in variants.items() if not interleave else ():
            for batch in batch_sizes:
                x = check[:batch]
                progress(f"  {name:24s} batch {batch:4d} ...")
                m = measure(
                    name,
                    batch,
                    lambda f=forward, x=x: f(x),
                    warmup=warmup,
                    repeats=repeats,
                    synchronize=sync,
                    min_seconds=min_seconds,
                )
                results.append(m)
                progress(_summary_line(m))
    return {
        "model": model_name,
        "device": device,
        "machine": machine_description(device),
        "interleaved": interleave,
        "results": [r.to_dict() for r in results],
        "agreement": agreement,
        "paired_speedups": speedups,
    }


def _summary_line(m: Measurement) -> str:
    return (
        f"  {m.variant:24s} batch {m.batch_size:4d}: {_rate(m.images_per_second):>8s} img/s "
        f"(min {_rate(m.ips_min)}, max {_rate(m.ips_max)}), p50 {m.latency_ms_p50:.1f} ms"
    )


def _rate(images_per_second: float) -> str:
    """One decimal, or three significant digits below 1 img/s (a detector at 1333 x 800 on a CPU)."""
    return f"{images_per_second:.1f}" if images_per_second >= 1 else f"{images_per_second:.3g}"


def _synchronizer(device: str) -> Callable[[], None]:
    """What makes a timed run wait for the device's queued work."""
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def _speedup_reference(variants: dict) -> str:
    """The official eager fp32 where it is measured (the issue's bars are against it), else
    our first variant."""
    return "official-fp32" if "official-fp32" in variants else next(iter(variants))


def profile(
    model_name: str, precision: str, batch: int, device: str, official_dir: str | None, rows: int = 15
) -> str:
    """Where the time of one forward goes: torch.profiler's top operators and kernels, for our
    model and (with ``official_dir``) the official one under autocast, on the same inputs."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    variants = _variants(model_name, [precision], device, official_dir)
    names = [f"ours-{precision}"] + [n for n in variants if n.startswith("official-autocast")]
    sync = _synchronizer(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    sort = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    size = variants[names[0]][0].input_size
    x = torch.randn(batch, 3, size, size, device=device)
    tables = []
    with torch.inference_mode():
        for name in names:
            forward = variants[name][1]
            for _ in range(3):
                forward(x)
            sync()
            with torch_profile(activities=activities) as prof:
                forward(x)
                sync()
            tables.append(
                f"== {name}, batch {batch}\n" + prof.key_averages().table(sort_by=sort, row_limit=rows)
            )
    return "\n".join(tables)


def markdown_table(report: dict) -> str:
    detections = any("detections_matched_vs_ours_fp32" in a for a in report["agreement"].values())
    what = "detections matched" if detections else "top-1"
    lines = [
        f"| variant | batch | img/s (median) | min-max | p50 latency ms | {what} vs ours fp32 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        entry = report["agreement"][r["variant"]]
        agree = entry["detections_matched_vs_ours_fp32" if detections else "top1_agreement_with_ours_fp32"]
        lines.append(
            f"| {r['variant']} | {r['batch_size']} | {_rate(r['images_per_second'])} | "
            f"{_rate(r['ips_min'])}-{_rate(r['ips_max'])} | {r['latency_ms_p50']:.1f} | "
            f"{agree:.0%} |"
        )
    if report.get("paired_speedups"):
        lines += [
            "",
            "| variant | batch | speed-up over | median of paired rounds | min-max | rounds |",
            "|---|---:|---|---:|---:|---:|",
        ]
        lines += [
            f"| {r['variant']} | {r['batch_size']} | {r['reference']} | {r['median']:.2f}x | "
            f"{r['min']:.2f}-{r['max']:.2f} | {r['rounds']} |"
            for r in report["paired_speedups"]
        ]
    if report.get("breakdown"):
        lines += ["", bench_detector.breakdown_table(report["breakdown"])]
    return "\n".join(lines)


def write_report(report: dict, out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.json").write_text(json.dumps(report, indent=2))
    (out / "model.md").write_text(markdown_table(report) + "\n")
    try:
        from .plots import throughput_vs_batch

        throughput_vs_batch(report, out / "model_throughput.png")
    except ImportError:
        print("matplotlib not installed: no plot")
    return out
