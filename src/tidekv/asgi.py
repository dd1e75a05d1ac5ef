"""A small raw-ASGI toolkit for :mod:`tidekv.http`: router, request, responses.

No framework: a request costs a dict lookup (or a few prefix/suffix tests) to route,
one pass over the headers, and two ``send`` calls. Everything that can be malformed in
a request (path escapes, query strings, numbers, the body size) is checked here and
raised as the package's own errors, which the app turns into JSON once.

Paths are matched on ``raw_path`` (before percent-decoding), so ``%2F`` inside a key
never splits it: ``/v1/kv/a%2Fhistory`` is the key ``a/history``, while
``/v1/kv/a/history`` is the history of key ``a``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

import msgspec

from tidekv.errors import InvalidInput, NotFound, TideError, ValueTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_TYPE = b"application/json"


class MethodNotAllowed(TideError):
    """The route exists but does not take this method (details: ``allow``)."""

    code = "method_not_allowed"
    http_status = 405
    exit_code = 2


class RouteNotFound(NotFound):
    """No route has this path."""

    code = "no_route"


class ClientDisconnected(Exception):
    """The client went away before the request body was read."""


# -- percent-decoding -----------------------------------------------------------------

_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def percent_decode(raw: bytes, what: str, *, plus_is_space: bool = False) -> str:
    """The UTF-8 text of a percent-encoded path segment or query part; 400 when an
    escape is malformed or the bytes are not UTF-8."""
    if plus_is_space:
        raw = raw.replace(b"+", b" ")
    if b"%" in raw:
        bad = _BAD_ESCAPE.search(raw)
        if bad is not None:
            shown = raw[bad.start() : bad.start() + 3].decode("latin-1")
            raise InvalidInput(f"bad percent-encoding {shown!r} in the {what}", parameter=what)
        raw = unquote_to_bytes(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"the {what} is not valid UTF-8", parameter=what) from None


def parse_query(qs: bytes, allowed: frozenset[str]) -> dict[str, str]:
    """Query parameters by name. Unknown names, repeated names and malformed escapes
    are 400s (a typo in a parameter name must not be silently ignored)."""
    params: dict[str, str] = {}
    if not qs:
        return params
    for part in qs.split(b"&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition(b"=")
        name = percent_decode(raw_name, "query parameter name", plus_is_space=True)
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise InvalidInput(
                f"unknown query parameter {name[:40]!r} (this route takes: {known})",
                parameter=name[:40],
            )
        if name in params:
            raise InvalidInput(f"query parameter {name!r} is given twice", parameter=name)
        params[name] = percent_decode(raw_value, f"{name} parameter", plus_is_space=True)
    return params


def parse_count(text: str | None, name: str, *, default: int | None, maximum: int) -> int | None:
    """A non-negative integer parameter (``limit``), at most ``maximum``."""
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise InvalidInput(
            f"{name} must be a non-negative integer, not {text[:40]!r}", parameter=name
        )
    n = int(text)
    if n > maximum:
        raise InvalidInput(f"{name} {n} is above the maximum {maximum}", parameter=name)
    return n


# -- routing ----------------------------------------------------------------------------

Handler = Callable[["Request"], Awaitable["Response"]]


@dataclass(frozen=True, slots=True)
class Route:
    """A path template with at most one parameter: ``{key}`` takes the rest of the path
    up to the template's suffix (slashes included), any other ``{name}`` one segment."""

    template: str
    name: str  # the metrics label
    handlers: dict[str, Handler]
    query: dict[str, frozenset[str]] = field(default_factory=dict)  # method -> parameters
    prefix: bytes = b""
    suffix: bytes = b""
    param: str | None = None

    @classmethod
    def make(
        cls,
        template: str,
        name: str,
        handlers: dict[str, Handler],
        query: dict[str, Iterable[str]] | None = None,
    ) -> Route:
        m = re.fullmatch(r"([^{}]*)(?:\{(\w+)\}([^{}]*))?", template)
        if m is None:
            raise ValueError(f"bad route template {template!r}")
        q = {meth: frozenset(query.get(meth, ())) if query else frozenset() for meth in handlers}
        return cls(
            template,
            name,
            handlers,
            q,
            m.group(1).encode(),
            (m.group(3) or "").encode(),
            m.group(2),
        )

    @property
    def methods(self) -> list[str]:
        return sorted(self.handlers)


