"""The build side of the fake ``tensorrt`` module (:mod:`tests.helpers.fake_tensorrt`):
``Builder``, ``OnnxParser``, the network, the builder config and optimization profiles. A built
plan holds the parsed ONNX graph; the build refuses what TensorRT refuses (a dynamic input
without a profile, a profile outside the input's fixed axes)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from .fake_tensorrt_types import (
    ONNX_TYPES,
    BuilderFlag,
    Dims,
    MemoryPoolType,
    NetworkDefinitionCreationFlag,
    serialize_plan,
)

if TYPE_CHECKING:
    from .fake_tensorrt import FakeTensorRT


def _tensors(values) -> list[dict]:
    out = []
    for value in values:
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
        out.append({"name": value.name, "dtype": ONNX_TYPES[value.type.tensor_type.elem_type], "shape": dims})
    return out


def builder_api(fake: FakeTensorRT, Logger: type) -> dict[str, type]:
    """The module's build classes, recording into ``fake`` and taking its ``Logger``."""

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.graph: bytes | None = None
            self.inputs: list[dict] = []
            self.outputs: list[dict] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        @property
        def num_outputs(self) -> int:
            return len(self.outputs)

    class IParserError:
        def __init__(self, text: str) -> None:
            self.text = text

        def desc(self) -> str:
            return self.text

        def __str__(self) -> str:
            return f"In node -1: {self.text}"

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
            assert isinstance(network, INetworkDefinition) and isinstance(logger, Logger)
            self.network = network
            self._errors: list[IParserError] = []

        def parse_from_file(self, path: str) -> bool:
            fake.record("OnnxParser.parse_from_file", path)
            if not isinstance(path, str):
                raise TypeError("parse_from_file takes a str path")
            self._errors = [IParserError(e) for e in fake.parse_errors]
            if self._errors:
                return False
            data = Path(path).read_bytes()
            graph = onnx.load_from_string(data).graph
            initializers = {i.name for i in graph.initializer}
            self.network.graph = data
            self.network.inputs = _tensors(i for i in graph.input if i.name not in initializers)
            self.network.outputs = _tensors(graph.output)
            return True

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index: int) -> IParserError:
            return self._errors[index]

    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[Dims, Dims, Dims]] = {}

        def set_shape(self, input: str, min, opt, max) -> None:  # noqa: A002 - TensorRT's names
            fake.record("IOptimizationProfile.set_shape", input, tuple(min), tuple(opt), tuple(max))
            self.shapes[input] = (Dims(min), Dims(opt), Dims(max))

    class IBuilderConfig:
        def __init__(self) -> None:
            self.pools: dict[Any, int] = {}
            self.flags = {BuilderFlag.TF32}  # TensorRT's default
            self.profiles: list[IOptimizationProfile] = []

        def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
            fake.record("IBuilderConfig.set_memory_pool_limit", pool, size)
            if not isinstance(pool, MemoryPoolType) or not isinstance(size, int):
                raise TypeError("set_memory_pool_limit(MemoryPoolType, int)")
            self.pools[pool] = size

        def clear_flag(self, flag: BuilderFlag) -> None:
            fake.record("IBuilderConfig.clear_flag", flag)
            self.flags.discard(flag)

        def set_flag(self, flag: BuilderFlag) -> None:
            fake.record("IBuilderConfig.set_flag", flag)
            self.flags.add(flag)

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            fake.record("IBuilderConfig.add_optimization_profile")
            self.profiles.append(profile)
            return len(self.profiles) - 1

    class Builder:
        def __init__(self, logger: Logger) -> None:
            fake.record("Builder", logger)
            assert isinstance(logger, Logger)

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            fake.record("Builder.create_network", flags)
            return INetworkDefinition(flags)

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig):
            fake.record(
                "Builder.build_serialized_network", network.flags, sorted(f.name for f in config.flags)
            )
            if fake.build_fails or network.graph is None:
                return None
            inputs = []
            for tensor in network.inputs:
                shape = list(tensor["shape"])
                if -1 in shape:  # TensorRT: a dynamic input needs a profile, within bounds
                    found = [p.shapes[tensor["name"]] for p in config.profiles if tensor["name"] in p.shapes]
                    if not found:
                        return None
                    lo, opt, hi = (list(d) for d in found[0])
                    fixed_ok = all(
                        s in (-1, a) and a == b == c for s, a, b, c in zip(shape, lo, opt, hi) if s != -1
                    )
                    if (
                        len(lo) != len(shape)
                        or not fixed_ok
                        or not all(a <= b <= c for a, b, c in zip(lo, opt, hi))
                    ):
                        return None
                    tensor = {**tensor, "profile": [lo, opt, hi]}
                inputs.append(tensor)
            header = {
                "version": fake.version,
                "inputs": inputs,
                "outputs": network.outputs,
                "strongly_typed": bool(network.flags & (1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED)),
                "tf32": BuilderFlag.TF32 in config.flags,
                "workspace": config.pools.get(MemoryPoolType.WORKSPACE),
            }
            return serialize_plan(header, network.graph)

    return {"Builder": Builder, "OnnxParser": OnnxParser}
