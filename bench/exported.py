"""Our model exported (``python -m export``) and run by the service's own serving backends,
as ``python -m bench model --exported onnxruntime,tensorrt`` measures it beside the eager
variants: the same weights, so its top-1 agreement with our fp32 means something.

Each variant returns logits on the host, as serving does (``Backend.run``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

BACKENDS = ("onnxruntime", "tensorrt")
EXPORTABLE = ("fp32", "fp16")  # the export's precisions (bf16 has no ONNX Runtime / TensorRT path here)


def exported_variants(
    model: torch.nn.Module,
    model_name: str,
    backends: tuple[str, ...],
    precisions: list[str],
    device: str,
    max_batch: int,
    folder: Path,
    threads: int | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, tuple[torch.nn.Module, Callable]]:
    """name -> (module, forward on an fp32 batch) for every requested backend that runs here,
    per exportable precision (fp16 only on a GPU); what cannot run is said, then skipped."""
    try:
        from export.options import ExportError
    except ImportError as exc:  # a GPU box with torch only
        progress(f"  exported backends: skipped, the export needs {exc.name} (pip install .)")
        return {}
    from models import save_safetensors
    from service.backends import BackendError
    from service.backends.onnxruntime import OnnxRuntimeBackend
    from service.backends.tensorrt import TensorRTBackend, tensorrt_available

    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise ValueError(f"unknown backends {sorted(unknown)}; choose from {', '.join(BACKENDS)}")
    want_engine = "tensorrt" in backends and tensorrt_available()
    if "tensorrt" in backends and not want_engine:
        progress("  tensorrt: skipped, no TensorRT or no CUDA GPU here")
    on_gpu = device.startswith("cuda")
    weights = folder / "weights.safetensors"
    save_safetensors(model, weights)
    variants: dict[str, tuple[torch.nn.Module, Callable]] = {}
    for precision in precisions:
        if precision not in EXPORTABLE or (precision == "fp16" and not on_gpu):
            continue
        out = folder / f"export-{precision}"
        engine_note = " and a TensorRT engine" if want_engine else ""
        progress(f"  exporting {model_name} {precision} to ONNX{engine_note} ...")
        try:
            export_model(model_name, weights, out, max_batch, precision=precision, engine=want_engine)
        except (ImportError, ExportError) as exc:  # e.g. no onnxruntime to verify the export with
            progress(f"  export {precision}: skipped, {type(exc).__name__}: {exc}")
            continue
        for name in backends:
            if name == "tensorrt" and not want_engine:
                continue
            backend = (
                OnnxRuntimeBackend(out, device=device, threads=threads)
                if name == "onnxruntime"
                else TensorRTBackend(out, device=device)
            )
            try:
                variants[f"{name}-{precision}"] = (model, _outputs(backend, model, device))
            except BackendError as exc:
                progress(f"  {name}-{precision}: skipped, {exc}")
    return variants


def export_model(
    model: str,
    checkpoint: str | Path | None,
    out: Path,
    max_batch: int,
    *,
    precision: str = "fp32",
    engine: bool = False,
) -> Path:
    """``python -m export`` of a registered model or config file into ``out``, quietly, for
    batches 1 to ``max_batch``; random weights where no checkpoint is given."""
    from export.options import ExportOptions
    from export.pipeline import run_export
    from runtimes.manifest_fields import BatchRange

    is_file = Path(model).suffix in (".json", ".yaml", ".yml", ".py")  # .py: an mmdet config
    run_export(
        ExportOptions(
            out=out,
            model=None if is_file else model,
            config=model if is_file else None,
            checkpoint=checkpoint,
            random_weights=checkpoint is None,
            precision=precision,
            batch=BatchRange(1, min(8, max_batch), max_batch),
            engine=engine,
        ),
        log=lambda line: None,
    )
    return out


def _outputs(backend, model: torch.nn.Module, device: str) -> Callable:
    """The backend on an fp32 batch: logits, or a detector's padded outputs (a keep-ratio
    detector's images go in as the server passes them, each of its own shape)."""
    from . import detector

    if not detector.is_detector(model):
        return _logits(backend, device)
    meta = backend.load()
    slots = getattr(model.config, "max_per_img", 100)

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if meta.max_side is None:  # a (B, 3, S, S) batch
            return detector.padded(backend.run(x.cpu()), slots)
        image = detector.image_meta(x.shape[2], x.shape[3])
        return detector.padded(backend.run([(i, image) for i in x.cpu()]), slots)

    return forward


def _logits(backend, device: str) -> Callable[[torch.Tensor], torch.Tensor]:
    backend.load()

    def forward(x: torch.Tensor) -> torch.Tensor:
        outputs = backend.run(x)
        return torch.from_numpy(np.stack([o.logits for o in outputs])).to(device)

    return forward
