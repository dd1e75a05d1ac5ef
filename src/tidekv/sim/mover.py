"""The move executor's driver in the multi-group simulator: what the node's will do.

The decisions are the pure :mod:`tidekv.sharding.executor`'s (the node calls the same
functions); this module only does what it says through the group's leader, paced (a
conf change or transfer is proposed at most every 3 ticks). :func:`start_move` picks a
group and a replica to replace (usually one on a crashed host: re-replication) and plans
the move with :func:`tidekv.sharding.movement.plan_shard`; :func:`advance_moves` then
does, or confirms, one step after another (:func:`try_step`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tidekv.raft import ConfChange, ConfChangeType, ConfState, ProposalDropped
from tidekv.sharding.executor import (
    AllocateReplica,
    ConfKind,
    GroupView,
    ProposeConf,
    ReplicaBook,
    ReportStepDone,
    TransferLeader,
    next_step,
)
from tidekv.sharding.metadata import ShardState
from tidekv.sharding.movement import NoQuorum, plan_shard
from tidekv.sim.cluster import TICK
from tidekv.sim.groups import Move, SimGroup, leader_of
from tidekv.sim.node import SimNode

if TYPE_CHECKING:
    from tidekv.sim.multigroup import MultiCluster

__all__ = ["ReusingBook", "advance_moves", "propose_conf", "start_move", "try_step", "view_of"]

RETRY = 3 * TICK
"""How long the driver waits before proposing a conf change or a transfer again."""

_CC = {
    ConfKind.ADD_LEARNER: ConfChangeType.ADD_LEARNER,
    ConfKind.ADD_VOTER: ConfChangeType.ADD_VOTER,
    ConfKind.REMOVE: ConfChangeType.REMOVE_NODE,
}


def members(g: SimGroup, ld: SimNode) -> tuple[list[int], list[int]]:
    """(voter hosts, learner hosts) in the leader's configuration."""
    assert ld.rawnode is not None
    r = ld.rawnode.raft
    return sorted(g.host_of[v] for v in r.voters), sorted(g.host_of[n] for n in r.learners)


@dataclass(slots=True)
class ReusingBook(ReplicaBook):
    """Broken on purpose (``MultiConfig.reuse_replica_ids``): rule 3 is off. A host that
    re-joins a group comes back under its old, retired id (as if Raft ids were node
    ids), and the replica a move created for a host stands for it whatever became of it."""

    #: host -> the replica id the current move created for it
    chosen: dict[int, int] = field(default_factory=dict)

    def dead(self, rid: int, view: GroupView) -> bool:
        return False

    def replica_on(self, node: int, view: GroupView, *, adding: bool = False) -> int | None:
        return self.chosen.get(node)


def view_of(ld: SimNode) -> GroupView:
    """The executor's view of a group: its leader's Raft state."""
    assert ld.rawnode is not None
    r = ld.rawnode.raft
    return GroupView(
        leader=ld.id,
        voters=frozenset(r.voters),
        learners=frozenset(r.learners),
        commit=r.log.committed,
        applied=r.log.applied,
        pending_conf_index=r.pending_conf_index,
        match={rid: pr.match for rid, pr in r.prs.items()},
        term=r.term,
    )


def propose_conf(mc: MultiCluster, g: SimGroup, ld: SimNode, act: ProposeConf) -> None:
    assert ld.rawnode is not None
    if act.kind is ConfKind.REMOVE:
        g.book.removal_proposed.add(act.replica)
    try:
        ld.rawnode.propose_conf_change(ConfChange(_CC[act.kind], act.replica))
    except ProposalDropped:
        return
    ld.pump(mc.now)


def start_move(mc: MultiCluster, rng: random.Random) -> None:
    idle = [g for g in mc.groups.values() if g.move is None]
    if not idle:
        return
    g = rng.choice(idle)
    ld = leader_of(g)
    if ld is None or ld.rawnode is None or ld.rawnode.raft.learners:
        return
    voters, _ = members(g, ld)
    outside = [h for h in mc.hosts if h not in voters]
    if not outside:
        return
    downs = [h for h in voters if h in mc.down]
    # replace a replica on a crashed host when there is one (re-replication)
    gone = rng.choice(downs) if downs and rng.random() < 0.7 else rng.choice(voters)
    mc.moves_off_down += gone in mc.down
    target = [h for h in voters if h != gone] + [rng.choice(outside)]
    try:
        steps = plan_shard(voters, target, leader=g.host_of[ld.id], down=mc.down)
    except NoQuorum:
        return
    g.move = Move(steps, mc.now, target=target)
    if isinstance(g.book, ReusingBook):
        g.book.chosen.clear()
    mc.moves_started += 1
    mc.trace(f"{mc.now}|move|{g.gid}|{voters}->{target};")


def advance_moves(mc: MultiCluster) -> None:
    for g in mc.groups.values():
        mv = g.move
        while mv is not None and try_step(mc, g, mv):
            mc.trace(f"{mc.now}|step|{g.gid}|{mv.steps[mv.next]};")
            mv.next += 1
            if mv.next == len(mv.steps):
                mc.moves_done += 1
                mc.move_ticks.append((mc.now - mv.started) / TICK)
                g.move = mv = None


def try_step(mc: MultiCluster, g: SimGroup, mv: Move, record: ShardState | None = None) -> bool:
    """Do or confirm the next step (of ``record``, else of ``mv``); True once it is done."""
    ld = leader_of(g)
    if ld is None or ld.rawnode is None:
        return False
    if record is None:
        record = ShardState([], target=mv.target, steps=mv.steps, next_step=mv.next)
    act = next_step(g.gid, record, view_of(ld), g.book, mc.down)
    if isinstance(act, AllocateReplica):
        allocate(mc, g, act.node)
        act = next_step(g.gid, record, view_of(ld), g.book, mc.down)
    if isinstance(act, ReportStepDone):
        for rid in act.shut_down:
            mc.retire(g, rid)  # out of the committed configuration: shut it down
        return True
    if mc.now - mv.last_try < RETRY:
        return False
    if isinstance(act, ProposeConf):
        mv.last_try = mc.now
        propose_conf(mc, g, ld, act)
    elif isinstance(act, TransferLeader):
        mv.last_try = mc.now
        ld.rawnode.transfer_leader(act.to)
        ld.pump(mc.now)
    return False


def allocate(mc: MultiCluster, g: SimGroup, host: int) -> None:
    """A new, empty replica on ``host`` that waits for the leader (a snapshot first)."""
    book = g.book
    old = [x for x, h in book.node_of.items() if h == host and x in book.shut_down]
    if isinstance(book, ReusingBook) and old:
        rid = max(old)  # broken on purpose: the old incarnation's id comes back
        book.shut_down.discard(rid)
    else:
        rid = book.allocate(host)
    if isinstance(book, ReusingBook):
        book.chosen[host] = rid
    mc.add_replica(g, rid, host, ConfState())
