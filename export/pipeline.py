"""One export, step by step: model -> ONNX -> verification -> TensorRT engine -> manifest.

    from export.options import ExportOptions
    from export.pipeline import run_export
    manifest = run_export(ExportOptions(out="exports/digits"))          # dat_digits, fp32

Every step prints its progress and time. The manifest is written last; an export that fails
verification gets a manifest with ``status: failed`` (which :meth:`Manifest.load` refuses)
and raises :class:`VerificationFailed`. Problems with the request itself (unknown model,
missing file, checkpoint that does not fit, impossible options) raise
:class:`export.options.ExportError`. The steps' parts live beside this module:
:mod:`export.options` (the request), :mod:`export.loading` (the model and the inputs to
verify on), :mod:`export.provenance` (weights, tools, staleness).
"""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from runtimes import manifest as mf
from runtimes import tensorrt as trt_runtime
from runtimes.manifest_fields import Artifact, TensorSpec

from . import onnx as onnx_export
from . import symbolics, validate
from . import tensorrt as trt_export
from .loading import check_detections, load_model, verification_images
from .options import ExportError, ExportOptions, check_options
from .provenance import tool_versions, weights_info
from .verification import Verification

ONNX_FILE = "model.onnx"
DECOMPOSED_ONNX_FILE = "model.decomposed.onnx"
ENGINE_FILE = "model.plan"

Log = Callable[[str], None]


class EngineUnavailable(ExportError):
    """A TensorRT engine was required where TensorRT or a CUDA GPU is missing."""


class VerificationFailed(Exception):
    """An artifact did not match PyTorch; the manifest (status failed) has the figures."""


class Progress:
    """Numbered steps with their wall time, printed as they go."""

    def __init__(self, log: Log):
        self.log = log
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, key: str, title: str) -> Iterator[None]:
        self.log(f"[{len(self.timings) + 1}] {title} ...")
        start = time.perf_counter()
        self.timings[key] = 0.0
        try:
            yield
        finally:
            self.timings[key] = round(time.perf_counter() - start, 2)
        self.log(f"    done in {self.timings[key]:.1f}s")


