"""What routes and the model runtime ask of a batcher, wherever its batches run: in this
process (:class:`service.batcher.Batcher`) or in the device's inference process behind a front
end (:class:`service.frontend.RemoteBatcher`)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from .backends.base import ImageBatch


class QueuedWork(Protocol):
    """A submitted request, as its route reads it once answered."""

    size: int
    deadline: float
    queue_s: float
    inference_s: float
    batch_size: int


W = TypeVar("W", bound=QueuedWork)


class BatchQueue(Protocol[W]):
    max_batch_size: int
    max_queue_size: int
    probe_interval_s: float

    def start(self) -> concurrent.futures.Future[None]:
        """Resolves once the model is loaded and batches can run."""
        ...

    def drain(self) -> None:
        """Shutdown has begun: batches go without waiting for the delay."""
        ...

    def stop(self, timeout: float | None = None) -> None: ...

    @property
    def queued_images(self) -> int: ...

    @property
    def consecutive_failures(self) -> int: ...

    @property
    def last_error(self) -> str | None: ...

    @property
    def failing(self) -> bool:
        """Enough batches in a row failed that the model counts as unhealthy."""
        ...

    def is_full(self) -> bool:
        """A new request would be refused (503) for want of room."""
        ...

    def unavailable_reason(self) -> str | None:
        """Why no batch can run for now (an inference process restarting); None when they can."""
        ...

    def liveness_problem(self, stuck_after_s: float) -> tuple[str, str] | None:
        """("dead" | "stuck", why) when the batches have stopped for good or one hangs."""
        ...

    def submit(
        self,
        inputs: ImageBatch,
        deadline: float,
        want_points: bool = False,
        request_id: str | None = None,
        on_release: Callable[[], None] | None = None,
    ) -> W:
        """Queues a request, or refuses it at once (503) when it does not fit."""
        ...

    async def result(self, work: W, disconnected: Awaitable[Any] | None = None) -> Any:
        """The request's outputs, or 504 at its deadline, or ClientDisconnected."""
        ...
