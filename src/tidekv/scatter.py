"""Scatter-gather across shards, the async edge of :mod:`tidekv.sharding.scatter`.

:class:`Scatter` answers the listing and the watch feed of a sharded cluster over two
injected per-shard calls, which the node binds to its local replicas or to forwarded
HTTP calls (:class:`HTTPShards` binds them to ``GET /v1/kv?shard=N`` and
``GET /v1/watch?shard=N`` of any node)::

    fetch(shard, params) -> {"items": [...], "next": cursor or None}
    stream(shard, since)  -> async iterator of {"cursor", "revision", "type", ...} events
                             (``since``: a revision, or None for "from now on")

* Listing: the shards are asked concurrently (at most ``concurrency`` at a time) for
  pages; the pure :class:`~tidekv.sharding.scatter.ListingMerge` says which to ask
  again. One failing shard fails the whole listing with
  :class:`~tidekv.errors.Unavailable` naming it: never a silent partial result. A
  shard's 4xx (bad input) is raised as it is.
* Watch: one task per shard reads its stream into an
  :class:`~tidekv.sharding.scatter.Interleaver`; a stream that breaks (or ends) is
  reopened from the last revision it delivered, with capped backoff, as long as its
  errors are retryable (unavailable, timeouts, connection errors). Any other error
  (410 Gone: compacted history; 400) ends the merged watch with that error.
* A prefix holding a whole hash tag goes to its one shard only.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from tidekv.errors import InvalidInput, StoreClosed, TideError, Unavailable
from tidekv.sharding.scatter import (
    Interleaver,
    ListingMerge,
    ShardPage,
    WatchCursor,
    decode_list_cursor,
    encode_list_cursor,
    shards_for_prefix,
)

__all__ = ["Fetch", "HTTPShards", "Scatter", "Stream", "retryable"]

Page = Mapping[str, Any]
Fetch = Callable[[int, dict[str, str]], Awaitable[Page]]
Stream = Callable[[int, int | None], AsyncIterator[Mapping[str, Any]]]

DEFAULT_CONCURRENCY = 16
MAX_BUFFERED = 4096  # events held for a slow reader before shard streams pause


def retryable(exc: BaseException) -> bool:
    """Whether a shard call that failed this way may simply be tried again."""
    return isinstance(exc, Unavailable | StoreClosed | OSError | asyncio.TimeoutError)


def _backoff(failures: int) -> float:
    return min(2.0, 0.05 * 2.0 ** (failures - 1)) * random.uniform(0.5, 1.0)


def position_of(event: Mapping[str, Any]) -> int:
    """The shard revision an item of a shard stream stands at: an event's ``revision``,
    or a position's plain-integer ``cursor``."""
    if "type" in event and "revision" in event:
        return int(event["revision"])
    cursor = str(event.get("cursor", ""))
    if not (cursor.isdigit() and cursor.isascii()):  # a bug, not a hiccup: never retried
        raise TideError(f"a shard stream sent a position that is not a revision: {cursor!r}")
    return int(cursor)


