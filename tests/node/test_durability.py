"""An acknowledged write is durable on a majority: with one follower down, the leader and
the other follower are SIGKILLed together while writes are in flight; the two nodes that
come back (the one that had been down, and the follower) hold every acknowledged write,
and the follower that had been down never leads them astray (it lacks the writes, so it
cannot win the election)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tidekv.sharding.keys import shard_of

from .proc_cluster import DEADLINE, ProcCluster, running
from .writers import Writer, assert_all_readable, wait_caught_up

pytestmark = pytest.mark.timeout(240)


def every_shard_led(c: ProcCluster, node: int, among: list[int]) -> dict[int, int]:
    """shard -> its leader, as ``node`` sees it, once every shard is led by one of
    ``among`` (one shard, 0, on an unsharded cluster)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        info = c.cluster(node)
        if info is not None:
            leaders = {sh["id"]: sh["leader"] for sh in info["shards"]}
            if all(lead in among for lead in leaders.values()):
                return leaders
        time.sleep(0.1)
    raise AssertionError(f"not every shard led by one of {among}\n{c.logs()}")


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[ProcCluster]:
    """Three nodes on the default shard count, without leader balancing: what this test
    reads is who the elections chose (a balancing transfer would later, and rightly, hand
    a shard to the restarted stale node once it has caught up)."""
    with running(tmp_path, 3, shards=None, extra_args=("--no-balance-leaders",)) as c:
        yield c


def test_acked_writes_survive_the_leader_and_a_follower_killed_at_once(trio: ProcCluster) -> None:
    c = trio
    leader = c.leader()
    stale, keeper = (i for i in (1, 2, 3) if i != leader)
    c.kill(stale)  # the minority that misses every write below
    writers = [Writer(c, prefix=f"d{k}") for k in range(4)]  # concurrent: group commits
    for w in writers:
        w.start()
    try:
        for w in writers:
            w.wait_acked(40)
        c.kill(leader)  # SIGKILL: nothing flushed at exit
        c.kill(keeper)
    finally:
        for w in writers:
            w.stop()
    acked = {k: v for w in writers for k, v in w.acked.items()}
    assert len(acked) >= 160

    # the acked writes live only on the keeper (and the dead leader): the stale node
    # alone has none of them, so the keeper must be elected, in every group that holds
    # one (on a sharded cluster a shard without an acked write may elect either)
    c.start(stale)
    c.start(keeper)
    c.leader(among=[stale, keeper])
    leaders = every_shard_led(c, keeper, [stale, keeper])
    written = {shard_of(k, len(leaders)) for k in acked}
    assert {s: leaders[s] for s in written} == dict.fromkeys(written, keeper)
    assert_all_readable(c, stale, acked)  # forwarded to the keeper, linearizable
    wait_caught_up(c, stale, acked)  # and now in the stale node's own replica too

    # writes in flight when the leader died may or may not have committed; the old
    # leader, restarted, agrees with the new one on every acked write
    c.start(leader)
    wait_caught_up(c, leader, acked)
