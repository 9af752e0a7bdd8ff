"""The slow-client attacks of issue #19 against a running server, on the loopback only.

    .venv/bin/python scripts/slow_clients.py http://127.0.0.1:8000 body 400 --watch 25
    .venv/bin/python scripts/slow_clients.py http://127.0.0.1:8000 header 800 --watch 40

``body``: connections announce a 100 kB PNG and send 4 bytes of it; ``header``: they send half
a request head. Meanwhile one well-behaved client posts samples/digit_3.png to /classify every
0.25 s. Prints, as JSON, how many stalled connections the server closed and when, the first
line of what it answered them, and the normal requests' statuses and latencies.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

PNG = (Path(__file__).resolve().parents[1] / "samples" / "digit_3.png").read_bytes()
HEAD = b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("mode", choices=["body", "header"])
    parser.add_argument("connections", type=int)
    parser.add_argument("--watch", type=float, default=75.0, help="seconds to watch (default 75)")
    args = parser.parse_args()
    parts = urlsplit(args.url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("loopback only: this opens hundreds of stalled connections")

    stalled = []
    for _ in range(args.connections):
        sock = socket.create_connection((parts.hostname, parts.port))
        sock.sendall(HEAD + PNG[:4] if args.mode == "body" else HEAD[:40])
        stalled.append(sock)
    sent = time.monotonic()

    normal: list[tuple[float, int | str, float]] = []
    stop = threading.Event()

    def well_behaved() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                status: int | str = httpx.post(
                    f"{args.url}/classify", content=PNG, timeout=10, headers={"content-type": "image/png"}
                ).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            normal.append((round(started - sent, 2), status, round(time.monotonic() - started, 3)))
            time.sleep(0.25)

    thread = threading.Thread(target=well_behaved)
    thread.start()
    closed: dict[int, float] = {}
    answers: set[str] = set()
    answered: set[int] = set()
    with selectors.DefaultSelector() as selector:
        for i, sock in enumerate(stalled):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, i)
        while selector.get_map() and time.monotonic() - sent < args.watch:
            for key, _ in selector.select(0.1):
                try:
                    data = key.fileobj.recv(65536)
                except ConnectionError:
                    data = b""
                if data:
                    if key.data not in answered:  # the status line of each one's first answer
                        answered.add(key.data)
                        answers.add(data.split(b"\r\n")[0].decode("latin-1"))
                else:
                    closed[key.data] = time.monotonic() - sent
                    selector.unregister(key.fileobj)
    stop.set()
    thread.join()
    for sock in stalled:
        sock.close()
    statuses: dict[str, int] = {}
    for _, status, _ in normal:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    latencies = sorted(seconds for _, status, seconds in normal if status == 200)
    print(
        json.dumps(
            {
                "mode": args.mode,
                "stalled": args.connections,
                "watched_s": args.watch,
                "closed": len(closed),
                "closed_after_s": [round(min(closed.values()), 2), round(max(closed.values()), 2)]
                if closed
                else None,
                "answers": sorted(answers),
                "normal_statuses": statuses,
                "normal_200_s_median_max": [latencies[len(latencies) // 2], latencies[-1]]
                if latencies
                else None,
            }
        )
    )


if __name__ == "__main__":
    main()
