"""The move executor, pure: given a shard's group as its leader sees it, the next action.

The metadata (:mod:`tidekv.sharding.metadata`) records each shard's move as steps
(:mod:`tidekv.sharding.movement`). Something has to *do* them through the group's leader:
propose a conf change and see it in the leader's applied configuration, wait for a
learner's match index to reach the commit index, move leadership off a replica that is to
be removed, shut removed replicas down, and report back. This module decides what to do;
the caller (the node, or the simulator in ``tidekv.sim.mover`` / ``tidekv.sim.control``)
does it. No I/O, no clock: the caller passes in what it sees.

Three entry points, called in this order for every shard the caller leads, on a timer::

    act = remove_zombie(view, book)            # a member whose replica is gone: first
    if act is None:
        while True:                            # steps already true confirm at once
            act = next_step(shard, record, view, book, down)
            ...                                # do it; go on only after ReportStepDone
        for act in reconcile(shard, record, view, book):
            ...                                # ShutDown, then maybe ReportConfSeen

The inputs: :class:`GroupView` (the leader's Raft facts: voters, learners, commit,
applied, pending conf index, match per replica, its own replica id), the shard's
:class:`~tidekv.sharding.metadata.ShardState` record, the down nodes, and the shard's
:class:`ReplicaBook`: which replica id lives on which node and the ids that are dead.
Replica ids are *incarnations* (CockroachDB's ReplicaID), never node ids.

The rules the simulator taught (docs/sharding.md):

1. the group's configuration is the truth: a step already true is reported done without
   proposing anything, and a record that differs from the group gets ``ConfSeen``;
2. absence proves a removal only when no conf change is pending at the leader
   (``pending_conf_index <= applied``), and only in a view at least as new as any seen
   (a deposed leader, behind, would "prove" a later member away: the simulator found it);
3. a replica id that was ever in a configuration, or whose removal was proposed, or that
   was shut down, is dead for good: every add gets a fresh id (:class:`AllocateReplica`),
   and only a *current learner* is promoted;
4. zombie members (members whose replica was shut down) are removed before anything else,
   judged on a settled configuration only.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from tidekv.sharding.metadata import ConfSeen, ShardState, StepDone
from tidekv.sharding.movement import StepKind

__all__ = [
    "Action",
    "AllocateReplica",
    "ConfKind",
    "GroupView",
    "ProposeConf",
    "ReplicaBook",
    "ReportConfSeen",
    "ReportStepDone",
    "ShutDown",
    "TransferLeader",
    "Wait",
    "next_step",
    "reconcile",
    "remove_zombie",
]


class ConfKind(enum.Enum):
    ADD_LEARNER = "add_learner"
    ADD_VOTER = "add_voter"  # promote a current learner
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class GroupView:
    """A shard's Raft group as its leader sees it (all ids are replica ids)."""

    leader: int
    voters: frozenset[int]
    learners: frozenset[int]
    commit: int
    applied: int
    pending_conf_index: int
    #: the leader's match index of each replica it tracks
    match: Mapping[int, int] = field(default_factory=dict)
    #: the leader's term (0: unknown; then every view counts as current)
    term: int = 0

    @property
    def members(self) -> frozenset[int]:
        return self.voters | self.learners

    @property
    def settled(self) -> bool:
        """No conf change pending: what is absent from the configuration is really out."""
        return self.pending_conf_index <= self.applied


@dataclass(slots=True)
class ReplicaBook:
    """One shard's replicas as the executor remembers them (the caller keeps it).

    ``node_of``: every replica id ever allocated -> its node; ``shut_down``: replicas that
    are gone (retired); ``ever_member``: ids seen in a leader's configuration;
    ``removal_proposed``: ids whose removal was proposed. The last three only grow.
    """

    node_of: dict[int, int] = field(default_factory=dict)
    shut_down: set[int] = field(default_factory=set)
    ever_member: set[int] = field(default_factory=set)
    removal_proposed: set[int] = field(default_factory=set)
    next_id: int = 1
    #: the newest (term, applied) of a view observed: an older view is a deposed leader's
    newest: tuple[int, int] = (0, 0)

    def allocate(self, node: int, replica: int | None = None) -> int:
        """Record a new replica on ``node`` (a fresh id unless the caller names one)."""
        rid = self.next_id if replica is None else replica
        self.next_id = max(self.next_id, rid + 1)
        self.node_of[rid] = node
        return rid

    def observe(self, view: GroupView) -> None:
        self.ever_member |= view.members
        self.newest = max(self.newest, (view.term, view.applied))

    def proves_absence(self, view: GroupView) -> bool:
        """May a replica's absence from ``view`` be taken as its removal? Only with no
        conf change pending (rule 2) and from a view at least as new as any seen: a
        deposed leader that has not heard of a later add would "prove" a member away."""
        return view.settled and (view.term, view.applied) >= self.newest

    def dead(self, rid: int, view: GroupView) -> bool:
        """Never to be proposed as an addition again (rule 3)."""
        if rid in self.shut_down or rid in self.removal_proposed:
            return True
        return rid in self.ever_member and rid not in view.members

    def replica_on(self, node: int, view: GroupView, *, adding: bool = False) -> int | None:
        """The replica that stands for ``node``: a member of the configuration there, else
        the newest id allocated there that is not dead (an add still in flight). For an
        add, a member that was shut down (its removal not applied by the leader yet) does
        not count: it is about to go."""
        mine = [
            r
            for r in view.members
            if self.node_of.get(r) == node and not (adding and r in self.shut_down)
        ]
        if mine:
            return max(mine)
        fresh = [r for r, n in self.node_of.items() if n == node and not self.dead(r, view)]
        return max(fresh) if fresh else None

    def live_on(self, node: int) -> int | None:
        """The oldest replica on ``node`` that is not shut down (the one to remove)."""
        for rid, n in self.node_of.items():
            if n == node and rid not in self.shut_down:
                return rid
        return None


