"""A lean HTTP/1.1 server: one :class:`asyncio.Protocol` per connection driving the
httptools parser directly, in place of uvicorn.

Why: on the node's one Python thread, uvicorn's generic ASGI machinery (scope dicts,
message dicts, flow-control objects, a cycle object, proxy-headers middleware, two
``await send`` per response) cost more CPU per put than Raft, the WAL and the peer
transport together. Here a request costs the parser callbacks, one dict of headers,
one task, and one ``transport.write`` of a response built in one ``bytes.join``.

What it serves:

- An :class:`tidekv.http.App` (anything with ``respond``): the body is read by the
  server (up to the app's ``max_body``; past it, or when ``Content-Length`` says so,
  the request goes to the app at once, marked ``overflow``, the app answers 413 and the
  connection closes without reading the rest). Plain responses are written in one go
  with ``Content-Length``; streaming ones (the SSE watch, a relayed forward) get an
  ASGI-style ``send``/``receive`` pair and go out chunked (HTTP/1.1) or until close
  (HTTP/1.0).
- Any other ASGI app, through the same ``send``/``receive`` pair (no lifespan).

HTTP/1.1 details kept: keep-alive (and ``Connection: close``, HTTP/1.0 without
keep-alive), pipelining (requests answered in order, one at a time per connection;
reading pauses while 32 wait), chunked request bodies, ``Expect: 100-continue``, HEAD
(headers without the body), a ``Date`` header, a JSON 400 for a request the parser
rejects; a connection idle for ``keep_alive_timeout`` seconds (75 by default; a request
that stays incomplete counts as idle) is closed. ``should_exit = True`` (from any thread)
stops it gracefully: the listener closes, the app's ``begin_shutdown`` ends open watch
streams, requests in flight get ``timeout_graceful_shutdown`` seconds, then every
connection closes and the app's ``aclose`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import logging
import signal
import threading
import time
from collections import deque
from typing import Any

import httptools
import msgspec

from tidekv.asgi import Message, Response
from tidekv.errors import InvalidInput

__all__ = ["HTTPServer"]

log = logging.getLogger("tidekv.httpserver")

MAX_PIPELINED = 32
"""Requests parsed ahead of the one being answered before reading pauses."""

_SWEEPS = 4
"""Idle connections are checked ``_SWEEPS`` times per keep-alive timeout."""

LINGER_SECONDS = 2.0
"""How long input is read and dropped after answering a request whose body is not read."""

_STATUS_LINE = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode("latin-1") for s in http.HTTPStatus
}
_CRLF = b"\r\n"
_SEP = b": "
_CLOSE = b"connection: close\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _status_line(status: int) -> bytes:
    line = _STATUS_LINE.get(status)
    if line is None:
        line = f"HTTP/1.1 {status} \r\n".encode("latin-1")
    return line


class _Date:
    """The ``Date`` header, formatted at most once a second."""

    __slots__ = ("header", "second")

    def __init__(self) -> None:
        self.second = -1
        self.header = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.header = b"date: " + email.utils.formatdate(now, usegmt=True).encode() + _CRLF
        return self.header


def _bad_request(message: str) -> bytes:
    body = msgspec.json.encode(InvalidInput(message).to_dict())
    return (
        _status_line(400)
        + b"content-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\nconnection: close\r\n\r\n"
        + body
    )


class _Pending:
    """One parsed request waiting for its turn (or being answered)."""

    __slots__ = (
        "body",
        "chunks",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "overflow",
        "size",
        "url",
    )

    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.chunks: list[bytes] = []
        self.size = 0
        self.body: bytes | None = None
        self.method = ""
        self.http_version = "1.1"
        self.keep_alive = True
        self.overflow = False


class _Connection(asyncio.Protocol):
    """One client connection: parse, queue, answer in order."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.app = server.app
        self.fast = server.fast
        self.max_body = server.max_body
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.cur: _Pending | None = None  # being parsed
        self.queue: deque[_Pending] = deque()
        self.task: asyncio.Task[None] | None = None  # answering queue[0]
        self.closed = False
        self.ignore_input = False  # an overflowing body: the rest is never read
        self.paused_reading = False
        self.write_paused: asyncio.Future[None] | None = None
        self.writing_paused = False
        self.disconnected: asyncio.Future[None] | None = None
        self.idle_sweeps = 0  # sweeps of the server since this connection last did anything

    # -- transport callbacks ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.disconnected is not None and not self.disconnected.done():
            self.disconnected.set_result(None)
        if self.write_paused is not None and not self.write_paused.done():
            self.write_paused.set_result(None)
        self.queue.clear()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.write_paused is not None and not self.write_paused.done():
            self.write_paused.set_result(None)
        self.write_paused = None

    def data_received(self, data: bytes) -> None:
        self.idle_sweeps = 0
        if self.ignore_input:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # no upgrades here: answer the request as plain HTTP, then close
            if self.cur is not None:
                self.cur.keep_alive = False
                self.on_message_complete()
            self.ignore_input = True
        except httptools.HttpParserError as exc:
            self.ignore_input = True
            reason = str(exc) or type(exc).__name__
            if self.task is None and not self.queue:
                self._write_and_close(_bad_request(f"malformed HTTP request: {reason}"))
            else:  # answer what came before, then the 400
                bad = _Pending()
                bad.method = "\x00bad"
                bad.url = reason.encode("latin-1", "replace")
                bad.keep_alive = False
                self._enqueue(bad)

    # -- parser callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        # after an overflowing body nothing more is read, even from this same packet
        self.cur = None if self.ignore_input else _Pending()

    def on_url(self, url: bytes) -> None:
        if self.cur is not None:
            self.cur.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.cur is None:
            return
        headers = self.cur.headers
        key = name.lower()
        if key in headers:  # repeated: one comma-separated value (RFC 9110 5.3)
            headers[key] += b", " + value
        else:
            headers[key] = value

    def on_headers_complete(self) -> None:
        cur = self.cur
        if cur is None:
            return
        parser = self.parser
        cur.method = parser.get_method().decode("ascii", "replace")
        cur.http_version = parser.get_http_version()
        cur.keep_alive = parser.should_keep_alive()
        declared = cur.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            self._overflow(cur)
            return
        if cur.headers.get(b"expect", b"").lower() == b"100-continue" and self.transport:
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        cur = self.cur
        if cur is None or cur.overflow:
            return
        cur.size += len(body)
        if cur.size > self.max_body:
            self._overflow(cur)
            return
        cur.chunks.append(body)

    def on_message_complete(self) -> None:
        cur = self.cur
        if cur is None or cur.overflow:
            return
        self.cur = None
        chunks = cur.chunks
        cur.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        cur.chunks = []
        self._enqueue(cur)

    def _overflow(self, cur: _Pending) -> None:
        """The body is over the limit: hand the request over now (the app answers 413),
        read nothing more from this connection, close after answering."""
        cur.overflow = True
        cur.chunks = []
        cur.keep_alive = False
        self.ignore_input = True
        self.cur = None
        self._enqueue(cur)

    # -- answering ----------------------------------------------------------------------

    def _enqueue(self, p: _Pending) -> None:
        self.queue.append(p)
        if self.task is None:
            self.task = self.server.loop.create_task(self._answer())
        elif len(self.queue) > MAX_PIPELINED and not self.paused_reading and self.transport:
            self.paused_reading = True
            self.transport.pause_reading()

    async def _answer(self) -> None:
        try:
            while self.queue and not self.closed:
                p = self.queue[0]
                keep = await self._one(p)
                if self.queue:
                    self.queue.popleft()
                if not keep:
                    self._close()
                    return
                if self.paused_reading and len(self.queue) <= MAX_PIPELINED // 2:
                    self.paused_reading = False
                    if self.transport is not None and not self.closed:
                        self.transport.resume_reading()
        except Exception:
            log.exception("error answering an HTTP request")
            self._close()
        finally:
            self.task = None
            if self.queue and not self.closed:  # parsed meanwhile by a re-entrant feed
                self.task = self.server.loop.create_task(self._answer())

    async def _one(self, p: _Pending) -> bool:
        """Answer ``p``; whether the connection stays open."""
        transport = self.transport
        assert transport is not None
        if p.method == "\x00bad":
            transport.write(_bad_request(f"malformed HTTP request: {p.url.decode('latin-1')}"))
            return False
        url = p.url
        if url[:1] == b"/":
            path, _, qs = url.partition(b"?")
        else:
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                transport.write(_bad_request("the request target is not a valid URL"))
                return False
            path, qs = parsed.path or b"/", parsed.query or b""
        if b"#" in path:
            path = path.partition(b"#")[0]
        if not self.fast:
            return await self._asgi(p, path, qs)
        started = time.perf_counter()
        resp, route = await self.app.respond(
            p.method, path, qs, p.headers, self._receive, p.body, p.overflow
        )
        if resp is None or self.closed:
            return False
        keep = p.keep_alive and not self.server.exiting
        if type(resp).send is Response.send:
            self._write_response(resp, p, keep)
        else:
            keep = await self._stream(resp, p, keep)
        self.app.observe(route, p.method, resp.status, started)
        return keep and not any(
            k == b"connection" and v.lower() == b"close" for k, v in resp.headers
        )

    def _write_response(self, resp: Response, p: _Pending, keep: bool) -> None:
        parts = [_status_line(resp.status)]
        for k, v in resp.headers:
            parts += (k, _SEP, v, _CRLF)
        parts.append(b"content-length: %d\r\n" % len(resp.body))
        parts.append(self.server.date.get())
        if not keep:
            parts.append(_CLOSE)
        elif p.http_version == "1.0":
            parts.append(b"connection: keep-alive\r\n")
        parts.append(_CRLF)
        if p.method != "HEAD":
            parts.append(resp.body)
        assert self.transport is not None
        self.transport.write(b"".join(parts))

    async def _stream(self, resp: Response, p: _Pending, keep: bool) -> bool:
        """Run a streaming response through an ASGI-style send/receive pair."""
        writer = _StreamWriter(self, p, keep)
        await resp.send(writer.send, self._receive)
        return writer.keep and writer.finished

    async def _asgi(self, p: _Pending, path: bytes, qs: bytes) -> bool:
        """Serve a generic ASGI app."""
        writer = _StreamWriter(self, p, p.keep_alive and not self.server.exiting)
        body = p.body
        sent_body = False

        async def receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body or b"", "more_body": False}
            return await self._receive()

        sock = self.transport.get_extra_info("sockname") if self.transport else None
        peer = self.transport.get_extra_info("peername") if self.transport else None
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": p.http_version,
            "method": p.method,
            "scheme": "http",
            "path": path.decode("latin-1"),
            "raw_path": path,
            "query_string": qs,
            "root_path": "",
            "headers": list(p.headers.items()),
            "server": tuple(sock[:2]) if sock else None,
            "client": tuple(peer[:2]) if peer else None,
        }
        try:
            await self.app(scope, receive, writer.send)
        except Exception:
            log.exception("the ASGI app failed")
            if not writer.started:
                assert self.transport is not None
                self.transport.write(
                    _status_line(500) + b"content-length: 0\r\nconnection: close\r\n\r\n"
                )
            return False
        return writer.keep and writer.finished and not p.overflow

    async def _receive(self) -> Message:
        """What follows the (already read) body: the client hanging up."""
        if not self.closed:
            if self.disconnected is None:
                self.disconnected = self.server.loop.create_future()
            await self.disconnected
        return {"type": "http.disconnect"}

    async def drain(self) -> None:
        if self.writing_paused and not self.closed:
            if self.write_paused is None:
                self.write_paused = self.server.loop.create_future()
            await self.write_paused

    def _write_and_close(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)
        self._close()

    def _close(self) -> None:
        self.closed = True
        self.queue.clear()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.ignore_input and transport.can_write_eof():
            # the client may still be sending what we will not read (a body over the
            # limit): closing now would reset the connection and could destroy our
            # answer in its receive buffer, so send EOF and drop its input a while
            transport.write_eof()
            self.server.loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def shutdown(self) -> None:
        """Close now if idle; a connection answering closes after its answer."""
        if self.task is None:
            self._close()

    def swept(self, limit: int) -> None:
        """One idle sweep: close after ``limit`` sweeps with nothing received or sent
        (a partial request counts as idle; an answer or a stream in progress does not)."""
        if self.task is not None or self.queue:
            self.idle_sweeps = 0
            return
        self.idle_sweeps += 1
        if self.idle_sweeps > limit:
            self._close()


