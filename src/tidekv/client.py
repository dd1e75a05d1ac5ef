"""Python clients of the HTTP API v1: :class:`Client` (blocking) and :class:`AsyncClient`
(asyncio), both on :mod:`httpx`, with the same methods as the embedded
:class:`~tidekv.store.Store` where they overlap::

    with tidekv.Client("http://127.0.0.1:7070,http://127.0.0.1:7071") as db:
        w = db.put("user/1", {"name": "Ada"})
        db.get("user/1").json()
        for event in db.watch(prefix="user/"):
            ...

- Errors are the package's exception tree: the JSON ``error.code`` (and the status)
  of a response maps back to its class, with ``details`` preserved; a 300 is
  :class:`~tidekv.errors.Siblings`.
- Retries: connection errors, timeouts and 503 answers are retried (``retries`` times,
  rotating through the URLs, with jittered exponential backoff); 4xx never. Every write
  sends an ``Idempotency-Key`` (a uuid4) that all retries of that call reuse, so a write
  that timed out after it was applied is not applied twice.
- :meth:`Client.watch` reconnects (to the next URL) when its stream breaks and resumes
  from the last event it delivered, with ``Last-Event-ID``: each event is delivered once.

The request building and response parsing are shared (module functions below); the
two classes differ only in how they wait.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
import msgspec

from tidekv import errors
from tidekv.asgi import MethodNotAllowed, RouteNotFound
from tidekv.errors import InvalidInput, InvalidValue, TideError, Unavailable
from tidekv.sharding.keys import check_shards, shard_of
from tidekv.store import TEXT_CONTENT_TYPE, Item, VersionInfo
from tidekv.versioning import (
    BYTES_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    Diff,
    HLCTimestamp,
    Version,
    is_json_type,
)

__all__ = ["AsyncClient", "Client", "Event", "Written"]

DEFAULT_PAGE = 1000
WATCH_READ_TIMEOUT = 45.0  # three server heartbeats


# -- results -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Written:
    """The answer to a write: the new version and where it was applied."""

    key: str
    version: str
    parents: tuple[str, ...]
    revision: int
    shard: int
    hlc: HLCTimestamp
    deleted: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "key": self.key,
            "version": self.version,
            "parents": list(self.parents),
            "revision": self.revision,
            "shard": self.shard,
            "hlc": str(self.hlc),
            "deleted": self.deleted,
        }


@dataclass(frozen=True, slots=True)
class Event:
    """One change of the feed. ``data`` is the event's JSON as the server sent it."""

    cursor: str
    type: str
    key: str
    version: str
    revision: int
    data: dict[str, Any] = field(repr=False)

    @property
    def value(self) -> bytes | None:
        """The written value (None for a delete); a JSON document re-encoded compactly."""
        if "value_b64" in self.data:
            return base64.b64decode(self.data["value_b64"])
        if "value" in self.data:
            return msgspec.json.encode(self.data["value"])
        return None

    def json(self) -> Any:
        """The written JSON document."""
        if "value" in self.data:
            return self.data["value"]
        value = self.value
        return None if value is None else msgspec.json.decode(value)


# -- errors --------------------------------------------------------------------------------

_BY_CODE: dict[str, type[TideError]] = {
    "invalid_input": errors.InvalidInput,
    "invalid_key": errors.InvalidKey,
    "invalid_value": errors.InvalidValue,
    "invalid_json": errors.InvalidJSON,
    "invalid_version": errors.InvalidVersionId,
    "too_large": errors.ValueTooLarge,
    "not_found": errors.KeyNotFound,
    "no_route": RouteNotFound,
    "version_not_found": errors.VersionNotFound,
    "siblings": errors.Siblings,
    "precondition_failed": errors.PreconditionFailed,
    "conflict": errors.Conflict,
    "gone": errors.Gone,
    "method_not_allowed": MethodNotAllowed,
    "unavailable": errors.Unavailable,
    "not_leader": errors.NotLeader,
    "timeout": errors.Timeout,
    "closed": errors.StoreClosed,
    "storage_error": errors.StorageError,
    "corruption": errors.CorruptionError,
    "internal": TideError,
}
_BY_STATUS: dict[int, type[TideError]] = {
    300: errors.Siblings,
    400: errors.InvalidInput,
    404: errors.NotFound,
    409: errors.Conflict,
    410: errors.Gone,
    412: errors.PreconditionFailed,
    413: errors.ValueTooLarge,
    503: errors.Unavailable,
}


