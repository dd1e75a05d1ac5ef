"""Leader balancing on a sharded cluster of real processes (on by default).

Three nodes, twelve shards, every node a replica of every shard: SIGSTOP one node until
the other two lead every shard, then SIGCONT it. Nothing in Raft gives it leadership
back; the metadata leader's balancer must (most leaders on one node <= 1.5x the fewest,
the issue's bound; the optimum here is 4 each). With ``--no-balance-leaders`` it
stays at 0 (checked by hand: both tests fail so).

Five nodes, twenty shards, three replicas each: the metadata leader does not replicate
every shard, and the balancer reaches those through hints to the shard's leader. The
node stopped is the one that shares the fewest shards with the metadata leader. Writers
on every node run through the whole balancing: every write succeeds and is applied
exactly once (each key's history is exactly the writes acknowledged, in order).
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tidekv.sharding.keys import shard_of

from .proc_cluster import ProcCluster, running

pytestmark = pytest.mark.timeout(400)

SHARDS = 12
DEADLINE = 90.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProcCluster]:
    with running(tmp_path, 3, shards=SHARDS) as c:
        yield c


def leaders(c: ProcCluster, i: int, shards: int = SHARDS) -> Counter[int] | None:
    info = c.cluster(i)
    if info is None or len(info["shards"]) != shards:
        return None
    seen = [s["leader"] for s in info["shards"]]
    if not all(isinstance(x, int) for x in seen):
        return None
    return Counter(seen)


def wait_for(
    c: ProcCluster, i: int, ok: str, pred: Callable[[Counter[int]], bool], shards: int = SHARDS
) -> Counter[int]:
    deadline = time.monotonic() + DEADLINE
    last: Counter[int] | None = None
    while time.monotonic() < deadline:
        last = leaders(c, i, shards)
        if last is not None and pred(last):
            return last
        time.sleep(0.2)
    raise AssertionError(f"leaders never {ok}: last seen {last}\n{c.logs()}")


def within_bound(n: Counter[int], nodes: list[int]) -> bool:
    """Every node leads a shard, and the most leaders on one is <= 1.5x the fewest."""
    fewest = min(n[x] for x in nodes)
    return fewest > 0 and max(n[x] for x in nodes) <= 1.5 * fewest


def test_leaders_spread_back_over_a_node_that_lost_them_all(cluster: ProcCluster) -> None:
    c = cluster
    c.signal(3, signal.SIGSTOP)
    wait_for(c, 1, "left node 3", lambda n: n[3] == 0 and sum(n.values()) == SHARDS)
    c.signal(3, signal.SIGCONT)

    spread = wait_for(
        c,
        1,
        "spread within 1.5x",
        lambda n: (
            min(n[x] for x in (1, 2, 3)) > 0
            and max(n.values()) <= 1.5 * min(n[x] for x in (1, 2, 3))
        ),
    )
    assert spread[3] >= 3, spread
    transfers = sum(c.metric(i, "tidekv_leader_balance_transfers_total") or 0 for i in (1, 2, 3))
    assert transfers >= spread[3], (transfers, spread)
    # every node's view agrees once the transfers have settled, and writes reach every shard
    for i in (2, 3):
        wait_for(c, i, f"seen spread by node {i}", lambda n: n[3] >= 3)
    for n in range(24):
        r = c.put(1 + n % 3, f"after-balance-{n}", b"x")
        assert r.status_code == 200, r.text


FIVE = 20  # shards of the five-node cluster


class Writers:
    """One thread per node writing its keys in turn, each key's values 0, 1, 2, ...;
    every answer must be a 200."""

    def __init__(self, c: ProcCluster, nodes: list[int], keys: list[str]) -> None:
        self.c = c
        self.acked = dict.fromkeys(keys, 0)
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self.run, args=(i, keys[n :: len(nodes)]), daemon=True)
            for n, i in enumerate(nodes)
        ]

    def run(self, node: int, keys: list[str]) -> None:
        with httpx.Client(timeout=30.0) as http:
            while not self.stop.is_set():
                for key in keys:
                    n = self.acked[key]
                    try:
                        r = http.put(
                            self.c.url(node) + "/v1/kv/" + key,
                            content=str(n).encode(),
                            headers={"content-type": "text/plain"},
                        )
                    except httpx.HTTPError as exc:
                        self.failures.append(f"node {node} {key}: {exc!r}")
                        return
                    if r.status_code != 200:
                        self.failures.append(f"node {node} {key}: {r.status_code} {r.text}")
                        return
                    self.acked[key] = n + 1

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def test_five_nodes_balance_shards_the_metadata_leader_lacks_while_writes_ride_out(
    tmp_path: Path,
) -> None:
    nodes = [1, 2, 3, 4, 5]
    c = ProcCluster(tmp_path, 5, shards=FIVE)
    c.start_all()
    stopped: int | None = None
    try:
        for i in nodes:
            c.wait_ready(i)
        wait_for(c, 1, "elected", lambda n: sum(n.values()) == FIVE, FIVE)
        info = c.cluster(1)
        assert info is not None
        meta = info["meta"]["leader"]
        assert meta in nodes, info["meta"]
        placed = {s["id"]: set(s["replicas"]) for s in info["shards"]}
        lacking = [s for s, r in placed.items() if meta not in r]
        assert lacking, placed  # the metadata leader does not replicate every shard

        def shared(n: int) -> int:
            return sum(1 for r in placed.values() if n in r and meta in r)

        stopped = min((n for n in nodes if n != meta), key=lambda n: (shared(n), n))
        c.signal(stopped, signal.SIGSTOP)
        wait_for(c, meta, f"left node {stopped}", lambda n: n[stopped] == 0, FIVE)
        c.signal(stopped, signal.SIGCONT)
        stopped = None

        keys: list[str] = []
        per: Counter[int] = Counter()
        k = 0
        while len(keys) < 2 * FIVE:  # two keys of every shard
            key = f"bal{k:05d}"
            k += 1
            if per[shard_of(key, FIVE)] < 2:
                per[shard_of(key, FIVE)] += 1
                keys.append(key)
        with Writers(c, nodes, keys) as w:
            spread = wait_for(c, meta, "spread within 1.5x", lambda n: within_bound(n, nodes), FIVE)
            time.sleep(2.0)  # writes go on after the last transfer, too
        assert not w.failures, (w.failures[:5], c.logs())
        hints = sum(c.metric(i, "tidekv_leader_balance_hints_total") or 0 for i in nodes)
        moved = sum(c.metric(i, "tidekv_leader_balance_transfers_total") or 0 for i in nodes)
        assert moved > 0, (moved, hints, spread)
        for key, n in w.acked.items():  # exactly once: n versions, one chain, the last n - 1
            assert n > 0, w.acked
            r = c.http.get(c.url(1) + "/v1/kv/" + key + "/history")
            assert r.status_code == 200, r.text
            chain = list(reversed(r.json()["versions"]))
            assert len(chain) == n, (key, n, len(chain))
            for parent, child in itertools.pairwise(chain):
                assert child["parents"] == [parent["version"]], (key, chain)
            assert c.get(1, key).text == str(n - 1), key
    finally:
        if stopped is not None:
            c.signal(stopped, signal.SIGCONT)
        c.close()
