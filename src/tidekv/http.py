"""The HTTP API v1 (``shared/API.md``) as a lean raw ASGI app over a
:class:`~tidekv.service.KVService`.

``create_app(service)`` gives the app; ``run(app, host, port)`` serves it with the lean
HTTP/1.1 server of :mod:`tidekv.httpserver` (httptools parser, uvloop when installed,
graceful stop on SIGINT and SIGTERM); ``server(app, host, port)`` gives that server to
``await server.serve()`` inside a loop you own. The app is also a plain ASGI app
(``uvicorn_server`` serves it with uvicorn, for comparison).

Error handling happens in one place, :meth:`App.__call__`: every
:class:`~tidekv.errors.TideError` becomes its ``to_dict()`` JSON with its HTTP status;
an unexpected exception is logged with its traceback and answered with a generic 500;
:class:`~tidekv.errors.NotLeader` with a ``leader_url`` is forwarded to the leader
(:mod:`tidekv.forward`). Request parsing lives in :mod:`tidekv.asgi`.

The ``shard`` of a write response comes from the service's optional
``shard_of(key) -> int`` (:class:`~tidekv.service.ShardLocator`); without it, 0.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import contextlib
import importlib.util
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, cast

import msgspec
import uvicorn
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from tidekv.asgi import (
    ClientDisconnected,
    Headers,
    MethodNotAllowed,
    Receive,
    Request,
    Response,
    Route,
    Router,
    Scope,
    Send,
    error_response,
    json_response,
    parse_count,
)
from tidekv.errors import (
    InvalidInput,
    InvalidJSON,
    InvalidVersionId,
    NotLeader,
    TideError,
    Unavailable,
)
from tidekv.forward import Forwarder
from tidekv.httpserver import HTTPServer
from tidekv.node.config import MAX_NODE_ID, is_node_id
from tidekv.service import CONSISTENCY_LEVELS, Consistency, KVService
from tidekv.sharding.keys import MAX_SHARDS
from tidekv.statemachine import WriteResult
from tidekv.versioning import check_version_id
from tidekv.wire import item_dict, write_dict

__all__ = ["App", "create_app", "run", "server", "uvicorn_server"]

log = logging.getLogger("tidekv.http")

DEFAULT_MAX_BODY = 1 << 20
DEFAULT_LIST_LIMIT = 1000
DEFAULT_HISTORY_LIMIT = 1000
MAX_PAGE = 10_000
MAX_SHARD = MAX_SHARDS - 1
HEARTBEAT_SECONDS = 15.0
MAX_IDEMPOTENCY_KEY = 255

_READ_QUERY = ("consistency",)
_HEARTBEAT = b": keep-alive\n\n"
_EVENT_STREAM_HEADERS: Headers = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def create_app(service: KVService, *, metrics: bool = True, **options: Any) -> App:
    """The ASGI app of API v1 over ``service``; ``options`` as for :class:`App`."""
    return App(service, metrics=metrics, **options)


def _etag(version: str) -> bytes:
    return b'"' + version.encode() + b'"'


def parse_if_match(value: str | None) -> str | None:
    """The version id of ``If-Match: "<version>"``; 400 for any other form."""
    if value is None:
        return None
    v = value.strip()
    if len(v) < 2 or v[0] != '"' or v[-1] != '"':
        raise InvalidInput(
            f'If-Match must be a quoted version id ("<version>"), not {v[:60]!r}',
            header="If-Match",
        )
    try:
        return check_version_id(v[1:-1])
    except InvalidVersionId as exc:
        raise InvalidVersionId(f"If-Match: {exc.message}", header="If-Match") from None


def parse_if_none_match(value: str | None) -> bool:
    if value is None:
        return False
    if value.strip() != "*":
        raise InvalidInput(
            f"If-None-Match supports only '*' (write only if absent), not {value[:60]!r}",
            header="If-None-Match",
        )
    return True


def _encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError):
        raise InvalidInput(f"invalid list cursor {cursor[:60]!r}", parameter="cursor") from None


class App:
    """The ASGI callable. Routes are in :attr:`routes` (the OpenAPI test reads them).

    ``metrics``: count requests and their latency per route (served at ``/metrics``
    with the service's own metrics; off, ``/metrics`` has only the service's).
    ``max_body_bytes``: the largest request body (default: the service's
    ``max_value_bytes``, else 1 MiB); larger ones get 413 unread. ``heartbeat``: seconds
    between SSE comments on an idle watch. ``node_name``: sent as
    ``X-Tide-Forwarded-By`` (default: the service's ``node_id``).
    """

    def __init__(
        self,
        service: KVService,
        *,
        metrics: bool = True,
        max_body_bytes: int | None = None,
        heartbeat: float = HEARTBEAT_SECONDS,
        node_name: str | None = None,
    ) -> None:
        self.service = service
        self.max_body = max_body_bytes or int(getattr(service, "max_value_bytes", DEFAULT_MAX_BODY))
        self.heartbeat = heartbeat
        shard_of = getattr(service, "shard_of", None)
        self._shard_of: Callable[[str], int] = shard_of if callable(shard_of) else _shard_zero
        name = node_name or str(getattr(service, "node_id", "") or "tidekv")
        self.forwarder = Forwarder(name, stream_timeout=4 * heartbeat)
        self.routes = self._routes()
        self._router = Router(self.routes)
        self._openapi: bytes | None = None
        self._closing = asyncio.Event()
        self._metrics = _EdgeMetrics() if metrics else None
        self.registry = CollectorRegistry(auto_describe=False)
        if self._metrics is not None:
            self.registry.register(self._metrics)

    # -- the table ----------------------------------------------------------------

    def _routes(self) -> list[Route]:
        R = Route.make
        return [
            R(
                "/v1/kv",
                "kv_list",
                {"GET": self.list_keys},
                {"GET": ("prefix", "start", "end", "limit", "cursor", "shard", *_READ_QUERY)},
            ),
            R(
                "/v1/kv/{key}",
                "kv",
                {"GET": self.get_key, "PUT": self.put_key, "DELETE": self.delete_key},
                {"GET": ("version", "as_of", *_READ_QUERY)},
            ),
            R(
                "/v1/kv/{key}/history",
                "kv_history",
                {"GET": self.history},
                {"GET": ("limit", "before", *_READ_QUERY)},
            ),
            R("/v1/kv/{key}/rollback", "kv_rollback", {"POST": self.rollback}),
            R(
                "/v1/kv/{key}/diff",
                "kv_diff",
                {"GET": self.diff},
                {"GET": ("from", "to", *_READ_QUERY)},
            ),
            R("/v1/watch", "watch", {"GET": self.watch}, {"GET": ("prefix", "since", "shard")}),
            R("/v1/cluster", "cluster", {"GET": self.cluster}),
            R("/v1/cluster/nodes", "cluster_nodes", {"POST": self.add_node}),
            R("/v1/cluster/nodes/{id}", "cluster_node", {"DELETE": self.remove_node}),
            R("/health", "health", {"GET": self.health}),
            R("/ready", "ready", {"GET": self.ready}),
            R("/metrics", "metrics", {"GET": self.metrics}),
            R("/openapi.json", "openapi", {"GET": self.openapi}),
        ]

    # -- ASGI -----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self._lifespan(receive, send)
            return
        started = time.perf_counter()
        path: bytes = scope.get("raw_path") or scope["path"].encode()
        method: str = scope["method"]
        resp, route_name = await self.respond(
            method, path, scope.get("query_string", b""), dict(scope["headers"]), receive
        )
        if resp is None:
            return
        try:
            await resp.send(send, receive)
        except Exception:
            log.exception("error while sending the response to %s %s", method, path[:200])
        self.observe(route_name, method, resp.status, started)

    async def respond(
        self,
        method: str,
        path: bytes,
        query_string: bytes,
        headers: dict[bytes, bytes],
        receive: Receive | None,
        body: bytes | None = None,
        overflow: bool = False,
    ) -> tuple[Response | None, str]:
        """The response to one request and its route's metrics label (``None``: the
        client went away before its body was read). Every error is answered here, as
        JSON; this is what both :meth:`__call__` (ASGI) and :mod:`tidekv.httpserver`
        (which has read the body already: ``body``, or ``overflow`` past the limit) call.
        """
        route_name = "unmatched"
        req: Request | None = None
        try:
            route, raw_param = self._router.match(path)
            route_name = route.name
            handler = route.handlers.get(method)
            if handler is None:
                raise MethodNotAllowed(
                    f"{method} is not allowed on {route.template}; allowed: "
                    + ", ".join(route.methods),
                    allow=route.methods,
                )
            req = Request(
                method, path, query_string, headers, route, raw_param, receive, body, overflow
            )
            resp = await handler(req)
        except NotLeader as exc:
            resp = await self._forward(req, exc)
        except TideError as exc:
            resp = error_response(exc)
        except ClientDisconnected:
            return None, route_name
        except Exception:
            log.exception("unexpected error answering %s %s", method, path[:200])
            resp = error_response(TideError("internal server error"))
        if (req is not None and req.body_unread) or (req is None and overflow):
            resp.headers.append((b"connection", b"close"))
        return resp, route_name

    def observe(self, route_name: str, method: str, status: int, started: float) -> None:
        """Count one answered request (``started``: its ``time.perf_counter()``)."""
        if self._metrics is not None:
            self._metrics.observe(route_name, method, status, time.perf_counter() - started)

    async def _forward(self, req: Request | None, exc: NotLeader) -> Response:
        if req is None:
            return error_response(exc)
        try:
            return await self.forwarder.forward(
                req, exc, self.max_body, streaming=req.route.name == "watch"
            )
        except TideError as err:
            return error_response(err)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def startup(self) -> None:
        """Get ready to serve in the running loop (a server calls it once it starts)."""
        self._closing = asyncio.Event()

    def begin_shutdown(self) -> None:
        """End every open watch stream (the server is stopping: an open stream would
        hold the graceful shutdown up forever). :func:`server` calls it."""
        self._closing.set()

    async def aclose(self) -> None:
        """Close the shared forwarding client (done at lifespan shutdown)."""
        await self.forwarder.aclose()

    # -- request helpers ----------------------------------------------------------

    def _consistency(self, req: Request) -> Consistency:
        level = req.query.get("consistency", "linearizable")
        if level not in CONSISTENCY_LEVELS:
            raise InvalidInput(
                f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, not {level[:40]!r}",
                parameter="consistency",
            )
        return cast(Consistency, level)

    @staticmethod
    def _idempotency_key(req: Request) -> str | None:
        value = req.headers.get(b"idempotency-key")
        if value is None:
            return None
        if not 0 < len(value) <= MAX_IDEMPOTENCY_KEY or not all(33 <= b <= 126 for b in value):
            raise InvalidInput(
                f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters",
                header="Idempotency-Key",
            )
        return value.decode("ascii")

    @staticmethod
    def _author(req: Request) -> str | None:
        value = req.headers.get(b"x-tide-author")
        if value is None:
            return None
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("X-Tide-Author is not UTF-8", header="X-Tide-Author") from None

    def _written(self, result: WriteResult) -> Response:
        return json_response(
            200, write_dict(result, self._shard_of(result.key)), [(b"etag", _etag(result.version))]
        )

    # -- keys -----------------------------------------------------------------------

    async def get_key(self, req: Request) -> Response:
        key = req.param("key")
        q = req.query
        item = await self.service.get(
            key,
            consistency=self._consistency(req),
            version=q.get("version"),
            as_of=q.get("as_of"),
        )
        version = item.version.encode()
        headers: Headers = [
            (b"content-type", item.content_type.encode()),
            (b"etag", b'"' + version + b'"'),
            (b"x-tide-version", version),
            (b"x-tide-revision", str(item.revision).encode()),
            (b"x-tide-hlc", str(item.hlc).encode()),
        ]
        if item.siblings > 1:
            headers.append((b"x-tide-siblings", str(item.siblings).encode()))
        return Response(200, item.value, headers)

    async def put_key(self, req: Request) -> Response:
        key = req.param("key")
        if_match = parse_if_match(req.header(b"if-match"))
        if_none_match = parse_if_none_match(req.header(b"if-none-match"))
        idem = self._idempotency_key(req)
        author = self._author(req)
        value = await req.body(self.max_body)
        ctype = req.header(b"content-type") or "application/octet-stream"
        result = await self.service.put(
            key,
            value,
            ctype,
            if_match=if_match,
            if_none_match=if_none_match,
            idempotency_key=idem,
            author=author,
        )
        return self._written(result)

    async def delete_key(self, req: Request) -> Response:
        key = req.param("key")
        if_match = parse_if_match(req.header(b"if-match"))
        if req.headers.get(b"if-none-match") is not None:
            raise InvalidInput("If-None-Match does not apply to DELETE", header="If-None-Match")
        result = await self.service.delete(
            key,
            if_match=if_match,
            idempotency_key=self._idempotency_key(req),
            author=self._author(req),
        )
        return self._written(result)

    async def list_keys(self, req: Request) -> Response:
        q = req.query
        limit = parse_count(q.get("limit"), "limit", default=DEFAULT_LIST_LIMIT, maximum=MAX_PAGE)
        assert limit is not None
        start = q.get("start")
        cursor = q.get("cursor")
        if cursor:
            start = _decode_cursor(cursor)
        items = await self.service.scan(
            prefix=q.get("prefix") or None,
            start=start,
            end=q.get("end"),
            limit=limit + 1,
            consistency=self._consistency(req),
            **_shard_arg(q.get("shard")),
        )
        nxt = _encode_cursor(items[limit].key) if len(items) > limit else None
        return json_response(
            200, {"items": [item_dict(i, raw=True) for i in items[:limit]], "next": nxt}
        )

    async def history(self, req: Request) -> Response:
        key = req.param("key")
        q = req.query
        limit = parse_count(
            q.get("limit"), "limit", default=DEFAULT_HISTORY_LIMIT, maximum=MAX_PAGE
        )
        assert limit is not None
        versions = await self.service.history(
            key, limit=limit + 1, before=q.get("before"), consistency=self._consistency(req)
        )
        nxt = versions[limit - 1].version.id if len(versions) > limit and limit else None
        return json_response(
            200, {"key": key, "versions": [v.to_dict() for v in versions[:limit]], "next": nxt}
        )

    async def rollback(self, req: Request) -> Response:
        key = req.param("key")
        if_match = parse_if_match(req.header(b"if-match"))
        idem = self._idempotency_key(req)
        author = self._author(req)
        body = await req.json_body(self.max_body)
        to = body.get("to") if isinstance(body, dict) else None
        if not isinstance(to, str):
            raise InvalidInput('the body must be a JSON object {"to": "<version>"}', field="to")
        result = await self.service.rollback(
            key, to, if_match=if_match, idempotency_key=idem, author=author
        )
        return self._written(result)

    async def diff(self, req: Request) -> Response:
        key = req.param("key")
        q = req.query
        from_version = q.get("from")
        if from_version is None:
            raise InvalidInput("the 'from' parameter (a version id) is required", parameter="from")
        d = await self.service.diff(
            key, from_version, q.get("to"), consistency=self._consistency(req)
        )
        return json_response(200, d.to_dict())

    # -- change feed ------------------------------------------------------------------

    async def watch(self, req: Request) -> Response:
        await req.body(self.max_body)  # consume it: what follows on receive() is the hang-up
        last_event_id = req.header(b"last-event-id")
        since = last_event_id if last_event_id is not None else req.query.get("since")
        events = self.service.watch(
            prefix=req.query.get("prefix") or None,
            since=since,
            **_shard_arg(req.query.get("shard")),
        )
        first: asyncio.Future[dict[str, Any]] = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0)  # a generator that refuses its cursor at once answers 4xx
        if first.done() and isinstance(first.exception(), TideError):
            first.result()  # raises it
        return _EventStream(events, first, self.heartbeat, self._closing)

    # -- cluster ------------------------------------------------------------------------

    async def cluster(self, req: Request) -> Response:
        return json_response(200, await self.service.cluster_info())

    async def add_node(self, req: Request) -> Response:
        body = await req.json_body(self.max_body)
        if not isinstance(body, dict):
            raise InvalidJSON('the body must be a JSON object {"id": <int>, "address": "..."}')
        node_id, address = body.get("id"), body.get("address")
        if not is_node_id(node_id):
            raise InvalidInput(f"id must be an integer node id from 1 to {MAX_NODE_ID}", field="id")
        if not isinstance(address, str) or not address:
            raise InvalidInput("address must be a non-empty string", field="address")
        raft = body.get("raft_address")
        if raft is not None and (not isinstance(raft, str) or not raft):
            raise InvalidInput("raft_address must be a non-empty string", field="raft_address")
        return json_response(200, await self.service.add_node(node_id, address, raft))

    async def remove_node(self, req: Request) -> Response:
        raw = req.param("node id")
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not is_node_id(int(raw)):
            raise InvalidInput(f"node id must be a positive integer, not {raw[:40]!r}", field="id")
        return json_response(200, await self.service.remove_node(int(raw)))

    # -- operations ----------------------------------------------------------------------

    async def health(self, req: Request) -> Response:
        return json_response(200, {"status": "ok"})

    async def ready(self, req: Request) -> Response:
        if await self.service.ready():
            return json_response(200, {"ready": True})
        raise Unavailable("not ready to serve linearizable requests")

    async def metrics(self, req: Request) -> Response:
        text = self.service.metrics_text()
        if self._metrics is not None:
            text = generate_latest(self.registry) + text
        return Response(200, text, [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")])

    async def openapi(self, req: Request) -> Response:
        if self._openapi is None:
            from tidekv.openapi import openapi_document

            self._openapi = msgspec.json.encode(openapi_document())
        return Response(200, self._openapi, [(b"content-type", b"application/json")])


def _shard_arg(text: str | None) -> dict[str, int]:
    """``shard=N`` of a listing or a watch, as a keyword for the service (only when given:
    a service without shards need not take it)."""
    if text is None:
        return {}
    shard = parse_count(text, "shard", default=None, maximum=MAX_SHARD)
    assert shard is not None
    return {"shard": shard}


def _shard_zero(key: str) -> int:
    return 0


_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class _EdgeMetrics(Collector):
    """Request counts and latency histograms in plain ints and lists (one dict lookup, a
    bisect and three additions per request; the app runs on one event loop), turned into
    Prometheus families only when scraped."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        # route -> [count per bucket (+Inf last)..., then the sum of seconds]
        self.latency: dict[str, list[float]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        row = self.latency.get(route)
        if row is None:
            row = self.latency[route] = [0.0] * (len(_BUCKETS) + 2)
        row[bisect.bisect_left(_BUCKETS, seconds)] += 1
        row[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "tidekv_http_requests",
            "HTTP requests answered, by route, method and status",
            labels=["route", "method", "status"],
        )
        for (route, method, status), n in sorted(self.requests.items()):
            requests.add_metric([route, method, str(status)], n)
        yield requests
        latency = HistogramMetricFamily(
            "tidekv_http_request_duration_seconds",
            "Time to answer an HTTP request (streams: until the stream ends), by route",
            labels=["route"],
        )
        for route, row in sorted(self.latency.items()):
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*_BUCKETS, float("inf")), row[:-1], strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            latency.add_metric([route], buckets, row[-1])
        yield latency