def error_from_body(status: int | None, body: Any, fallback: str = "") -> TideError:
    """The exception for an error body: its class from ``error.code`` (else from the
    status), its message and details as sent; ``code`` and ``http_status`` as sent
    (``status`` None: an error inside a stream, which has no status of its own)."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        cls = _BY_STATUS.get(status or 500, TideError)
        exc = cls(f"HTTP {status}: {fallback[:200]}".rstrip(": "), status=status)
    else:
        details = dict(err)
        code = str(details.pop("code", ""))
        message = str(details.pop("message", f"HTTP {status}"))
        cls = _BY_CODE.get(code) or _BY_STATUS.get(status or 500, TideError)
        exc = cls(message, **details)
        exc.code = code or exc.code
    if status is not None:
        exc.http_status = status
    return exc


def error_from(resp: httpx.Response) -> TideError:
    try:
        body = msgspec.json.decode(resp.content)
    except msgspec.DecodeError:
        body = None
    return error_from_body(resp.status_code, body, resp.text if body is None else "")


def _refused(exc: BaseException | None) -> bool:
    """Whether a ConnectionRefusedError is anywhere in ``exc``'s chain of causes."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ConnectionRefusedError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _unreachable(base: str, exc: httpx.HTTPError) -> Unavailable:
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and ("refused" in reason.lower() or _refused(exc)):
        reason = "connection refused"
    elif isinstance(exc, httpx.TimeoutException):
        reason = f"timed out ({type(exc).__name__})"
    return Unavailable(f"cannot reach {base}: {reason}", url=base)


def _check(resp: httpx.Response) -> httpx.Response:
    if resp.status_code >= 300:
        raise error_from(resp)
    return resp


# -- requests ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    write: bool = False  # gets an Idempotency-Key shared by its retries
    key: str | None = None  # a single-key request: sent to the key's shard leader


def _key_path(key: str, suffix: str = "") -> str:
    return "/v1/kv/" + quote(key, safe="") + suffix


def _params(**values: object) -> dict[str, str]:
    return {k: str(v) for k, v in values.items() if v is not None}


def _write_headers(if_match: str | None, author: str | None) -> dict[str, str]:
    h: dict[str, str] = {}
    if if_match is not None:
        h["If-Match"] = f'"{if_match}"'
    if author is not None:
        h["X-Tide-Author"] = author
    return h


