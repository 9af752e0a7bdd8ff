"""The load generator's HTTP client reads every framing a server may answer with."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from bench.http_client import Connection, prepare_request

ANSWERS = [
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst",
    b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n"
    b"3\r\nsec\r\n4;ext=1\r\nond!\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nthird, to the end",
    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nfourth",
]


@pytest.mark.anyio
async def test_one_connection_is_kept_alive_until_the_server_closes_it():
    connections, requests = [], []
    answers = iter(ANSWERS)

    async def handle(reader, writer):
        connections.append(writer)
        with contextlib.suppress(asyncio.IncompleteReadError):  # the client hung up
            await answer_each(reader, writer)

    async def answer_each(reader, writer):
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = int(
                next(
                    line.split(b":")[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
            )
            requests.append(head + await reader.readexactly(length))
            answer = next(answers)
            writer.write(answer)
            await writer.drain()
            if b"connection: close" in answer:
                writer.close()
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/classify"
    request = prepare_request(url, b"\xff\xd8jpeg", "image/jpeg", 1)
    connection = Connection(url, request)
    async with server:
        got = [await connection.send(5) for _ in ANSWERS]
        connection.close()
    assert got == [(200, b"first"), (503, b"second!"), (200, b"third, to the end"), (200, b"fourth")]
    assert len(connections) == 2  # a new connection only after the server closed the first
    assert all(r == request for r in requests)
    head, body = request.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /classify HTTP/1.1\r\n") and body == b"\xff\xd8jpeg"
    assert b"content-length: 6" in head and b"content-type: image/jpeg" in head


@pytest.mark.anyio
async def test_a_connection_the_server_closed_while_idle_is_replaced_without_an_error():
    served = []

    async def answer_once_then_hang_up(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        served.append(writer)
        writer.write(ANSWERS[0])
        await writer.drain()
        writer.close()  # as a keep-alive timeout does, without saying so in the answer

    server = await asyncio.start_server(answer_once_then_hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = Connection(f"http://127.0.0.1:{port}/", b"GET / HTTP/1.1\r\ncontent-length: 0\r\n\r\n")
    async with server:
        first = await connection.send(5)
        await asyncio.sleep(0.05)  # the close arrives while the connection is idle
        second = await connection.send(5)
        connection.close()
    assert first == second == (200, b"first") and len(served) == 2


def test_several_images_go_as_one_multipart_form():
    request = prepare_request("http://127.0.0.1:1/classify", b"IMAGE", "image/jpeg", 3)
    head, body = request.split(b"\r\n\r\n", 1)
    assert b"multipart/form-data; boundary=" in head and f"content-length: {len(body)}".encode() in head
    assert body.count(b'name="files"') == 3 and body.count(b"IMAGE") == 3


@pytest.mark.anyio
async def test_a_refused_connection_raises_and_the_next_send_reconnects():
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    connection = Connection(f"http://127.0.0.1:{port}/", b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(OSError):
        await connection.send(5)
    with pytest.raises(OSError):  # tried again, not stuck on the broken connection
        await connection.send(5)
