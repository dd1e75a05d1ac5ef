"""The leader-balancing driver: rate limits, moving shards left alone, and convergence
without transfers that undo each other."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidekv.sharding.balancer import BalancerConfig, LeaderBalancer
from tidekv.sharding.leaders import balance_leaders, spread
from tidekv.sharding.metadata import ClusterState, Create, Join, LeaderSeen, MarkDown, apply


def _state(nodes: int, shards: int, leaders: list[int]) -> ClusterState:
    s = ClusterState()
    assert apply(s, Create("c", shards, [(n, f"h{n}", 1) for n in range(1, nodes + 1)])) is None
    for sh in range(shards):
        voters = s.shard_map[sh].voters
        assert apply(s, LeaderSeen(sh, voters[leaders[sh % len(leaders)] % len(voters)], 1)) is None
    return s


def _run(s: ClusterState, b: LeaderBalancer, polls: int, lag: int = 1) -> tuple[int, list[int]]:
    """Poll once per time unit; a transfer shows in the leaders seen ``lag`` units later."""
    issued = 0
    pending: list[tuple[int, int, int]] = []  # (shows at, shard, node)
    inflight_max: list[int] = []
    for now in range(polls):
        for at, sh, node in [p for p in pending if p[0] <= now]:
            pending.remove((at, sh, node))
            seen = s.leaders[sh]
            assert apply(s, LeaderSeen(sh, node, seen.term + 1)) is None
        out = b.poll(now, s)
        for t in out:
            assert s.leaders[t.shard].node == t.frm
            assert t.to in s.shard_map[t.shard].voters and not s.shard_map[t.shard].moving
            pending.append((now + lag, t.shard, t.to))
        issued += len(out)
        inflight_max.append(len(b.inflight))
    return issued, inflight_max


@settings(max_examples=60, deadline=None)
@given(
    nodes=st.integers(3, 7),
    shards=st.integers(4, 64),
    leaders=st.lists(st.integers(0, 2), min_size=1, max_size=8),
    k=st.integers(1, 4),
    lag=st.integers(1, 4),
)
def test_converges_to_the_optimum_moving_each_shard_at_most_once(
    nodes: int, shards: int, leaders: list[int], k: int, lag: int
) -> None:
    s = _state(nodes, shards, leaders)
    want = len(balance_leaders({x: y.node for x, y in s.leaders.items()},
                               {x: sh.voters for x, sh in s.shard_map.items()}))  # fmt: skip
    b = LeaderBalancer(BalancerConfig(max_concurrent=k, timeout=50, cooldown=0))
    issued, inflight = _run(s, b, polls=shards * 5 + 20, lag=lag)
    assert max(inflight) <= k
    # no transfer undoes another: as many as one optimal plan has, no more
    assert issued == want
    assert b.settled(s)
    most, fewest = spread({x: y.node for x, y in s.leaders.items()}, range(1, nodes + 1))
    if shards >= 8 * nodes:
        assert most <= 1.5 * fewest


def test_moving_shards_and_down_nodes_are_left_alone() -> None:
    s = _state(4, 16, [0])  # every shard led by its first replica
    assert apply(s, Join(5, "h5")) is None  # some shards move to node 5
    assert apply(s, MarkDown(4, 0)) is None  # a down node leads nothing new
    b = LeaderBalancer(BalancerConfig(max_concurrent=16, timeout=10, cooldown=0))
    for t in b.poll(0, s):
        assert t.to != 4
        assert not s.shard_map[t.shard].moving
    assert any(sh.moving for sh in s.shard_map.values())


def test_cooldown_and_timeout() -> None:
    s = _state(3, 6, [0])
    s.leaders = {sh: type(s.leaders[0])(1, 1) for sh in s.shard_map if 1 in s.shard_map[sh].voters}
    b = LeaderBalancer(BalancerConfig(max_concurrent=1, timeout=5, cooldown=20))
    first = b.poll(0, s)
    assert len(first) == 1
    assert b.poll(1, s) == []  # one in flight, K = 1
    sh = first[0].shard
    # the transfer never shows: after the timeout the slot is free, but not that shard
    later = b.poll(5, s)
    assert len(later) == 1 and later[0].shard != sh
    for now in range(10, 20, 5):  # each times out in turn; sh stays in its cooldown
        assert sh not in {t.shard for t in b.poll(now, s)}


def test_bad_config() -> None:
    with pytest.raises(ValueError):
        BalancerConfig(0, 1, 0)
