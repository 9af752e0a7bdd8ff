"""The raw backend a server runs, measured alone: the denominator of the server's efficiency.

Built from the same ``python -m service`` arguments through the service's own settings and
backend factory, so it is the backend the server runs (model, precision, threads, CUDA graphs,
ONNX Runtime or TensorRT), called at the server's max batch size without HTTP, decoding or
batching. ``bench server --measure-baseline`` measures it between its load levels: a shared
machine's speed drifts by tens of percent within minutes, so a figure taken once is no
denominator for one taken later.
"""

from __future__ import annotations

import shlex
import time

import torch


class RawBackend:
    def __init__(self, server_args: str):
        from service.backends import create_backend
        from service.settings import Settings
        self.settings = Settings(_cli_parse_args=shlex.split(server_args))
        self.backend = create_backend(self.settings)
        meta = self.backend.load()
        self.batch = self.settings.max_batch_size
        size = meta.input_size
        self.inputs = torch.randn(self.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        self.backend.warmup([self.batch])

    def describe(self) -> str:
        return f"{self.backend.name} {self.backend.precision} on {self.backend.device}, batch {self.batch}"

    def images_per_second(self, seconds: float) -> float:
        """Back-to-back batches (each returns its outputs to the host) for at least ``seconds``."""
        self.backend.run(self.inputs)
        batches, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds or batches < 2:
            self.backend.run(self.inputs)
            batches += 1
        return batches * self.batch / elapsed