# -- actions -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProposeConf:
    """Propose this conf change at the leader (re-proposing later is safe: the executor
    confirms it in the applied configuration, never by the proposal's fate)."""

    kind: ConfKind
    replica: int


@dataclass(frozen=True, slots=True)
class TransferLeader:
    to: int


@dataclass(frozen=True, slots=True)
class Wait:
    why: str


@dataclass(frozen=True, slots=True)
class AllocateReplica:
    """Create an empty replica with a fresh id on ``node`` (``ReplicaBook.allocate``); it
    waits for the leader (a snapshot first). Then ask again."""

    node: int


@dataclass(frozen=True, slots=True)
class ShutDown:
    """The replica is out of a settled configuration: stop it and delete its data."""

    replica: int
    node: int


@dataclass(frozen=True, slots=True)
class ReportStepDone:
    """Propose ``command`` to the metadata; shut the replicas in ``shut_down`` down."""

    command: StepDone
    shut_down: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ReportConfSeen:
    command: ConfSeen


Action: TypeAlias = (
    ProposeConf
    | TransferLeader
    | Wait
    | AllocateReplica
    | ShutDown
    | ReportStepDone
    | ReportConfSeen
)


# -- decisions ---------------------------------------------------------------------------


def remove_zombie(view: GroupView, book: ReplicaBook) -> ProposeConf | None:
    """Rule 4: a member whose replica was shut down can never catch up; remove it first.
    Only on a settled configuration (a removal the leader has not applied is no zombie)."""
    if not book.proves_absence(view):
        return None
    book.observe(view)
    zombies = sorted(view.members & book.shut_down)
    return ProposeConf(ConfKind.REMOVE, zombies[0]) if zombies else None


def _heirs(view: GroupView, book: ReplicaBook, old: int, down: Collection[int]) -> list[int]:
    return [v for v in sorted(view.voters) if v != old and book.node_of.get(v) not in down]


def next_step(
    shard: int,
    record: ShardState,
    view: GroupView,
    book: ReplicaBook,
    down: Collection[int] = (),
) -> Action:
    """What to do for the record's next step. ``ReportStepDone`` when the step is true in
    the group already (rule 1); the caller then reports it and asks again."""
    if not record.moving or record.blocked or record.next_step >= len(record.steps):
        return Wait("no move" if not record.moving else record.blocked or "no step")
    current = book.proves_absence(view)  # judged before this view counts as seen
    book.observe(view)
    idx = record.next_step
    step = record.steps[idx]
    k, node = step.kind, step.node
    members = view.members
    done = ReportStepDone(StepDone(shard, idx))

    if k is StepKind.ADD_LEARNER:
        rid = book.replica_on(node, view, adding=True)
        if rid is not None and rid in members:
            return done
        if node in down:
            return Wait(f"node {node} is down")
        if rid is None:
            return AllocateReplica(node)  # rule 3: a fresh id, never a dead one
        return ProposeConf(ConfKind.ADD_LEARNER, rid)
    if k is StepKind.CATCH_UP:
        rid = book.replica_on(node, view)
        m = view.match.get(rid) if rid is not None else None
        if m is not None and m >= view.commit:
            return done
        return Wait(f"learner on node {node} catching up")
    if k is StepKind.PROMOTE:
        rid = book.replica_on(node, view)
        if rid is not None and rid in view.voters:
            return done
        if rid is None or rid not in view.learners:
            # rule 3: only a current learner is promoted (ADD_VOTER of anything else adds
            # a voter with no log, or brings back a removed incarnation); ConfSeen re-plans
            return Wait(f"no learner on node {node}")
        return ProposeConf(ConfKind.ADD_VOTER, rid)
    old = book.live_on(node)
    if k is StepKind.TRANSFER_LEADER:
        if old is None or view.leader != old:
            return done
        heirs = _heirs(view, book, old, down)
        prefer = [v for v in heirs if book.node_of.get(v) == step.to]
        if heirs:
            return TransferLeader((prefer or heirs)[0])
        return Wait("no live voter to lead")
    # REMOVE_VOTER / REMOVE_LEARNER. Rule 2: absence is proof only when no membership
    # change is pending (an add still in the log may commit after we looked).
    if not current:
        return Wait("a conf change is pending, or this leader is behind")
    if old is None or old not in members:
        return ReportStepDone(done.command, () if old is None else (old,))
    if view.leader == old:
        # it leads again (elected after the plan was made): move leadership away first
        heirs = _heirs(view, book, old, down)
        return TransferLeader(heirs[0]) if heirs else Wait("no live voter to lead")
    return ProposeConf(ConfKind.REMOVE, old)


def reconcile(
    shard: int, record: ShardState, view: GroupView, book: ReplicaBook
) -> list[ShutDown | ReportConfSeen]:
    """After the steps: shut down replicas out of a settled configuration, and report the
    configuration (as nodes) when it differs from the record (rule 1)."""
    current = book.proves_absence(view)
    book.observe(view)
    out: list[ShutDown | ReportConfSeen] = []
    if current:
        for rid in sorted(book.ever_member - view.members - book.shut_down):
            out.append(ShutDown(rid, book.node_of[rid]))
    voters = sorted(book.node_of[v] for v in view.voters)
    learners = sorted(book.node_of[n] for n in view.learners)
    if set(voters) != set(record.voters) or set(learners) != set(record.learners):
        out.append(ReportConfSeen(ConfSeen(shard, voters, learners)))
    return out
