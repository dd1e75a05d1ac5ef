"""The client's shard map over a real 3-node cluster (``tide serve`` processes). The
leader tests run on an unsharded cluster (``--shards 1``: one leader for every key);
routing on a sharded cluster is tested in test_sharded_cluster.py.

Which node answered is read from each node's own ``/metrics`` (HTTP requests by route,
method and status): a write the client sent to a follower is counted there, even though
the follower hands it on to the leader inside Raft.
"""

from __future__ import annotations

import asyncio
import re

import pytest

import tidekv
from tidekv.chaos.ports import port_free

from .proc_cluster import ProcCluster

PUTS = re.compile(r"^tidekv_http_requests_total\{(?P<labels>[^}]*)\} (?P<n>\S+)$", re.M)


def puts_answered(c: ProcCluster, i: int) -> int:
    """PUT /v1/kv/{key} requests node ``i`` answered with 200, by its own count."""
    text = c.http.get(c.url(i) + "/metrics", timeout=5.0).text
    total = 0
    for m in PUTS.finditer(text):
        labels = m["labels"]
        if 'route="kv"' in labels and 'method="PUT"' in labels and 'status="200"' in labels:
            total += int(float(m["n"]))
    return total


def counts(c: ProcCluster, nodes: list[int]) -> dict[int, int]:
    return {i: puts_answered(c, i) for i in nodes}


def test_writes_go_straight_to_the_leader(unsharded_trio: ProcCluster) -> None:
    trio = unsharded_trio  # one leader for every key
    leader = trio.leader()
    followers = [i for i in (1, 2, 3) if i != leader]
    urls = [trio.url(i) for i in followers] + [trio.url(leader)]  # a follower first
    before = counts(trio, [1, 2, 3])
    with tidekv.Client(urls) as db:
        for n in range(20):
            assert db.put(f"routed/{n}", {"n": n}).revision > 0
        assert db._map.loads == 1  # loaded once, lazily, and never found stale
        assert db.get("routed/7").json() == {"n": 7}
    after = counts(trio, [1, 2, 3])
    assert after[leader] - before[leader] == 20
    assert all(after[f] == before[f] for f in followers)

    # the same client without routing sends them to the first URL, a follower
    with tidekv.Client(urls, route=False) as db:
        for n in range(5):
            db.put(f"unrouted/{n}", n)
    assert puts_answered(trio, followers[0]) - after[followers[0]] == 5


def test_async_client_routes_too(unsharded_trio: ProcCluster) -> None:
    trio = unsharded_trio  # one leader for every key
    leader = trio.leader()
    followers = [i for i in (1, 2, 3) if i != leader]
    before = counts(trio, [1, 2, 3])

    async def main() -> None:
        urls = [trio.url(i) for i in followers]  # only followers configured
        async with tidekv.AsyncClient(urls) as db:
            for n in range(10):
                await db.put(f"async/{n}", n)
            assert (await db.get("async/3")).json() == 3

    asyncio.run(main())
    after = counts(trio, [1, 2, 3])
    assert after[leader] - before[leader] == 10
    assert all(after[f] == before[f] for f in followers)


def test_after_the_leader_is_killed_the_client_finds_the_new_one(
    unsharded_trio: ProcCluster,
) -> None:
    trio = unsharded_trio  # one leader for every key
    old = trio.leader()
    with tidekv.Client(trio.urls) as db:
        for n in range(5):
            db.put(f"before/{n}", n)
        assert db._map.leaders == {0: trio.url(old)}
        trio.kill(old)  # SIGKILL
        survivors = [i for i in (1, 2, 3) if i != old]
        written = []
        for n in range(300):  # every write succeeds, through the survivors meanwhile
            db.put(f"after/{n}", n)
            written.append(n)
            if db._map.leaders.get(0) not in (None, trio.url(old)):
                break
        new = trio.leader(among=survivors)
        assert db._map.leaders == {0: trio.url(new)}
        other = next(i for i in survivors if i != new)
        before = counts(trio, survivors)
        for n in range(10):
            db.put(f"settled/{n}", n)
        after = counts(trio, survivors)
        assert after[new] - before[new] == 10 and after[other] == before[other]
        for n in written:
            assert db.get(f"after/{n}").json() == n


def test_a_stale_map_is_corrected(unsharded_trio: ProcCluster) -> None:
    trio = unsharded_trio  # one leader for every key
    leader = trio.leader()
    follower = next(i for i in (1, 2, 3) if i != leader)
    with tidekv.Client(trio.urls) as db:
        db.put("stale/0", 0)
        # the map now says a follower leads: as after a leader change the client missed
        db._map.leaders = {0: trio.url(follower)}
        db._map.loaded_at = float("-inf")
        # a lease read there is forwarded to the leader: the answer says so
        assert db.get("stale/0", consistency="lease").json() == 0
        assert db._map.stale
        before = counts(trio, [1, 2, 3])
        for n in range(5):
            db.put(f"stale/{n}", n)
        after = counts(trio, [1, 2, 3])
        assert db._map.leaders == {0: trio.url(leader)}
        assert after[leader] - before[leader] == 5
        assert all(after[i] == before[i] for i in (1, 2, 3) if i != leader)


def test_a_map_pointing_at_a_dead_address_falls_back_and_heals(unsharded_trio: ProcCluster) -> None:
    trio = unsharded_trio  # one leader for every key
    leader = trio.leader()
    dead = next(p for p in range(trio.base + 50, trio.base + 90) if port_free(p))
    with tidekv.Client(trio.urls) as db:
        db.put("dead/0", 0)
        db._map.leaders = {0: f"http://127.0.0.1:{dead}"}
        db._map.stale = False
        db._map.loaded_at = float("-inf")
        db.put("dead/1", 1)  # refused at the cached address: sent to a configured URL
        assert db._map.stale
        db.put("dead/2", 2)
        assert db._map.leaders == {0: trio.url(leader)}
        assert db.get("dead/1").json() == 1


@pytest.mark.parametrize("route", [True, False])
def test_listings_and_watches_still_use_the_configured_urls(trio: ProcCluster, route: bool) -> None:
    with tidekv.Client(trio.urls, route=route) as db:
        for n in range(3):
            db.put(f"list/{n}", n)
        assert [i.key for i in db.scan("list/")] == ["list/0", "list/1", "list/2"]