class _StreamWriter:
    """ASGI ``send`` for one response: chunked (or close-delimited) unless the app sets
    ``content-length``."""

    __slots__ = ("chunked", "conn", "finished", "head", "keep", "p", "started")

    def __init__(self, conn: _Connection, p: _Pending, keep: bool) -> None:
        self.conn = conn
        self.p = p
        self.keep = keep
        self.started = False
        self.finished = False
        self.chunked = False
        self.head = p.method == "HEAD"

    async def send(self, message: Message) -> None:
        conn = self.conn
        if conn.closed:
            return
        transport = conn.transport
        assert transport is not None
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("the response has started already")
            self.started = True
            headers: list[tuple[bytes, bytes]] = list(message.get("headers", ()))
            parts = [_status_line(int(message["status"]))]
            has_length = False
            for k, v in headers:
                k = k.lower()
                if k == b"content-length":
                    has_length = True
                elif k == b"connection" and v.lower() == b"close":
                    self.keep = False
                    continue
                parts += (k, _SEP, v, _CRLF)
            if not has_length and not self.head:
                if self.p.http_version == "1.0":
                    self.keep = False
                else:
                    self.chunked = True
                    parts.append(_CHUNKED)
            parts.append(conn.server.date.get())
            if not self.keep:
                parts.append(_CLOSE)
            parts.append(_CRLF)
            transport.write(b"".join(parts))
        elif kind == "http.response.body":
            if not self.started or self.finished:
                raise RuntimeError("response body sent before its start or after its end")
            body: bytes = message.get("body", b"")
            more = bool(message.get("more_body", False))
            if not self.head:
                if self.chunked:
                    if body:
                        transport.write(b"%x\r\n%s\r\n" % (len(body), body))
                    if not more:
                        transport.write(b"0\r\n\r\n")
                elif body:
                    transport.write(body)
            if not more:
                self.finished = True
            await conn.drain()


