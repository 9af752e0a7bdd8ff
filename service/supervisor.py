"""``--workers N`` with worker_mode frontends: N front ends and one inference process.

The parent binds a socket per front end to the port and spawns (no CUDA state is inherited)
the inference process (``service.inference``: the model, loaded once, and the batchers) and N
front ends (``service.frontend``: HTTP, decoding, preprocessing) that reach the inference
process over a Unix socket in a private directory. A front end listens, and takes connections,
once it has reached the inference process; the kernel spreads connections over the front ends
listening (``service.workers.worker_sockets``).

- SIGTERM / SIGINT: the front ends drain as a single server does (readiness 503, no new
  connections, in-flight requests finish); once they have all exited, the inference process
  gets SIGTERM, finishes what is queued and exits.
- The inference process dies after it had loaded: the front ends answer 503 (readiness too)
  and the parent starts a new one, which they reach again by themselves. Only it restarts:
  the front ends hold the clients' connections, which a restart of the whole would cut, and
  nothing of theirs is lost with it. If it fails before it ever loaded, the model cannot
  load: everything stops and the parent exits with its status (1: load failed, 2: settings).
- The parent is killed outright: every child gets SIGTERM from the kernel and drains
  (``service.workers.exit_with_parent``).
- A front end dies: the others are stopped and the parent exits with its status, as with
  worker_mode replicas, for the supervisor above (compose, Kubernetes) to restart the whole.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from prometheus_client import multiprocess

from .logs import configure_logging
from .settings import Settings
from .workers import exit_with_parent, metrics_directory, worker_sockets

log = logging.getLogger("service.workers")

_KILL_AFTER_S = 10.0  # front ends still waiting for an inference process that never loaded


def _frontend(argv: list[str], sock: socket.socket, socket_path: str) -> None:
    from .frontend import InferenceLink
    from .server import serve

    exit_with_parent()
    settings = Settings(_cli_parse_args=argv)
    configure_logging(settings.log_level)
    link = InferenceLink(settings, socket_path)
    sys.exit(serve(settings, [sock], load_before_serving=True, link=link))


def serve_frontends(settings: Settings, argv: list[str]) -> int:
    metrics_dir, temporary = metrics_directory()
    private = tempfile.mkdtemp(prefix="dat-serve-")  # 0700: only this user reaches the socket
    try:
        return Supervisor(settings, argv, metrics_dir, os.path.join(private, "inference.sock")).run()
    finally:
        shutil.rmtree(private, ignore_errors=True)
        if temporary:
            shutil.rmtree(metrics_dir, ignore_errors=True)


class Supervisor:
    def __init__(self, settings: Settings, argv: list[str], metrics_dir: str, socket_path: str) -> None:
        self.settings = settings
        self.argv = argv
        self.metrics_dir = metrics_dir
        self.socket_path = socket_path
        self.context = multiprocessing.get_context("spawn")
        self.stopping = False
        self.status = 0
        self.restarts = 0
        self._inference_told = False
        self._inference_reaped = False
        self._kill_at: float | None = None

    def _start_inference(self) -> tuple[BaseProcess, multiprocessing.synchronize.Event]:
        from .inference import main

        loaded = self.context.Event()
        process = self.context.Process(
            target=main, args=(self.argv, self.socket_path, loaded), name="inference"
        )
        process.start()
        return process, loaded

    def stop_all(self, sig: int | None = None, frame: FrameType | None = None) -> None:
        if sig is not None:
            log.info("signal %s: stopping the front ends", signal.Signals(sig).name)
        self.stopping = True
        for process in self.frontends:
            _signal(process, signal.SIGTERM)

    def run(self) -> int:
        socks = worker_sockets(self.settings.host, self.settings.port, self.settings.workers)
        self.inference, loaded = self._start_inference()
        self.frontends = [
            self.context.Process(
                target=_frontend, args=(self.argv, sock, self.socket_path), name=f"frontend-{i}"
            )
            for i, sock in enumerate(socks)
        ]
        for process in self.frontends:
            process.start()
        log.info(
            "started workers",
            extra={
                "pids": [p.pid for p in self.frontends],
                "inference_pid": self.inference.pid,
                "port": socks[0].getsockname()[1],
                "metrics_dir": self.metrics_dir,
            },
        )
        original = {sig: signal.signal(sig, self.stop_all) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._watch(loaded)
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
            for sock in set(socks):
                sock.close()
        return self.status

    def _watch(self, loaded: multiprocessing.synchronize.Event) -> None:
        running = list(self.frontends)
        while running or not self._inference_reaped and self.inference.is_alive():
            # a reaped inference process's sentinel stays ready: waiting on it would spin
            inference = [] if self._inference_reaped else [self.inference.sentinel]
            sentinels = [p.sentinel for p in running] + inference
            multiprocessing.connection.wait(sentinels, timeout=1.0)
            for process in [p for p in running if not p.is_alive()]:
                running.remove(process)
                code = self._reap(process)
                if code != 0 and not self.stopping:
                    log.error("front end %s exited with %s: stopping the others", process.pid, code)
                    self.stop_all()
                self._note(code)
            if not self._inference_reaped and self.inference.exitcode is not None and running:
                loaded = self._inference_ended(loaded)
            if self.stopping and not running and self.inference.is_alive() and not self._inference_told:
                log.info("the front ends have drained: stopping the inference process")
                self._inference_told = True
                _signal(self.inference, signal.SIGTERM)
            if self._kill_at is not None and time.monotonic() > self._kill_at:
                for process in running:
                    _signal(process, signal.SIGKILL)
                self._kill_at = None
        if not self._inference_reaped:
            self._note(self._reap(self.inference))

    def _inference_ended(
        self, loaded: multiprocessing.synchronize.Event
    ) -> multiprocessing.synchronize.Event:
        """The inference process exited while front ends run: restarted, or the end."""
        code = self._reap(self.inference)
        self._inference_reaped = True
        if self.stopping or not loaded.is_set():
            if not self.stopping:
                log.error("the inference process exited with %s before it loaded: stopping", code)
                self.stop_all()
                self._kill_at = time.monotonic() + _KILL_AFTER_S
            self._note(code)
            return loaded
        self.restarts += 1
        log.error(
            "the inference process exited with %s: starting another (restart %d)",
            code,
            self.restarts,
            extra={"restarts": self.restarts},
        )
        self.inference, loaded = self._start_inference()
        self._inference_reaped = False
        return loaded

    def _reap(self, process: BaseProcess) -> int:
        process.join()
        if process.pid is not None:
            multiprocess.mark_process_dead(process.pid, self.metrics_dir)  # its live gauges go
        return process.exitcode or 0

    def _note(self, code: int) -> None:
        self.status = self.status or (code if code > 0 else 1 if code else 0)


def _signal(process: BaseProcess, sig: int) -> None:
    if process.is_alive() and process.pid is not None:
        os.kill(process.pid, sig)
