"""One export, step by step: model -> ONNX -> verification -> TensorRT engine -> manifest.

    from export.pipeline import ExportOptions, run_export
    manifest = run_export(ExportOptions(out="exports/digits"))          # dat_digits, fp32

Every step prints its progress and time. The manifest is written last; an export that fails
verification gets a manifest with ``status: failed`` (which :meth:`Manifest.load` refuses)
and raises :class:`VerificationFailed`. Problems with the request itself (unknown model,
missing file, checkpoint that does not fit, impossible options) raise :class:`ExportError`.
"""

from __future__ import annotations

import contextlib
import datetime
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import models as model_zoo
from models.segmenter import RetinaNetSegmenter
from runtimes import manifest as mf
from runtimes import tensorrt as trt_runtime
from runtimes.hashing import sha256_file
from runtimes.manifest import BatchRange

from . import onnx as onnx_export
from . import symbolics, validate
from . import tensorrt as trt_export

if TYPE_CHECKING:
    from models import DAT, RCNN, RetinaNet

DEFAULT_MODEL = "dat_digits"
GRID_SAMPLE_CHOICES = ("auto", "native", "decomposed")
# The tasks whose graphs the export writes (a task fixes the outputs and how they are compared).
TASKS = {name: task for name, task in model_zoo.TASKS.items() if task.exportable}
ONNX_FILE = "model.onnx"
DECOMPOSED_ONNX_FILE = "model.decomposed.onnx"
ENGINE_FILE = "model.plan"

Log = Callable[[str], None]


class ExportError(Exception):
    """The request cannot be carried out as given (one-line message for the user)."""


class EngineUnavailable(ExportError):
    """A TensorRT engine was required where TensorRT or a CUDA GPU is missing."""


class VerificationFailed(Exception):
    """An artifact did not match PyTorch; the manifest (status failed) has the figures."""


@dataclass
class ExportOptions:
    out: str | Path
    model: str | None = None  # registered name; default DEFAULT_MODEL unless config is given
    config: str | Path | None = None  # official YAML / JSON (config mapping)
    checkpoint: str | Path | None = None
    random_weights: bool = False  # allow a model without weights (smoke tests only)
    name: str | None = None  # model name for the manifest (default: registered name / file stem)
    labels: str | Path | None = None
    task: str | None = None  # a name in TASKS (classification / detection); None: the model's own
    verify_images: tuple[str | Path, ...] = ()  # real pictures to verify on (detectors)
    precision: str = "fp32"
    opset: int = onnx_export.DEFAULT_OPSET
    batch: BatchRange = field(default_factory=BatchRange)
    grid_sample: str = "auto"
    engine: bool | None = None  # True: required; False: never; None: where TensorRT runs
    verify_batches: tuple[int, ...] = ()  # extra batch sizes to verify
    workspace_gb: float = trt_export.DEFAULT_WORKSPACE_GB


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


def _first_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    text = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return text if len(text) <= 400 else text[:400] + " ..."


def check_options(options: ExportOptions) -> None:
    try:  # every export is verified with it: say so before the slow part, not after
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ExportError(
            "ONNX Runtime is not installed: every export is verified with it "
            "(pip install 'dat-serve[cpu]', or [gpu] on a GPU host)"
        ) from None
    if options.task is not None and options.task not in TASKS:
        raise ExportError(f"task {options.task!r} is not supported yet; choose from {sorted(TASKS)}")
    if options.grid_sample not in GRID_SAMPLE_CHOICES:
        raise ExportError(f"grid-sample must be one of {GRID_SAMPLE_CHOICES}")
    if options.opset not in onnx_export.SUPPORTED_OPSETS:
        ops = onnx_export.SUPPORTED_OPSETS
        raise ExportError(f"opset {options.opset} is not supported; choose {ops.start}-{ops.stop - 1}")
    if options.grid_sample == "native" and options.opset not in symbolics.NATIVE_OPSETS:
        raise ExportError(
            f"--grid-sample native needs opset 18 or 19: opset {options.opset} names "
            "the bilinear mode 'linear', which TensorRT reads as nearest; use "
            "--grid-sample decomposed (or auto)"
        )
    if options.model and options.config:
        raise ExportError("give either a registered model name or a config file, not both")
    for what, path in (
        ("config", options.config),
        ("checkpoint", options.checkpoint),
        ("labels", options.labels),
        *(("image", p) for p in options.verify_images),
    ):
        if path is not None and not Path(path).is_file():
            raise ExportError(f"{what} file not found: {path}")