def run_export(options: ExportOptions, log: Log = print) -> mf.Manifest:
    """Carries out one export; returns the written manifest (status ok).

    Raises ExportError (bad request, nothing written) or VerificationFailed (manifest written
    with status failed).
    """
    check_options(options)
    out = Path(options.out)
    progress = Progress(log)
    notes: list[str] = []

    # TensorRT: decide before the slow part, so an impossible request fails fast.
    reason = trt_runtime.unavailable_reason() if options.engine is not False else None
    if options.engine and reason:
        raise EngineUnavailable(f"a TensorRT engine was requested but {reason}")
    build_engine = options.engine is not False and reason is None
    if options.engine is None and reason:
        notes.append(f"no TensorRT engine: {reason}")
        log(f"TensorRT: no engine will be built ({reason}); exporting ONNX only")
    elif options.engine is False:
        log("TensorRT: skipped (--no-engine)")

    with progress.step("load", "Loading the model"):
        model = load_model(options)
        cfg = model.config
        weights = weights_info(options)
        log(
            f"    {model.info.name} ({model.task}): "
            f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
            f"{model.input_size}px, {model.num_classes} classes, {weights['source']} weights"
        )
        images = verification_images(model, options.verify_images)
        references = validate.References(model)  # PyTorch's outputs, shared by every check below
        if weights["source"] == "random":
            notes.append("random weights: a smoke-test export, not a usable model")
        if model.task.finds_objects:
            check_detections(references, images, options, log)

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create output folder {out}: {exc.strerror}") from None
    (out / mf.MANIFEST_NAME).unlink(missing_ok=True)  # a stale manifest must not vouch for us
    for stale in (DECOMPOSED_ONNX_FILE, ENGINE_FILE):
        (out / stale).unlink(missing_ok=True)

    first_mode = options.grid_sample
    if first_mode == "auto":
        first_mode = "native" if options.opset in symbolics.NATIVE_OPSETS else "decomposed"
    batch_sizes = validate.verification_batches(options.batch, options.verify_batches)

    def export(mode: str, file: str) -> onnx_export.OnnxExport:
        with progress.step(
            f"onnx_{mode}",
            f"Exporting ONNX ({mode} grid sampling, "
            f"{options.precision}, opset {options.opset}) -> {out / file}",
        ):
            result = onnx_export.export_onnx(
                model,
                out / file,
                grid_sample=mode,
                precision=options.precision,
                opset=options.opset,
                batch=options.batch,
            )
            grid = result.node_counts.get("GridSample", 0)
            outputs = ", ".join(f"{k} {v}" for k, v in result.output_shapes.items())
            log(
                f"    {sum(result.node_counts.values())} nodes, {grid} GridSample; input "
                f"{result.input_shape}, output {outputs}"
            )
        return result

    def verify_onnx(result: onnx_export.OnnxExport) -> Verification:
        with progress.step(
            f"verify_onnx_{result.grid_sample}",
            f"Verifying with onnx.checker and ONNX Runtime at batch sizes {batch_sizes}",
        ):
            report = validate.verify_onnx(
                result.path,
                model,
                precision=options.precision,
                batch_sizes=batch_sizes,
                input_name=mf.INPUT_NAME,
                images=images,
                references=references,
            )
            log(f"    {report.summary()}")
        return report

    primary = export(first_mode, ONNX_FILE)
    verification = {"onnxruntime": verify_onnx(primary)}
    if not verification["onnxruntime"].passed and options.grid_sample == "auto" and first_mode == "native":
        log("    native GridSample graph failed verification; falling back to decomposed")
        primary = export("decomposed", ONNX_FILE)
        verification["onnxruntime"] = verify_onnx(primary)
    passed = verification["onnxruntime"].passed

    artifacts = {"onnx": Artifact(ONNX_FILE, "onnx", primary.grid_sample)}
    engine_attempts: list[dict] = []
    if passed and build_engine:

        def onnx_for(mode: str) -> Path:
            # The engine's fallback graph is exported only when it is needed.
            return primary.path if mode == primary.grid_sample else export(mode, DECOMPOSED_ONNX_FILE).path

        def build(onnx_path: Path, engine_path: Path) -> Path:
            with progress.step(
                f"engine_build_{Path(onnx_path).stem}",
                f"Building a TensorRT engine from {Path(onnx_path).name}, "
                f"batch {options.batch.min}-{options.batch.max}",
            ):
                return trt_export.build_engine(
                    onnx_path,
                    engine_path,
                    input_name=mf.INPUT_NAME,
                    batch=options.batch,
                    image_size=model.input_size,
                    workspace_gb=options.workspace_gb,
                )

        def verify(engine_path: Path) -> Verification:
            with progress.step(
                f"engine_verify_{len(progress.timings)}", "Verifying the engine against PyTorch on the GPU"
            ):
                return trt_export.verify_engine(
                    engine_path,
                    model,
                    input_name=mf.INPUT_NAME,
                    output_names=model.task.output_names,
                    precision=options.precision,
                    batch_sizes=batch_sizes,
                    images=images,
                    references=references,
                )

        result = trt_export.build_verified(
            options.grid_sample,
            primary.grid_sample,
            onnx_for=onnx_for,
            engine_for=lambda mode: out / ENGINE_FILE,
            build=build,
            verify=verify,
            log=log,
        )
        engine_attempts = [a.to_dict() for a in result.attempts]
        chosen = result.chosen
        if chosen is None:
            passed = False
            verification["tensorrt"] = result.attempts[-1].verification or Verification(
                runtime="tensorrt",
                artifact=ENGINE_FILE,
                precision=options.precision,
                tolerance_rule="",
                error=result.attempts[-1].error,
            )
        else:
            assert chosen.verification is not None  # chosen: it passed its verification
            verification["tensorrt"] = chosen.verification
            extra = {"tensorrt": trt_runtime.tensorrt_version() or "", "device": torch.cuda.get_device_name()}
            artifacts["engine"] = Artifact(
                ENGINE_FILE, "tensorrt", chosen.grid_sample, source=chosen.onnx, extra=extra
            )
            if chosen.onnx != ONNX_FILE:
                artifacts["engine_onnx"] = Artifact(chosen.onnx, "onnx", chosen.grid_sample)
            if len(result.attempts) > 1:
                notes.append(
                    f"the engine was built from the {chosen.grid_sample} graph after "
                    f"the {result.attempts[0].grid_sample} engine failed"
                )

    status = "ok" if passed else "failed"
    report: dict[str, Any] = {
        runtime: {**v.to_dict(), "summary": v.summary()} for runtime, v in verification.items()
    }
    if engine_attempts:
        report["tensorrt_attempts"] = engine_attempts
    with progress.step("manifest", f"Writing {out / mf.MANIFEST_NAME} (status {status})"):
        manifest = mf.Manifest(
            status=status,
            task=model.task,
            model_name=model.info.name,
            model_config=cfg.to_dict(),
            preprocessing=model.info.preprocessing,
            labels=tuple(model.info.labels),
            precision=options.precision,
            opset=options.opset,
            grid_sample=options.grid_sample,
            input=TensorSpec(mf.INPUT_NAME, "float32", tuple(primary.input_shape), "NCHW"),
            outputs=tuple(
                TensorSpec(name, model.task.output(name).dtype, tuple(shape))
                for name, shape in primary.output_shapes.items()
            ),
            category_ids=tuple(model.info.category_ids),
            batch=options.batch,
            artifacts=artifacts,
            verification=report,
            tools=tool_versions(),
            timings_s={k: v for k, v in progress.timings.items() if k != "manifest"},
            notes=tuple(notes),
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            weights=weights,
        )
        mf.write_manifest(out, manifest)
    for note in notes:
        log(f"note: {note}")
    if not passed:
        failed = "; ".join(v.summary() for v in verification.values() if not v.passed)
        raise VerificationFailed(f"verification failed: {failed}")
    total = sum(progress.timings.values())
    log(
        f"export ok in {total:.1f}s: {', '.join(a.file for a in artifacts.values())} + "
        f"{mf.MANIFEST_NAME} in {out}"
    )
    return mf.Manifest.load(out)