class _EventStream(Response):
    """``text/event-stream`` of change events: ``id: <cursor>`` and ``data: <json>`` per
    event, a comment every ``heartbeat`` seconds, ``event: error`` if the feed fails."""

    __slots__ = ("closing", "events", "first", "heartbeat")

    def __init__(
        self,
        events: AsyncIterator[dict[str, Any]],
        first: asyncio.Future[dict[str, Any]],
        heartbeat: float,
        closing: asyncio.Event,
    ) -> None:
        super().__init__(200, b"", list(_EVENT_STREAM_HEADERS))
        self.events = events
        self.first = first
        self.heartbeat = heartbeat
        self.closing = closing

    async def send(self, send: Send, receive: Receive) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        pump = asyncio.ensure_future(self._pump(send))
        hangup = asyncio.ensure_future(receive())
        closing = asyncio.ensure_future(self.closing.wait())
        tasks = (pump, hangup, closing, self.first)
        try:
            while True:
                done, _ = await asyncio.wait(
                    (pump, hangup, closing),
                    timeout=self.heartbeat,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if hangup in done:
                    if hangup.result()["type"] == "http.disconnect":
                        break
                    hangup = asyncio.ensure_future(receive())
                if pump in done or closing in done:
                    break
                if not done:
                    await send(
                        {"type": "http.response.body", "body": _HEARTBEAT, "more_body": True}
                    )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        await send({"type": "http.response.body", "body": b""})

    async def _pump(self, send: Send) -> None:
        encode = msgspec.json.encode
        try:
            event = await self.first
            while True:
                cursor = str(event["cursor"]).encode()
                if "type" in event:
                    data = b"id: " + cursor + b"\ndata: " + encode(event) + b"\n\n"
                else:  # a position only: the client's Last-Event-ID moves, nothing to show
                    data = b"id: " + cursor + b"\n\n"
                await send({"type": "http.response.body", "body": data, "more_body": True})
                event = await anext(self.events)
        except StopAsyncIteration:
            return
        except TideError as exc:
            payload = b"event: error\ndata: " + encode(exc.to_dict()) + b"\n\n"
            await send({"type": "http.response.body", "body": payload, "more_body": True})
        except Exception:
            log.exception("the change feed failed")
            payload = (
                b"event: error\ndata: "
                + encode(TideError("internal server error").to_dict())
                + b"\n\n"
            )
            await send({"type": "http.response.body", "body": payload, "more_body": True})


# -- serving ----------------------------------------------------------------------------


def server(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    log_level: str = "warning",
    timeout_graceful_shutdown: float = 10.0,
    keep_alive_timeout: float = 75.0,
    install_signal_handlers: bool = True,
) -> HTTPServer:
    """The lean HTTP/1.1 server (:mod:`tidekv.httpserver`) for ``app``.
    ``await server.serve()`` runs it in the current loop; ``server.run()`` in a new one
    (uvloop when installed); ``server.should_exit = True`` stops it gracefully.
    ``log_level`` is that of the ``tidekv.httpserver`` logger."""
    logging.getLogger("tidekv.httpserver").setLevel(log_level.upper())
    return HTTPServer(
        app,
        host,
        port,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
        keep_alive_timeout=keep_alive_timeout,
        install_signal_handlers=install_signal_handlers,
    )


def uvicorn_server(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    log_level: str = "warning",
    **options: Any,
) -> uvicorn.Server:
    """A uvicorn server for ``app`` (httptools, uvloop when installed, no access log):
    what :func:`server` used to be, kept for comparison (``bench/http.py``) and for
    anyone who wants a general-purpose ASGI server. Extra ``options`` go to
    :class:`uvicorn.Config`."""
    uvloop = importlib.util.find_spec("uvloop") is not None
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http="httptools",
        loop="uvloop" if uvloop else "asyncio",
        access_log=False,
        log_level=log_level,
        lifespan="on",
        server_header=False,
        **{"timeout_graceful_shutdown": 10, **options},
    )
    return _Server(config)


class _Server(uvicorn.Server):
    """Tells an :class:`App` that shutdown began, so its open watch streams end."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        begin = getattr(self.config.app, "begin_shutdown", None)
        if callable(begin):
            begin()
        await super().shutdown(sockets)


def run(app: Any, host: str = "127.0.0.1", port: int = 8080, **options: Any) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then stop gracefully (open requests finish,
    the app's lifespan shutdown runs) and return."""
    with contextlib.suppress(KeyboardInterrupt):
        server(app, host, port, **options).run()