def load_model(options: ExportOptions) -> DAT | RetinaNet | RCNN:
    """The model to export, in eval mode, with its weights; raises ExportError."""
    import models
    from models.labels import read_labels

    source = options.config or options.model or DEFAULT_MODEL
    try:
        labels = read_labels(options.labels) if options.labels else None
        weights = None if options.config is not None else models.get_spec(str(source)).weights
        embedded = weights is not None
        if options.checkpoint is None and not embedded and not options.random_weights:
            raise ExportError(
                f"{source} has no embedded weights: pass --checkpoint FILE "
                "(or --random-weights for a smoke test)"
            )
        # --random-weights only stands in for weights that are absent, never replaces them.
        absent = options.random_weights and not (weights is not None and weights.is_file())
        model = models.create_model(
            source, labels=labels, pretrained=options.checkpoint is None and not absent
        )
        if options.checkpoint is not None:
            models.load_checkpoint(model, options.checkpoint)
        if options.name:
            model.info.name = options.name
        if options.task is not None and TASKS[options.task] is not model.task:
            raise ExportError(f"{source} is a {model.task} model, not {options.task}")
        if not model.task.exportable:
            raise ExportError(
                f"{source} is an {model.task} model: its ONNX export is not written yet "
                f"(exportable tasks: {', '.join(sorted(TASKS))})"
            )
        if isinstance(model, models.RCNN) and not model.task.has_masks:  # a Faster R-CNN
            raise ExportError(
                f"{source} is an R-CNN detector without a mask head, which only the torch backend "
                "serves: ONNX export takes classifiers, RetinaNet, Mask R-CNN and Cascade Mask R-CNN"
            )
        if isinstance(model, RetinaNetSegmenter):
            raise ExportError(
                f"{source} is a RetinaNet with a mask head (the digits segmenter), which only the torch "
                "backend serves: ONNX export takes classifiers, RetinaNet, Mask R-CNN and Cascade Mask R-CNN"
            )
    except ExportError:
        raise
    except (KeyError, ValueError, OSError) as exc:  # unknown name, bad config, CheckpointError
        raise ExportError(_first_line(exc)) from None
    except Exception as exc:  # e.g. a YAML syntax error
        raise ExportError(f"cannot build the model: {type(exc).__name__}: {_first_line(exc)}") from None
    return model.eval()


def _verification_images(model: DAT | RetinaNet | RCNN, paths) -> torch.Tensor | None:
    """Pictures through the model's own preprocessing (None: seeded random inputs), each on
    the export's square canvas (a keep-ratio detector's input is padded with zeros to it)."""
    if not paths:
        return None
    from PIL import Image

    size = model.input_size
    tensors = []
    for path in paths:
        try:
            with Image.open(path) as image:
                tensor = model.info.preprocessing(image.convert("RGB"))
        except OSError as exc:
            raise ExportError(f"cannot read verification image {path}: {exc}") from None
        canvas = torch.zeros(3, size, size)
        canvas[:, : tensor.shape[1], : tensor.shape[2]] = tensor
        tensors.append(canvas)
    return torch.stack(tensors)


def _check_detections(
    model: DAT | RetinaNet | RCNN, images: torch.Tensor | None, options: ExportOptions, log: Log
) -> None:
    """Before the slow part: a detector's verification compares its detections, so PyTorch must
    find some in the inputs (an untrained head finds nothing in random noise); ExportError if not."""
    batch_sizes = validate.verification_batches(options.batch, options.verify_batches)
    inputs = images if images is not None else validate.sample_inputs(model.input_size, max(batch_sizes))
    found = 0
    for start in range(0, inputs.shape[0], 8):
        labels = validate.reference_outputs(model, inputs[start : start + 8])[2]
        found += int((labels >= 0).sum())
    what = f"the {inputs.shape[0]} --verify-images" if images is not None else "seeded random inputs"
    if not found:
        raise ExportError(
            f"the detector found no objects in {what}, so verifying the export would "
            "compare nothing: pass --verify-images with pictures it finds objects in"
        )
    log(f"    the reference finds {found} objects in {what}")


