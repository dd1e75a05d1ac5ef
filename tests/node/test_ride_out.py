"""Requests ride out leader changes: in-process nodes (the real ``Node`` loop, WAL and
peer transport over loopback, RocksDB engines), leadership moved again and again
while writers and linearizable readers run on every node.

* every write succeeds, exactly once: each writer's key ends with exactly the versions
  it was told were written, in order (a write proposed twice would add one);
* every read succeeds and sees at least what was acknowledged before it started;
* the ride-out paths ran (held proposals, proposals proven lost and proposed again):
  without them the same run fails with 503 (``not_leader``) or a timeout.

And the leader-balancing hint for a shard the metadata leader does not replicate: a
``MsgTransferLeader`` on the pseudo-group ``BALANCE_GROUP`` to the node that leads it
(or to one that only follows: it passes the hint on to the leader).

Waits are for conditions, bounded by a generous deadline that turns a hang into a
failure; no timing assertion.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tidekv.node.config import NodeConfig, Peer
from tidekv.node.meta import META_GROUP
from tidekv.node.server import BALANCE_GROUP, DATA_GROUP, Node
from tidekv.node.service import NodeService
from tidekv.raft import Message, MessageType
from tidekv.sharding.replicas import replica_id

from .proc_cluster import free_base_port

pytestmark = pytest.mark.timeout(300)

DEADLINE = 60.0


async def until(pred: object, what: str, deadline: float = DEADLINE) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not pred():  # type: ignore[operator]
        if loop.time() > end:
            raise AssertionError(f"never {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def nodes_up(tmp: Path, n: int, **kw: object) -> AsyncIterator[list[Node]]:
    base = free_base_port(n + 2)
    peers = {i: Peer.make(i, f"127.0.0.1:{base + i - 1}") for i in range(1, n + 1)}
    nodes = [
        Node(
            NodeConfig(
                node_id=i,
                data_dir=str(tmp / f"n{i}"),
                address=peers[i].address,
                peers=peers,
                engine="lsm",
                **kw,  # type: ignore[arg-type]
            )
        )
        for i in peers
    ]
    try:
        for node in nodes:
            await node.start()
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


def leader_of(nodes: list[Node], group: int) -> Node | None:
    leads = [x for x in nodes if group in x.replicas and x.replicas[group].is_leader]
    return leads[0] if len(leads) == 1 else None


async def move_leadership(nodes: list[Node], rounds: int) -> int:
    """Transfer the data group's leadership round the nodes ``rounds`` times (a transfer
    the leader abandons, its target too slow to catch up in an election timeout, is
    asked for again)."""
    loop = asyncio.get_running_loop()
    moved = 0
    for _ in range(rounds):
        await until(lambda: leader_of(nodes, DATA_GROUP) is not None, "a leader")
        lead = leader_of(nodes, DATA_GROUP)
        assert lead is not None
        to = nodes[lead.cfg.node_id % len(nodes)]
        end = loop.time() + DEADLINE
        while leader_of(nodes, DATA_GROUP) is not to:
            assert loop.time() < end, f"node {to.cfg.node_id} never took over"
            cur = leader_of(nodes, DATA_GROUP)
            if cur is not None:
                cur.replicas[DATA_GROUP].raw.transfer_leader(to.cfg.node_id)
                cur.wake()
            with contextlib.suppress(AssertionError):
                await until(lambda t=to: leader_of(nodes, DATA_GROUP) is t, "", 2.0)
        moved += 1
        await asyncio.sleep(0.15)
    return moved


def test_writes_and_reads_ride_out_leadership_transfers(tmp_path: Path) -> None:
    asyncio.run(writes_and_reads_ride_out(tmp_path))


async def writes_and_reads_ride_out(tmp_path: Path) -> None:
    async with nodes_up(tmp_path, 3, shards=1) as nodes:
        await until(lambda: leader_of(nodes, DATA_GROUP) is not None, "a leader")
        services = {x.cfg.node_id: NodeService(x) for x in nodes}
        acked: dict[str, int] = {}
        done = asyncio.Event()
        errors: list[BaseException] = []

        async def writer(node: int, key: str) -> None:
            svc = services[node]
            acked[key] = 0
            while not done.is_set():
                try:
                    await svc.put(key, str(acked[key]).encode(), "text/plain")
                except Exception as exc:
                    errors.append(exc)
                    return
                acked[key] += 1

        async def reader(node: int, keys: list[str]) -> None:
            svc = services[node]
            n = 0
            while not done.is_set():
                key = keys[n % len(keys)]
                n += 1
                floor = acked[key]
                try:
                    item = await svc.get(key)
                except Exception as exc:
                    if floor == 0 and type(exc).__name__ == "KeyNotFound":
                        continue
                    errors.append(exc)
                    return
                assert int(item.value) >= floor - 1, (key, item.value, floor)

        keys = [f"ride/{i}/{j}" for i in (1, 2, 3) for j in range(2)]
        tasks = [asyncio.create_task(writer(int(k.split("/")[1]), k)) for k in keys]
        tasks += [asyncio.create_task(reader(i, keys)) for i in (1, 2, 3)]
        try:
            moved = await move_leadership(nodes, 15)
        finally:
            done.set()
            await asyncio.gather(*tasks)
        assert not errors, errors
        assert moved == 15
        lead = leader_of(nodes, DATA_GROUP)
        assert lead is not None
        store = lead.replicas[DATA_GROUP].store
        for key in keys:
            assert acked[key] > 0, acked
            chain = list(reversed(store.history(key)))  # oldest first
            values = [store.get_version(key, vi.version.id).value for vi in chain]
            assert values == [str(n).encode() for n in range(acked[key])], key
            for parent, child in itertools.pairwise(chain):
                assert child.version.parents == (parent.version.id,)
                assert child.version.hlc > parent.version.hlc
        stats = [x.replicas[DATA_GROUP].stats for x in nodes]
        rode = sum(s["proposals_held"] + s["proposals_retried"] for s in stats)
        assert rode > 0, stats  # the leader changes did meet writes in flight


def test_a_balancing_hint_reaches_the_leader_of_a_shard_the_sender_lacks(
    tmp_path: Path,
) -> None:
    asyncio.run(hint_to_the_shard_leader(tmp_path))


async def hint_to_the_shard_leader(tmp_path: Path) -> None:
    async with nodes_up(tmp_path, 4, shards=8, balance_leaders=False) as nodes:
        by_id = {x.cfg.node_id: x for x in nodes}
        await until(lambda: all(leader_of(nodes, s) for s in range(8)), "every shard led")
        await until(lambda: leader_of(nodes, META_GROUP) is not None, "a metadata leader")
        meta = leader_of(nodes, META_GROUP)
        assert meta is not None and meta.cluster is not None
        me = meta.cfg.node_id
        lacking = [s for s, ss in meta.cluster.shard_map.items() if me not in ss.voters]
        assert lacking, meta.cluster.shard_map  # 4 nodes, 3 replicas: some shard is elsewhere
        shard = lacking[0]
        voters = meta.cluster.shard_map[shard].voters
        for via_leader in (True, False):
            lead = leader_of(nodes, shard)
            assert lead is not None
            to = next(v for v in voters if v != lead.cfg.node_id)
            # the hint goes to the leader, or (a stale hint) to a follower that passes it on
            hop = (
                lead.cfg.node_id
                if via_leader
                else next(v for v in voters if v not in (to, lead.cfg.node_id))
            )
            hint = Message(MessageType.TRANSFER_LEADER, to=hop, frm=me, index=shard, commit=to)
            end = asyncio.get_running_loop().time() + DEADLINE
            while leader_of(nodes, shard) is not by_id[to]:  # a transfer may be abandoned
                assert asyncio.get_running_loop().time() < end, f"node {to} never led {shard}"
                meta.transport.send(BALANCE_GROUP, [hint])
                with contextlib.suppress(AssertionError):
                    await until(lambda t=by_id[to]: leader_of(nodes, shard) is t, "", 2.0)
            assert by_id[hop].stats["balance_hints"] > 0
            assert by_id[to].replicas[shard].raw.raft.id == replica_id(to)
