"""The lean HTTP/1.1 server (tidekv.httpserver) on raw sockets: keep-alive, pipelining,
chunked bodies, body limits, malformed requests, HEAD, HTTP/1.0, 100-continue, SSE
framing, plain ASGI apps and a graceful stop."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tidekv.testing import LocalServer, ServerThread, local_server


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[LocalServer]:
    with local_server(str(tmp_path / "db"), "lsm") as s:
        yield s


class Raw:
    """One client socket that reads whole responses (Content-Length or chunked)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError("the server closed the connection")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise EOFError("the server closed the connection")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def response(self, *, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        status_line = self._line()
        status = int(status_line.split(b" ")[1])
        headers: dict[str, str] = {}
        while line := self._line():
            name, _, value = line.partition(b":")
            headers[name.decode().lower()] = value.decode().strip()
        if head_only:
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self._line(), 16):
                body += self._take(size)
                assert self._take(2) == b"\r\n"
            assert self._line() == b""
            return status, headers, body
        return status, headers, self._take(int(headers.get("content-length", "0")))

    def closed_by_server(self) -> bool:
        """True when the server closed its side (EOF) with nothing more to read."""
        if self.buf:
            return False
        return not self._fill()

    def close(self) -> None:
        self.sock.close()


def put(key: str, value: bytes, extra: bytes = b"") -> bytes:
    return (
        b"PUT /v1/kv/" + key.encode() + b" HTTP/1.1\r\nhost: t\r\n"
        b"content-type: text/plain\r\ncontent-length: %d\r\n" % len(value) + extra + b"\r\n" + value
    )


def get(key: str, extra: bytes = b"") -> bytes:
    return b"GET /v1/kv/" + key.encode() + b" HTTP/1.1\r\nhost: t\r\n" + extra + b"\r\n"


def test_keep_alive_answers_many_requests_on_one_connection(srv: LocalServer) -> None:
    c = Raw(srv.url)
    for i in range(5):
        c.send(put(f"k{i}", b"v%d" % i))
        status, headers, body = c.response()
        assert status == 200, body
        assert json.loads(body)["key"] == f"k{i}"
        assert headers["etag"].startswith('"') and "date" in headers
        assert "connection" not in headers
    c.send(get("k3"))
    assert c.response()[2] == b"v3"
    assert len(srv._server.connections) == 1
    c.close()


def test_pipelined_requests_are_answered_in_order(srv: LocalServer) -> None:
    c = Raw(srv.url)
    c.send(put("p", b"one") + get("p") + put("p", b"two") + get("p") + get("missing"))
    answers = [c.response() for _ in range(5)]
    assert [a[0] for a in answers] == [200, 200, 200, 200, 404]
    assert answers[1][2] == b"one" and answers[3][2] == b"two"
    assert json.loads(answers[4][2])["error"]["code"] == "not_found"
    assert srv.store.revision == 2
    c.close()


def test_a_chunked_request_body_is_read_whole(srv: LocalServer) -> None:
    c = Raw(srv.url)
    c.send(
        b"PUT /v1/kv/ch HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    assert c.response()[0] == 200
    assert srv.store.get("ch").value == b"hello world"
    c.close()


def test_a_declared_body_over_the_limit_gets_413_and_the_connection_closes(
    srv: LocalServer,
) -> None:
    limit = srv.app.max_body
    c = Raw(srv.url)
    c.send(
        b"PUT /v1/kv/big HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n" % (limit + 1)
        + b"x" * 1000
    )
    status, headers, body = c.response()
    assert status == 413
    assert json.loads(body)["error"]["code"] == "too_large"
    assert headers["connection"] == "close"
    assert c.closed_by_server()
    assert srv.store.revision == 0
    c.close()


def test_a_chunked_body_over_the_limit_gets_413_and_nothing_is_written(srv: LocalServer) -> None:
    limit = srv.app.max_body
    c = Raw(srv.url)
    c.send(b"PUT /v1/kv/big HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n")
    chunk = b"y" * 65536
    with contextlib.suppress(OSError):  # the server may be gone before all of it is sent
        for _ in range(limit // len(chunk) + 2):
            c.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        c.send(b"0\r\n\r\n" + get("big"))  # a pipelined request after it is never read
    status, headers, body = c.response()
    assert status == 413 and json.loads(body)["error"]["code"] == "too_large"
    assert headers["connection"] == "close"
    assert c.closed_by_server()
    assert srv.store.revision == 0
    c.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"NOT A REQUEST\r\n\r\n",
        b"GET /v1/kv/a HTTP/1.1\r\nbad header line\r\n\r\n",
        b"PUT /v1/kv/a HTTP/1.1\r\ncontent-length: 12x\r\n\r\n",
    ],
)
def test_a_malformed_request_gets_a_json_400_and_a_close(srv: LocalServer, raw: bytes) -> None:
    c = Raw(srv.url)
    c.send(raw)
    status, headers, body = c.response()
    assert status == 400
    err = json.loads(body)["error"]
    assert err["code"] == "invalid_input" and "malformed HTTP request" in err["message"]
    assert headers["connection"] == "close"
    assert c.closed_by_server()
    assert srv.store.revision == 0
    c.close()


def test_requests_before_a_malformed_one_are_answered_first(srv: LocalServer) -> None:
    c = Raw(srv.url)
    c.send(put("ok", b"1") + b"BROKEN\r\n\r\n")
    assert c.response()[0] == 200
    assert c.response()[0] == 400
    assert c.closed_by_server()
    assert srv.store.get("ok").value == b"1"
    c.close()