def _weights_info(options: ExportOptions) -> dict:
    if options.checkpoint is not None:
        path = Path(options.checkpoint)
        return {"source": "checkpoint", "file": path.name, "sha256": sha256_file(path)}
    import models

    spec = None if options.config else models.get_spec(options.model or DEFAULT_MODEL)
    if spec is not None and spec.weights is not None and spec.weights.is_file():
        return {"source": "embedded", "file": spec.weights.name, "sha256": sha256_file(spec.weights)}
    return {"source": "random", "file": None, "sha256": None}


def _tool_versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime
    import onnxscript

    tools = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
    }
    version = trt_runtime.tensorrt_version()
    if version:
        tools["tensorrt"] = version
    return tools


def stale_reason(options: ExportOptions) -> str | None:
    """Why the artifacts in ``options.out`` do not match this request (None: they are current).

    Current means: a manifest with status ok whose files hash as recorded, made from the same
    weights, precision, opset, grid-sample mode and batch range, and, where an engine can be
    built here, an engine built by this TensorRT version for this GPU.
    """
    try:
        manifest = mf.Manifest.load(options.out)
    except mf.ManifestError as exc:
        return str(exc)
    wanted = _weights_info(options)
    if wanted["source"] == "random" or manifest.weights.get("sha256") != wanted["sha256"]:
        return "the weights differ from the ones exported"
    for what, have, want in (
        ("precision", manifest.precision, options.precision),
        ("opset", manifest.opset, options.opset),
        ("grid-sample mode", manifest.grid_sample, options.grid_sample),
        ("batch range", manifest.batch, options.batch),
        ("task", manifest.task.name, options.task or manifest.task.name),
    ):
        if have != want:
            return f"{what} {have} was exported, {want} is asked for"
    if options.engine is not False and trt_runtime.unavailable_reason() is None:
        info = manifest.engine_info
        here = {"tensorrt": trt_runtime.tensorrt_version() or "", "device": torch.cuda.get_device_name()}
        if manifest.engine_path is None:
            return "no TensorRT engine was built"
        if {k: info.get(k) for k in here} != here:
            return (
                f"the engine was built with TensorRT {info.get('tensorrt')} on "
                f"{info.get('device')}; here: TensorRT {here['tensorrt']} on {here['device']}"
            )
    return None


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
        weights = _weights_info(options)
        log(
            f"    {model.info.name} ({model.task}): "
            f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
            f"{model.input_size}px, {model.num_classes} classes, {weights['source']} weights"
        )
        images = _verification_images(model, options.verify_images)
        if weights["source"] == "random":
            notes.append("random weights: a smoke-test export, not a usable model")
        if model.task.finds_objects:
            _check_detections(model, images, options, log)

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

    def verify_onnx(result: onnx_export.OnnxExport) -> validate.Verification:
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

    artifacts = {"onnx": mf.Artifact(ONNX_FILE, "onnx", primary.grid_sample)}
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

        def verify(engine_path: Path) -> validate.Verification:
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
            verification["tensorrt"] = result.attempts[-1].verification or validate.Verification(
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
            artifacts["engine"] = mf.Artifact(
                ENGINE_FILE, "tensorrt", chosen.grid_sample, source=chosen.onnx, extra=extra
            )
            if chosen.onnx != ONNX_FILE:
                artifacts["engine_onnx"] = mf.Artifact(chosen.onnx, "onnx", chosen.grid_sample)
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
            input=mf.TensorSpec(mf.INPUT_NAME, "float32", tuple(primary.input_shape), "NCHW"),
            outputs=tuple(
                mf.TensorSpec(name, model.task.output(name).dtype, tuple(shape))
                for name, shape in primary.output_shapes.items()
            ),
            category_ids=tuple(model.info.category_ids),
            batch=options.batch,
            artifacts=artifacts,
            verification=report,
            tools=_tool_versions(),
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
