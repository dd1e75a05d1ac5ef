"""An acknowledged write is durable on a majority: with one follower down, the leader and
the other follower are SIGKILLed together while writes are in flight; the two nodes that
come back (the one that had been down, and the follower) hold every acknowledged write,
and the follower that had been down never leads them astray (it lacks the writes, so it
cannot win the election)."""

from __future__ import annotations

import pytest

from .proc_cluster import ProcCluster
from .writers import Writer, assert_all_readable, wait_caught_up

pytestmark = pytest.mark.timeout(240)


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
    # alone has none of them, so the keeper must be elected
    c.start(stale)
    c.start(keeper)
    assert c.leader(among=[stale, keeper]) == keeper
    assert_all_readable(c, stale, acked)  # forwarded to the keeper, linearizable
    wait_caught_up(c, stale, acked)  # and now in the stale node's own replica too

    # writes in flight when the leader died may or may not have committed; the old
    # leader, restarted, agrees with the new one on every acked write
    c.start(leader)
    wait_caught_up(c, leader, acked)
