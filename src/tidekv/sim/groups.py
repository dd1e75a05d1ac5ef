"""The pieces of the multi-group simulator that describe one group on shared hosts.

:class:`SimGroup` is one Raft group: its replicas (``SimNode``\\ s keyed by replica id),
the host of each replica, the retired ones, its invariants, clients and move in
progress. :class:`Envelope` is what the shared network carries. The checks are the
single-group simulator's, per group: a leader's commit index is durable on a majority
of its voters; live replicas at the same applied index hold the same data.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from tidekv.raft import CompactedError, LogUnavailable, Message, Role
from tidekv.sharding.executor import ReplicaBook
from tidekv.sharding.movement import Step
from tidekv.sim.invariants import Invariants, SafetyViolation
from tidekv.sim.node import SimNode
from tidekv.sim.workload import Workload

__all__ = [
    "Envelope",
    "Move",
    "SimGroup",
    "check_quorum_durable",
    "final_state_check",
    "leader_of",
    "stable_leader",
]


@dataclass(frozen=True, slots=True)
class Envelope:
    """A Raft message of one group, between two hosts."""

    group: int
    frm: int
    to: int
    msg: Message


@dataclass(slots=True)
class Move:
    steps: list[Step]
    started: int
    next: int = 0
    last_try: int = -(10**9)
    #: the replica set moved to (random moves; a ring move's is in its record)
    target: list[int] = field(default_factory=list)


@dataclass(slots=True)
class SimGroup:
    gid: int
    inv: Invariants
    workload: Workload
    replicas: dict[int, SimNode] = field(default_factory=dict)
    #: the executor's memory of the group's replicas: replica id -> host, the retired
    #: (shut down) ones, the ids ever in a configuration, the removals proposed
    book: ReplicaBook = field(default_factory=ReplicaBook)
    move: Move | None = None
    probe_seq: int = 0
    probe_sent: int | None = None
    probe_done: int | None = None
    stable_at: int | None = None
    catch_to: int | None = None
    converged: bool = False
    why: str = ""

    @property
    def host_of(self) -> dict[int, int]:
        return self.book.node_of

    @property
    def retired(self) -> set[int]:
        return self.book.shut_down


def leader_of(g: SimGroup) -> SimNode | None:
    """The live leader with the highest term, if any."""
    best: SimNode | None = None
    best_term = -1
    for rid, n in g.replicas.items():
        rn = n.rawnode
        if rn is None or rid in g.retired or rn.raft.role is not Role.LEADER:
            continue
        if rn.raft.term > best_term:
            best, best_term = n, rn.raft.term
    return best


def stable_leader(g: SimGroup) -> SimNode | None:
    """The leader, if every live voter of its configuration follows it in its term."""
    ld = leader_of(g)
    if ld is None or ld.rawnode is None:
        return None
    r = ld.rawnode.raft
    for v in r.voters:
        n = g.replicas.get(v)
        if n is None or v in g.retired or n.rawnode is None:
            continue
        if n.rawnode.raft.lead != ld.id or n.rawnode.raft.term != r.term:
            return None
    return ld


def check_quorum_durable(replicas: Mapping[int, SimNode], leader: SimNode, where: str = "") -> None:
    """A leader's commit index must be durable on a majority of its voters (``replicas``:
    replica id -> node, of one group; ``where`` prefixes the message)."""
    rn = leader.rawnode
    assert rn is not None
    r = rn.raft
    c = r.log.committed
    term = r.log.term(c)
    if term is None:
        return
    durable = 0
    for v in r.voters:
        node = replicas.get(v)
        if node is None:
            continue
        try:
            durable += node.storage.term(c) == term
        except CompactedError:
            durable += 1  # compacted after applying: it had it
        except LogUnavailable:
            pass
    if durable * 2 <= len(r.voters):
        raise SafetyViolation(
            "commit without quorum",
            f"{where}leader {leader.id} of term {r.term} committed index {c} (term {term}) "
            f"but only {durable} of voters {sorted(r.voters)} hold it durably",
        )


def final_state_check(
    replicas: Mapping[int, SimNode], retired: Collection[int], where: str = ""
) -> None:
    """Every live replica at the same applied index holds the same data."""
    seen: dict[int, tuple[int, tuple[tuple[str, int], ...]]] = {}
    for rid, n in sorted(replicas.items()):
        if n.rawnode is None or rid in retired:
            continue
        d = n.sm.digest()
        first = seen.setdefault(n.applied, (rid, d))
        if first[1] != d:
            raise SafetyViolation(
                "state-machine safety",
                f"{where}replicas {first[0]} and {rid} applied up to {n.applied} "
                f"but hold different data",
            )