class Scatter:
    """Listings and watches over ``shards`` shards through ``fetch`` and ``stream``."""

    def __init__(
        self,
        shards: int,
        fetch: Fetch,
        stream: Stream,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backoff: Callable[[int], float] = _backoff,
    ) -> None:
        self.shards = shards
        self.fetch = fetch
        self.stream = stream
        self._limit = asyncio.Semaphore(max(1, concurrency))
        self._sleep = sleep
        self._backoff = backoff

    # -- listings ------------------------------------------------------------------------

    async def scan(
        self,
        *,
        prefix: str | None = None,
        start: str | None = None,
        end: str | None = None,
        limit: int,
        cursor: str | None = None,
        consistency: str | None = None,
    ) -> dict[str, Any]:
        """One merged page: ``{"items": [...], "next": cursor or None}``."""
        if limit < 0:
            raise InvalidInput("limit must not be negative", parameter="limit")
        try:
            after = decode_list_cursor(cursor) if cursor else None
        except ValueError as exc:
            raise InvalidInput(str(exc), parameter="cursor") from None
        shard_ids = shards_for_prefix(prefix, self.shards)
        merge: ListingMerge[Mapping[str, Any]] = ListingMerge(
            shard_ids, limit, after=after, start=start
        )
        base: dict[str, str] = {}
        for name, value in (("prefix", prefix), ("end", end), ("consistency", consistency)):
            if value:
                base[name] = value
        while wanted := merge.wanted():
            params = []
            for f in wanted:
                p = dict(base, limit=str(f.limit))
                if f.start is not None:
                    p["start"] = f.start
                params.append((f.shard, p))
            pages = await self._gather(params)
            for (sid, _), page in zip(params, pages, strict=True):
                merge.feed(sid, page)
        items, pos = merge.result()
        return {"items": list(items), "next": None if pos is None else encode_list_cursor(pos)}

    async def _gather(self, calls: Sequence[tuple[int, dict[str, str]]]) -> list[ShardPage[Any]]:
        tasks = [asyncio.ensure_future(self._page(sid, p)) for sid, p in calls]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _page(self, shard: int, params: dict[str, str]) -> ShardPage[Any]:
        async with self._limit:
            try:
                body = await self.fetch(shard, params)
                items = list(body["items"])
                return ShardPage(items, more=bool(body.get("next")))
            except InvalidInput:
                raise
            except Exception as exc:
                raise _shard_failed(shard, exc) from exc

    # -- the watch feed ------------------------------------------------------------------

    async def watch(
        self, *, prefix: str | None = None, since: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The merged feed: events with ``cursor`` (the merged position right after
        them), and position-only items ``{"cursor"}``. ``since``: a cursor this feed
        handed out (None: from now on, the first item is the position of "now")."""
        watched = shards_for_prefix(prefix, self.shards)
        if since:
            try:
                start: list[int | None] = list(WatchCursor.decode(since, self.shards).revisions)
            except ValueError as exc:
                raise InvalidInput(str(exc), parameter="since") from None
        else:
            start = [None] * self.shards
        il: Interleaver[Mapping[str, Any]] = Interleaver(start, watched)
        wake = asyncio.Event()
        room = asyncio.Event()
        room.set()
        failure: list[BaseException] = []

        async def pump(shard: int) -> None:
            failures = 0
            while True:
                try:
                    async for item in self.stream(shard, il.resume_from(shard)):
                        rev = position_of(item)
                        event = item if "type" in item else None
                        if il.offer(shard, rev, event):
                            failures = 0
                            wake.set()
                        while il.pending >= MAX_BUFFERED:
                            room.clear()
                            await room.wait()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if not retryable(exc):
                        failure.append(
                            exc if isinstance(exc, TideError) else _shard_failed(shard, exc)
                        )
                        wake.set()
                        return
                failures += 1
                await self._sleep(self._backoff(failures))

        tasks = [asyncio.ensure_future(pump(s)) for s in sorted(watched)]
        try:
            while True:
                while (out := il.pop()) is not None:
                    cursor, event = out
                    room.set()
                    text = cursor.encode()
                    yield {"cursor": text} if event is None else {**event, "cursor": text}
                if failure:
                    raise failure[0]
                wake.clear()
                if il.pending == 0 or not il.ready:
                    await wake.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _shard_failed(shard: int, exc: BaseException) -> Unavailable:
    reason = exc.message if isinstance(exc, TideError) else (str(exc) or type(exc).__name__)
    return Unavailable(f"shard {shard} did not answer: {reason}", shard=shard)


class HTTPShards:
    """``fetch`` and ``stream`` over HTTP: shard ``s`` is asked at ``url_of(s)``, with
    ``shard=s`` added to the query when ``shard_param`` (the node's per-shard routes),
    and ``query`` added to every request (a watch's ``prefix``). ``client``: an
    :class:`httpx.AsyncClient` the caller owns (a node's pooled one); ``stream_timeout``:
    the timeout of a stream's requests (an ``httpx.Timeout``; None: the client's)."""

    def __init__(
        self,
        client: Any,
        url_of: Callable[[int], str],
        *,
        shard_param: bool = True,
        query: Mapping[str, str] | None = None,
        stream_timeout: Any = None,
    ) -> None:
        self.client = client
        self.stream_timeout = stream_timeout
        self.url_of = url_of
        self.shard_param = shard_param
        self.query = dict(query or {})  # added to every request (a watch's prefix)

    def _params(self, shard: int, params: dict[str, str]) -> dict[str, str]:
        out = {**self.query, **params}
        if self.shard_param:
            out["shard"] = str(shard)
        return out

    async def fetch(self, shard: int, params: dict[str, str]) -> Page:
        import httpx

        from tidekv.client import error_from

        try:
            resp = await self.client.get(
                self.url_of(shard) + "/v1/kv", params=self._params(shard, params)
            )
        except httpx.TransportError as exc:
            raise Unavailable(f"cannot reach shard {shard}: {exc or type(exc).__name__}") from exc
        if resp.status_code != 200:
            raise error_from(resp)
        body: Page = resp.json()
        return body

    async def stream(self, shard: int, since: int | None) -> AsyncIterator[Mapping[str, Any]]:
        import httpx

        from tidekv.client import _SSE, _try_json, error_from_body

        params = self._params(shard, {} if since is None else {"since": str(since)})
        try:
            extra = {} if self.stream_timeout is None else {"timeout": self.stream_timeout}
            async with self.client.stream(
                "GET", self.url_of(shard) + "/v1/watch", params=params, **extra
            ) as resp:
                if resp.status_code != 200:
                    body = await resp.aread()
                    raise error_from_body(resp.status_code, _try_json(body), body.decode())
                sse = _SSE()
                async for line in resp.aiter_lines():
                    done = sse.line(line)
                    if done is None:
                        continue
                    ev_id, kind, data = done
                    if not kind:
                        yield {"cursor": ev_id or ""}
                        continue
                    payload = _try_json(data.encode())
                    if kind == "error":
                        raise error_from_body(None, payload, data)
                    if isinstance(payload, dict):
                        yield payload
        except httpx.TransportError as exc:
            raise Unavailable(f"lost shard {shard}'s stream: {exc or type(exc).__name__}") from exc
        raise Unavailable(f"shard {shard}'s stream ended")
