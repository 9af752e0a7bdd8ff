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

import torch

from .timing import measure


class RawBackend:
    def __init__(self, server_args: str):
        from service.backends import create_backend
        from service.settings import Settings

        self.settings = Settings(_cli_parse_args=shlex.split(server_args))
        self.backend = create_backend(self.settings)
        self.meta = meta = self.backend.load()
        self.batch = self.settings.max_batch_size
        size = meta.input_size
        self.inputs = torch.randn(self.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        self.backend.warmup([self.batch])

    def describe(self) -> str:
        return f"{self.backend.name} {self.backend.precision} on {self.backend.device}, batch {self.batch}"

    def images_per_second(self, seconds: float) -> float:
        """Back-to-back batches (each returns its outputs to the host) for at least ``seconds``:
        the images of all of them over their total time."""
        m = measure(
            "raw", self.batch, lambda: self.backend.run(self.inputs), warmup=1, repeats=2, min_seconds=seconds
        )
        return self.batch * m.repeats / (sum(m.durations_ms) / 1000)