class HTTPServer:
    """Serves ``app`` on ``host:port``; the attributes a caller of uvicorn's ``Server``
    used (``serve``, ``run``, ``should_exit``, ``started``, ``servers``) work alike."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        timeout_graceful_shutdown: float = 10.0,
        keep_alive_timeout: float = 75.0,
        backlog: int = 2048,
        install_signal_handlers: bool = True,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.fast = callable(getattr(app, "respond", None))
        self.max_body = int(getattr(app, "max_body", 1 << 20)) if self.fast else 1 << 30
        self.timeout_graceful_shutdown = timeout_graceful_shutdown
        self.keep_alive_timeout = keep_alive_timeout
        self._sweeper: asyncio.TimerHandle | None = None
        self.backlog = backlog
        self.install_signal_handlers = install_signal_handlers
        self.connections: set[_Connection] = set()
        self.date = _Date()
        self.started = False
        self.exiting = False
        self.servers: list[asyncio.Server] = []
        self.loop: asyncio.AbstractEventLoop
        self._exit_ev: asyncio.Event | None = None
        self._should_exit = False

    @property
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        ev = self._exit_ev
        if value and ev is not None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nothing to wake
                self.loop.call_soon_threadsafe(ev.set)

    def run(self) -> None:
        """Serve in a new event loop (uvloop when installed) until stopped."""
        try:
            import uvloop
        except ImportError:
            asyncio.run(self.serve())
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(self.serve())

    async def serve(self) -> None:
        self.loop = loop = asyncio.get_running_loop()
        self._exit_ev = asyncio.Event()
        if self._should_exit:
            self._exit_ev.set()
        startup = getattr(self.app, "startup", None)
        if self.fast and callable(startup):
            startup()
        srv = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, backlog=self.backlog
        )
        self.servers = [srv]
        handled: list[signal.Signals] = []
        if self.install_signal_handlers and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self._on_signal)
                    handled.append(sig)
        self.started = True
        self._sweeper = loop.call_later(self.keep_alive_timeout / _SWEEPS, self._sweep)
        try:
            await self._exit_ev.wait()
        finally:
            self._sweeper.cancel()
            for sig in handled:
                loop.remove_signal_handler(sig)
            await self._shutdown(srv)

    def _sweep(self) -> None:
        for conn in list(self.connections):
            conn.swept(_SWEEPS)
        self._sweeper = self.loop.call_later(self.keep_alive_timeout / _SWEEPS, self._sweep)

    def _on_signal(self) -> None:
        self.should_exit = True

    async def _shutdown(self, srv: asyncio.Server) -> None:
        self.exiting = True
        srv.close()
        begin = getattr(self.app, "begin_shutdown", None)
        if callable(begin):
            begin()
        for conn in list(self.connections):
            conn.shutdown()
        deadline = time.monotonic() + self.timeout_graceful_shutdown
        while any(c.task is not None for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.task is not None:
                conn.task.cancel()
            if conn.transport is not None:
                conn.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(srv.wait_closed(), 1.0)
        aclose = getattr(self.app, "aclose", None)
        if self.fast and callable(aclose):
            await aclose()
