"""The move executor's driver in the node: shard moves run through each shard's leader.

The metadata (:mod:`tidekv.sharding.metadata`) plans every move as steps; the pure
:mod:`tidekv.sharding.executor` decides, from the leader's Raft state, what to do next;
this module does it, as :mod:`tidekv.sim.control` does in the simulator. Every
``PERIOD`` (and at once when the metadata changes, :meth:`Mover.kick`), for every shard
whose replica here leads:

1. build a :class:`~tidekv.sharding.executor.GroupView` from the core;
2. ``remove_zombie``, then ``next_step`` (again while steps confirm at once), then
   ``reconcile``; do what they say:

   * ``ProposeConf`` -> a conf change at the leader, paced (at most every ``RETRY``);
     the executor confirms it in the applied configuration, never by the proposal's fate;
   * ``AllocateReplica`` -> a fresh replica id ``node * 2**16 + incarnation`` (one past
     the highest known for that node), only on a settled configuration;
   * ``TransferLeader`` -> Raft's leadership transfer, paced;
   * ``ReportStepDone`` / ``ReportConfSeen`` -> the command to the metadata group (through
     this node's metadata replica when it has one, which answers; else as a proposal to
     every metadata voter). A stale ``StepDone`` is refused harmlessly, so a report is
     sent again (paced) until the metadata shows it;
   * ``ShutDown`` -> a retire message to the replica's node (pseudo-group
     :data:`RETIRE_GROUP`), sent again every ``RESEND_SHUTDOWN`` while the leader leads.

The :class:`~tidekv.sharding.executor.ReplicaBook` comes from replicated state, not from
this leader's memory alone: the node of a replica id is in the id, and every id that was
ever a member is either in the configuration or in the group's replicated tombstones
(``Replica.removed``, written when a removal is applied). So a new leader never reuses an
incarnation. ``shut_down`` and ``removal_proposed`` stay in memory: a new leader does not
know what an old one shut down, but every shut-down id is out of a settled configuration
and a removed id can never be added again (the apply ignores it), so it cannot become a
zombie; a removal proposed by the old leader is either in the log (the new leader is not
settled until it applies it) or lost (the id is still a member and the step proposes the
removal again).

The metadata leader also pushes the encoded state to every member (pseudo-group
:data:`CLUSTER_GROUP`) on every change and every ``PUSH_EVERY``: nodes outside the
metadata group learn the live shard map, the address book and the moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tidekv.errors import TideError
from tidekv.node.meta import META_GROUP
from tidekv.raft import ConfChange, ConfChangeType, Message, MessageType, ProposalDropped
from tidekv.sharding import metadata
from tidekv.sharding.executor import (
    AllocateReplica,
    ConfKind,
    GroupView,
    ProposeConf,
    ReplicaBook,
    ReportStepDone,
    ShutDown,
    TransferLeader,
    next_step,
    reconcile,
    remove_zombie,
)
from tidekv.sharding.metadata import ClusterState, decode_state, encode_state
from tidekv.sharding.replicas import MAX_INCARNATION, incarnation_of, node_of, replica_id

if TYPE_CHECKING:
    from tidekv.node.meta import MetaReplica
    from tidekv.node.replica import Replica
    from tidekv.node.server import Node

log = logging.getLogger("tidekv.node")

CLUSTER_GROUP = -2
"""Pseudo-group of the metadata push: ``index`` = the state's revision, ``context`` =
``encode_state`` (sent by the metadata leader to every member)."""
RETIRE_GROUP = -3
"""Pseudo-group of a shard leader's "your replica is out of the group": ``index`` = the
shard, ``commit`` = the replica id to retire (sent to that replica's node)."""

PERIOD = 0.2
"""Seconds between two passes over the shards this node leads."""
RETRY = 1.0
"""Seconds before a conf change, a transfer or a report is sent again."""
PUSH_EVERY = 2.0
"""Seconds between two pushes of an unchanged metadata state."""
RESEND_SHUTDOWN = 5.0
"""Seconds between two retire messages for a replica already shut down."""
CONF_SEEN_AFTER = 2.0
"""Seconds a configuration must differ from the record before ``ConfSeen`` is sent
(a step just done is reported by ``StepDone`` first)."""

_CC = {
    ConfKind.ADD_LEARNER: ConfChangeType.ADD_LEARNER,
    ConfKind.ADD_VOTER: ConfChangeType.ADD_VOTER,
    ConfKind.REMOVE: ConfChangeType.REMOVE_NODE,
}


@dataclass(slots=True)
class _Run:
    """One shard's executor state on this node (while it leads the shard)."""

    book: ReplicaBook = field(default_factory=ReplicaBook)
    #: (steps, next step) of the record last driven: a new step may be tried at once
    step_key: tuple[object, ...] = ()
    last_try: float = -1e9
    #: report (encoded command) -> when it was last sent
    reported: dict[bytes, float] = field(default_factory=dict)
    reporting: bool = False
    #: shut-down replica id -> when its retire message was last sent
    retire_sent: dict[int, float] = field(default_factory=dict)
    #: since when the configuration differs from the record (None: it does not)
    differs_since: float | None = None


def view_of(rep: Replica) -> GroupView:
    """The executor's view of a shard: its leader's Raft state (ids are replica ids)."""
    r = rep.raw.raft
    return GroupView(
        leader=r.id,
        voters=frozenset(r.voters),
        learners=frozenset(r.learners),
        commit=r.log.committed,
        applied=r.log.applied,
        pending_conf_index=r.pending_conf_index,
        match={rid: pr.match for rid, pr in r.prs.items()},
        term=r.term,
    )


class Mover:
    """Drives the moves of the shards led on this node; pushes the metadata when this
    node leads the metadata group."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.runs: dict[int, _Run] = {}
        self._kick = asyncio.Event()
        self._pushed: tuple[int, float] = (-1, -1e9)  # (revision, when)
        self.stats = {"conf_proposed": 0, "transfers": 0, "reports": 0, "retire_sent": 0}

    def kick(self) -> None:
        self._kick.set()

    def forget(self, group: int) -> None:
        self.runs.pop(group, None)

    async def run(self) -> None:
        node = self.node
        while not node._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), PERIOD)
            self._kick.clear()
            try:
                self.tick()
            except Exception:  # the executor must never take the node down
                log.exception("the move executor failed")

    # -- one pass ---------------------------------------------------------------------------

    def tick(self) -> None:
        node = self.node
        st = node.cluster
        if st is None or node._closing:
            return
        now = asyncio.get_running_loop().time()
        self._push(st, now)
        self._drive_meta(st, now)
        for shard, rep in list(node.replicas.items()):
            if shard >= node.shard_count or not rep.is_leader or shard not in st.shard_map:
                continue
            self._drive(shard, rep, st, now)

    def _book(self, run: _Run, rep: Replica, view: GroupView) -> ReplicaBook:
        """Add what the replicated state knows: every member and every tombstoned id
        (each was a member once), and the node of each."""
        book = run.book
        for rid in view.members | rep.removed:
            book.node_of.setdefault(rid, node_of(rid))
        book.ever_member |= rep.removed
        return book

    def _drive(self, shard: int, rep: Replica, st: ClusterState, now: float) -> None:
        run = self.runs.setdefault(shard, _Run())
        if run.reporting:
            return
        view = view_of(rep)
        book = self._book(run, rep, view)
        rec = st.shard_map[shard]
        key = (tuple(rec.steps), rec.next_step, rec.target)
        if key != run.step_key:
            run.step_key, run.last_try = key, -1e9
        down = st.down()
        zombie = remove_zombie(view, book)
        if zombie is not None:
            self._propose(run, rep, zombie, now)
            return
        act = next_step(shard, rec, view, book, down)
        if isinstance(act, AllocateReplica):
            if not view.settled:
                return  # a new id is chosen from a configuration with nothing pending
            self._allocate(book, act.node)
            act = next_step(shard, rec, view, book, down)
        if isinstance(act, ReportStepDone):
            for rid in act.shut_down:
                self._shut_down(run, shard, rid, now)
            self._report(run, act.command, now)
        elif isinstance(act, ProposeConf):
            self._propose(run, rep, act, now)
        elif isinstance(act, TransferLeader) and now - run.last_try >= RETRY:
            run.last_try = now
            self.stats["transfers"] += 1
            log.info("shard %d: leadership -> replica %x (move)", shard, act.to)
            rep.raw.transfer_leader(act.to)
            self.node.wake()
        differs = False
        for r in reconcile(shard, rec, view, book):
            if isinstance(r, ShutDown):
                self._shut_down(run, shard, r.replica, now)
            else:
                differs = True
                if run.differs_since is None:
                    run.differs_since = now
                elif now - run.differs_since >= CONF_SEEN_AFTER:
                    self._report(run, r.command, now)
        if not differs:
            run.differs_since = None
        for rid, sent in list(run.retire_sent.items()):
            if now - sent >= RESEND_SHUTDOWN and rid not in view.members:
                self._send_retire(run, shard, rid, now)

    # -- actions ----------------------------------------------------------------------------

    def _allocate(self, book: ReplicaBook, node: int) -> int:
        """A fresh replica id on ``node``: one past every incarnation known there
        (incarnation 0 is the one placed at creation)."""
        known = [incarnation_of(r) for r, n in book.node_of.items() if n == node]
        inc = max(known, default=0) + 1
        if inc > MAX_INCARNATION:
            raise TideError(f"node {node}: no replica incarnation left")
        return book.allocate(node, replica_id(node, inc))

    def _propose(self, run: _Run, rep: Replica, act: ProposeConf, now: float) -> None:
        if now - run.last_try < RETRY:
            return
        run.last_try = now
        if act.kind is ConfKind.REMOVE:
            run.book.removal_proposed.add(act.replica)
        try:
            rep.raw.propose_conf_change(ConfChange(_CC[act.kind], act.replica))
        except ProposalDropped as exc:  # one change at a time: try again later
            log.debug("shard %d: conf change refused for now: %s", rep.group, exc)
            return
        self.stats["conf_proposed"] += 1
        log.info("shard %d: proposed %s of replica %x", rep.group, act.kind.value, act.replica)
        self.node.wake()

    def _shut_down(self, run: _Run, shard: int, rid: int, now: float) -> None:
        if rid in run.book.shut_down:
            return
        run.book.shut_down.add(rid)
        self._send_retire(run, shard, rid, now)

    def _send_retire(self, run: _Run, shard: int, rid: int, now: float) -> None:
        run.retire_sent[rid] = now
        node = self.node
        target = node_of(rid)
        if target == node.cfg.node_id:
            node.retire_replica(shard, rid, "out of the group (this node leads it)")
            return
        self.stats["retire_sent"] += 1
        m = Message(MessageType.HEARTBEAT, to=target, frm=node.cfg.node_id, index=shard, commit=rid)
        node.transport.send(RETIRE_GROUP, [m])

    def _report(self, run: _Run, cmd: metadata.Command, now: float) -> None:
        data = metadata.encode_command(cmd)
        if now - run.reported.get(data, -1e9) < RETRY:
            return
        run.reported = {data: now}
        self.stats["reports"] += 1
        meta = self.node.meta
        if meta is None:
            self.node._tell_meta_voters(cmd)
            return
        run.reporting = True
        self.node._spawn(self._report_local(run, meta, cmd))

    async def _report_local(self, run: _Run, meta: MetaReplica, cmd: metadata.Command) -> None:
        try:
            await meta.propose(cmd, self.node.cfg.request_timeout)
        except TideError as exc:  # refused (stale) or no metadata leader now: next pass
            log.debug("metadata did not take %s: %s", cmd, exc)
        finally:
            run.reporting = False
        self.kick()

    # -- the metadata group's own membership ------------------------------------------------

    def _drive_meta(self, st: ClusterState, now: float) -> None:
        """On the metadata leader: move the metadata group's voters to
        ``st.meta_voters`` (``choose_meta_voters``: up to 5 ACTIVE members), one change
        at a time on a settled configuration, adds before removes (as a shard's move):
        a wanted live member is added as a learner, promoted once caught up, then a voter
        no longer wanted is removed (leadership moved away first if it is this node).
        Raft ids of the metadata group are node ids."""
        meta = self.node.meta
        if meta is None or not meta.is_leader or not st.meta_voters:
            return
        r = meta.raw.raft
        run = self.runs.setdefault(-1, _Run())
        for rid in meta.removed:  # a removed member that did not learn it: retire it
            if now - run.retire_sent.get(rid, -1e9) >= RESEND_SHUTDOWN:
                run.retire_sent[rid] = now
                m = Message(MessageType.HEARTBEAT, to=rid, frm=r.id, index=meta.group, commit=rid)
                self.node.transport.send(RETIRE_GROUP, [m])
        if r.pending_conf_index > r.log.applied or now - run.last_try < RETRY:
            return
        want = set(st.meta_voters)
        voters, learners = set(r.voters), set(r.learners)
        cc: ConfChange | None = None
        ready = [n for n in sorted(learners & want) if r.prs[n].match >= r.log.committed]
        missing = [
            n
            for n in sorted(want - voters - learners)
            if n not in meta.removed and n in st.members and st.members[n].live
        ]
        extra = sorted(voters - want)
        if ready:
            cc = ConfChange(ConfChangeType.ADD_VOTER, ready[0])
        elif missing and not learners:
            cc = ConfChange(ConfChangeType.ADD_LEARNER, missing[0])
        elif learners - want:
            cc = ConfChange(ConfChangeType.REMOVE_NODE, min(learners - want))
        elif extra and not learners and want <= voters:
            gone = extra[0]
            if gone == r.id:
                heirs = sorted((voters & want) - {r.id})
                if heirs:
                    run.last_try = now
                    log.info(
                        "metadata group: leadership -> node %d (node %d leaves)", heirs[0], gone
                    )
                    meta.raw.transfer_leader(heirs[0])
                    self.node.wake()
                return
            cc = ConfChange(ConfChangeType.REMOVE_NODE, gone)
        if cc is None:
            return
        run.last_try = now
        try:
            meta.raw.propose_conf_change(cc)
        except ProposalDropped:
            return
        log.info("metadata group: proposed %s of node %d", cc.type.name.lower(), cc.node_id)
        self.node.wake()

    # -- the metadata push ------------------------------------------------------------------

    def _push(self, st: ClusterState, now: float) -> None:
        node = self.node
        meta = node.meta
        if meta is None or not meta.is_leader:
            return
        rev, when = self._pushed
        if rev == st.revision and now - when < PUSH_EVERY:
            return
        self._pushed = (st.revision, now)
        data = encode_state(st)
        me = node.cfg.node_id
        msgs = [
            Message(MessageType.HEARTBEAT, to=n, frm=me, index=st.revision, context=data)
            for n in st.members
            if n != me
        ]
        node.transport.send(CLUSTER_GROUP, msgs)

    def on_control(self, frm: int, group: int, m: Message) -> None:
        """A message of a pseudo-group of this module, from node ``frm``."""
        node = self.node
        if group == CLUSTER_GROUP:
            st = node.cluster
            if st is not None and m.index <= st.revision:
                node.meta_leader_hint = frm
                return
            try:
                state = decode_state(m.context)
            except Exception:
                log.warning("node %d sent a metadata state that does not decode", frm)
                return
            if st is not None and state.cluster_id != st.cluster_id:
                log.warning("node %d pushed the metadata of cluster %s", frm, state.cluster_id)
                return
            node.meta_leader_hint = frm
            node.adopt_state(state, pushed=True)
        elif group == RETIRE_GROUP:
            shard, rid = m.index, m.commit
            me = node.cfg.node_id
            if shard == META_GROUP and rid == me:
                node.retire_replica(shard, rid, f"out of the metadata group (leader node {frm})")
            elif node_of(rid) == me and 0 <= shard < node.shard_count:
                node.retire_replica(shard, rid, f"out of the group (shard leader on node {frm})")
