"""The pure failure detector: heartbeat ages -> MarkDown/MarkUp/Evict, with hysteresis."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidekv.sharding.liveness import FailureDetector, LivenessConfig
from tidekv.sharding.metadata import (
    ClusterState,
    Create,
    Evict,
    MarkDown,
    MarkUp,
    MemberState,
    apply,
)

CFG = LivenessConfig(
    down_after=3, up_after=4, evict_after=20, retry_after=2, max_hold=32, flap_window=20
)
NODES = (1, 2, 3, 4, 5)


def _state() -> ClusterState:
    s = ClusterState()
    assert apply(s, Create("c", 8, [(n, f"h{n}", 1) for n in NODES])) is None
    return s


def _run(alive: dict[int, list[bool]], steps: int) -> tuple[ClusterState, list[tuple[int, object]]]:
    """Poll once per time unit; a node alive at t is heard at t; commands apply at once."""
    s = _state()
    fd = FailureDetector(CFG)
    heard = dict.fromkeys(NODES, 0)
    log: list[tuple[int, object]] = []
    for t in range(steps):
        for n in NODES:
            if alive[n][t % len(alive[n])]:
                heard[n] = t
        for cmd in fd.poll(t, heard, s):
            assert apply(s, cmd) is None, (t, cmd)  # never a refused (stale) command
            log.append((t, cmd))
    return s, log


def test_a_silent_node_is_marked_down_then_evicted_and_comes_back_after_the_hold() -> None:
    alive = {n: [True] for n in NODES}
    alive[3] = [True] * 10 + [False] * 30 + [True] * 100
    s, log = _run(alive, 80)
    cmds = [(t, c) for t, c in log]
    assert cmds[0] == (12, MarkDown(3, 12))  # last heard at 9, silent for 3 at 12
    assert (32, Evict(3)) in cmds  # down for evict_after = 20
    # heard again from t=40: marked up after up_after of continuous hearing
    assert (44, MarkUp(3, 44)) in cmds
    assert len(cmds) == 3
    assert s.members[3].live and s.members[3].state is MemberState.ACTIVE


def test_a_flapping_node_gets_longer_holds_not_a_command_storm() -> None:
    alive = {n: [True] for n in NODES}
    alive[2] = [True] * 6 + [False] * 4  # up 6, silent 4, forever
    _, log = _run(alive, 400)
    ups = [t for t, c in log if isinstance(c, MarkUp)]
    downs = [t for t, c in log if isinstance(c, MarkDown)]
    # without damping it would be marked down and up every 10 units (40 pairs); the hold
    # doubles (4, 8, 16, 32) and a 6-unit stretch of hearing never covers the long holds
    assert len(downs) <= 3 and len(ups) <= 2, log


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(NODES), st.lists(st.booleans(), min_size=1, max_size=40), min_size=1
    ),
    st.integers(40, 200),
)
def test_random_heartbeats(pattern: dict[int, list[bool]], steps: int) -> None:
    alive = {n: pattern.get(n, [True]) for n in NODES}
    s, log = _run(alive, steps)
    heard_at = {n: [t for t in range(steps) if alive[n][t % len(alive[n])]] for n in NODES}
    for t, c in log:
        if isinstance(c, MarkDown):
            last = max([h for h in heard_at[c.node] if h <= t], default=0)
            assert t - last >= CFG.down_after and c.at == t
        elif isinstance(c, MarkUp):
            # heard continuously (no poll saw it silent for down_after) for up_after
            recent = [h for h in heard_at[c.node] if t - CFG.up_after - CFG.down_after < h <= t]
            assert recent and t - recent[-1] < CFG.down_after
            assert all(b - a <= CFG.down_after for a, b in itertools.pairwise(recent))
    # storm bound: per node, one MarkUp per up_after at the very most, and far fewer
    # when it flaps (the holds double)
    for n in NODES:
        ups = [t for t, c in log if isinstance(c, MarkUp) and c.node == n]
        assert len(ups) <= steps // CFG.up_after + 1
        assert all(b - a >= CFG.up_after for a, b in itertools.pairwise(ups))
    # the detector ends in agreement with the heartbeats that stayed steady to the end
    for n in NODES:
        tail = [alive[n][t % len(alive[n])] for t in range(steps - CFG.max_hold - 6, steps)]
        if all(tail):
            assert s.members[n].live
        if not any(tail[-CFG.down_after - 2 :]):
            assert not s.members[n].live


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError):
        LivenessConfig(0, 1, 1, 1, 1, 1)
    with pytest.raises(ValueError):
        LivenessConfig(1, 5, 1, 1, 4, 1)


def test_a_command_not_applied_yet_is_not_proposed_again_before_retry_after() -> None:
    s = _state()
    fd = FailureDetector(CFG)
    heard = dict.fromkeys(NODES, 0)
    heard[4] = -10  # silent
    assert fd.poll(0, heard, s) == [MarkDown(4, 0)]
    assert fd.poll(1, heard, s) == []  # the metadata group has not applied it yet
    assert fd.poll(2, heard, s) == [MarkDown(4, 2)]  # lost, maybe: once more
