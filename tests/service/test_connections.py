"""The connection cap's eviction order, in process: protocols on fake transports, with the event
loop's clock as uvloop keeps it (libuv's millisecond clock, read once per loop iteration), so
that many connections begin to wait within one tick, as they do on a fast loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from service.connections import GuardedHttpToolsProtocol

CAP = 20


class FakeTransport(asyncio.Transport):
    """What the protocol asks of a socket transport; records what it is sent and its closing."""

    def __init__(self, port: int, closings: list[int]) -> None:
        super().__init__()
        self.port = port
        self.sent = b""
        self.closed = False
        self._closings = closings

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", self.port), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self._closings.append(self.port)
        self.closed = True

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.sent += data

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def alive(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    loop.time = lambda: 1000.0  # type: ignore[method-assign]  # every event within one tick
    yield loop
    loop.close()


class Server:
    """One server's protocols on fake transports, connected in the order of ``connect``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.config = Config(alive, log_config=None, lifespan="off")
        self.state = ServerState()
        self.protocol = type("Capped", (GuardedHttpToolsProtocol,), {"max_connections": CAP})
        self.closings: list[int] = []  # the ports of the connections closed, in order

    def connect(self, port: int) -> FakeTransport:
        transport = FakeTransport(port, self.closings)
        self.protocol(
            config=self.config, server_state=self.state, app_state={}, _loop=self.loop
        ).connection_made(transport)
        return transport

    def request(self, transport: FakeTransport, data: bytes) -> None:
        (protocol,) = (c for c in self.state.connections if c.transport is transport)
        protocol.data_received(data)
        for _ in range(5):  # the app's task runs to its answer
            self.loop.run_until_complete(asyncio.sleep(0))

    def drop_closed(self) -> None:
        """What the loop does next for a closed transport."""
        for protocol in [c for c in self.state.connections if c.transport.is_closing()]:
            protocol.connection_lost(None)


def test_new_connections_evict_idle_ones_in_the_order_they_connected(loop):
    server = Server(loop)
    old = [server.connect(port) for port in range(CAP)]
    for i in range(CAP // 2):
        server.connect(100 + i)
        server.drop_closed()
    assert server.closings == list(range(CAP // 2))
    assert all(t.sent == b"" for t in old)  # they had sent nothing: closed without an answer


def test_a_connection_that_was_answered_waits_again_behind_those_that_were_not(loop):
    server = Server(loop)
    old = [server.connect(port) for port in range(CAP)]
    for transport in reversed(old):  # answered last to first: the first now waited least
        server.request(transport, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert transport.sent.startswith(b"HTTP/1.1 200 ")
    server.request(old[5], b"POST /classify HTTP/1.1\r\nHo")  # half a head: still waiting
    for i in range(CAP - 1):
        server.connect(100 + i)
        server.drop_closed()
    assert server.closings == list(range(CAP - 1, 0, -1))
    assert b"HTTP/1.1 408 " in old[5].sent  # part of a head came: it is told why
