"""A real server (uvicorn on 127.0.0.1, any free port) over an LSM store, per test,
plus a TCP proxy that loses answers, to make the clients retry for real."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import tidekv
from tidekv.testing import LocalServer, local_server


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LocalServer]:
    with local_server(str(tmp_path / "db"), "lsm") as srv:
        yield srv


@pytest.fixture
def client(live: LocalServer) -> Iterator[tidekv.Client]:
    with tidekv.Client(live.url) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_message(sock: socket.socket, buf: bytes) -> tuple[bytes, bytes] | None:
    """One HTTP/1.1 message with a Content-Length body (or none) and what follows it."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        rest += chunk
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


class LosingProxy:
    """Relays requests to ``port``; the answers to the first ``lose`` requests are
    dropped after the server has handled them (the connection just closes), as when a
    network fails between a write's commit and its acknowledgement."""

    def __init__(self, port: int, lose: int) -> None:
        self.port = port
        self.lose = lose
        self.relayed = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, socket.create_connection(("127.0.0.1", self.port)) as up:
            buf = up_buf = b""
            while (got := _read_message(conn, buf)) is not None:
                request, buf = got
                up.sendall(request)
                answered = _read_message(up, up_buf)
                if answered is None:
                    return
                response, up_buf = answered
                self.relayed += 1
                if self.lose > 0:
                    self.lose -= 1
                    return  # the server did the work; the client never hears of it
                conn.sendall(response)

    def close(self) -> None:
        self._sock.close()
