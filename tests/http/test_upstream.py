"""The forwarding client (tidekv.upstream): keep-alive reuse, one connection per
concurrent request, and clear errors when the upstream is away, hangs up or is slow."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tidekv.testing import LocalServer, local_server
from tidekv.upstream import UpstreamError, UpstreamPool


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[LocalServer]:
    with local_server(str(tmp_path / "db"), "lsm") as s:
        yield s


def test_sequential_requests_reuse_one_connection(srv: LocalServer) -> None:
    async def main() -> list[int]:
        pool = UpstreamPool()
        statuses = []
        for i in range(10):
            status, headers, body = await pool.request(
                srv.url, "PUT", b"/v1/kv/u%d" % i, [(b"content-type", b"text/plain")], b"v"
            )
            statuses.append(status)
            assert dict(headers)[b"content-type"] == b"application/json"
            assert json.loads(body)["key"] == f"u{i}"
        status, _, body = await pool.request(srv.url, "GET", b"/v1/kv/u3", [], b"")
        assert (status, body) == (200, b"v")
        assert len(srv._server.connections) == 1
        pool.close()
        return statuses

    assert asyncio.run(main()) == [200] * 10
    assert srv.store.revision == 10


def test_concurrent_requests_each_get_a_connection(srv: LocalServer) -> None:
    async def main() -> None:
        pool = UpstreamPool()
        answers = await asyncio.gather(
            *(pool.request(srv.url, "PUT", b"/v1/kv/c%d" % i, [], b"x") for i in range(8))
        )
        assert [a[0] for a in answers] == [200] * 8
        opened = len(srv._server.connections)
        assert 1 < opened <= 8
        # they all went back to the pool: the next round opens none
        await asyncio.gather(
            *(pool.request(srv.url, "GET", b"/v1/kv/c%d" % i, [], b"") for i in range(opened))
        )
        assert len(srv._server.connections) == opened
        pool.close()

    asyncio.run(main())


def test_errors_of_the_upstream_are_relayed_not_raised(srv: LocalServer) -> None:
    async def main() -> None:
        pool = UpstreamPool()
        status, _, body = await pool.request(srv.url, "GET", b"/v1/kv/none", [], b"")
        assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
        status, _, _ = await pool.request(srv.url, "GET", b"/v1/kv/none", [], b"")
        assert status == 404  # and the connection is still good for the next one
        pool.close()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_upstream_is_an_upstream_error() -> None:
    async def main() -> None:
        with pytest.raises(UpstreamError, match="cannot connect"):
            await UpstreamPool().request(f"http://127.0.0.1:{free_port()}", "GET", b"/", [], b"")
        with pytest.raises(UpstreamError, match="not an http:// URL"):
            await UpstreamPool().request("https://example.invalid", "GET", b"/", [], b"")

    asyncio.run(main())


class Misbehaving:
    """A TCP server that reads a request and then hangs up, or says nothing."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.recv(65536)
            if self.mode == "hangup":
                conn.close()
            elif self.mode == "garbage":
                conn.sendall(b"SPAM SPAM SPAM\r\n\r\n")
            else:
                self.conns.append(conn)  # silent: keep it open, answer nothing

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize(
    ("mode", "message"),
    [("hangup", "connection closed"), ("garbage", "malformed"), ("silent", "no answer")],
)
def test_an_upstream_that_misbehaves_is_an_upstream_error(mode: str, message: str) -> None:
    bad = Misbehaving(mode)

    async def main() -> None:
        pool = UpstreamPool(timeout=0.5)
        with pytest.raises(UpstreamError, match=message):
            await pool.request(bad.url, "PUT", b"/v1/kv/a", [], b"x")
        pool.close()

    try:
        asyncio.run(main())
    finally:
        bad.close()
