"""A real 3-node cluster (``tide serve`` processes on loopback) under process faults.

Every test writes through real HTTP to every node (followers forward to the leader),
records each acknowledged write, injects a fault, and then checks that every
acknowledged write is readable. Failover times are printed (run with ``-s`` to see
them); there is no wall-clock threshold: the machine is shared.
"""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from .proc_cluster import DEADLINE, ProcCluster

pytestmark = pytest.mark.timeout(240)


class Writer(threading.Thread):
    """Writes w-<n> keys round-robin over the live nodes; remembers what was acked."""

    def __init__(self, cluster: ProcCluster, prefix: str = "w") -> None:
        super().__init__(daemon=True)
        self.c = cluster
        self.prefix = prefix
        self.acked: dict[str, tuple[bytes, float]] = {}
        self.errors = 0
        self._halt = threading.Event()
        self.client = httpx.Client(timeout=3.0)

    def run(self) -> None:
        n = 0
        while not self._halt.is_set():
            n += 1
            key = f"{self.prefix}-{n}"
            value = f"value-{n}".encode()
            live = [i for i in range(1, self.c.n + 1) if self.c.alive(i)]
            if not live:
                time.sleep(0.05)
                continue
            node = live[n % len(live)]
            try:
                r = self.client.put(
                    self.c.url(node) + "/v1/kv/" + key,
                    content=value,
                    headers={"content-type": "application/octet-stream"},
                )
            except httpx.HTTPError:
                self.errors += 1
                time.sleep(0.02)
                continue
            if r.status_code == 200:
                self.acked[key] = (value, time.monotonic())
            else:
                self.errors += 1
                time.sleep(0.02)

    def wait_acked(self, count: int, after: float = 0.0) -> float:
        """Wait until ``count`` writes were acked after time ``after``; returns the time
        of the first of them."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            times = sorted(t for _v, t in list(self.acked.values()) if t > after)
            if len(times) >= count:
                return times[0]
            time.sleep(0.02)
        raise AssertionError(f"fewer than {count} writes acked after the fault\n{self.c.logs()}")

    def stop(self) -> None:
        self._halt.set()
        self.join(30)
        self.client.close()


@pytest.fixture
def cluster(trio: ProcCluster) -> ProcCluster:
    return trio


def assert_all_readable(c: ProcCluster, node: int, acked: dict[str, tuple[bytes, float]]) -> None:
    missing = []
    for key, (value, _t) in acked.items():
        r = c.get(node, key)
        if r.status_code != 200 or r.content != value:
            missing.append((key, r.status_code))
    assert not missing, f"{len(missing)} acknowledged writes not readable: {missing[:5]}"


def wait_caught_up(c: ProcCluster, node: int, acked: dict[str, tuple[bytes, float]]) -> None:
    """``node`` serves every acknowledged write from its own replica (stale reads)."""
    deadline = time.monotonic() + DEADLINE
    pending = dict(acked)
    while pending and time.monotonic() < deadline:
        for key, (value, _t) in list(pending.items()):
            try:
                r = c.get(node, key, consistency="stale")
            except httpx.HTTPError:  # still starting
                break
            if r.status_code == 200 and r.content == value:
                del pending[key]
        if pending:
            time.sleep(0.1)
    assert not pending, f"node {node} misses {len(pending)} writes\n{c.logs()}"


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


def test_a_wiped_node_rejoins_through_a_snapshot(cluster: ProcCluster) -> None:
    leader = cluster.leader()
    victim = next(i for i in (1, 2, 3) if i != leader)
    w = Writer(cluster)
    w.start()
    w.wait_acked(100)
    # remove it from the membership, wipe its disk, and add it back as a new member
    r = cluster.http.delete(cluster.url(leader) + f"/v1/cluster/nodes/{victim}")
    assert r.status_code == 200, r.text
    cluster.kill(victim)
    cluster.wipe(victim)
    cluster.start(victim, join=True)
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
    info = cluster.cluster(leader)
    assert info is not None
    assert victim in info["shards"][0]["replicas"]
