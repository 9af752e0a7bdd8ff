"""TensorRT engines from our ONNX graphs, checked against PyTorch before they are kept.

Written against the TensorRT 10/11 Python API: name-based I/O, one optimization profile over
the batch range, ``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``, and
strongly typed networks (TensorRT 11 has nothing else and no ``BuilderFlag.FP16``: an fp16
engine comes from an fp16 ONNX graph). TF32 is switched off so an fp32 engine is fp32.

``tensorrt`` is imported lazily; ``runtimes.tensorrt.unavailable_reason`` says in words why
an engine cannot be built here (no package, no CUDA GPU) so the exporter can finish the ONNX
part. Engines are verified with ``runtimes.tensorrt.EngineRunner``, the runner that serves them.

:func:`build_verified` holds the fallback rule for ``--grid-sample auto``: an engine built
from the native-GridSample graph that fails to build or to match PyTorch is rebuilt from the
decomposed graph (TensorRT has open reports of wrong GridSample/deformable-attention results).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runtimes.manifest_fields import BatchRange
from runtimes.tensorrt import EngineError, EngineRunner, logger

from .validate import References, verify_runner
from .verification import Verification

DEFAULT_WORKSPACE_GB = 4.0


class EngineBuildError(EngineError):
    """TensorRT could not parse the graph or build an engine from it."""


def profile_shapes(batch: BatchRange, image_size: int) -> dict[str, tuple[int, int, int, int]]:
    """The optimization profile of the image input: NCHW shapes at min / opt / max batch."""
    return {
        name: (size, 3, image_size, image_size)
        for name, size in (("min", batch.min), ("opt", batch.opt), ("max", batch.max))
    }


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    input_name: str,
    batch: BatchRange,
    image_size: int,
    workspace_gb: float = DEFAULT_WORKSPACE_GB,
) -> Path:
    """Parses ``onnx_path``, builds a strongly typed engine with one profile, writes it."""
    import tensorrt as trt

    log = logger()
    builder = trt.Builder(log)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # TensorRT 10; in 11 every network is strongly typed
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {Path(onnx_path).name}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    shapes = profile_shapes(batch, image_size)
    profile.set_shape(input_name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT could not build an engine from {Path(onnx_path).name} (see the TensorRT log above)"
        )
    engine_path = Path(engine_path)
    engine_path.write_bytes(bytes(serialized))
    return engine_path


def verify_engine(
    engine_path: str | Path,
    model,
    *,
    input_name: str,
    output_names: Sequence[str],
    precision: str,
    batch_sizes: Sequence[int],
    images=None,
    references: References | None = None,
) -> Verification:
    """The engine against PyTorch on the same GPU (TF32 off on both sides)."""
    import torch

    try:
        run = EngineRunner(engine_path, input_name, output_names)
    except Exception as exc:
        return Verification(
            runtime="tensorrt",
            artifact=Path(engine_path).name,
            precision=precision,
            tolerance_rule="",
            error=str(exc),
            task=model.task,
        )
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        return verify_runner(
            run,
            model,
            runtime="tensorrt",
            artifact=engine_path,
            precision=precision,
            batch_sizes=batch_sizes,
            device="cuda",
            images=images,
            references=references,
        )
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
        model.to("cpu")


# --------------------------------------------------------------------------- fallback rule


@dataclass
class Attempt:
    grid_sample: str
    onnx: str
    engine: str | None = None
    error: str | None = None  # build failure
    verification: Verification | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.verification is not None and self.verification.passed

    def to_dict(self) -> dict:
        return {
            "grid_sample": self.grid_sample,
            "onnx": self.onnx,
            "engine": self.engine,
            "error": self.error,
            "passed": self.passed,
            "verification": self.verification.to_dict() if self.verification else None,
        }


@dataclass
class EngineResult:
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def chosen(self) -> Attempt | None:
        return next((a for a in self.attempts if a.passed), None)

    @property
    def passed(self) -> bool:
        return self.chosen is not None


def modes_to_try(requested: str, first: str) -> list[str]:
    """Grid-sample modes for the engine, in order: ``auto`` starts with the ONNX graph's mode
    (``first``) and falls back to ``decomposed``; an explicit mode is tried alone."""
    if requested == "auto":
        return [first] if first == "decomposed" else [first, "decomposed"]
    return [requested]


def build_verified(
    requested: str,
    first: str,
    *,
    onnx_for: Callable[[str], Path],
    engine_for: Callable[[str], Path],
    build: Callable[[Path, Path], Path],
    verify: Callable[[Path], Verification],
    log: Callable[[str], None] = print,
) -> EngineResult:
    """Builds and verifies engines mode by mode until one matches PyTorch.

    ``onnx_for(mode)`` returns (exporting on demand) the ONNX graph of a mode, ``engine_for``
    the engine path, ``build(onnx, engine)`` builds (raising on failure) and ``verify(engine)``
    checks; injected so the rule is testable without TensorRT.
    """
    result = EngineResult()
    for mode in modes_to_try(requested, first):
        onnx_path = onnx_for(mode)
        attempt = Attempt(grid_sample=mode, onnx=Path(onnx_path).name)
        result.attempts.append(attempt)
        try:
            engine_path = build(onnx_path, engine_for(mode))
        except Exception as exc:
            attempt.error = f"{type(exc).__name__}: {exc}"
            log(f"  {mode} engine: build failed ({attempt.error})")
            continue
        attempt.engine = Path(engine_path).name
        attempt.verification = verify(engine_path)
        log(f"  {mode} engine: {attempt.verification.summary()}")
        if attempt.passed:
            break
        Path(engine_path).unlink(missing_ok=True)  # never leave a wrong engine behind
        attempt.engine = None
    return result
