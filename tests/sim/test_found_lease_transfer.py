"""Regression: a late TimeoutNow lets a new leader commit while the old one serves lease reads.

See tests/sim/FOUND.md, bug 2. A leader with lease reads starts a leadership transfer,
sends TimeoutNow, and gives up the transfer after an election timeout
(``_tick_heartbeat``), after which ``lease_valid()`` is true again. If the TimeoutNow was
merely slow, it arrives afterwards: the target campaigns with ``CAMPAIGN_TRANSFER`` and
the voters, told to ignore their own lease, elect it at once. The new leader commits a
write; the old leader, cut off but still inside its renewed lease, answers a read from
the lease with the old commit index: a stale read of an acknowledged write.

The test drives three RawNodes by hand. Fixed in the core: a leader that sent TimeoutNow
in a term never trusts its lease again in that term (``Raft.timeout_now_term``); the
test failed before the fix and guards it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from tidekv.raft import (
    Config,
    ConfState,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    ReadOnlyOption,
    Role,
    Snapshot,
    SnapshotMeta,
)
from tidekv.sim import FaultConfig, run_one

Nodes = dict[int, tuple[RawNode, MemoryStorage]]


def _cluster(n: int) -> Nodes:
    voters = frozenset(range(1, n + 1))
    out: Nodes = {}
    for i in sorted(voters):
        st = MemoryStorage(ConfState(voters=voters))
        st.apply_snapshot(Snapshot(SnapshotMeta(index=1, term=1, conf=ConfState(voters=voters))))
        st.set_hard_state(HardState(term=1, commit=1))
        cfg = Config(
            id=i,
            rng=random.Random(i),
            read_only_option=ReadOnlyOption.LEASE_BASED,
            check_quorum=True,
            pre_vote=True,
        )
        out[i] = (RawNode(cfg, st), st)
    return out


def _pump(nodes: Nodes, drop: Callable[[Message], bool], held: list[Message]) -> list[bytes]:
    """Run Readys and deliver until quiet; returns read contexts answered on node 1."""
    queue: list[Message] = []
    answered: list[bytes] = []
    while True:
        progressed = False
        for nid, (rn, st) in nodes.items():
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
                if nid == 1:
                    answered.extend(rs.request_ctx for rs in rd.read_states)
                rn.advance(rd)
        while queue:
            progressed = True
            m = queue.pop(0)
            if m.type == MessageType.TIMEOUT_NOW:
                held.append(m)  # the slow message
            elif not drop(m):
                nodes[m.to][0].step(m)
        if not progressed:
            return answered


def test_no_lease_read_after_a_late_timeout_now_elects_another_leader() -> None:
    nodes = _cluster(3)
    held: list[Message] = []
    ok: Callable[[Message], bool] = lambda m: False  # noqa: E731
    n1 = nodes[1][0]
    n1.campaign()
    _pump(nodes, ok, held)
    assert n1.status().role is Role.LEADER
    n1.propose(b"old")
    _pump(nodes, ok, held)

    # transfer to node 2; its TimeoutNow is slow
    n1.transfer_leader(2)
    _pump(nodes, ok, held)
    assert len(held) == 1
    # one election timeout later the leader abandons the transfer; heartbeats flow
    for _ in range(12):
        for rn, _st in nodes.values():
            rn.tick()
        _pump(nodes, ok, held)
    assert n1.status().role is Role.LEADER and n1.status().lead_transferee == 0
    # before the fix the lease was valid again here; a leader that sent TimeoutNow in
    # this term must not trust its lease for the rest of the term
    assert not n1.raft.lease_valid()

    # the slow TimeoutNow arrives; right after, node 1 is cut off from the others
    cut: Callable[[Message], bool] = lambda m: 1 in (m.frm, m.to)  # noqa: E731
    nodes[2][0].step(held.pop())
    _pump(nodes, cut, held)
    n2 = nodes[2][0]
    assert n2.status().role is Role.LEADER, "node 3 granted the forced vote"
    n2.propose(b"new")
    _pump(nodes, cut, held)
    new_commit = n2.status().commit
    assert nodes[3][0].status().commit == new_commit  # "new" is committed (2 of 3)

    # a client that saw "new" acknowledged now reads on node 1
    n1.read_index(b"read-after-new")
    answered = _pump(nodes, cut, held)
    # node 1 may only answer with an index that includes "new": it cannot, so it must
    # not answer at all; it answers from its lease with its old commit index
    assert answered == [], f"stale lease read served at commit {n1.status().commit} < {new_commit}"


def test_seed_53_replay_is_linearizable() -> None:
    """The simulator run that found it: a client reads 459 right after its own write of
    584 was acknowledged, served at once from the old leader's lease."""
    faults = FaultConfig.parse("net,clog,transfer,lease,drift")
    r = run_one(53, nodes=5, ticks=400, faults=faults, lease="always")
    assert r.rule != "linearizability", r.violation
    assert r.ok, r.violation


def test_seed_2640_of_the_long_run_is_linearizable() -> None:
    """The one safety failure of the 10,000-seed run with every fault on."""
    r = run_one(2640, nodes=5, ticks=400, faults=FaultConfig.parse("all"))
    assert r.ok, r.violation
