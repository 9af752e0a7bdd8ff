"""``--workers N --worker-mode replicas``: N server processes on one port, each with its own
model copy (the default mode, front ends, lives in ``service.supervisor``).

One Python process cannot feed a GPU: parsing HTTP and decoding images hold the GIL (on an
H100 one process served a small fraction of what the model computes: docs/benchmarks.md). The
parent binds a socket per worker to the port and starts the workers (spawned, so none inherits
CUDA state); each listens once its models have loaded, and the kernel spreads connections over
those listening (:func:`worker_sockets`). SIGTERM / SIGINT go on to every worker, which drain
as a single server does; if a worker dies on its own, the others are stopped and the parent
exits with its status, for the supervisor (compose, Kubernetes) to restart the whole. A parent
killed outright (SIGKILL, the OOM killer) takes its workers with it: each asks the kernel for
SIGTERM when it is orphaned (:func:`exit_with_parent`), so none is left holding the port.

Metrics: the workers write theirs to files in one directory per server, and each one's
/metrics sums them all (``service.metrics``). The directory is ``PROMETHEUS_MULTIPROC_DIR`` if
set (its files are deleted at start: they are a previous server's), else a fresh temporary one,
removed at exit.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
from types import FrameType

from prometheus_client import multiprocess

from .backends.simulated import DEVICE_LOCK
from .logs import configure_logging
from .settings import Settings

log = logging.getLogger("service.workers")


class CannotBind(OSError):
    """The address is in use (or not this host's): the server cannot start."""


def worker_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """A socket per worker, all bound to one address with SO_REUSEPORT. Each worker listens on
    its own once it is ready (uvicorn's startup), and the kernel spreads new connections over
    the listening ones by a hash of each connection's addresses; none goes to a worker still
    loading.

    On one socket shared by all, the worker woken first accepts every connection waiting
    (uvloop accepts until none is left): a burst of keep-alive connections, as a gateway's pool
    opens them, went to one worker and stayed there (all 32 of 32, measured). Without
    SO_REUSEPORT (not Linux) the workers share one socket."""
    address = _address(host, port)
    with _socket(address) as probe:  # a port in use is an error, as without SO_REUSEPORT
        try:
            probe.bind(address[4])
        except OSError as exc:
            raise CannotBind(f"cannot bind {host}:{port}: {exc.strerror or exc}") from exc
        address = _address(host, probe.getsockname()[1])  # port 0: the free one found
    spread = count > 1 and sys.platform.startswith("linux")
    first = _bound(address, spread)
    return [first] + [_bound(address, True) if spread else first for _ in range(count - 1)]


def _address(host: str, port: int) -> tuple:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]


def _socket(address: tuple) -> socket.socket:
    family, kind, proto, _, _ = address
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def _bound(address: tuple, reuse_port: bool) -> socket.socket:
    sock = _socket(address)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address[4])
    sock.set_inheritable(True)
    return sock


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def exit_with_parent() -> None:
    """Called first in a spawned worker: SIGTERM (a drain, as from the parent) once the process
    that started it is gone. Linux only; elsewhere the parent's own signal handling remains."""
    parent = multiprocessing.parent_process()
    if not sys.platform.startswith("linux") or parent is None:
        return
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent.pid:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker(argv: list[str], sock: socket.socket) -> None:
    """A worker process: the same settings, its own listening socket."""
    from .server import serve

    exit_with_parent()
    settings = Settings(_cli_parse_args=argv)
    configure_logging(settings.log_level)
    sys.exit(serve(settings, [sock], load_before_serving=True))


MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def metrics_directory() -> tuple[str, bool]:
    """The workers' metrics directory, emptied, and whether it is ours to remove. Set in the
    environment the workers inherit: prometheus-client reads it when they import it."""
    path = os.environ.get(MULTIPROC_DIR)
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
        return path, False
    path = tempfile.mkdtemp(prefix="dat-serve-metrics-")
    os.environ[MULTIPROC_DIR] = path
    return path, True


def serve_workers(settings: Settings, argv: list[str]) -> int:
    metrics_dir, temporary = metrics_directory()
    try:
        return _serve_workers(settings, argv, metrics_dir)
    finally:
        if temporary:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve_workers(settings: Settings, argv: list[str], metrics_dir: str) -> int:
    socks = worker_sockets(settings.host, settings.port, settings.workers)
    # --backend simulated: the replicas share one simulated device, as they would a real one
    os.environ[DEVICE_LOCK] = os.path.join(metrics_dir, "simulated-device.lock")
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker, args=(argv, sock), name=f"worker-{i}") for i, sock in enumerate(socks)
    ]
    for worker in workers:
        worker.start()
    log.info(
        "started workers",
        extra={
            "pids": [w.pid for w in workers],
            "port": socks[0].getsockname()[1],
            "metrics_dir": metrics_dir,
        },
    )
    stopping = False

    def stop_all(sig: int | None = None, frame: FrameType | None = None) -> None:
        nonlocal stopping
        if sig is not None:
            log.info("signal %s: stopping the workers", signal.Signals(sig).name)
        stopping = True
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)

    original = {sig: signal.signal(sig, stop_all) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        running = list(workers)
        while running:
            multiprocessing.connection.wait([w.sentinel for w in running], timeout=1.0)
            for worker in [w for w in running if not w.is_alive()]:
                running.remove(worker)
                worker.join()
                multiprocess.mark_process_dead(worker.pid, metrics_dir)  # its live gauges go
                code = worker.exitcode or 0
                if code != 0 and not stopping:
                    log.error("worker %s exited with %s: stopping the others", worker.pid, code)
                    stop_all()
                status = status or (code if code > 0 else 1 if code else 0)
    finally:
        for sig, handler in original.items():
            signal.signal(sig, handler)
        for sock in set(socks):
            sock.close()
    return status
