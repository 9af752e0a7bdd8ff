"""The control protocol between front ends and the inference process, over a Unix socket.

Messages are small tuples (the images travel in shared memory: ``service.slots``), framed as a
4-byte length and a pickle. Pickle is safe here: both ends are processes of one server, the
socket lives in a directory only its user can enter.

Front end -> inference process::

    (HELLO, pid)                               then WELCOME comes back
    (RINGS, {role: (slots, elements)})         with one descriptor per ring (SCM_RIGHTS); then READY
    (SUBMIT, id, role, start, shapes, metas, deadline, want_points, request_id)
    (CANCEL, id)                               the client went away
    (DRAIN,)                                   shutdown has begun: batches go without waiting

Inference process -> front end::

    (WELCOME, {role: (ModelMeta, the backend's describe())})
    (READY,)
    (RESULT, id, answer, error)                answer: (outputs, queue_s, inference_s, batch_size);
                                               error: None or (type name, message)
    (RELEASE, id)                              the request's slots are free again
    (STATUS, {role: BatcherStatus})            pushed a few times a second

``deadline`` is absolute, on ``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every
process of a host).
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from dataclasses import dataclass

from .errors import ClientDisconnected, DeadlineExceeded, InferenceFailed, ServiceError, Unavailable

HELLO, WELCOME, RINGS, READY, SUBMIT, CANCEL, DRAIN, RESULT, RELEASE, STATUS = range(10)

_LENGTH = struct.Struct("!I")
_MAX_FRAME = 256 * 2**20  # outputs of a full batch of masks stay far below


@dataclass(frozen=True)
class BatcherStatus:
    """What a front end needs of the global batcher to admit requests and answer health."""

    queued_images: int
    consecutive_failures: int
    failing: bool
    last_error: str | None
    liveness: tuple[str, str] | None


def frame(message: tuple) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


def _unpickle(body: bytes) -> tuple:
    message = pickle.loads(body)
    if not isinstance(message, tuple) or not message:
        raise ConnectionError(f"not a control message: {type(message).__name__}")
    return message


# -- blocking ends (the handshake, on a thread) --------------------------------------------------
def send(sock: socket.socket, message: tuple, fds: list[int] | None = None) -> None:
    data = frame(message)
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.sendall(data)


def _recv_exactly(sock: socket.socket, n: int, got: bytes = b"") -> bytes:
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        if not chunk:
            raise ConnectionError("the other process closed the connection")
        got += chunk
    return got


def receive(sock: socket.socket, max_fds: int = 0) -> tuple[tuple, list[int]]:
    """One message and the descriptors sent with it."""
    fds: list[int] = []
    head = b""
    if max_fds:
        head, fds, _, _ = socket.recv_fds(sock, _LENGTH.size, max_fds)
        if not head:
            raise ConnectionError("the other process closed the connection")
    (length,) = _LENGTH.unpack(_recv_exactly(sock, _LENGTH.size, head))
    if length > _MAX_FRAME:
        raise ConnectionError(f"a control message of {length} bytes")
    return _unpickle(_recv_exactly(sock, length)), fds


# -- asyncio ends ---------------------------------------------------------------------------------
async def read(reader: asyncio.StreamReader) -> tuple:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if length > _MAX_FRAME:
        raise ConnectionError(f"a control message of {length} bytes")
    return _unpickle(await reader.readexactly(length))


# -- errors ----------------------------------------------------------------------------------------
_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls for cls in (Unavailable, DeadlineExceeded, InferenceFailed, ValueError)
}


def encode_error(error: BaseException) -> tuple[str, str]:
    message = error.message if isinstance(error, ServiceError) else str(error)
    return type(error).__name__, message


def decode_error(error: tuple[str, str]) -> Exception:
    name, message = error
    if name == ClientDisconnected.__name__:
        return ClientDisconnected()
    cls = _ERRORS.get(name)
    if cls is None:
        return InferenceFailed(f"inference failed: {name}: {message}")
    return cls(message)
