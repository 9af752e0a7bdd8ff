"""HTTP connections: a deadline for a request's head and another for its body, a cap on the
head's size and on open connections.

uvicorn has none of these (0.54: ``timeout_keep_alive`` only runs between requests, the first
byte of a request cancels it, and its httptools parser buffers headers without bound;
``limit_concurrency`` answers 503 only once a head is complete). Before this module, connections
that sent half a request head stayed open for as long as the client liked (docs/benchmarks.md,
slow clients). So the server runs uvicorn's httptools protocol with three additions:

- the head must be complete within ``header_timeout_s`` of the connection opening (first
  request) or of its first byte (later ones): a deadline, not an idle timer, so a byte now and
  then does not extend it. A connection that sent nothing is closed; one that sent part of a
  head gets 408.
- the body must be complete within ``body_timeout_s`` of the head, whether or not the app
  reads it (an app answers 413 or 503 without reading, and the client may go on sending).
  The app then sees the client go away; the client gets 408 if no answer was started.
- at ``max_connections`` open connections, a new one evicts the connection that has waited
  longest for a request head (stalled or idle); when every connection has a request under
  way, the new one is answered 503 at once and closed.

A request being read holds no inference slot (``ServiceState.admit`` comes after the body),
so slow clients cost a connection and the bytes they sent, for at most these deadlines.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("service.connections")

# nginx answers 400 past 4 x 8 kB of header lines, h11's default is 16 kB: 64 kB is generous
# for any client and bounds what a connection can make the parser keep.
MAX_HEAD_BYTES = 64 * 1024
# A refused connection is half-closed after its 503 and dropped this much later: closing at
# once would reset it under a request still arriving, and the client would not see the 503.
REFUSED_LINGER_S = 1.0
V2_PREFIX = b"/v2"
# Tickets in the order connections begin to wait for a request head: the eviction takes the lowest.
# Not the loop's clock: uvloop's loop.time() is libuv's millisecond clock, read once per loop
# iteration, so connections that began waiting within one tick would tie, and the eviction would
# pick among them in the (arbitrary) order of the server's set of connections.
_WAITING_ORDER = itertools.count()


def _response(status: int, reason: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> bytes:
    content = json.dumps(body).encode()
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json",
        f"content-length: {len(content)}",
        "connection: close",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + content


def _error(
    status: int,
    reason: str,
    type_: str,
    message: str,
    request_id: str | None = None,
    v2: bool = False,
    headers: dict[str, str] | None = None,
) -> bytes:
    """Our JSON error (errors.error_body's shape), or the v2 protocol's for its paths."""
    body = (
        {"error": message}
        if v2
        else {"error": {"status": status, "type": type_, "message": message, "request_id": request_id}}
    )
    return _response(status, reason, body, headers)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the deadlines and caps above (set per server by
    ``http_protocol``)."""

    header_timeout_s: float = 20.0
    body_timeout_s: float = 60.0
    max_connections: int = 1000
    metrics: Metrics | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = True
        self._head_bytes = 0
        self._refused = False
        # its place among the connections waiting for a request head (None: a request is under way)
        self._wait_ticket: int | None = None

    # -- connection ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections and not self._evict():
            self._refuse(transport)
            return
        super().connection_made(transport)
        self._wait_ticket = next(_WAITING_ORDER)
        self._gauge()
        self._arm("header_timeout", self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._refused:
            return
        super().connection_lost(exc)
        self._gauge()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # a refused client's request: already answered
        super().data_received(data)
        if self._in_head and self.parser is not None and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._close(
                    "header_too_large",
                    _error(
                        431,
                        "Request Header Fields Too Large",
                        "header_too_large",
                        f"the request head exceeds {MAX_HEAD_BYTES:,} bytes",
                    ),
                )

    # -- parser callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        if self._deadline is None:  # the first request's deadline runs from the connection
            self._arm("header_timeout", self.header_timeout_s)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._in_head = False
        self._wait_ticket = None
        self._arm("body_timeout", self.body_timeout_s)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._wait_ticket = next(_WAITING_ORDER)  # keep-alive: waits for the next request

    # -- deadlines ------------------------------------------------------------------------
    def _arm(self, reason: str, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, reason)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, reason: str) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        if reason == "header_timeout":
            self._close_waiting(reason, f"the request head did not arrive within {self.header_timeout_s:g} s")
            return
        cycle = self.cycle
        state = self.scope.get("state", {}) if self.scope else {}
        answer = None
        if cycle is not None and not cycle.response_started:
            state["read_timeout"] = True  # the access log and metrics say 408, not 499
            answer = _error(
                408,
                "Request Timeout",
                "request_timeout",
                f"the request body did not arrive within {self.body_timeout_s:g} s",
                state.get("request_id"),
                v2=self.scope.get("path", "").startswith("/v2"),
            )
            # the app sees its client go away, and its own answer, if any, goes nowhere
            cycle.disconnected = True
            cycle.message_event.set()
        log.info(
            "request body timed out", extra={"client": self._client(), "request_id": state.get("request_id")}
        )
        self._close(reason, answer)

    def _close_waiting(self, reason: str, message: str) -> None:
        """Closes a connection that waits for a request head: 408 if part of one came, else
        nothing (a preconnected or keep-alive socket that sent nothing)."""
        url = getattr(self, "url", b"")
        answer = (
            _error(408, "Request Timeout", "request_timeout", message, v2=url.startswith(V2_PREFIX))
            if self._in_head and (self._head_bytes or url)
            else None
        )
        log.debug(
            "closed a connection waiting for a request", extra={"client": self._client(), "reason": reason}
        )
        self._close(reason, answer)

    def _close(self, reason: str, answer: bytes | None) -> None:
        self._wait_ticket = None
        self._disarm()
        if self.metrics is not None:
            self.metrics.closed_connections.labels(reason).inc()
        if answer is not None:
            self.transport.write(answer)
        self.transport.close()

    # -- the cap -----------------------------------------------------------------------------
    def _evict(self) -> bool:
        """At the cap, closes the connection that has waited longest for a request head, if
        any: a real client sends its head at once, so under a flood of stalled heads or idle
        sockets the one evicted is nearly always one of them."""
        waiting = [
            (c._wait_ticket, c)
            for c in self.connections
            if isinstance(c, GuardedHttpToolsProtocol)
            and c._wait_ticket is not None
            and not c.transport.is_closing()
        ]
        if not waiting:
            return False
        _, oldest = min(waiting, key=lambda waited: waited[0])
        oldest._close_waiting(
            "evicted", "the server is at its connection limit and this connection had not sent a request"
        )
        return True

    def _refuse(self, transport: asyncio.Transport) -> None:
        """Every connection is busy with a request: 503 at once, and no more."""
        self._refused = True
        self.transport = transport
        if self.metrics is not None:
            self.metrics.closed_connections.labels("connection_limit").inc()
        transport.write(
            _error(
                503,
                "Service Unavailable",
                "unavailable",
                f"overloaded: {self.max_connections} connections are busy; retry later",
                headers={"retry-after": "1"},
            )
        )
        if transport.can_write_eof():
            transport.write_eof()
        self._deadline = self.loop.call_later(REFUSED_LINGER_S, transport.abort)

    # -- reporting -------------------------------------------------------------------------
    def _client(self) -> str | None:
        return f"{self.client[0]}:{self.client[1]}" if self.client else None

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.open_connections.set(len(self.connections))


def http_protocol(settings: Settings, metrics: Metrics | None) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for one server (uvicorn's ``http=``), with its settings."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "header_timeout_s": settings.header_timeout_s,
            "body_timeout_s": settings.body_timeout_s,
            "max_connections": settings.max_connections,
            "metrics": metrics,
        },
    )


def raise_open_files_limit(connections: int) -> None:
    """Lets the process hold ``connections`` sockets besides its own files: the soft limit is
    often 1024, where accept() would fail (EMFILE) before the connection cap is reached."""
    wanted = connections + 256  # model files, pipes, the preprocessing pool, the logs
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning(
            "the open files limit (%d) is below --max-connections + 256: the server may "
            "refuse connections with EMFILE before the cap",
            target,
        )
