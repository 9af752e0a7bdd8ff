"""One request in a batcher's queue (``Work``) and how a batch is put together."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch

_NEVER_RAN = "the deadline passed before the request could run; it was not computed"
_RAN_LATE = "the deadline passed while the request's batch was running"

Inputs = torch.Tensor | list  # a batch of images, or one input per image
RunBatch = Callable[[Inputs, bool], Sequence[Any]]


class State(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    DROPPED = "dropped"  # removed before compute
    ABANDONED = "abandoned"  # its caller stopped waiting while its batch ran


class Work:
    """One request in the queue: its images and what happened to them."""

    __slots__ = (
        "inputs",
        "size",
        "want_points",
        "deadline",
        "enqueued_at",
        "future",
        "loop",
        "state",
        "queue_s",
        "inference_s",
        "batch_size",
        "request_id",
        "on_release",
    )

    def __init__(
        self,
        inputs: Inputs,
        deadline: float,
        want_points: bool,
        loop: asyncio.AbstractEventLoop,
        request_id: str | None = None,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self.inputs = inputs
        self.size = len(inputs)
        self.want_points = want_points
        self.deadline = deadline
        self.enqueued_at = time.monotonic()
        self.loop = loop
        self.future: asyncio.Future = loop.create_future()
        # Whoever stopped waiting (deadline, disconnect) never reads the outcome: mark it read.
        self.future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.state = State.QUEUED
        self.queue_s = 0.0
        self.inference_s = 0.0
        self.batch_size = 0
        self.request_id = request_id
        # called once, from any thread, when the batcher holds ``inputs`` no more (shared slots)
        self.on_release = on_release

    def release(self) -> None:
        callback, self.on_release = self.on_release, None
        if callback is not None:
            callback()


def _concatenate(parts: list[Inputs]) -> Inputs:
    """One batch; images preprocessed on a GPU and tensors sent from the CPU may mix."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], list):
        return [image for part in parts for image in part]
    tensors = cast(list[torch.Tensor], parts)  # a batch holds one kind of input
    device = next((t.device for t in tensors if t.device.type != "cpu"), tensors[0].device)
    return torch.cat([t.to(device) for t in tensors])


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