def encode_value(value: object, content_type: str | None) -> tuple[bytes, str]:
    """Bytes and content type of a value, as :meth:`Store.put <tidekv.store.Store.put>`
    decides: bytes as given, ``str`` as UTF-8 text, anything else as a JSON document."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), content_type or BYTES_CONTENT_TYPE
    if isinstance(value, str):
        return value.encode(), content_type or TEXT_CONTENT_TYPE
    if content_type is not None and not is_json_type(content_type):
        raise InvalidValue(
            f"a {type(value).__name__} value can only be stored as JSON, not as {content_type!r}"
        )
    try:
        return msgspec.json.encode(value), content_type or JSON_CONTENT_TYPE
    except (TypeError, msgspec.EncodeError) as exc:
        raise InvalidValue(f"the value cannot be encoded as JSON: {exc}") from None


def _put_call(
    key: str,
    value: object,
    content_type: str | None,
    if_match: str | None,
    if_none_match: bool,
    author: str | None,
) -> _Call:
    data, ctype = encode_value(value, content_type)
    headers = _write_headers(if_match, author)
    headers["Content-Type"] = ctype
    if if_none_match:
        headers["If-None-Match"] = "*"
    return _Call("PUT", _key_path(key), headers=headers, content=data, write=True, key=key)


def _delete_call(key: str, headers: dict[str, str]) -> _Call:
    return _Call("DELETE", _key_path(key), headers=headers, write=True, key=key)


def _as_of(as_of: int | str | dt.datetime | None) -> str | None:
    if isinstance(as_of, dt.datetime):
        return as_of.isoformat()
    return None if as_of is None else str(as_of)


def _get_call(
    key: str, consistency: str | None, version: str | None, as_of: int | str | dt.datetime | None
) -> _Call:
    params = _params(consistency=consistency, version=version, as_of=_as_of(as_of))
    return _Call("GET", _key_path(key), params=params, key=key)


def _item(key: str, resp: httpx.Response) -> Item:
    h = resp.headers
    hlc = h.get("x-tide-hlc")
    return Item(
        key,
        resp.content,
        h.get("content-type", BYTES_CONTENT_TYPE),
        h.get("x-tide-version", ""),
        int(h.get("x-tide-revision", "0")),
        HLCTimestamp.parse(hlc) if hlc else HLCTimestamp(0, 0),
        int(h.get("x-tide-siblings", "1")),
    )


def _listed(d: dict[str, Any]) -> Item:
    if "value_b64" in d:
        value = base64.b64decode(d["value_b64"])
    else:
        value = msgspec.json.encode(d.get("value"))
    hlc = d.get("hlc")
    return Item(
        d["key"],
        value,
        d.get("content_type", BYTES_CONTENT_TYPE),
        d["version"],
        int(d["revision"]),
        HLCTimestamp.parse(hlc) if hlc else HLCTimestamp(0, 0),
        int(d.get("siblings", 1)),
    )


def _written(resp: httpx.Response) -> Written:
    d = msgspec.json.decode(resp.content)
    return Written(
        d["key"],
        d["version"],
        tuple(d["parents"]),
        int(d["revision"]),
        int(d.get("shard", 0)),
        HLCTimestamp.parse(d["hlc"]),
        bool(d.get("deleted", False)),
    )


def _version_info(d: dict[str, Any]) -> VersionInfo:
    v = Version(
        id=d["version"],
        key=d["key"],
        parents=tuple(d["parents"]),
        hlc=HLCTimestamp.parse(d["hlc"]),
        origin=d["origin"],
        author=d["author"],
        content_type=d["content_type"],
        digest=d["digest"],
        size=int(d["size"]),
        deleted=bool(d["deleted"]),
    )
    return VersionInfo(v, int(d["revision"]))


def _json(resp: httpx.Response) -> Any:
    return msgspec.json.decode(resp.content)


def _page_call(
    prefix: str | None,
    start: str | None,
    end: str | None,
    consistency: str | None,
    cursor: str | None,
    page: int,
) -> _Call:
    params = _params(
        prefix=prefix, start=start, end=end, consistency=consistency, cursor=cursor, limit=page
    )
    return _Call("GET", "/v1/kv", params=params)


def _history_call(key: str, before: str | None, consistency: str | None, page: int) -> _Call:
    params = _params(before=before, consistency=consistency, limit=page)
    return _Call("GET", _key_path(key, "/history"), params=params, key=key)


def _pages_left(limit: int | None, got: int, page_size: int) -> int:
    return page_size if limit is None else min(page_size, limit - got)


def _rollback_call(key: str, to: str, if_match: str | None, author: str | None) -> _Call:
    headers = _write_headers(if_match, author)
    headers["Content-Type"] = "application/json"
    body = msgspec.json.encode({"to": to})
    return _Call(
        "POST", _key_path(key, "/rollback"), headers=headers, content=body, write=True, key=key
    )


def _diff_call(
    key: str, from_version: str, to_version: str | None, consistency: str | None
) -> _Call:
    params = _params(consistency=consistency, to=to_version)
    params["from"] = from_version
    return _Call("GET", _key_path(key, "/diff"), params=params, key=key)


def _add_node_call(node_id: int, address: str) -> _Call:
    body = msgspec.json.encode({"id": node_id, "address": address})
    return _Call(
        "POST",
        "/v1/cluster/nodes",
        headers={"Content-Type": "application/json"},
        content=body,
        write=True,
    )


def _diff(resp: httpx.Response) -> Diff:
    d = _json(resp)
    return Diff(d["format"], d["changes"])


# -- endpoints and retries -----------------------------------------------------------------


def parse_urls(urls: str | Sequence[str]) -> list[str]:
    """Base URLs from a comma-separated string or a sequence (``host:port`` gets
    ``http://``); :class:`InvalidInput` when there are none or one is not http(s)."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    out: list[str] = []
    for raw in items:
        url = raw.strip().rstrip("/")
        if not url:
            continue
        if "://" not in url:
            url = "http://" + url
        if not url.startswith(("http://", "https://")):
            raise InvalidInput(f"not an http(s) URL: {raw.strip()!r}", url=raw.strip())
        out.append(url)
    if not out:
        raise InvalidInput("no server URL given")
    return out


def _backoff(failures: int) -> float:
    """Seconds to wait after the n-th failure in a row: 50 ms doubling up to 1 s, jittered."""
    return min(1.0, 0.05 * 2.0 ** (failures - 1)) * random.uniform(0.5, 1.0)


class _Attempts:
    """The retry policy of one call: which URL to try and how long to wait after a
    failure; raises the last error when the retries are used up."""

    def __init__(self, endpoints: _Endpoints, retries: int) -> None:
        self.endpoints = endpoints
        self.left = retries
        self.n = 0

    @property
    def base(self) -> str:
        return self.endpoints.current

    def failed(self, err: TideError) -> float:
        if self.left <= 0:
            raise err
        self.left -= 1
        self.n += 1
        self.endpoints.rotate()
        return _backoff(self.n)


class _Endpoints:
    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.i = 0

    @property
    def current(self) -> str:
        return self.urls[self.i]

    def rotate(self) -> None:
        self.i = (self.i + 1) % len(self.urls)


# -- the shard map -------------------------------------------------------------------------

FORWARDED_BY = "x-tide-forwarded-by"
MAP_REFRESH_SECONDS = 0.5  # the least time between two loads of the shard map
MAP_QUIET_SECONDS = 30.0  # the most, while loads give no leader (doubling up to it)
UNREACHABLE_SECONDS = 5.0  # a leader that did not answer is not routed to for this long


class _ShardMap:
    """The client's cache of ``GET /v1/cluster``: the shard count and each shard's leader
    URL, so a single-key request goes straight to its shard's leader.

    It is loaded lazily, and marked stale (loaded again on the next single-key request,
    at most every :data:`MAP_REFRESH_SECONDS`) when an answer says it went to the wrong
    node (``X-Tide-Forwarded-By``), on ``503 not_leader``, and when a cached leader cannot
    be reached (its routes are dropped at once: the request falls back to the configured
    URLs). Shared by :class:`Client` and :class:`AsyncClient`, which only do the I/O.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.shards = 1
        self.leaders: dict[int, str] = {}
        self.stale = True
        self.loaded_at = -MAP_QUIET_SECONDS
        self.loads = 0
        self.empty = 0  # loads in a row that gave no leader at all
        self.unreachable: dict[str, float] = {}  # leader URL -> when it did not answer

    def due(self, call: _Call) -> bool:
        """Whether the map must be (re)loaded before ``call``; when so, the caller loads
        it now (this counts as the attempt, so concurrent calls do not all load it)."""
        if not (self.enabled and call.key is not None and self.stale):
            return False
        now = time.monotonic()
        wait = min(MAP_QUIET_SECONDS, MAP_REFRESH_SECONDS * 2.0**self.empty)
        if now - self.loaded_at < wait:
            return False
        self.loaded_at = now
        return True

    def load(self, body: Any) -> None:
        """Take in a ``GET /v1/cluster`` answer (a missing ``shard_count``: one shard)."""
        self.loads += 1
        self.empty += 1
        if isinstance(body, dict) and body.get("mode") == "local":
            self.stale = False  # one embedded store: nothing to route, ever
            return
        if not isinstance(body, dict):
            return
        try:
            shards = check_shards(int(body.get("shard_count", 1)))
        except (TypeError, ValueError):
            return
        nodes = {
            n.get("id"): n.get("address") for n in body.get("nodes") or [] if isinstance(n, dict)
        }
        leaders: dict[int, str] = {}
        entries = [e for e in body.get("shards") or [] if isinstance(e, dict)]
        for entry in entries:
            sid = 0 if shards == 1 else entry.get("id")
            address = entry.get("leader_address") or nodes.get(entry.get("leader"))
            if isinstance(sid, int) and 0 <= sid < shards and isinstance(address, str):
                leaders[sid] = _base_url(address)
        self.shards, self.leaders = shards, leaders
        self.stale = len(leaders) < shards  # a shard without a leader: ask again later
        if leaders:
            self.empty = 0

    def target(self, call: _Call) -> str | None:
        """The base URL to send ``call`` to (None: the configured URLs)."""
        if not self.enabled or call.key is None:
            return None
        base = self.leaders.get(shard_of(call.key, self.shards))
        if base is None:
            return None
        failed = self.unreachable.get(base)
        if failed is not None and time.monotonic() - failed < UNREACHABLE_SECONDS:
            return None
        return base

    def lost(self, base: str, *, unreachable: bool = False) -> None:
        """The cached leader at ``base`` did not answer, or is no longer the leader."""
        self.leaders = {s: u for s, u in self.leaders.items() if u != base}
        self.stale = True
        if unreachable:
            self.unreachable[base] = time.monotonic()

    def answered(self, resp: httpx.Response) -> None:
        if FORWARDED_BY in resp.headers:
            self.stale = True  # the node asked did not lead the key's shard
        elif resp.status_code == 503 and _code(resp) == "not_leader":
            self.stale = True


def _code(resp: httpx.Response) -> str:
    body = _try_json(resp.content)
    err = body.get("error") if isinstance(body, dict) else None
    return str(err.get("code", "")) if isinstance(err, dict) else ""


def _base_url(address: str) -> str:
    address = address.rstrip("/")
    return address if "://" in address else "http://" + address


def _cluster_call() -> _Call:
    return _Call("GET", "/v1/cluster")


def _headers(call: _Call) -> dict[str, str]:
    if not call.write:
        return call.headers
    return {**call.headers, "Idempotency-Key": uuid.uuid4().hex}


# -- server-sent events --------------------------------------------------------------------


class _SSE:
    """An incremental ``text/event-stream`` parser: feed lines, get complete events."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.new_id = False
        self.event = ""
        self.data: list[str] = []

    def line(self, line: str) -> tuple[str | None, str, str] | None:
        """``(id, event type, data)`` when ``line`` completes an event; an event with an
        ``id`` and no data (the stream's position) gives ``(id, "", "")``."""
        if not line:
            new_id, self.new_id = self.new_id, False
            if not self.data:
                self.event = ""
                return (self.id, "", "") if new_id else None
            out = (self.id, self.event or "message", "\n".join(self.data))
            self.event, self.data = "", []
            return out
        if line.startswith(":"):
            return None  # a comment (heartbeat)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self.data.append(value)
        elif name == "id":
            self.id, self.new_id = value, True
        elif name == "event":
            self.event = value
        return None


class _Watch:
    """The state of one watch across reconnections: the cursor of the last event
    delivered and the count of failed connections in a row."""

    def __init__(self, endpoints: _Endpoints, retries: int, prefix: str | None, since: str | None):
        self.endpoints = endpoints
        self.retries = retries
        self.params = _params(prefix=prefix)
        self.cursor = since
        self.failures = 0

    def request(self) -> tuple[str, dict[str, str]]:
        headers = {"Accept": "text/event-stream"}
        if self.cursor is not None:
            headers["Last-Event-ID"] = self.cursor
        return self.endpoints.current + "/v1/watch", headers

    def opened(self, resp: httpx.Response, body: bytes) -> None:
        """Raise the error of a refused stream (retryable ones as :class:`_Retry`)."""
        if resp.status_code == 200:
            return
        err = error_from_body(resp.status_code, _try_json(body), body.decode("latin-1"))
        if resp.status_code == 503:
            raise _Retry(err)
        raise err

    def event(self, sse: tuple[str | None, str, str]) -> Event | None:
        """The event to deliver, if any; the cursor moves past it (so deliver it)."""
        ev_id, kind, data = sse
        if not kind:  # a position: later changes resume from here
            self.cursor = ev_id
            return None
        payload = _try_json(data.encode())
        if kind == "error":
            raise error_from_body(None, payload, data)
        if not isinstance(payload, dict):
            return None
        self.failures = 0
        cursor = ev_id if ev_id is not None else str(payload.get("cursor", ""))
        self.cursor = cursor
        return Event(
            cursor,
            str(payload.get("type", "")),
            str(payload.get("key", "")),
            str(payload.get("version", "")),
            int(payload.get("revision", 0)),
            payload,
        )

    def broke(self, err: TideError) -> float:
        """After a lost or refused connection: the delay before the next one."""
        self.failures += 1
        if self.failures > self.retries:
            raise err
        self.endpoints.rotate()
        return _backoff(self.failures)


class _Retry(Exception):
    def __init__(self, err: TideError) -> None:
        self.err = err


def _try_json(raw: bytes) -> Any:
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None


def _ended(base: str) -> Unavailable:
    return Unavailable(f"the watch stream from {base} ended", url=base)


# -- the clients ---------------------------------------------------------------------------


class Client:
    """A blocking client of one tidekv cluster (any of its nodes' URLs)."""

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        timeout: float = 10,
        retries: int = 5,
        headers: dict[str, str] | None = None,
        route: bool = True,
    ) -> None:
        self.urls = parse_urls(urls)
        self.timeout = timeout
        self.retries = retries
        self._endpoints = _Endpoints(self.urls)
        self._map = _ShardMap(route)
        self._http = httpx.Client(timeout=timeout, headers=headers, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _send(self, call: _Call, retries: int | None = None) -> httpx.Response:
        attempts = _Attempts(self._endpoints, self.retries if retries is None else retries)
        headers = _headers(call)
        if self._map.due(call):
            self._load_map()
        routed = self._map.target(call)
        while True:
            base = routed or attempts.base
            try:
                resp = self._http.request(
                    call.method,
                    base + call.path,
                    params=call.params,
                    headers=headers,
                    content=call.content,
                )
            except httpx.TransportError as exc:
                if routed is not None:  # the cached leader: try the configured URLs now
                    self._map.lost(routed, unreachable=True)
                    routed = None
                    continue
                time.sleep(attempts.failed(_unreachable(base, exc)))
                continue
            self._map.answered(resp)
            if resp.status_code == 503:
                if routed is not None:
                    self._map.lost(routed)
                    routed = None
                time.sleep(attempts.failed(error_from(resp)))
                continue
            return _check(resp)

    def _load_map(self) -> None:
        try:
            body = _json(self._send(_cluster_call(), retries=len(self.urls) - 1))
        except TideError:  # no map: the configured URLs serve (and forward)
            self._map.empty += 1  # and the next load waits longer
            return
        self._map.load(body)

    # -- keys

    def put(
        self,
        key: str,
        value: object,
        *,
        content_type: str | None = None,
        if_match: str | None = None,
        if_none_match: bool = False,
        author: str | None = None,
    ) -> Written:
        """Write a new version (bytes as given, str as text, else a JSON document)."""
        return _written(
            self._send(_put_call(key, value, content_type, if_match, if_none_match, author))
        )

    def get(
        self,
        key: str,
        *,
        consistency: str | None = None,
        version: str | None = None,
        as_of: int | str | dt.datetime | None = None,
    ) -> Item:
        return _item(key, self._send(_get_call(key, consistency, version, as_of)))

    def delete(
        self, key: str, *, if_match: str | None = None, author: str | None = None
    ) -> Written:
        headers = _write_headers(if_match, author)
        return _written(self._send(_delete_call(key, headers)))

    def rollback(
        self, key: str, to: str, *, if_match: str | None = None, author: str | None = None
    ) -> Written:
        return _written(self._send(_rollback_call(key, to, if_match, author)))

    def scan(
        self,
        prefix: str | None = None,
        *,
        start: str | None = None,
        end: str | None = None,
        limit: int | None = None,
        consistency: str | None = None,
        page_size: int = DEFAULT_PAGE,
    ) -> Iterator[Item]:
        """Current values in key order, page by page (following ``next`` cursors)."""
        got, cursor = 0, None
        while (page := _pages_left(limit, got, page_size)) > 0:
            body = _json(self._send(_page_call(prefix, start, end, consistency, cursor, page)))
            for d in body["items"]:
                got += 1
                yield _listed(d)
            cursor = body.get("next")
            if not cursor:
                return

    def list_keys(self, prefix: str | None = None, **options: Any) -> list[Item]:
        """:meth:`scan` as a list."""
        return list(self.scan(prefix, **options))

    def history(
        self,
        key: str,
        *,
        limit: int | None = None,
        before: str | None = None,
        consistency: str | None = None,
        page_size: int = DEFAULT_PAGE,
    ) -> list[VersionInfo]:
        """The key's versions, newest first (all of them, page by page, unless ``limit``)."""
        out: list[VersionInfo] = []
        while (page := _pages_left(limit, len(out), page_size)) > 0:
            body = _json(self._send(_history_call(key, before, consistency, page)))
            out.extend(_version_info(d) for d in body["versions"])
            before = body.get("next")
            if not before:
                break
        return out

    def diff(
        self,
        key: str,
        from_version: str,
        to_version: str | None = None,
        *,
        consistency: str | None = None,
    ) -> Diff:
        return _diff(self._send(_diff_call(key, from_version, to_version, consistency)))

    # -- change feed

    def watch(
        self,
        prefix: str | None = None,
        *,
        since: str | None = None,
        read_timeout: float = WATCH_READ_TIMEOUT,
    ) -> Iterator[Event]:
        """Changes after ``since`` (None: from now on), forever. A broken stream is
        resumed on the next URL from the last event delivered."""
        w = _Watch(self._endpoints, self.retries, prefix, since)
        timeout = httpx.Timeout(self.timeout, read=read_timeout)
        while True:
            url, headers = w.request()
            try:
                with self._http.stream(
                    "GET", url, params=w.params, headers=headers, timeout=timeout
                ) as resp:
                    w.opened(resp, resp.read() if resp.status_code != 200 else b"")
                    sse = _SSE()
                    for line in resp.iter_lines():
                        done = sse.line(line)
                        if done is not None and (event := w.event(done)) is not None:
                            yield event
                err: TideError = _ended(url)
            except httpx.TransportError as exc:
                err = _unreachable(url, exc)
            except _Retry as r:
                err = r.err
            time.sleep(w.broke(err))

    # -- cluster and operations

    def cluster(self) -> dict[str, Any]:
        return dict(_json(self._send(_Call("GET", "/v1/cluster"))))

    def add_node(self, node_id: int, address: str) -> dict[str, Any]:
        return dict(_json(self._send(_add_node_call(node_id, address))))

    def remove_node(self, node_id: int) -> dict[str, Any]:
        return dict(_json(self._send(_Call("DELETE", f"/v1/cluster/nodes/{node_id}", write=True))))

    def health(self) -> bool:
        """True when the first reachable URL answers ``/health`` with 200."""
        return self._probe("/health")

    def ready(self) -> bool:
        """True when a node answers ``/ready`` with 200 (can serve linearizable reads)."""
        return self._probe("/ready")

    def _probe(self, path: str) -> bool:
        try:
            self._send(_Call("GET", path), retries=len(self.urls) - 1)
        except TideError:
            return False
        return True


class AsyncClient:
    """The asyncio twin of :class:`Client`: the same methods, awaited; :meth:`scan` and
    :meth:`watch` are async iterators."""

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        timeout: float = 10,
        retries: int = 5,
        headers: dict[str, str] | None = None,
        route: bool = True,
    ) -> None:
        self.urls = parse_urls(urls)
        self.timeout = timeout
        self.retries = retries
        self._endpoints = _Endpoints(self.urls)
        self._map = _ShardMap(route)
        self._http = httpx.AsyncClient(timeout=timeout, headers=headers, follow_redirects=False)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _send(self, call: _Call, retries: int | None = None) -> httpx.Response:
        attempts = _Attempts(self._endpoints, self.retries if retries is None else retries)
        headers = _headers(call)
        if self._map.due(call):
            await self._load_map()
        routed = self._map.target(call)
        while True:
            base = routed or attempts.base
            try:
                resp = await self._http.request(
                    call.method,
                    base + call.path,
                    params=call.params,
                    headers=headers,
                    content=call.content,
                )
            except httpx.TransportError as exc:
                if routed is not None:  # the cached leader: try the configured URLs now
                    self._map.lost(routed, unreachable=True)
                    routed = None
                    continue
                await asyncio.sleep(attempts.failed(_unreachable(base, exc)))
                continue
            self._map.answered(resp)
            if resp.status_code == 503:
                if routed is not None:
                    self._map.lost(routed)
                    routed = None
                await asyncio.sleep(attempts.failed(error_from(resp)))
                continue
            return _check(resp)

    async def _load_map(self) -> None:
        try:
            body = _json(await self._send(_cluster_call(), retries=len(self.urls) - 1))
        except TideError:  # no map: the configured URLs serve (and forward)
            self._map.empty += 1  # and the next load waits longer
            return
        self._map.load(body)

    # -- keys

    async def put(
        self,
        key: str,
        value: object,
        *,
        content_type: str | None = None,
        if_match: str | None = None,
        if_none_match: bool = False,
        author: str | None = None,
    ) -> Written:
        return _written(
            await self._send(_put_call(key, value, content_type, if_match, if_none_match, author))
        )

    async def get(
        self,
        key: str,
        *,
        consistency: str | None = None,
        version: str | None = None,
        as_of: int | str | dt.datetime | None = None,
    ) -> Item:
        return _item(key, await self._send(_get_call(key, consistency, version, as_of)))

    async def delete(
        self, key: str, *, if_match: str | None = None, author: str | None = None
    ) -> Written:
        headers = _write_headers(if_match, author)
        return _written(await self._send(_delete_call(key, headers)))

    async def rollback(
        self, key: str, to: str, *, if_match: str | None = None, author: str | None = None
    ) -> Written:
        return _written(await self._send(_rollback_call(key, to, if_match, author)))

    async def scan(
        self,
        prefix: str | None = None,
        *,
        start: str | None = None,
        end: str | None = None,
        limit: int | None = None,
        consistency: str | None = None,
        page_size: int = DEFAULT_PAGE,
    ) -> AsyncIterator[Item]:
        got, cursor = 0, None
        while (page := _pages_left(limit, got, page_size)) > 0:
            call = _page_call(prefix, start, end, consistency, cursor, page)
            body = _json(await self._send(call))
            for d in body["items"]:
                got += 1
                yield _listed(d)
            cursor = body.get("next")
            if not cursor:
                return

    async def list_keys(self, prefix: str | None = None, **options: Any) -> list[Item]:
        return [item async for item in self.scan(prefix, **options)]

    async def history(
        self,
        key: str,
        *,
        limit: int | None = None,
        before: str | None = None,
        consistency: str | None = None,
        page_size: int = DEFAULT_PAGE,
    ) -> list[VersionInfo]:
        out: list[VersionInfo] = []
        while (page := _pages_left(limit, len(out), page_size)) > 0:
            body = _json(await self._send(_history_call(key, before, consistency, page)))
            out.extend(_version_info(d) for d in body["versions"])
            before = body.get("next")
            if not before:
                break
        return out

    async def diff(
        self,
        key: str,
        from_version: str,
        to_version: str | None = None,
        *,
        consistency: str | None = None,
    ) -> Diff:
        return _diff(await self._send(_diff_call(key, from_version, to_version, consistency)))

    async def watch(
        self,
        prefix: str | None = None,
        *,
        since: str | None = None,
        read_timeout: float = WATCH_READ_TIMEOUT,
    ) -> AsyncIterator[Event]:
        w = _Watch(self._endpoints, self.retries, prefix, since)
        timeout = httpx.Timeout(self.timeout, read=read_timeout)
        while True:
            url, headers = w.request()
            try:
                async with self._http.stream(
                    "GET", url, params=w.params, headers=headers, timeout=timeout
                ) as resp:
                    w.opened(resp, await resp.aread() if resp.status_code != 200 else b"")
                    sse = _SSE()
                    async for line in resp.aiter_lines():
                        done = sse.line(line)
                        if done is not None and (event := w.event(done)) is not None:
                            yield event
                err: TideError = _ended(url)
            except httpx.TransportError as exc:
                err = _unreachable(url, exc)
            except _Retry as r:
                err = r.err
            await asyncio.sleep(w.broke(err))

    # -- cluster and operations

    async def cluster(self) -> dict[str, Any]:
        return dict(_json(await self._send(_Call("GET", "/v1/cluster"))))

    async def add_node(self, node_id: int, address: str) -> dict[str, Any]:
        return dict(_json(await self._send(_add_node_call(node_id, address))))

    async def remove_node(self, node_id: int) -> dict[str, Any]:
        call = _Call("DELETE", f"/v1/cluster/nodes/{node_id}", write=True)
        return dict(_json(await self._send(call)))

    async def health(self) -> bool:
        return await self._probe("/health")

    async def ready(self) -> bool:
        return await self._probe("/ready")

    async def _probe(self, path: str) -> bool:
        try:
            await self._send(_Call("GET", path), retries=len(self.urls) - 1)
        except TideError:
            return False
        return True
