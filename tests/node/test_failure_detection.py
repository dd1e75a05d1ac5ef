"""Failure detection on a sharded cluster of real processes (node/failures.py).

Three ``tide serve --shards 8`` processes on loopback, with a short ``--down-after`` and
an ``--evict-after`` far beyond the test (eviction and re-replication:
test_rereplication.py). What the metadata sees is read from ``GET /v1/cluster`` and
from each node's own ``/metrics`` (the MarkDown/MarkUp/Evict commands its metadata
replica applied, per node).

* SIGKILL of the metadata leader: the new leader marks it (and only it) down, writes go
  on, a restart marks it up again.
* A SIGSTOP shorter than ``--down-after`` (of a follower, then of the metadata leader)
  changes nothing.
* A node that flaps (SIGSTOP/SIGCONT over and over) costs a bounded number of down/up
  changes: the hold before a MarkUp doubles each time (without the damping every cycle
  would cost a MarkDown and a MarkUp).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidekv.sharding.keys import shard_of

from .proc_cluster import ProcCluster

SHARDS = 8
DEADLINE = 90.0


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[[float], ProcCluster]]:
    made: list[ProcCluster] = []

    def make(down_after: float) -> ProcCluster:
        c = ProcCluster(
            tmp_path / f"c{len(made)}",
            3,
            shards=SHARDS,
            extra_args=("--down-after", str(down_after), "--evict-after", "3600"),
        )
        c.root.mkdir()
        made.append(c)
        c.start_all()
        for i in (1, 2, 3):
            c.wait_ready(i)
        return c

    try:
        yield make
    finally:
        for c in made:
            for i in (1, 2, 3):  # a stopped process cannot die of SIGTERM
                if c.alive(i):
                    c.signal(i, signal.SIGCONT)
            c.close()


def wait_for(c: ProcCluster, what: str, pred: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"never {what}\n{c.logs()}")


def member(c: ProcCluster, i: int, nid: int) -> dict[str, Any] | None:
    """Member ``nid`` as node ``i``'s metadata sees it."""
    info = c.cluster(i)
    if info is None:
        return None
    return next(n for n in info["nodes"] if n["id"] == nid)


def meta_leader(c: ProcCluster, among: list[int]) -> int:
    def lead() -> int | None:
        for i in among:
            info = c.cluster(i)
            if info is not None and info["meta"]["leader"] in among:
                return int(info["meta"]["leader"])
        return None

    return int(wait_for(c, "a metadata leader", lead))


def leader_and_follower(c: ProcCluster) -> tuple[int, int]:
    """The metadata leader, and another node."""
    lead = meta_leader(c, [1, 2, 3])
    return lead, next(i for i in (1, 2, 3) if i != lead)


def by_node(c: ProcCluster, i: int, name: str) -> dict[int, float]:
    """A per-node counter of node ``i``'s own /metrics: member id -> value."""
    text = c.http.get(c.url(i) + "/metrics", timeout=5.0).text
    out: dict[int, float] = {}
    for line in text.splitlines():
        if line.startswith(name + '{node="'):
            nid = line[len(name) + 7 :].split('"', 1)[0]
            out[int(nid)] = float(line.rsplit(" ", 1)[1])
    return out


def changes(c: ProcCluster, i: int) -> dict[str, dict[int, float]]:
    return {
        kind: by_node(c, i, f"tidekv_{metric}_total")
        for kind, metric in (
            ("down", "nodes_marked_down"),
            ("up", "nodes_marked_up"),
            ("evict", "evictions"),
        )
    }


def key_per_shard() -> list[str]:
    keys: dict[int, str] = {}
    n = 0
    while len(keys) < SHARDS:
        keys.setdefault(shard_of(f"fd-{n}", SHARDS), f"fd-{n}")
        n += 1
    return [keys[s] for s in range(SHARDS)]


def put_ok(c: ProcCluster, i: int, key: str, value: bytes) -> None:
    """A write through node ``i``, retried until acknowledged (a shard whose leader died
    elects first; a retry carries the same Idempotency-Key)."""
    headers = {"idempotency-key": f"{key}-{value.hex()}"}

    def ok() -> bool:
        try:
            return c.put(i, key, value, **headers).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(c, f"{key} written through node {i}", ok)


