"""The failure detector's driver (node/failures.py) against a fake node: grace at
election and after a stall, no grace for a member already down, the clock of ``at``.

The real-process behaviour is in test_failure_detection.py; these pin the edge cases
that are hard to provoke with processes (a leader that has heard nothing yet)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from tidekv.node.failures import FailureWatch, StepFreeClock, liveness_config
from tidekv.node.meta import initial_state
from tidekv.sharding.metadata import ClusterState, Evict, MarkDown, MarkUp, apply

D = 2.0  # --down-after
E = 10.0  # --evict-after


@dataclass
class FakeRaft:
    term: int = 1


@dataclass
class FakeRaw:
    raft: FakeRaft = field(default_factory=FakeRaft)


@dataclass
class FakeMeta:
    state: ClusterState
    is_leader: bool = True
    raw: FakeRaw = field(default_factory=FakeRaw)


@dataclass
class FakeCfg:
    node_id: int = 1
    down_after: float = D
    evict_after: float = E


@dataclass
class FakeNode:
    meta: FakeMeta
    cfg: FakeCfg = field(default_factory=FakeCfg)
    _heard: dict[int, float] = field(default_factory=dict)
    _closing: bool = False


def make(nodes: int = 3) -> tuple[FakeNode, FailureWatch]:
    st = initial_state("c", 4, [(i, f"h{i}:1") for i in range(1, nodes + 1)], 3)
    node = FakeNode(FakeMeta(st))
    return node, FailureWatch(cast(Any, node), StepFreeClock(0.0, wall=1_000.0))


def run(node: FakeNode, w: FailureWatch, t: float) -> list[Any]:
    """Poll at loop time ``t`` and apply what comes back (as the metadata group would)."""
    cmds = w.poll(t)
    for c in cmds:
        assert apply(node.meta.state, c) is None, c
    return cmds


def test_a_new_leader_that_heard_nobody_waits_down_after_from_its_election() -> None:
    node, w = make()
    # elected at t=100 without having heard anyone (a fresh process)
    for t in (100.0, 100.5, 101.0, 101.9):
        assert run(node, w, t) == []
    # node 2 is heard from now on, node 3 never
    node._heard[2] = 101.9
    assert run(node, w, 102.0) == [MarkDown(3, at=1_000 * (1_000 + 102))]
    st = node.meta.state
    assert not st.members[3].live and st.members[2].live and st.members[1].live


def test_a_leader_change_restarts_the_grace() -> None:
    node, w = make()
    node._heard.update({2: 50.0, 3: 50.0})
    run(node, w, 50.0)
    node.meta.is_leader = False
    assert run(node, w, 60.0) == []  # not the leader: nothing, and the detector is dropped
    node.meta.is_leader = True
    node.meta.raw.raft.term = 2
    # leader again at t=70, both silent since 50: the grace counts them heard at 70
    for t in (70.0, 70.5, 71.0, 71.5, 71.9):  # polls closer than down_after / 2
        assert run(node, w, t) == [], t
    assert {c.node for c in run(node, w, 72.0)} == {2, 3}


def test_a_stall_of_this_process_marks_nobody_down() -> None:
    node, w = make()
    node._heard.update({2: 10.0, 3: 10.0})
    run(node, w, 10.0)
    # SIGSTOPped for 30 s: on resume, the peers' frames have not been read yet
    assert run(node, w, 40.0) == []
    node._heard.update({2: 40.1, 3: 40.1})
    # then node 2 keeps talking and node 3 stays silent: down 2 s after its last frame
    out = []
    for k in range(1, 12):
        t = 40.0 + 0.25 * k
        node._heard[2] = t
        out += [(t, c) for c in run(node, w, t)]
    assert out == [(42.25, MarkDown(3, at=1_042_250))]


def test_a_member_already_down_gets_no_grace_and_its_eviction_counts_from_down_since() -> None:
    node, w = make(4)  # 3 others remain for 3 replicas
    st = node.meta.state
    # marked down by an earlier leader at wall 1_005 s (loop time 5 here); due at 15
    assert apply(st, MarkDown(3, at=1_005_000)) is None
    node._heard.update({2: 20.0, 4: 20.0})
    node.meta.raw.raft.term = 3
    # a new leader at 20, which never heard node 3: no MarkUp, and the eviction is due
    # by the recorded time (counted from this election it would wait until 30)
    assert run(node, w, 20.0) == [Evict(3)]
    assert st.members[3].state.value == "evicted" and not st.members[3].live


def test_an_eviction_waits_evict_after_from_down_since() -> None:
    node, w = make(4)  # 3 others remain for 3 replicas
    st = node.meta.state
    assert apply(st, MarkDown(3, at=1_015_000)) is None  # loop time 15: due at 25
    out = []
    for k in range(0, 25):  # every 0.25 s from 20 to 26; nodes 2 and 4 talk
        t = 20.0 + 0.25 * k
        node._heard.update({2: t, 4: t})
        out += [(t, c) for c in run(node, w, t)]
    assert out == [(25.0, Evict(3))]
    assert st.members[2].live and st.members[4].live


def test_a_member_heard_again_is_marked_up_after_its_hold() -> None:
    node, w = make()
    st = node.meta.state
    out = []
    for k in range(0, 33):  # every 0.25 s from 0 to 8; node 3 silent from 1 to 4
        t = 0.25 * k
        node._heard[2] = t
        if not 1.0 < t < 4.0:
            node._heard[3] = t
        out += [(t, c) for c in run(node, w, t)]
    # down 2 s after its last frame at 1.0; heard again from 4.0; up after the 2 s hold
    assert out == [(3.0, MarkDown(3, at=1_003_000)), (6.0, MarkUp(3, at=1_006_000))]
    assert st.members[3].live and st.members[3].down_since is None


def test_the_clock_of_at_is_wall_clock_milliseconds_that_never_step() -> None:
    c = StepFreeClock(100.0, wall=1_700_000_000.0)
    assert c.ms(100.0) == 1_700_000_000_000
    assert c.ms(101.5) == 1_700_000_001_500
    # read once: what the system clock does later changes nothing
    assert c.ms(101.5) == c.ms(101.5)


@pytest.mark.parametrize(("down", "evict"), [(1.0, 3.0), (10.0, 300.0)])
def test_the_delays_derive_from_the_two_options(down: float, evict: float) -> None:
    cfg = liveness_config(down, evict)
    assert cfg.down_after == down * 1000 and cfg.evict_after == evict * 1000
    assert cfg.up_after == cfg.down_after
    assert cfg.max_hold == cfg.flap_window == 16 * cfg.down_after
