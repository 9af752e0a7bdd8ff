"""Dynamic batching with Triton's semantics, on one worker thread that owns the backend.

- ``max_batch_size`` counts images: a request with 4 images takes 4 slots, and a request is
  never split across batches.
- ``max_queue_delay`` runs from the oldest queued request: a batch goes when it is full (the
  queue holds ``max_batch_size`` images or more), when the oldest request has waited the
  delay, or at once while draining for shutdown.
- The queue is bounded (in images); a request that does not fit is refused at once.
- Each request has a deadline. Past it the caller gets 504; a request still queued then is
  removed and never computed. A request whose client went away is removed the same way.
- A batch that raises fails its own requests only; the worker goes on with the next batch.
- Health: after ``unhealthy_after`` batches in a row have failed the batcher reports itself
  ``failing`` and, while idle, runs ``probe`` every ``probe_interval_s``; a batch or probe that
  succeeds ends it. Something that is not an Exception ends the worker thread: queued requests
  are refused, and :meth:`Batcher.liveness_problem` says so (or that one batch runs too long).

The batcher knows nothing about models: ``run(inputs, want_points)`` gets the requests'
inputs concatenated along dim 0 (a tensor per request), or joined (a list of per-image inputs
per request, for models whose images keep their own shapes) and returns one output per image,
in order.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from models import CLASSIFICATION

from .errors import ClientDisconnected, DeadlineExceeded, InferenceFailed, Unavailable
from .metrics import Metrics
from .work import _NEVER_RAN, _RAN_LATE, Inputs, RunBatch, State, Work, _concatenate, _settle

log = logging.getLogger("service.batcher")


class Batcher:
    def __init__(
        self,
        run: RunBatch,
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_size: int,
        metrics: Metrics | None = None,
        task: str = CLASSIFICATION.name,  # the metrics label
        setup: Callable[[], None] | None = None,
        name: str = "inference",
        unhealthy_after: int = 3,
        probe: Callable[[], Any] | None = None,
        probe_interval_s: float = 5.0,
    ) -> None:
        if max_batch_size < 1 or max_queue_size < 1 or max_queue_delay_s < 0:
            raise ValueError("max_batch_size and max_queue_size must be >= 1, delay >= 0")
        self._run = run
        self._setup = setup
        self._probe = probe
        self.unhealthy_after = unhealthy_after
        self.probe_interval_s = probe_interval_s
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.died: BaseException | None = None  # what ended the worker thread
        self._running_since: float | None = None  # a batch (or probe) is inside the backend
        self._next_probe = 0.0
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_size = max_queue_size
        self.metrics = (metrics or Metrics()).for_task(task)
        self._queue: collections.deque[Work] = collections.deque()
        self._queued_images = 0
        self._cond = threading.Condition()
        self._draining = False
        self._stopping = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.started: concurrent.futures.Future[None] = concurrent.futures.Future()

    # -- life cycle (event loop side) ------------------------------------------------------
    def start(self) -> concurrent.futures.Future[None]:
        """Starts the worker thread; ``started`` resolves once ``setup`` (load, warm up) is done."""
        self._thread.start()
        return self.started

    def drain(self) -> None:
        """From now on batches go without waiting for the delay (shutdown has begun)."""
        with self._cond:
            self._draining = True
            self._cond.notify_all()

    def stop(self, timeout: float | None = None) -> None:
        """Finishes the queued requests (up to ``timeout`` s), then ends the worker thread."""
        with self._cond:
            self._draining = self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        # whatever the worker could not finish in time
        self._refuse_queued(Unavailable("the server shut down before this request ran"), "shutdown")

    @property
    def queued_images(self) -> int:
        return self._queued_images

    @property
    def queued_requests(self) -> int:
        return len(self._queue)

    def is_full(self) -> bool:
        return self._queued_images >= self.max_queue_size

    # -- health (any thread) -----------------------------------------------------------------
    @property
    def failing(self) -> bool:
        """``unhealthy_after`` batches in a row failed, and no batch or probe succeeded since."""
        return self.consecutive_failures >= self.unhealthy_after

    def unavailable_reason(self) -> str | None:
        """Why batches cannot be run at all for now (a front end whose inference process is
        restarting); None here, where the batches run in this process."""
        return None

    def liveness_problem(self, stuck_after_s: float) -> tuple[str, str] | None:
        """("dead" | "stuck", why) when the worker thread has ended unasked or has been inside
        one batch longer than ``stuck_after_s``; None while it works (or loads, or stopped on
        request)."""
        if self.died is not None:
            return "dead", f"has stopped ({type(self.died).__name__}: {self.died})"
        started = self.started.done() and self.started.exception() is None
        if started and not self._thread.is_alive() and not self._stopping:
            return "dead", "has stopped"
        since = self._running_since
        running = time.monotonic() - since if since is not None else 0.0
        if running > stuck_after_s:
            return "stuck", f"has been inside one batch for {running:.1f} s (limit {stuck_after_s:g} s)"
        return None

    # -- requests (event loop side) --------------------------------------------------------
    def submit(
        self,
        inputs: Inputs,
        deadline: float,
        want_points: bool = False,
        request_id: str | None = None,
        on_release: Callable[[], None] | None = None,
    ) -> Work:
        """Queues a request, or refuses it at once (503) when it does not fit. ``on_release``:
        called once when the batcher is done with ``inputs`` (dropped, or its batch has run),
        never when this raises."""
        size = len(inputs)
        if not 1 <= size <= self.max_batch_size:
            raise ValueError(f"a request must have 1..{self.max_batch_size} images, got {size}")
        work = Work(inputs, deadline, want_points, asyncio.get_running_loop(), request_id, on_release)
        with self._cond:
            if self.died is not None:
                raise Unavailable(
                    f"the inference thread has stopped ({type(self.died).__name__}: "
                    f"{self.died}); the server must be restarted"
                )
            if self._stopping or not self._thread.is_alive():
                raise Unavailable(
                    "the server is shutting down"
                    if self.started.done() and self.started.exception() is None
                    else "the model is not loaded"
                )
            if self._queued_images + size > self.max_queue_size:
                self.metrics.dropped.labels("queue_full").inc()
                raise Unavailable(
                    f"overloaded: the queue holds {self._queued_images} of "
                    f"{self.max_queue_size} images; retry later"
                )
            self._queue.append(work)
            self._queued_images += size
            self._update_gauges()
            self._cond.notify_all()
        return work

    async def result(self, work: Work, disconnected: Awaitable[Any] | None = None) -> Any:
        """Waits for the request's outputs until its deadline or until its client goes away."""
        watch = asyncio.ensure_future(disconnected) if disconnected is not None else None
        try:
            waiters: set[asyncio.Future] = {work.future} | ({watch} if watch else set())
            timeout = max(0.0, work.deadline - time.monotonic())
            done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self._abandon(work, "cancelled")
            raise
        finally:
            if watch is not None and not watch.done():
                watch.cancel()
        if work.future in done:
            return work.future.result()
        if watch is not None and watch in done:
            self._abandon(work, "disconnected")
            raise ClientDisconnected()
        ran = self._abandon(work, "deadline")
        raise DeadlineExceeded(_RAN_LATE if ran else _NEVER_RAN)

    def _abandon(self, work: Work, reason: str) -> bool:
        """Stops ``work``: removed if still queued (never computed), else its outputs are
        discarded. Returns whether its batch had already started."""
        with self._cond:
            if work.state is State.QUEUED:
                self._queue.remove(work)
                self._queued_images -= work.size
                self._update_gauges()
                work.state = State.DROPPED
                self.metrics.dropped.labels(reason).inc()
                work.release()
                return False
            if work.state is State.RUNNING:
                work.state = State.ABANDONED
            return work.state is not State.DROPPED

    # -- worker thread -------------------------------------------------------------------
    def _update_gauges(self) -> None:
        self.metrics.queue_images.set(self._queued_images)
        self.metrics.queue_requests.set(len(self._queue))

    def _main(self) -> None:
        # running: a waiter that gives up (a shutdown during the load) can no longer cancel it
        if not self.started.set_running_or_notify_cancel():
            with self._cond:
                self._stopping = True
            return
        try:
            if self._setup is not None:
                self._setup()
        except BaseException as exc:  # noqa: BLE001 - reported through ``started``
            log.exception("model setup failed")
            with self._cond:
                self._stopping = True  # accept nothing from now on
            self.started.set_exception(exc)
            return
        self.started.set_result(None)
        try:
            while True:
                batch = self._collect()
                if batch is None:
                    return
                if batch:
                    self._execute(batch)
                else:
                    self._run_probe()
        except BaseException as exc:  # noqa: BLE001 - the thread ends: say so, refuse what waits
            log.critical("the inference thread stopped: %s: %s", type(exc).__name__, exc, exc_info=exc)
            with self._cond:
                self.died = exc
                self._stopping = True
            self._refuse_queued(Unavailable("the inference thread has stopped; the server must be restarted"))

    def _refuse_queued(self, error: Exception, dropped_as: str | None = None) -> None:
        """Empties the queue; every request waiting in it gets ``error``."""
        with self._cond:
            left = list(self._queue)
            self._queue.clear()
            self._queued_images = 0
            self._update_gauges()
        for work in left:
            work.state = State.DROPPED
            work.release()
            if dropped_as is not None:
                self.metrics.dropped.labels(dropped_as).inc()
            self._deliver(work, None, error)

    def _collect(self) -> list[Work] | None:
        """Blocks until a batch is due; None once stopping with nothing left; [] when a probe
        is due (failing and idle)."""
        with self._cond:
            while True:
                self._drop_expired_locked()
                if self._queue:
                    if self._draining or self._queued_images >= self.max_batch_size:
                        break
                    wait = self._queue[0].enqueued_at + self.max_queue_delay_s - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                elif self._stopping:
                    return None
                elif self._probe is not None and self.failing:
                    wait = self._next_probe - time.monotonic()
                    if wait <= 0:
                        return []
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            batch: list[Work] = []
            images = 0
            now = time.monotonic()
            while self._queue and images + self._queue[0].size <= self.max_batch_size:
                work = self._queue.popleft()
                work.state = State.RUNNING
                work.queue_s = now - work.enqueued_at
                images += work.size
                batch.append(work)
            self._queued_images -= images
            self._update_gauges()
            return batch

    def _drop_expired_locked(self) -> None:
        now = time.monotonic()
        expired = [w for w in self._queue if w.deadline <= now]
        for work in expired:
            self._queue.remove(work)
            self._queued_images -= work.size
            work.state = State.DROPPED
            work.release()
            self.metrics.dropped.labels("deadline").inc()
            self._deliver(work, None, DeadlineExceeded(_NEVER_RAN))
        if expired:
            self._update_gauges()

    def _execute(self, batch: list[Work]) -> None:
        images = sum(w.size for w in batch)
        for work in batch:
            self.metrics.queue_wait.observe(work.queue_s)
        started = time.monotonic()
        error: BaseException | None = None
        fatal: BaseException | None = None
        outputs: Sequence[Any] = ()
        self._running_since = started
        try:
            inputs = _concatenate([w.inputs for w in batch])
            outputs = self._run(inputs, any(w.want_points for w in batch))
            if len(outputs) != images:
                raise RuntimeError(f"the backend returned {len(outputs)} outputs for {images} images")
        except BaseException as exc:  # noqa: BLE001 - one failing batch must not stop the worker
            log.exception(
                "batch of %d images failed", images, extra={"request_ids": [w.request_id for w in batch]}
            )
            error = exc
            if not isinstance(exc, Exception):
                fatal = exc  # answered below, then it ends the thread (_main)
        finally:
            self._running_since = None
            for work in batch:
                work.release()
        elapsed = time.monotonic() - started
        if fatal is not None:  # the thread ends with this batch: dead before any caller hears back
            with self._cond:
                self.died = fatal
        self._count(error)
        self.metrics.observe_batch(images, elapsed, error is None)
        offset = 0
        for work in batch:
            work.inference_s = elapsed
            work.batch_size = images
            with self._cond:
                abandoned = work.state is State.ABANDONED
                work.state = State.DONE
            if abandoned:
                pass  # its caller already answered 504 / went away; the outputs are discarded
            elif error is not None:
                self._deliver(
                    work, None, InferenceFailed(f"inference failed: {type(error).__name__}: {error}")
                )
            else:
                self._deliver(work, list(outputs[offset : offset + work.size]), None)
            offset += work.size
        if fatal is not None:
            raise fatal

    def _count(self, error: BaseException | None) -> None:
        """Consecutive failures: ``failing`` from the ``unhealthy_after``-th on, until a success."""
        if error is None:
            if self.failing:
                log.info("a batch succeeded: the model answers again")
            self.consecutive_failures = 0
            return
        self.consecutive_failures += 1
        self.last_error = f"{type(error).__name__}: {error}"
        if self.consecutive_failures == self.unhealthy_after:
            self._next_probe = time.monotonic() + self.probe_interval_s
            log.error(
                "%d batches in a row failed: not ready until a batch or probe succeeds (last: %s)",
                self.consecutive_failures,
                self.last_error,
            )

    def _run_probe(self) -> None:
        """One small batch of zeros while failing and idle; its success ends ``failing``."""
        if self._probe is None:  # _collect asks for a probe only where there is one
            return
        self._next_probe = time.monotonic() + self.probe_interval_s
        self._running_since = time.monotonic()
        try:
            self._probe()
        except Exception as exc:  # noqa: BLE001 - still failing; the next probe comes later
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("probe batch failed: %s", self.last_error)
            return
        finally:
            self._running_since = None
        log.info("probe batch succeeded: the model answers again")
        self.consecutive_failures = 0

    @staticmethod
    def _deliver(work: Work, result: Any, error: BaseException | None) -> None:
        try:
            work.loop.call_soon_threadsafe(_settle, work.future, result, error)
        except RuntimeError:  # the event loop is closed: nobody is waiting any more
            pass
