"""A listing across shards asks each shard for what the merge needs, not ``limit`` keys
from every one (``NodeService._merged_scan`` over ``sharding.scatter.ListingMerge``), and
still returns exactly the first ``limit`` keys in key order, page after page.

An in-process single-node sharded :class:`~tidekv.node.server.Node` (real RocksDB, real
WAL; one node holds every shard); each shard store's ``scan`` calls are recorded.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tidekv.chaos.ports import free_base_port
from tidekv.node.config import NodeConfig
from tidekv.node.server import Node
from tidekv.node.service import NodeService
from tidekv.sharding.keys import shard_of

pytestmark = pytest.mark.timeout(120)

SHARDS = 16
KEYS = [f"key{n:04d}" for n in range(400)]


async def _listing(tmp: Path, limit: int) -> tuple[list[list[str]], list[int], dict[int, int]]:
    """Write KEYS, then list them all ``limit`` at a time (as the HTTP edge does: ask for
    limit + 1, the extra one is where the next page starts). Returns the pages, the sum
    of the limits asked of the shard stores per page, and the keys held per shard."""
    node = Node(
        NodeConfig(
            data_dir=str(tmp),
            address="127.0.0.1:1",  # the HTTP side is not started here
            raft_address=f"127.0.0.1:{free_base_port(1)}",
            engine="lsm",
            tick_ms=10,
            shards=SHARDS,
        )
    )
    await node.start()
    svc = NodeService(node)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not await svc.ready():
            assert loop.time() < deadline, "the shards did not elect"
            await asyncio.sleep(0.02)
        await asyncio.gather(*(svc.put(k, b"v", "text/plain") for k in KEYS))
        asked: list[int] = []
        for s in range(SHARDS):
            store = node.replica(s).store
            orig = store.scan

            def scan(*a: Any, _orig: Any = orig, **kw: Any) -> Any:
                asked.append(kw["limit"])
                return _orig(*a, **kw)

            store.scan = scan  # type: ignore[method-assign]
        pages: list[list[str]] = []
        per_page: list[int] = []
        start: str | None = None
        while True:
            asked.clear()
            items = await svc.scan(prefix="key", start=start, limit=limit + 1)
            per_page.append(sum(asked))
            pages.append([i.key for i in items[:limit]])
            if len(items) <= limit:
                break
            start = items[limit].key
        held = {s: sum(shard_of(k, SHARDS) == s for k in KEYS) for s in range(SHARDS)}
        return pages, per_page, held
    finally:
        await svc.aclose()
        await node.stop()


def test_a_merged_page_reads_a_fraction_of_limit_per_shard(tmp_path: Path) -> None:
    limit = 50
    pages, per_page, held = asyncio.run(_listing(tmp_path, limit))
    assert [k for p in pages for k in p] == KEYS  # every key once, in order
    assert all(len(p) == limit for p in pages)
    assert min(held.values()) > 0  # every shard takes part
    # the former way asked every shard for limit + 1 keys on every page
    full = SHARDS * (limit + 1)
    assert max(per_page) < full / 2, (per_page, full)
