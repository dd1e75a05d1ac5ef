"""A real 3-node cluster (``tide serve`` processes on loopback) under process faults.

Every test writes through real HTTP to every node (followers forward to the leader),
records each acknowledged write, injects a fault, and then checks that every
acknowledged write is readable. Failover times are printed (run with ``-s`` to see
them); there is no wall-clock threshold: the machine is shared.
"""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from .proc_cluster import DEADLINE, ProcCluster, sse_events
from .writers import Writer, assert_all_readable, wait_caught_up

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def cluster(trio: ProcCluster) -> ProcCluster:
    return trio


def test_sigkill_leader_a_new_leader_serves_and_no_acked_write_is_lost(
    cluster: ProcCluster,
) -> None:
    leader = cluster.leader()
    w = Writer(cluster)
    w.start()
    w.wait_acked(100)
    t_kill = time.monotonic()
    cluster.kill(leader)
    others = [i for i in (1, 2, 3) if i != leader]
    new = cluster.leader(among=others)
    t_new = time.monotonic()
    first_ok = w.wait_acked(20, after=t_kill)
    w.stop()
    print(
        f"\nfailover after SIGKILL: new leader seen {t_new - t_kill:.3f} s after the kill, "
        f"first acked write {first_ok - t_kill:.3f} s"
    )
    assert new != leader
    assert_all_readable(cluster, new, w.acked)
    # the killed node comes back and catches up with everything
    cluster.start(leader)
    wait_caught_up(cluster, leader, w.acked)


def test_sigstop_leader_then_sigcont_it_steps_down_and_catches_up(cluster: ProcCluster) -> None:
    leader = cluster.leader()
    w = Writer(cluster)
    w.start()
    w.wait_acked(50)
    t_stop = time.monotonic()
    cluster.signal(leader, signal.SIGSTOP)
    # the paused process cannot accept connections' requests: write only to the others
    others = [i for i in (1, 2, 3) if i != leader]
    new = cluster.leader(among=others)
    t_new = time.monotonic()
    first_ok = w.wait_acked(20, after=t_stop)
    print(
        f"\nfailover after SIGSTOP: new leader seen {t_new - t_stop:.3f} s after the pause, "
        f"first acked write {first_ok - t_stop:.3f} s (the writer also waits out requests "
        "sent to the paused node)"
    )
    cluster.signal(leader, signal.SIGCONT)
    w.wait_acked(20, after=time.monotonic())
    w.stop()
    assert new != leader
    # the old leader learns the new term and steps down
    deadline = time.monotonic() + DEADLINE
    while cluster.metric(leader, "tidekv_raft_is_leader") != 0.0:
        assert time.monotonic() < deadline, "the old leader did not step down"
        time.sleep(0.05)
    assert_all_readable(cluster, new, w.acked)
    wait_caught_up(cluster, leader, w.acked)


def test_restart_every_node_keeps_all_data(cluster: ProcCluster) -> None:
    cluster.leader()
    w = Writer(cluster)
    w.start()
    w.wait_acked(150)
    w.stop()
    for i in (1, 2, 3):
        cluster.kill(i)  # no clean shutdown: recovery from the WAL and the engines
    cluster.start_all()
    lead = cluster.leader()
    assert_all_readable(cluster, lead, w.acked)
    for i in (1, 2, 3):
        wait_caught_up(cluster, i, w.acked)


def test_a_node_down_during_writes_catches_up_when_it_returns(cluster: ProcCluster) -> None:
    leader = cluster.leader()
    follower = next(i for i in (1, 2, 3) if i != leader)
    cluster.kill(follower)
    w = Writer(cluster)
    w.start()
    w.wait_acked(150)
    w.stop()
    cluster.start(follower)
    wait_caught_up(cluster, follower, w.acked)


def test_a_wiped_node_rejoins_through_a_snapshot(unsharded_trio: ProcCluster) -> None:
    # by a membership change (remove, then add with a new id): an unsharded cluster's
    cluster = unsharded_trio
    leader = cluster.leader()
    old = next(i for i in (1, 2, 3) if i != leader)
    w = Writer(cluster)
    w.start()
    w.wait_acked(100)
    # remove it from the membership, wipe its disk, and add it back as a new member:
    # with a new id (the old one is tombstoned), at the old node's place
    r = cluster.http.delete(cluster.url(leader) + f"/v1/cluster/nodes/{old}")
    assert r.status_code == 200, r.text
    cluster.kill(old)
    cluster.wipe(old)
    victim = 4
    cluster.start(victim, join=True, peers=cluster.peers_spec() + f",4={cluster.address(4)}")
    r = cluster.http.post(
        cluster.url(leader) + "/v1/cluster/nodes",
        json={"id": victim, "address": cluster.address(victim)},
        timeout=90.0,
    )
    assert r.status_code == 200, r.text
    w.wait_acked(20, after=time.monotonic())
    w.stop()
    wait_caught_up(cluster, victim, w.acked)
    log_text = (cluster.root / f"n{victim}.log").read_text()
    assert "installing snapshot" in log_text
    # the snapshot carried the tombstone: the new node itself refuses the old id (the
    # header stops it from forwarding to the leader)
    r = cluster.http.post(
        cluster.url(victim) + "/v1/cluster/nodes",
        json={"id": old, "address": cluster.address(old)},
        headers={"x-tide-forwarded-by": "test"},
        timeout=30.0,
    )
    assert r.status_code == 409, r.text
    assert f"node id {old} was removed" in r.json()["error"]["message"]
    # the snapshot carries the change feed too: a watch from the start on the rebuilt
    # node sees every change once, in order (nothing is compacted, so no 410)
    info = cluster.cluster(victim)
    assert info is not None
    revision = int(info["shards"][0]["revision"])
    with httpx.Client(timeout=httpx.Timeout(10.0, read=60.0)) as http:
        url = cluster.url(victim) + "/v1/watch"
        with http.stream("GET", url, params={"since": "0"}) as resp:
            events = [d for _id, d in sse_events(resp, revision)]
    assert [d["revision"] for d in events] == list(range(1, revision + 1))
    assert {d["key"] for d in events} >= set(w.acked)
    info = cluster.cluster(leader)
    assert info is not None
    assert victim in info["shards"][0]["replicas"]