class Router:
    """Static routes by exact path; parameterised ones grouped by prefix, then picked by
    the path's last segment (``/history``) or, failing that, the bare-suffix route."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        self._static = {r.prefix: r for r in self.routes if r.param is None}
        self._dynamic: dict[bytes, dict[bytes, Route]] = {}
        for r in self.routes:
            if r.param is not None:
                if b"/" in r.suffix[1:] or (r.suffix and not r.suffix.startswith(b"/")):
                    raise ValueError(f"route {r.template}: the suffix must be one segment")
                self._dynamic.setdefault(r.prefix, {})[r.suffix] = r
        self._prefixes = sorted(self._dynamic, key=len, reverse=True)

    def match(self, path: bytes) -> tuple[Route, bytes | None]:
        """The route for ``path`` and the raw (still percent-encoded) parameter."""
        route = self._static.get(path)
        if route is not None:
            return route, None
        for prefix in self._prefixes:
            if not path.startswith(prefix):
                continue
            by_suffix = self._dynamic[prefix]
            cut = path.rfind(b"/")
            if cut >= len(prefix):
                route = by_suffix.get(path[cut:])
                if route is not None:
                    return route, path[len(prefix) : cut]
            route = by_suffix.get(b"")
            if route is not None:
                raw = path[len(prefix) :]
                if route.param == "key" or b"/" not in raw:
                    return route, raw
        shown = path.decode("latin-1")[:200]
        raise RouteNotFound(f"no route for {shown}", path=shown)


# -- request ----------------------------------------------------------------------------


class Request:
    """One HTTP request: method, routed parameter, headers, query and a size-capped body.

    ``receive`` is the ASGI receive callable the body is read from, unless the server
    already read it (``body``); ``overflow`` says the server stopped reading a body that
    went over its limit (``body()`` then answers 413)."""

    __slots__ = (
        "_body",
        "_overflow",
        "body_unread",
        "headers",
        "method",
        "path",
        "query",
        "query_string",
        "raw_param",
        "receive",
        "route",
    )

    def __init__(
        self,
        method: str,
        path: bytes,
        query_string: bytes,
        headers: dict[bytes, bytes],
        route: Route,
        raw_param: bytes | None,
        receive: Receive | None,
        body: bytes | None = None,
        overflow: bool = False,
    ) -> None:
        self.receive = receive
        self.route = route
        self.raw_param = raw_param
        self.path = path
        self.method = method
        self.headers = headers
        self.query_string = query_string
        self.query = parse_query(query_string, route.query[method])
        self._body = body
        self._overflow = overflow
        self.body_unread = overflow  # True when a response leaves body bytes unread (413)

    def param(self, what: str) -> str:
        """The routed path parameter, percent-decoded."""
        assert self.raw_param is not None
        return percent_decode(self.raw_param, what)

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    async def body(self, limit: int) -> bytes:
        """The whole body; 413 as soon as it is known to exceed ``limit`` bytes (from
        Content-Length, before reading any of it, or while reading)."""
        if self._body is not None:
            if len(self._body) > limit:
                raise ValueTooLarge(
                    f"the request body is {len(self._body)} bytes; the limit is {limit}",
                    size=len(self._body),
                    limit=limit,
                )
            return self._body
        declared = self.headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or len(declared) > 18:
                raise InvalidInput("Content-Length is not a number", header="Content-Length")
            if int(declared) > limit:
                self.body_unread = True
                raise ValueTooLarge(
                    f"the request body is {int(declared)} bytes; the limit is {limit}",
                    size=int(declared),
                    limit=limit,
                )
        if self._overflow:
            self.body_unread = True
            raise ValueTooLarge(f"the request body is over the limit of {limit} bytes", limit=limit)
        assert self.receive is not None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                self.body_unread = bool(message.get("more_body"))
                raise ValueTooLarge(
                    f"the request body is over the limit of {limit} bytes", limit=limit
                )
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        self._body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self._body

    async def json_body(self, limit: int) -> Any:
        raw = await self.body(limit)
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            from tidekv.errors import InvalidJSON

            raise InvalidJSON(f"the request body is not valid JSON: {exc}") from None


# -- responses --------------------------------------------------------------------------


class Response:
    """A complete response: status, headers and body, sent in two messages."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: Headers) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    async def send(self, send: Send, receive: Receive) -> None:
        headers = self.headers
        headers.append((b"content-length", str(len(self.body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def json_response(status: int, data: Any, headers: Headers | None = None) -> Response:
    h: Headers = [(b"content-type", JSON_TYPE)]
    if headers:
        h.extend(headers)
    return Response(status, msgspec.json.encode(data), h)


def error_response(exc: TideError) -> Response:
    headers: Headers = []
    if isinstance(exc, MethodNotAllowed):
        headers.append((b"allow", ", ".join(exc.details.get("allow", [])).encode()))
    return json_response(exc.http_status, exc.to_dict(), headers)
