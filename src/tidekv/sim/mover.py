"""The executor of shard moves in the multi-group simulator: what the node's will do.

:func:`start_move` picks a group and a replica to replace (usually one on a crashed host:
re-replication) and plans the move with :func:`tidekv.sharding.movement.plan_shard`;
:func:`advance_moves` then does, or confirms, one step after another through the group's
leader: propose the conf change and see it in the leader's configuration, wait until the
learner's match index reaches the commit index, move leadership away from a replica that
is to be removed (also when it became leader again after the plan was made), and shut a
removed replica down once it is out of the committed configuration.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from tidekv.raft import ConfChange, ConfChangeType, ConfState, ProposalDropped
from tidekv.sharding.movement import NoQuorum, StepKind, plan_shard
from tidekv.sim.cluster import TICK
from tidekv.sim.groups import Move, SimGroup, leader_of
from tidekv.sim.node import SimNode

if TYPE_CHECKING:
    from tidekv.sim.multigroup import MultiCluster

__all__ = ["advance_moves", "start_move", "try_step"]


def members(g: SimGroup, ld: SimNode) -> tuple[list[int], list[int]]:
    """(voter hosts, learner hosts) in the leader's configuration."""
    assert ld.rawnode is not None
    r = ld.rawnode.raft
    return sorted(g.host_of[v] for v in r.voters), sorted(g.host_of[n] for n in r.learners)


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
    g.move = Move(steps, mc.now)
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


def try_step(mc: MultiCluster, g: SimGroup, mv: Move) -> bool:
    """Try to do or confirm the next step; True once it is done."""
    ld = leader_of(g)
    if ld is None or ld.rawnode is None:
        return False
    rn = ld.rawnode
    r = rn.raft
    step = mv.steps[mv.next]
    k, host = step.kind, step.node
    retry = mc.now - mv.last_try >= 3 * TICK

    def propose(cc: ConfChange) -> None:
        if retry:
            mv.last_try = mc.now
            try:
                rn.propose_conf_change(cc)
            except ProposalDropped:
                return
            ld.pump(mc.now)

    if k is StepKind.ADD_LEARNER:
        rid = mv.rids.get(host)
        members = r.voters | r.learners
        g.was_member |= members
        gone = rid is not None and (
            rid in g.retired or (rid in g.was_member and rid not in members)
        )
        if gone and not mc.cfg.reuse_replica_ids:
            # that incarnation was removed (maybe not shut down yet): never add its id again
            rid = None
        if rid is not None and (rid in r.learners or rid in r.voters):
            return True
        if host in mc.down:
            return False
        if rid is None:
            old_rids = [x for x, h in g.host_of.items() if h == host and x in g.retired]
            if mc.cfg.reuse_replica_ids and old_rids:
                rid = max(old_rids)
                g.retired.discard(rid)
            else:
                rid = g.next_rid
                g.next_rid += 1
            mv.rids[host] = rid
            # the new replica starts empty and waits for the leader (snapshot first)
            mc.add_replica(g, rid, host, ConfState())
        propose(ConfChange(ConfChangeType.ADD_LEARNER, rid))
        return False
    if k is StepKind.CATCH_UP:
        rid = mv.rids.get(host)
        pr = r.prs.get(rid) if rid is not None else None
        return pr is not None and pr.match >= r.log.committed
    if k is StepKind.PROMOTE:
        rid = mv.rids.get(host)
        if rid is not None and rid in r.voters:
            return True
        if rid is None or rid not in r.learners:
            # only a current learner is promoted: ADD_VOTER of anything else would add a
            # voter with no log, or bring back a removed incarnation (the record is stale;
            # ConfSeen re-plans)
            return False
        propose(ConfChange(ConfChangeType.ADD_VOTER, rid))
        return False
    old = g.live_rid_on(host)
    if k is StepKind.TRANSFER_LEADER:
        if old is None or ld.id != old:
            return True
        heirs = [v for v in sorted(r.voters) if v != old and g.host_of[v] not in mc.down]
        prefer = [v for v in heirs if g.host_of[v] == step.to]
        if retry and heirs:
            mv.last_try = mc.now
            rn.transfer_leader((prefer or heirs)[0])
            ld.pump(mc.now)
        return False
    # REMOVE_VOTER / REMOVE_LEARNER. Absence is proof only when no membership change is
    # pending: an add still in the log (this leader's, or one it inherited) may commit
    # after we looked, and the replica must not be shut down under it.
    if r.pending_conf_index > r.log.applied:
        return False
    if old is None or (old not in r.voters and old not in r.learners):
        if old is not None:
            mc.retire(g, old)  # out of the committed configuration: shut it down
        return True
    if ld.id == old:
        # it leads again (elected after the plan was made): move leadership away first
        heirs = [v for v in sorted(r.voters) if v != old and g.host_of[v] not in mc.down]
        if retry and heirs:
            mv.last_try = mc.now
            rn.transfer_leader(heirs[0])
            ld.pump(mc.now)
        return False
    propose(ConfChange(ConfChangeType.REMOVE_NODE, old))
    return False