def test_head_gets_headers_without_a_body_and_the_connection_stays_usable(
    srv: LocalServer,
) -> None:
    c = Raw(srv.url)
    c.send(b"HEAD /v1/kv/a HTTP/1.1\r\nhost: t\r\n\r\n")
    status, headers, _ = c.response(head_only=True)
    assert status == 405  # no route answers HEAD (API.md lists GET)
    assert int(headers["content-length"]) > 0 and "GET" in headers["allow"]
    c.send(b"HEAD /nowhere HTTP/1.1\r\nhost: t\r\n\r\n")
    assert c.response(head_only=True)[0] == 404
    c.send(b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n")
    status, _, body = c.response()  # no stray body bytes before this answer
    assert status == 200 and json.loads(body) == {"status": "ok"}
    c.close()


def test_http_1_0_and_connection_close_end_the_connection(srv: LocalServer) -> None:
    c = Raw(srv.url)
    c.send(b"GET /health HTTP/1.0\r\n\r\n")
    status, headers, _ = c.response()
    assert status == 200 and headers["connection"] == "close"
    assert c.closed_by_server()
    c.close()
    c = Raw(srv.url)
    c.send(b"GET /health HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
    assert c.response()[1]["connection"] == "keep-alive"
    c.send(get("x", b"connection: close\r\n"))
    status, headers, _ = c.response()
    assert status == 404 and headers["connection"] == "close"
    assert c.closed_by_server()
    c.close()


def test_expect_100_continue_is_answered_before_the_body(srv: LocalServer) -> None:
    c = Raw(srv.url)
    c.send(b"PUT /v1/kv/e HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\nexpect: 100-continue\r\n\r\n")
    assert c.response(head_only=True)[0] == 100
    c.send(b"abc")
    assert c.response()[0] == 200
    assert srv.store.get("e").value == b"abc"
    c.close()


def test_percent_escapes_and_queries_reach_the_routes(srv: LocalServer) -> None:
    c = Raw(srv.url)
    c.send(put("a%2Fb", b"slash"))
    assert c.response()[0] == 200
    assert srv.store.get("a/b").value == b"slash"
    c.send(b"GET /v1/kv?prefix=a%2F&limit=5 HTTP/1.1\r\nhost: t\r\n\r\n")
    status, _, body = c.response()
    assert status == 200 and [i["key"] for i in json.loads(body)["items"]] == ["a/b"]
    c.send(b"GET /v1/kv?nope=1 HTTP/1.1\r\nhost: t\r\n\r\n")
    status, _, body = c.response()
    assert status == 400 and "unknown query parameter" in json.loads(body)["error"]["message"]
    c.close()


def test_a_watch_streams_chunked_events(srv: LocalServer) -> None:
    c = Raw(srv.url)
    c.send(b"GET /v1/watch?since=0 HTTP/1.1\r\nhost: t\r\n\r\n")
    status, headers, _ = c.response(head_only=True)
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert headers["content-type"] == "text/event-stream"
    w = Raw(srv.url)
    w.send(put("w", b"1"))
    assert w.response()[0] == 200
    w.close()
    data = b""
    while b"data: " not in data:
        size = int(c._line(), 16)
        data += c._take(size)
        assert c._take(2) == b"\r\n"
    event = json.loads(data.split(b"data: ", 1)[1].split(b"\n", 1)[0])
    assert event["key"] == "w" and event["type"] == "put"
    c.close()


def test_stopping_ends_open_streams_and_idle_connections(tmp_path: Path) -> None:
    with local_server(str(tmp_path / "db"), "lsm") as s:
        stream, idle = Raw(s.url), Raw(s.url)
        stream.send(b"GET /v1/watch HTTP/1.1\r\nhost: t\r\n\r\n")
        assert stream.response(head_only=True)[0] == 200
        idle.send(get("x"))
        assert idle.response()[0] == 404
        s.stop()
        assert idle.closed_by_server()
        rest = stream.buf
        while chunk := stream.sock.recv(65536):
            rest += chunk
        assert rest.endswith(b"0\r\n\r\n")  # the stream was ended properly
        stream.close()
        idle.close()


def test_idle_connections_close_after_the_keep_alive_timeout(tmp_path: Path) -> None:
    with local_server(str(tmp_path / "db"), "lsm") as s:
        s.stop()
        s._options["keep_alive_timeout"] = 0.4
        s.start()
        idle, partial, stream = Raw(s.url), Raw(s.url), Raw(s.url)
        idle.send(get("x"))
        assert idle.response()[0] == 404
        partial.send(b"GET /health HTTP/1.1\r\nhost:")  # never completed
        stream.send(b"GET /v1/watch HTTP/1.1\r\nhost: t\r\n\r\n")
        assert stream.response(head_only=True)[0] == 200
        assert idle.closed_by_server()  # blocks until the server closes it
        assert partial.closed_by_server()
        time.sleep(1.0)  # several timeouts: a stream in progress is not idle
        assert s._server.connections and len(s._server.connections) == 1
        for c in (idle, partial, stream):
            c.close()


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A plain ASGI app that echoes the method, path, query and body it got."""
    if scope["type"] != "http":
        return
    msg = await receive()
    body = json.dumps(
        {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope["query_string"].decode(),
            "body": msg["body"].decode(),
        }
    ).encode()
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": body[:5], "more_body": True})
    await send({"type": "http.response.body", "body": body[5:]})


def test_a_plain_asgi_app_is_served_too() -> None:
    with ServerThread(hello) as s:
        c = Raw(s.url)
        c.send(b"POST /x/y?z=1 HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\nhi")
        status, headers, body = c.response()
        assert status == 201 and headers["transfer-encoding"] == "chunked"
        assert json.loads(body) == {"method": "POST", "path": "/x/y", "query": "z=1", "body": "hi"}
        c.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        assert json.loads(c.response()[2])["method"] == "GET"
        c.close()
