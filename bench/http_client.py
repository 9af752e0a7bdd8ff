"""A lean HTTP/1.1 client for the load generator: one prepared request, sent again and again.

The load generator shares the machine with the server it measures (on a 2-core box, every
millisecond the client spends is one the server loses). httpx cost several times this client's
CPU per request there (docs/benchmarks.md); this client encodes the request once (with httpx,
so multipart stays right) and per request only writes those bytes and parses a status line,
headers and a body.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

import httpx


def prepare_request(url: str, body: bytes, content_type: str, images_per_request: int) -> bytes:
    """The raw bytes of a keep-alive POST of ``images_per_request`` copies of ``body``: the
    body itself when one, a multipart form of ``files`` otherwise."""
    if images_per_request == 1:
        request = httpx.Request("POST", url, content=body, headers={"content-type": content_type})
    else:
        files = [("files", (f"image{i}", body, content_type)) for i in range(images_per_request)]
        request = httpx.Request("POST", url, files=files)
    content = request.read()
    target = request.url.raw_path.decode()
    lines = [f"POST {target} HTTP/1.1"]
    lines += [
        f"{name}: {value}"
        for name, value in request.headers.items()
        if name.lower() not in ("connection", "content-length")
    ]
    lines += [f"content-length: {len(content)}", "connection: keep-alive"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + content


class ResponseError(Exception):
    """The server answered something that is not HTTP/1.1 this client can read."""


class NoAnswer(ConnectionError):
    """The connection ended before any byte of the answer."""


class Connection:
    """One keep-alive connection. ``send`` opens it when needed; after any failure it is
    closed, and the next ``send`` opens a new one. On a kept-alive connection that ends before
    any byte of the answer (the server's keep-alive timeout closed it while it was idle) the
    request is sent once more on a new connection, as httpx does."""

    def __init__(self, url: str, request: bytes):
        parsed = urlparse(url)
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.request = request
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, timeout: float) -> tuple[int, bytes]:
        """(status, body) of one exchange; raises on a broken connection or a timeout."""
        try:
            return await asyncio.wait_for(self._exchange(), timeout)
        except BaseException:
            self.close()
            raise

    async def _exchange(self) -> tuple[int, bytes]:
        if self._writer is not None:
            try:
                return await self._round_trip()
            except NoAnswer:  # the server's keep-alive timeout: once more, on a new one
                self.close()
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return await self._round_trip()

    async def _round_trip(self) -> tuple[int, bytes]:
        try:
            self._writer.write(self.request)
            status_line = await self._reader.readline()
        except ConnectionError as exc:
            raise NoAnswer from exc
        if not status_line:
            raise NoAnswer
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ResponseError(f"bad status line {status_line[:80]!r}")
        status = int(parts[1])
        length, chunked, closing = None, False, False
        while (line := await self._reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                closing = value == b"close"
        if chunked:
            body = await self._read_chunked()
        elif length is not None:
            body = await self._reader.readexactly(length)
        else:  # delimited by the end of the connection
            body, closing = await self._reader.read(), True
        if closing:
            self.close()
        return status, body

    async def _read_chunked(self) -> bytes:
        chunks = []
        while size := int((await self._reader.readline()).split(b";")[0], 16):
            chunks.append(await self._reader.readexactly(size))
            await self._reader.readline()
        while await self._reader.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return b"".join(chunks)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


class ConnectionPool:
    """Idle connections to reuse; a new one whenever none is idle (open-loop load can have
    any number of requests in flight)."""

    def __init__(self, url: str, request: bytes):
        self.url, self.request = url, request
        self._idle: list[Connection] = []

    async def send(self, timeout: float) -> tuple[int, bytes]:
        connection = self._idle.pop() if self._idle else Connection(self.url, self.request)
        result = await connection.send(timeout)
        self._idle.append(connection)
        return result

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
