""":class:`LocalService`: the :class:`~tidekv.service.KVService` of an embedded store.

No replication: every consistency level is served from the one local store, the cluster
is one node with one shard, and membership cannot change. Used to serve an embedded
store over HTTP and to test the edge (HTTP app, client, CLI) against real storage.

- Writes run in one worker thread when the store fsyncs (so a sync does not stall the
  event loop), else directly on the loop; the store serialises them with its lock.
- Idempotency keys: a bounded in-memory map from key to outcome, so a retried write
  (same ``Idempotency-Key``) returns the first result and creates no second version. A
  duplicate that arrives while the first is still running waits for its outcome. (The
  replicated node keeps these outcomes in its state machine instead, so they survive a
  restart and a leader change; this map does not survive a restart.)
- Watch: reads ``store.sm.changes(since)`` on the loop, then waits for the next write
  made through this service (woken at once) or ``poll_interval`` seconds (to see writes
  made to the store by other code). The cursor is the revision, as a decimal string;
  the local history is never compacted, so :class:`~tidekv.errors.Gone` never happens.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tidekv.errors import (
    Conflict,
    InvalidInput,
    StorageError,
    StoreClosed,
    TideError,
    Unavailable,
)
from tidekv.service import Consistency
from tidekv.statemachine import WriteResult
from tidekv.store import Item, Store, VersionInfo
from tidekv.versioning import Diff
from tidekv.wire import change_event

__all__ = ["LocalService"]

T = TypeVar("T")

#: outcomes that a retry may change (the store was closed, the disk failed): not kept
_TRANSIENT = (Unavailable, StoreClosed, StorageError)

_Outcome = WriteResult | TideError


def _fresh(exc: TideError) -> TideError:
    """A new instance of a kept error, so each raise gets its own traceback."""
    copy = type(exc)(exc.message, **exc.details)
    copy.code = exc.code
    return copy


def parse_cursor(since: str | None) -> int | None:
    """The revision a watch cursor names (``None``: from now on)."""
    if since is None:
        return None
    if not since.isascii() or not since.isdigit() or len(since) > 20:
        raise InvalidInput(
            f"watch cursor {since[:40]!r} is not a revision number", parameter="since"
        )
    return int(since)


class LocalService:
    """An embedded :class:`~tidekv.store.Store` behind the
    :class:`~tidekv.service.KVService` interface (one node, one shard, no replication)."""

    shard: int = 0

    def __init__(
        self,
        store: Store,
        *,
        node_id: int = 1,
        address: str = "",
        offload_writes: bool | None = None,
        idempotency_capacity: int = 100_000,
        poll_interval: float = 1.0,
        watch_batch: int = 256,
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.address = address
        self.max_value_bytes = store.max_value_bytes
        if offload_writes is None:
            offload_writes = store.sm.sync and store.engine.name != "memory"
        self._executor = (
            ThreadPoolExecutor(1, thread_name_prefix="tidekv-write") if offload_writes else None
        )
        self._idem: OrderedDict[str, asyncio.Future[_Outcome | None]] = OrderedDict()
        self._idem_capacity = idempotency_capacity
        self._poll_interval = poll_interval
        self._watch_batch = watch_batch
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._waiters_lock = threading.Lock()
        self._writes = 0
        self._idem_hits = 0
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_StoreCollector(self))

    def close(self) -> None:
        """Stop the write thread (the store stays open: its owner closes it)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    @property
    def watching(self) -> int:
        """Watch streams waiting for the next change."""
        return len(self._waiters)

    def shard_of(self, key: str) -> int:
        """Every key lives in shard 0."""
        return 0

    # -- writes -----------------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _write(
        self, idempotency_key: str | None, fn: Callable[[], WriteResult]
    ) -> WriteResult:
        if idempotency_key is None:
            result = await self._run(fn)
            self._written()
            return result
        while (prior := self._idem.get(idempotency_key)) is not None:
            outcome = await asyncio.shield(prior)
            if outcome is not None:  # None: the first attempt did not finish; try anew
                self._idem_hits += 1
                if isinstance(outcome, TideError):
                    raise _fresh(outcome)
                return outcome
        fut: asyncio.Future[_Outcome | None] = asyncio.get_running_loop().create_future()
        self._idem[idempotency_key] = fut
        try:
            outcome = await self._run(fn)
        except TideError as exc:
            outcome = exc
        except BaseException:
            self._idem.pop(idempotency_key, None)
            fut.set_result(None)
            raise
        if isinstance(outcome, _TRANSIENT):
            self._idem.pop(idempotency_key, None)
        fut.set_result(outcome)
        self._evict()
        if isinstance(outcome, TideError):
            raise outcome
        self._written()
        return outcome

    def _evict(self) -> None:
        idem = self._idem
        while len(idem) > self._idem_capacity:
            oldest = next(iter(idem.values()))
            if not oldest.done():
                break
            idem.popitem(last=False)

    def _written(self) -> None:
        self._writes += 1
        self._notify()

    async def put(
        self,
        key: str,
        value: bytes,
        content_type: str,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        idempotency_key: str | None = None,
        author: str | None = None,
    ) -> WriteResult:
        store = self.store
        return await self._write(
            idempotency_key,
            lambda: store.put(
                key,
                value,
                content_type=content_type,
                if_match=if_match,
                if_none_match=if_none_match,
                author=author,
            ),
        )

    async def delete(
        self,
        key: str,
        *,
        if_match: str | None = None,
        idempotency_key: str | None = None,
        author: str | None = None,
    ) -> WriteResult:
        store = self.store
        return await self._write(
            idempotency_key, lambda: store.delete(key, if_match=if_match, author=author)
        )

    async def rollback(
        self,
        key: str,
        to: str,
        *,
        if_match: str | None = None,
        idempotency_key: str | None = None,
        author: str | None = None,
    ) -> WriteResult:
        store = self.store
        return await self._write(
            idempotency_key, lambda: store.rollback(key, to, if_match=if_match, author=author)
        )

    # -- reads (every consistency level is local) -------------------------------

    async def get(
        self,
        key: str,
        *,
        consistency: Consistency = "linearizable",
        version: str | None = None,
        as_of: str | None = None,
    ) -> Item:
        if as_of is None:
            return self.store.get(key, version=version)
        return self.store.get(key, version=version, as_of=int(as_of) if as_of.isdigit() else as_of)

    async def scan(
        self,
        *,
        prefix: str | None = None,
        start: str | None = None,
        end: str | None = None,
        limit: int | None = None,
        consistency: Consistency = "linearizable",
        shard: int | None = None,
    ) -> list[Item]:
        _only_shard_zero(shard)
        return list(self.store.scan(prefix, start=start, end=end, limit=limit))

    async def history(
        self,
        key: str,
        *,
        limit: int | None = None,
        before: str | None = None,
        consistency: Consistency = "linearizable",
    ) -> list[VersionInfo]:
        return self.store.history(key, limit=limit, before=before)

    async def diff(
        self,
        key: str,
        from_version: str,
        to_version: str | None = None,
        *,
        consistency: Consistency = "linearizable",
    ) -> Diff:
        return self.store.diff(key, from_version, to_version)

    # -- the change feed --------------------------------------------------------

    def watch(
        self, *, prefix: str | None = None, since: str | None = None, shard: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Changes after ``since``; a malformed cursor, or one ahead of the store (it
        belongs to another store), raises :class:`InvalidInput` here, before iterating."""
        _only_shard_zero(shard)
        after = parse_cursor(since)
        head = self.store.revision
        if after is not None and after > head:
            raise InvalidInput(
                f"watch cursor {after} is ahead of this store's revision {head}",
                parameter="since",
            )
        return self._follow(prefix, head if after is None else after, announce=after is None)

    async def _follow(
        self, prefix: str | None, after: int, *, announce: bool
    ) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        if announce:  # a watch "from now on" learns where now is, to resume from it
            yield {"cursor": str(after)}
        while True:
            # register before reading, so a write that lands after the read still wakes us
            wake: asyncio.Future[None] = loop.create_future()
            with self._waiters_lock:
                self._waiters.append((loop, wake))
            batch = self._read_changes(prefix, after)
            for revision, event in batch:
                after = revision
                if event is not None:
                    yield event
            if batch and batch[-1][1] is None:  # filtered out: move the client's cursor on
                yield {"cursor": str(after)}
            if len(batch) >= self._watch_batch:
                continue  # more to read at once
            try:
                await asyncio.wait_for(wake, self._poll_interval)
            except TimeoutError:
                pass
            finally:
                with self._waiters_lock:
                    if (loop, wake) in self._waiters:
                        self._waiters.remove((loop, wake))

    def _read_changes(
        self, prefix: str | None, after: int
    ) -> list[tuple[int, dict[str, Any] | None]]:
        """The next changes after ``after``: (revision, event or None when filtered out)."""
        store = self.store
        if store.closed:
            raise StoreClosed("the store is closed")
        sm = store.sm
        out: list[tuple[int, dict[str, Any] | None]] = []
        for change in sm.changes(after, limit=self._watch_batch):
            if prefix and not change.key.startswith(prefix):
                out.append((change.revision, None))
                continue
            got = sm.find(change.key, change.version)
            if got is None:
                raise StorageError(f"change {change.revision} names a missing version")
            _rev, version, value = got
            out.append(
                (
                    change.revision,
                    change_event(str(change.revision), change.revision, version, value, 0),
                )
            )
        return out

    def _notify(self) -> None:
        with self._waiters_lock:
            waiters, self._waiters = self._waiters, []
        if not waiters:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, fut in waiters:
            if loop is running:
                _wake(fut)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(_wake, fut)

    # -- cluster ----------------------------------------------------------------

    async def cluster_info(self) -> dict[str, Any]:
        revision = self.store.revision
        return {
            "cluster_id": self.store.origin,
            "mode": "local",
            "nodes": [{"id": self.node_id, "address": self.address, "state": "serving"}],
            "shards": [
                {
                    "id": 0,
                    "leader": self.node_id,
                    "term": 0,
                    "replicas": [self.node_id],
                    "commit_index": revision,
                    "revision": revision,
                }
            ],
        }

    async def add_node(
        self, node_id: int, address: str, raft_address: str | None = None
    ) -> dict[str, Any]:
        raise Conflict(
            "this server runs one embedded store without replication; it cannot add nodes",
            node=node_id,
        )

    async def remove_node(self, node_id: int) -> dict[str, Any]:
        raise Conflict(
            "this server runs one embedded store without replication; it cannot remove nodes",
            node=node_id,
        )

    async def ready(self) -> bool:
        return not self.store.closed

    def metrics_text(self) -> bytes:
        return generate_latest(self._registry)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _StoreCollector(Collector):
    """Store figures read at scrape time (nothing is counted per request here)."""

    def __init__(self, service: LocalService) -> None:
        self._service = service

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        svc = self._service
        yield GaugeMetricFamily(
            "tidekv_store_revision", "Revision of the newest change", value=svc.store.revision
        )
        yield CounterMetricFamily(
            "tidekv_store_writes", "Writes applied through this service", value=svc._writes
        )
        yield CounterMetricFamily(
            "tidekv_idempotent_replays",
            "Writes answered from the idempotency map",
            value=svc._idem_hits,
        )
        yield GaugeMetricFamily(
            "tidekv_idempotency_keys", "Idempotency keys remembered", value=len(svc._idem)
        )
        yield GaugeMetricFamily(
            "tidekv_watch_streams", "Watch streams waiting for a change", value=svc.watching
        )


def _only_shard_zero(shard: int | None) -> None:
    if shard not in (None, 0):
        raise InvalidInput("this store has one shard, 0", shard=shard)
