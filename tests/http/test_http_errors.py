"""Bad requests get the right status and a JSON error naming the problem, and write
nothing; an unexpected failure is a generic 500 without a trace of the internals."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tidekv.http import create_app
from tidekv.testing import LocalServer, ServerThread

V = "ab" * 20  # a well-formed version id that names nothing

BAD_REQUESTS: list[tuple[str, str, dict[str, str], bytes, int, str, str]] = [
    # method, path, headers, body, status, error code, a word the message must contain
    ("PUT", "/v1/kv/a%zz", {}, b"v", 400, "invalid_input", "percent-encoding"),
    ("PUT", "/v1/kv/a%e2%28", {}, b"v", 400, "invalid_input", "UTF-8"),
    ("PUT", "/v1/kv/", {}, b"v", 400, "invalid_key", "empty"),
    ("PUT", "/v1/kv/" + "k" * 1025, {}, b"v", 413, "too_large", "1025"),
    ("GET", "/v1/kv?limit=ten", {}, b"", 400, "invalid_input", "limit"),
    ("GET", "/v1/kv?limit=-1", {}, b"", 400, "invalid_input", "limit"),
    ("GET", "/v1/kv?limit=99999999", {}, b"", 400, "invalid_input", "maximum"),
    ("GET", "/v1/kv/k/history?limit=1.5", {}, b"", 400, "invalid_input", "limit"),
    ("GET", "/v1/kv/k?consistency=strong", {}, b"", 400, "invalid_input", "consistency"),
    ("GET", "/v1/kv?consistency=", {}, b"", 400, "invalid_input", "consistency"),
    ("GET", "/v1/kv/k?colour=red", {}, b"", 400, "invalid_input", "colour"),
    ("GET", "/v1/kv/k?version=1&version=2", {}, b"", 400, "invalid_input", "twice"),
    ("GET", "/v1/kv/k?version=nope", {}, b"", 400, "invalid_version", "version"),
    ("GET", "/v1/kv/k?as_of=yesterday", {}, b"", 400, "invalid_input", "RFC 3339"),
    ("GET", "/v1/kv?cursor=%%%", {}, b"", 400, "invalid_input", "percent-encoding"),
    ("PUT", "/v1/kv/k", {"If-Match": V}, b"v", 400, "invalid_input", "quoted"),
    ("PUT", "/v1/kv/k", {"If-Match": '"xyz"'}, b"v", 400, "invalid_version", "If-Match"),
    ("PUT", "/v1/kv/k", {"If-Match": f'W/"{V}"'}, b"v", 400, "invalid_input", "quoted"),
    ("PUT", "/v1/kv/k", {"If-Match": "*"}, b"v", 400, "invalid_input", "quoted"),
    ("PUT", "/v1/kv/k", {"If-Match": f'"{V}", "{V}"'}, b"v", 400, "invalid_version", "If-Match"),
    ("DELETE", "/v1/kv/k", {"If-Match": "abc"}, b"", 400, "invalid_input", "quoted"),
    ("PUT", "/v1/kv/k", {"If-None-Match": f'"{V}"'}, b"v", 400, "invalid_input", "*"),
    ("PUT", "/v1/kv/k", {"Idempotency-Key": "x" * 300}, b"v", 400, "invalid_input", "Idempotency"),
    (
        "PUT",
        "/v1/kv/k",
        {"Content-Type": "application/json"},
        b'{"a": 1,}',
        400,
        "invalid_json",
        "JSON",
    ),
    ("PUT", "/v1/kv/k", {"Content-Type": "application/json"}, b"", 400, "invalid_json", "JSON"),
    ("PUT", "/v1/kv/k", {"Content-Type": "application/ld+json"}, b"{", 400, "invalid_json", "JSON"),
    ("POST", "/v1/kv/k/rollback", {}, b"{not json", 400, "invalid_json", "JSON"),
    ("POST", "/v1/kv/k/rollback", {}, b'{"from": "x"}', 400, "invalid_input", "to"),
    ("POST", "/v1/kv/k/rollback", {}, b'{"to": "short"}', 400, "invalid_version", "version"),
    ("GET", "/v1/kv/k/diff", {}, b"", 400, "invalid_input", "from"),
    ("GET", "/v1/watch?since=abc", {}, b"", 400, "invalid_input", "cursor"),
    ("GET", "/v1/watch", {"Last-Event-ID": "-3"}, b"", 400, "invalid_input", "cursor"),
    ("GET", "/v1/watch?since=999999", {}, b"", 400, "invalid_input", "ahead"),
    ("POST", "/v1/cluster/nodes", {}, b"[]", 400, "invalid_json", "object"),
    ("POST", "/v1/cluster/nodes", {}, b'{"id": "2", "address": "h:1"}', 400, "invalid_input", "id"),
    ("POST", "/v1/cluster/nodes", {}, b'{"id": 2}', 400, "invalid_input", "address"),
    (
        "POST",
        "/v1/cluster/nodes",
        {},
        b'{"id": 41284563208440475901363224576, "address": "h:1"}',
        400,
        "invalid_input",
        "id",
    ),
    ("DELETE", "/v1/cluster/nodes/two", {}, b"", 400, "invalid_input", "node id"),
    ("GET", "/v2/kv/k", {}, b"", 404, "no_route", "/v2/kv/k"),
    ("GET", "/v1/cluster/nodes/1/extra", {}, b"", 404, "no_route", "extra"),
    ("POST", "/v1/kv/k", {}, b"v", 405, "method_not_allowed", "POST"),
    ("GET", "/v1/kv/k/rollback", {}, b"", 405, "method_not_allowed", "GET"),
    ("PATCH", "/v1/kv", {}, b"", 405, "method_not_allowed", "PATCH"),
    ("PUT", "/v1/kv/big", {}, b"x" * ((1 << 20) + 1), 413, "too_large", "limit"),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "code", "word"),
    BAD_REQUESTS,
    ids=[f"{r[0]} {r[1][:40]} {r[5]}" for r in BAD_REQUESTS],
)
@pytest.mark.parametrize("engine", ["lsm"])
def test_bad_request_is_a_json_error_and_writes_nothing(
    live: LocalServer,
    http: httpx.Client,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    code: str,
    word: str,
) -> None:
    seed = http.put("/v1/kv/k", content=b"seed").json()
    before = http.get("/v1/kv/k/history").json()
    r = http.request(method, path, headers=headers, content=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err["code"] == code
    assert word in err["message"], err["message"]
    assert "Traceback" not in r.text
    if status == 405:
        assert r.headers["allow"]
    assert live.store.revision == seed["revision"] == 1
    assert http.get("/v1/kv/k/history").json() == before
    assert http.get("/v1/kv").json()["items"][0]["key"] == "k"


@pytest.mark.parametrize("engine", ["lsm"])
def test_oversized_body_is_refused_before_it_is_read(live: LocalServer) -> None:
    """A declared Content-Length over the limit is answered at once, with the body
    still unsent: the server neither waits for it nor reads it."""
    with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
        sock.sendall(
            b"PUT /v1/kv/huge HTTP/1.1\r\nHost: t\r\nContent-Length: 1073741824\r\n\r\n"
            + b"x" * 1000
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert b"connection: close" in head.lower()
    assert b'"code":"too_large"' in body
    assert live.store.revision == 0


@pytest.mark.parametrize("engine", ["lsm"])
def test_chunked_body_over_the_limit_is_413(live: LocalServer, http: httpx.Client) -> None:
    def chunks() -> Any:
        for _ in range(5):
            yield b"y" * (300 * 1024)

    r = http.put("/v1/kv/stream", content=chunks())
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert live.store.revision == 0


class ExplodingService:
    """A service whose every call fails in a way nobody planned for."""

    node_id = 9

    async def get(self, key: str, **kw: Any) -> Any:
        raise RuntimeError("secret internal detail /etc/passwd")

    async def put(self, key: str, value: bytes, content_type: str, **kw: Any) -> Any:
        raise KeyError("another secret")

    def watch(self, **kw: Any) -> AsyncIterator[dict[str, Any]]:
        async def gen() -> AsyncIterator[dict[str, Any]]:
            raise ZeroDivisionError("feed secret")
            yield {}

        return gen()

    def metrics_text(self) -> bytes:
        return b""


def test_unexpected_exception_is_a_generic_500(caplog: pytest.LogCaptureFixture) -> None:
    with (
        ServerThread(create_app(ExplodingService())) as srv,
        httpx.Client(base_url=srv.url) as http,
    ):  # type: ignore[arg-type]
        for r in (http.get("/v1/kv/k"), http.put("/v1/kv/k", content=b"v")):
            assert r.status_code == 500
            assert r.json() == {"error": {"code": "internal", "message": "internal server error"}}
            assert "secret" not in r.text and "Traceback" not in r.text
        with http.stream("GET", "/v1/watch") as s:
            text = s.read().decode()
        assert "event: error" in text and '"code":"internal"' in text and "secret" not in text
        assert http.get("/health").status_code == 200
    logged = "\n".join(rec.getMessage() + str(rec.exc_info) for rec in caplog.records)
    assert "secret internal detail" in logged  # the traceback went to the log
