"""What the HTTP API (and anything else at the edge) asks of a tidekv node.

:class:`KVService` is the seam between the edges (the ASGI app in :mod:`tidekv.http`)
and the node that owns the data. Two implementations:

* :class:`tidekv.node.NodeService`: the replicated node (Raft per shard); writes are
  proposed and acknowledged once durable on a majority, reads follow ``consistency``.
* :class:`tidekv.localservice.LocalService`: an embedded :class:`~tidekv.store.Store`
  behind the same interface (no replication), for in-process use and tests of the edge.

Every method raises the package's exception tree (:mod:`tidekv.errors`); the edge turns
those into HTTP errors in one place. A node that cannot serve a request because it does
not lead the shard raises :class:`~tidekv.errors.NotLeader` with ``leader_url`` in its
details, and the edge forwards the request there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol

from tidekv.statemachine import WriteResult
from tidekv.store import Item, VersionInfo
from tidekv.versioning import Diff

Consistency = Literal["linearizable", "lease", "follower", "stale"]
CONSISTENCY_LEVELS: tuple[str, ...] = ("linearizable", "lease", "follower", "stale")


class KVService(Protocol):
    """The operations of API v1. Values arrive as bytes with their content type; the
    service validates (key and value limits, JSON documents) before anything is written."""

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
    ) -> WriteResult: ...

    async def delete(
        self,
        key: str,
        *,
        if_match: str | None = None,
        idempotency_key: str | None = None,
        author: str | None = None,
    ) -> WriteResult: ...

    async def rollback(
        self,
        key: str,
        to: str,
        *,
        if_match: str | None = None,
        idempotency_key: str | None = None,
        author: str | None = None,
    ) -> WriteResult: ...

    async def get(
        self,
        key: str,
        *,
        consistency: Consistency = "linearizable",
        version: str | None = None,
        as_of: str | None = None,
    ) -> Item:
        """``as_of``: a revision number (digits) or an RFC 3339 time, as sent."""
        ...

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
        """Keys in order; ``shard``: only that shard's (one-shard services: only 0)."""
        ...

    async def history(
        self,
        key: str,
        *,
        limit: int | None = None,
        before: str | None = None,
        consistency: Consistency = "linearizable",
    ) -> list[VersionInfo]: ...

    async def diff(
        self,
        key: str,
        from_version: str,
        to_version: str | None = None,
        *,
        consistency: Consistency = "linearizable",
    ) -> Diff: ...

    def watch(
        self, *, prefix: str | None = None, since: str | None = None, shard: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Changes after the cursor ``since`` (None: from now on), forever, in order.

        Each event is a JSON-ready dict: ``cursor`` (str, the SSE ``id``), ``type``
        (``put``/``delete``), ``key``, ``version``, ``parents``, ``revision``, ``shard``,
        ``hlc``, and for puts ``content_type`` plus ``value`` (JSON documents) or
        ``value_b64``. Raises :class:`~tidekv.errors.Gone` when the cursor is older than
        the retained history, :class:`~tidekv.errors.InvalidInput` for a malformed one.
        Raise those when called (or on the first step, before any ``await``), so the
        edge answers with their status; a later failure can only end the stream with an
        SSE ``event: error``. An item with only ``cursor`` (no ``type``) is a position:
        the edge sends it as an SSE ``id:`` without data, so a client that watches "from
        now on", or skips changes outside its prefix, still resumes from the right place.
        """
        ...

    async def cluster_info(self) -> dict[str, Any]:
        """``{"cluster_id","nodes":[{"id","address","state"}],"shards":[{"id","leader",
        "term","replicas","commit_index"}]}`` plus whatever else helps an operator."""
        ...

    async def add_node(
        self, node_id: int, address: str, raft_address: str | None = None
    ) -> dict[str, Any]: ...

    async def remove_node(self, node_id: int) -> dict[str, Any]: ...

    async def ready(self) -> bool:
        """True when linearizable requests can be served now."""
        ...

    def metrics_text(self) -> bytes:
        """The Prometheus text exposition of this node's metrics."""
        ...


class ShardLocator(Protocol):
    """Optional for a :class:`KVService`: which shard holds a key. The edge reports it
    as the ``shard`` of write responses (and uses 0 for a service without it)."""

    def shard_of(self, key: str) -> int: ...
