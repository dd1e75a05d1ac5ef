"""Quiescence on real processes: a 3-node cluster hosting several groups goes quiet, and
when the node leading quiesced groups is SIGKILLed, the node-level liveness signal wakes
their followers, which elect new leaders and serve writes.

Two clusters: an unsharded one (``--shards 1``) whose extra groups (1..N) are opened by
the hidden TIDEKV_IDLE_GROUPS_FOR_BENCH option with the same three members (only group
0 is reachable through the key API), and a sharded one (8 shards and the metadata
group). Writes are checked after the kill, and for every group the dead node led, that
the new leader commits (its no-op moves the commit index past where the dead leader left
it). No wall-clock threshold.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .proc_cluster import DEADLINE, ProcCluster, running

pytestmark = pytest.mark.timeout(240)

EXTRA = 5
SHARDS = 8


def shard_samples(c: ProcCluster, i: int, name: str) -> dict[int, float]:
    """``name{shard="g"} v`` samples of node ``i``'s /metrics, by shard."""
    try:
        text = c.http.get(c.url(i) + "/metrics", timeout=2.0).text
    except Exception:
        return {}
    out: dict[int, float] = {}
    prefix = name + '{shard="'
    for line in text.splitlines():
        if line.startswith(prefix):
            shard = int(line[len(prefix) :].split('"', 1)[0])
            out[shard] = float(line.rsplit(" ", 1)[1])
    return out


def leaders(c: ProcCluster, nodes: list[int]) -> dict[int, int]:
    """shard -> the node among ``nodes`` that reports leading it."""
    out: dict[int, int] = {}
    for i in nodes:
        for shard, v in shard_samples(c, i, "tidekv_raft_is_leader").items():
            if v == 1:
                out[shard] = i
    return out


def wait_for(what: str, cond: object, c: ProcCluster, timeout: float = DEADLINE) -> None:
    assert callable(cond)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout} s\n{c.logs()}")


@pytest.fixture(params=["unsharded", "sharded"])
def groups_trio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[tuple[ProcCluster, int]]:
    """The cluster and how many groups each node hosts."""
    monkeypatch.delenv("TIDEKV_QUIESCE", raising=False)
    if request.param == "unsharded":
        monkeypatch.setenv("TIDEKV_IDLE_GROUPS_FOR_BENCH", str(EXTRA))
        shards, groups = 1, 1 + EXTRA
    else:  # every node holds every shard (rf 3) and is a metadata voter
        shards, groups = SHARDS, SHARDS + 1
    # no leader balancing: its transfers (a new term each) are work, and this test samples
    # the terms of an idle cluster; balancing is tested in test_leader_balance.py
    with running(tmp_path, 3, shards=shards, extra_args=("--no-balance-leaders",)) as c:
        yield c, groups


def test_idle_groups_quiesce_and_survive_the_death_of_their_leaders_node(
    groups_trio: tuple[ProcCluster, int],
) -> None:
    c, groups = groups_trio
    nodes = [1, 2, 3]
    wait_for(
        "every group led",
        lambda: len(leaders(c, nodes)) == groups,
        c,
    )
    wait_for(
        "every replica quiesced",
        lambda: all(c.metric(i, "tidekv_groups_quiesced") == groups for i in nodes),
        c,
    )
    # quiet means quiet: no term moves while nothing happens (sampled, not timed)
    terms = {i: shard_samples(c, i, "tidekv_raft_term") for i in nodes}
    time.sleep(1.0)
    assert {i: shard_samples(c, i, "tidekv_raft_term") for i in nodes} == terms

    led = leaders(c, nodes)
    victim = led[0]  # the leader of (data) group 0: writes must move elsewhere
    victim_groups = sorted(g for g, n in led.items() if n == victim)
    others = [i for i in nodes if i != victim]
    commits = {g: max(shard_samples(c, i, "tidekv_raft_commit_index")[g] for i in others)
               for g in victim_groups}  # fmt: skip
    t_kill = time.monotonic()
    c.kill(victim)

    def replaced() -> bool:
        now = leaders(c, others)
        return all(g in now for g in victim_groups)

    wait_for(f"new leaders for groups {victim_groups} of node {victim}", replaced, c)
    t_led = time.monotonic()
    new = leaders(c, others)
    for g in victim_groups:
        commit = shard_samples(c, new[g], "tidekv_raft_commit_index")[g]
        assert commit > commits[g], f"group {g}: new leader did not commit"
    wakes = sum(c.metric(i, "tidekv_liveness_wakes_total") or 0 for i in others)
    assert wakes >= len(victim_groups)  # woken by node liveness, not by a timer

    for i in others:  # writes through both survivors, the leader and a follower
        r = c.put(i, f"after-kill-{i}", b"v%d" % i)
        assert r.status_code in (200, 201), r.text
    for i in others:
        for j in others:
            r = c.get(j, f"after-kill-{i}")
            assert r.status_code == 200 and r.content == b"v%d" % i
    print(
        f"\n{len(victim_groups)} quiesced groups of node {victim}: new leaders "
        f"{t_led - t_kill:.3f} s after SIGKILL; {wakes} liveness wake-ups"
    )
