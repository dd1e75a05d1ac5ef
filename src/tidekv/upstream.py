"""A lean HTTP/1.1 client for node-to-node forwarding: a pool of persistent connections
per upstream, one request in flight on each, the answer parsed by httptools.

A forwarded write costs the forwarding node a dict lookup, one ``bytes.join``, one
``transport.write``, the parser callbacks and one future, instead of the layers of a
general-purpose client. A connection is reused while the upstream keeps it alive; a new
one is opened whenever every open one is busy (so N concurrent forwards use N
connections and reach the leader side by side, to be batched there). A request is never
retried here: whether the upstream acted on it is unknown, so the caller gets an
:class:`UpstreamError` (the edge answers 503 and a client retries with its
Idempotency-Key).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from urllib.parse import urlsplit

import httptools

__all__ = ["UpstreamError", "UpstreamPool"]

Header = tuple[bytes, bytes]
Answer = tuple[int, list[Header], bytes]

MAX_IDLE = 256
"""Idle connections kept per upstream (more are closed as they come free)."""


class UpstreamError(Exception):
    """The upstream could not be reached, broke off, timed out or answered garbage."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; ``waiter`` gets the answer to the request in flight."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Answer] | None = None
        self.lost = False
        self.keep_alive = True
        self.headers: list[Header] = []
        self.chunks: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(UpstreamError(f"the connection closed{f': {exc}' if exc else ''}"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"malformed HTTP answer: {exc}"))
            self.close()

    def on_message_begin(self) -> None:
        self.headers = []
        self.chunks = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        w, self.waiter = self.waiter, None
        if w is None or w.done():  # an answer nobody asked for: this connection is off
            self.keep_alive = False
            self.close()
            return
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        w.set_result((self.parser.get_status_code(), self.headers, body))

    def _fail(self, err: UpstreamError) -> None:
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_exception(err)

    def close(self) -> None:
        self.lost = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


def _on_timeout(fut: asyncio.Future[Answer], seconds: float) -> None:
    if not fut.done():
        fut.set_exception(UpstreamError(f"no answer within {seconds:g} s"))


class UpstreamPool:
    """Keep-alive connections by upstream base URL (``http://host:port``)."""

    def __init__(self, *, timeout: float = 30.0, connect_timeout: float = 5.0) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._idle: dict[str, list[_Connection]] = {}
        self._where: dict[str, tuple[str, int, bytes]] = {}
        self._closed = False

    def _address(self, base_url: str) -> tuple[str, int, bytes]:
        where = self._where.get(base_url)
        if where is None:
            u = urlsplit(base_url)
            if u.scheme != "http" or not u.hostname:
                raise UpstreamError(f"not an http:// URL: {base_url!r}")
            port = u.port or 80
            host_header = u.netloc.encode("idna")
            where = self._where[base_url] = (u.hostname, port, host_header)
        return where

    async def _connect(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Connection, host, port), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"cannot connect: {exc or type(exc).__name__}") from None
        return conn

    async def request(
        self, base_url: str, method: str, target: bytes, headers: Sequence[Header], body: bytes
    ) -> Answer:
        """Send one request (``target``: path and query) and return (status, headers
        with lower-case names, body)."""
        if self._closed:
            raise UpstreamError("the forwarding pool is closed")
        host, port, host_header = self._address(base_url)
        idle = self._idle.setdefault(base_url, [])
        conn = None
        while idle:
            c = idle.pop()
            if not c.lost:
                conn = c
                break
        if conn is None:
            conn = await self._connect(host, port)
        parts = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\nhost: ", host_header]
        for k, v in headers:
            parts += (b"\r\n", k, b": ", v)
        parts.append(b"\r\ncontent-length: %d\r\n\r\n" % len(body))
        parts.append(body)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Answer] = loop.create_future()
        conn.waiter = fut
        assert conn.transport is not None
        conn.transport.write(b"".join(parts))
        timer = loop.call_later(self.timeout, _on_timeout, fut, self.timeout)
        try:
            answer = await fut
        except BaseException:
            conn.close()
            raise
        finally:
            timer.cancel()
        if conn.keep_alive and not conn.lost and not self._closed and len(idle) < MAX_IDLE:
            idle.append(conn)
        else:
            conn.close()
        return answer

    def close(self) -> None:
        """Close every idle connection; busy ones close when their answer arrives."""
        self._closed = True
        for conns in self._idle.values():
            for c in conns:
                c.close()
        self._idle.clear()
