"""The node loop looks only at the replicas that may have work (server.py, "dirty
replicas"): with many groups on a node and one of them busy, the idle ones are not polled,
and nothing stalls — a write to a long-idle (quiesced) group is still answered.

An in-process single-node :class:`~tidekv.node.server.Node` (real RocksDB, real WAL)
hosting 1 + ``EXTRA`` groups (the hidden ``TIDEKV_IDLE_GROUPS_FOR_BENCH`` option); the
loop's visits (``Replica.before_ready`` calls) are counted per replica.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tidekv.chaos.ports import free_base_port
from tidekv.node.config import NodeConfig
from tidekv.node.server import DRIVE_ALL_ENV, EXTRA_GROUPS_ENV, Node

pytestmark = pytest.mark.timeout(120)

EXTRA = 31


async def _until(cond: object, what: str, timeout: float = 60.0) -> None:
    assert callable(cond)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _run(tmp: Path, puts: int) -> tuple[Counter[int], int]:
    """Start the node, wait until every group is quiesced, then write ``puts`` times to
    group 0 and once to the last group; the loop's visits per group during the writes."""
    node = Node(
        NodeConfig(
            node_id=1,
            data_dir=str(tmp),
            address="127.0.0.1:1",  # the HTTP side is not started here
            raft_address=f"127.0.0.1:{free_base_port(1)}",
            engine="lsm",
            tick_ms=10,
            shards=1,  # the extra groups are an unsharded node's (TIDEKV_IDLE_GROUPS_FOR_BENCH)
        )
    )
    await node.start()
    try:
        groups = 1 + EXTRA
        await _until(lambda: len(node.replicas) == groups, "the groups to open")
        await _until(
            lambda: all(r.is_leader for r in node.replicas.values()), "every group to elect"
        )
        await _until(lambda: node.groups_quiesced() == groups, "every group to quiesce")
        # the tick that quiesced them marked them: let the loop take that last look
        await _until(lambda: not node._dirty, "the loop to take the marks")
        calls: Counter[int] = Counter()
        for g, rep in node.replicas.items():
            orig = rep.before_ready

            def counted(g: int = g, orig: Callable[[], None] = orig) -> None:
                calls[g] += 1
                orig()

            rep.before_ready = counted  # type: ignore[method-assign]
        busy = node.replica(0)
        for i in range(puts):
            res = await busy.write(
                {"key": f"k{i}", "value": b"v", "content_type": "text/plain"}, 10.0
            )
            assert res.version is not None
        # a group idle (quiesced) all along is woken by its own request
        last = node.replica(EXTRA)
        assert last.raw.quiesced
        res = await last.write({"key": "late", "value": b"v", "content_type": "text/plain"}, 10.0)
        assert res.version is not None
        return calls, node.stats["loops"]
    finally:
        await node.stop()


@pytest.fixture
def extra_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXTRA_GROUPS_ENV, str(EXTRA))


@pytest.mark.usefixtures("extra_groups")
def test_idle_groups_are_not_polled(tmp_path: Path) -> None:
    calls, _ = asyncio.run(_run(tmp_path, 50))
    assert calls[0] >= 50  # the busy group is looked at every turn it has work
    assert calls[EXTRA] >= 1  # and the late one once it had a request
    idle = {g: n for g, n in calls.items() if g not in (0, EXTRA)}
    # quiesced, nothing sent to them, no message from a peer: never polled
    assert all(n == 0 for n in idle.values()), idle


@pytest.mark.usefixtures("extra_groups")
def test_drive_all_polls_every_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference mode (TIDEKV_DRIVE_ALL=1): what the loop did before, every replica
    every turn — the counting above would see it."""
    monkeypatch.setenv(DRIVE_ALL_ENV, "1")
    calls, _ = asyncio.run(_run(tmp_path, 50))
    assert all(calls[g] >= 50 for g in range(1, EXTRA)), calls