def test_sigkill_of_the_metadata_leader_marks_it_down_and_a_restart_up(
    make_cluster: Callable[[float], ProcCluster],
) -> None:
    c = make_cluster(2.0)
    dead = meta_leader(c, [1, 2, 3])
    alive = [i for i in (1, 2, 3) if i != dead]
    c.kill(dead)

    def seen_down() -> bool:
        views = [member(c, i, dead) for i in alive]
        return all(v is not None and not v["live"] for v in views)

    wait_for(c, f"node {dead} seen down by {alive}", seen_down)
    for i in alive:
        m = member(c, i, dead)
        assert m is not None and m["state"] == "active", m  # down, not evicted
        assert isinstance(m["down_since"], int) and m["down_since"] > 1_600_000_000_000, m
        assert c.metric(i, "tidekv_nodes_down") == 1.0
        for other in alive:  # the new metadata leader marked only the dead node down
            o = member(c, i, other)
            assert o is not None and o["live"] and o["down_since"] is None, o
    # writes go on, to every shard, through both survivors
    for n, key in enumerate(key_per_shard()):
        put_ok(c, alive[n % 2], key, b"while-down")

    c.start(dead)
    c.wait_ready(dead)

    def seen_up() -> bool:
        views = [member(c, i, dead) for i in (1, 2, 3)]
        return all(v is not None and v["live"] and v["down_since"] is None for v in views)

    wait_for(c, f"node {dead} seen up again by every node", seen_up)
    for i in alive:
        got = changes(c, i)
        assert got == {"down": {dead: 1.0}, "up": {dead: 1.0}, "evict": {}}, (i, got)
        assert c.metric(i, "tidekv_nodes_down") == 0.0
    for key in key_per_shard():
        r = c.get(dead, key)
        assert r.status_code == 200 and r.content == b"while-down", (key, r.text)


def test_a_pause_shorter_than_down_after_changes_nothing(
    make_cluster: Callable[[float], ProcCluster],
) -> None:
    down_after = 4.0
    c = make_cluster(down_after)
    lead, follower = leader_and_follower(c)
    for paused in (follower, lead):
        c.signal(paused, signal.SIGSTOP)
        time.sleep(1.0)  # a quarter of --down-after
        c.signal(paused, signal.SIGCONT)
        c.wait_ready(paused)
    # a late MarkDown would have come by now: --down-after more, plus a margin
    time.sleep(down_after + 2.0)
    for i in (1, 2, 3):
        assert changes(c, i) == {"down": {}, "up": {}, "evict": {}}, (i, c.logs())
        info = c.cluster(i)
        assert info is not None
        assert all(n["live"] and n["state"] == "active" for n in info["nodes"]), info["nodes"]
        # every member is heard (pings go to every member node, whatever they share)
        heard = by_node(c, i, "tidekv_peer_heard_age_seconds")
        assert set(heard) == {1, 2, 3} - {i}, heard


def live(c: ProcCluster, i: int, nid: int) -> bool | None:
    m = member(c, i, nid)
    return None if m is None else bool(m["live"])


def test_a_flapping_node_costs_few_down_and_up_changes(
    make_cluster: Callable[[float], ProcCluster],
) -> None:
    c = make_cluster(1.5)
    # the detector's holds live on the metadata leader: flap another node
    lead, flapper = leader_and_follower(c)
    before = c.cluster(lead)
    assert before is not None
    for _ in range(6):
        c.signal(flapper, signal.SIGSTOP)
        time.sleep(2.5)  # silent for longer than --down-after
        wait_for(c, f"node {flapper} seen down", lambda: live(c, lead, flapper) is False)
        c.signal(flapper, signal.SIGCONT)
        time.sleep(4.0)  # longer than the first two holds (1.5 s, 3 s), shorter than 6 s
    got = changes(c, lead)
    after = c.cluster(lead)
    assert after is not None
    why = (got, before["meta"], after["meta"], c.logs())
    downs, ups = got["down"].get(flapper, 0), got["up"].get(flapper, 0)
    # a MarkUp needs a run as long as the hold, which doubles with each MarkDown: at
    # most 2 ups (holds 1.5 s and 3 s), so at most 3 downs. Without the damping: 6 and 6
    assert 2 <= downs <= 3 and ups <= 2, why
    assert not got["evict"], why
    # left running, it comes back up once heard for its (now longer) hold
    wait_for(c, f"node {flapper} up again", lambda: live(c, lead, flapper) is True)
    for i in (1, 2, 3):
        info = c.cluster(i)
        assert info is not None and all(n["state"] == "active" for n in info["nodes"])
