"""Regression: a follower whose whole in-flight window of appends was lost never catches up.

Found by the simulator (see tests/sim/FOUND.md, bug 1). The leader tracks at most
``max_inflight_msgs`` unacknowledged AppendEntries per follower in REPLICATE state. When
all of them are lost, the window stays full: ``Progress.is_paused()`` is True, so the
heartbeat-response path (``_send_append``) sends nothing, and the only thing that frees
the window is an APP_RESP for those very messages, which will never come. etcd frees
one slot on every heartbeat response (``Inflights.FreeFirstOne``, later
``MsgAppFlowPaused = false``) for exactly this reason.

Fixed in ``Raft._step_leader`` (HEARTBEAT_RESP frees one slot of a full window, as
etcd does); these tests failed before the fix and guard it.
"""

from __future__ import annotations

import random

from tidekv.raft import (
    Config,
    ConfState,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    Role,
    Snapshot,
    SnapshotMeta,
)
from tidekv.sim import FaultConfig, run_one


def _cluster(n: int, max_inflight: int) -> dict[int, tuple[RawNode, MemoryStorage]]:
    voters = frozenset(range(1, n + 1))
    out = {}
    for i in sorted(voters):
        st = MemoryStorage(ConfState(voters=voters))
        st.apply_snapshot(Snapshot(SnapshotMeta(index=1, term=1, conf=ConfState(voters=voters))))
        st.set_hard_state(HardState(term=1, commit=1))
        cfg = Config(id=i, rng=random.Random(i), max_inflight_msgs=max_inflight)
        out[i] = (RawNode(cfg, st), st)
    return out


def _pump(nodes: dict[int, tuple[RawNode, MemoryStorage]], drop) -> None:  # type: ignore[no-untyped-def]
    """Run Readys and deliver messages until quiet; ``drop(m)`` says which to lose."""
    queue: list[Message] = []
    while True:
        progressed = False
        for rn, st in nodes.values():
            while rn.has_ready():
                progressed = True
                rd = rn.ready()
                queue.extend(rd.messages)
                if rd.snapshot is not None:
                    st.apply_snapshot(rd.snapshot)
                st.append(rd.entries)
                if rd.hard_state is not None:
                    st.set_hard_state(rd.hard_state)
                queue.extend(rd.persisted_messages)
                rn.advance(rd)
        while queue:
            progressed = True
            m = queue.pop(0)
            if not drop(m):
                nodes[m.to][0].step(m)
        if not progressed:
            return


def test_follower_catches_up_after_its_whole_inflight_window_was_lost() -> None:
    nodes = _cluster(3, max_inflight=4)
    leader = nodes[1][0]
    leader.campaign()
    _pump(nodes, drop=lambda m: False)
    assert leader.status().role is Role.LEADER
    base = leader.status().last_index

    # four proposals, each flushed in its own append: the window to node 3 fills up,
    # and every one of those appends is lost
    for i in range(4):
        leader.propose(f"v{i}".encode())
        _pump(nodes, drop=lambda m: m.to == 3 and m.type == MessageType.APP)
    assert leader.status().progress[3].inflight == 4
    assert nodes[3][0].status().last_index == base

    # the network is perfect from now on: heartbeats flow, node 3 answers them
    for _ in range(50):
        for rn, _st in nodes.values():
            rn.tick()
        _pump(nodes, drop=lambda m: False)
    assert nodes[3][0].status().last_index == base + 4, nodes[1][0].status().progress[3]


def test_seed_41_replay_converges() -> None:
    """A simulator run that shows it (replay: see FOUND.md)."""
    r = run_one(41, nodes=5, ticks=400, faults=FaultConfig.parse("all"))
    assert r.ok, r.violation
