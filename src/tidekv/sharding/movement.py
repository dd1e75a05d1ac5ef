"""Moving a shard from one replica set to another, one safe membership change at a time.

:func:`plan_shard` turns (current voters, learners, leader, down nodes) and a target
replica set into ordered :class:`Step`\\ s, each one Raft membership change (or a wait)
of the kind the core supports — learners, then one voter at a time:

1. ``REMOVE_LEARNER`` for learners the target does not want (they carry no vote);
2. for each node to add, paired with a node to remove:
   ``ADD_LEARNER n`` -> ``CATCH_UP n`` (the learner has the log, by snapshot first) ->
   ``PROMOTE n`` -> ``TRANSFER_LEADER r -> x`` when ``r`` leads or the leader is unknown
   (a no-op for the executor if ``r`` does not lead) -> ``REMOVE_VOTER r``;
3. the removals left over when the set shrinks (each preceded by a transfer when needed).

Adds come before removes, and replicas on down nodes are removed first, so the group
never has fewer voters than ``min(len(old), len(target))`` and, at every step, the
up-to-date voters (old live voters, and new ones once caught up) are a majority of the
voters: the group can always commit the next change. :func:`check_plan` replays a plan
against those rules (it is what the property tests run, and what the metadata uses
before it accepts a plan); :class:`NoQuorum` is raised for a shard whose live voters
are not a majority, since no membership change could commit there, and for a target
whose live members are not a majority (it would end without a quorum).

:func:`plan_moves` does this for every shard whose replica set differs between two maps.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

__all__ = [
    "NoQuorum",
    "PlanViolation",
    "ShardConfig",
    "Step",
    "StepKind",
    "check_plan",
    "plan_moves",
    "plan_shard",
]


class StepKind(enum.Enum):
    ADD_LEARNER = "add_learner"
    CATCH_UP = "catch_up"
    PROMOTE = "promote"
    TRANSFER_LEADER = "transfer_leader"
    REMOVE_VOTER = "remove_voter"
    REMOVE_LEARNER = "remove_learner"


class Step(msgspec.Struct, frozen=True, array_like=True):
    """One step of a shard's move. ``to`` is the new leader of a ``TRANSFER_LEADER``
    (which moves leadership away from ``node`` if ``node`` leads)."""

    kind: StepKind
    node: int
    to: int = 0

    def __str__(self) -> str:
        if self.kind is StepKind.TRANSFER_LEADER:
            return f"transfer_leader {self.node}->{self.to}"
        return f"{self.kind.value} {self.node}"


class NoQuorum(ValueError):
    """The shard's live voters are not a majority: no membership change can commit."""


class PlanViolation(AssertionError):
    """A plan breaks a rule of :func:`check_plan` (a bug in the planner or the caller)."""


@dataclass(slots=True)
class ShardConfig:
    """A shard's membership as a plan sees it while it replays steps."""

    voters: set[int]
    learners: set[int] = field(default_factory=set)
    #: members that have the log: live old voters, and learners once caught up
    up_to_date: set[int] = field(default_factory=set)
    leader: int | None = None

    @classmethod
    def start(
        cls,
        voters: Iterable[int],
        learners: Iterable[int] = (),
        leader: int | None = None,
        down: Collection[int] = (),
    ) -> ShardConfig:
        v = set(voters)
        return cls(v, set(learners) - v, {n for n in v if n not in down}, leader)

    def has_quorum(self) -> bool:
        return 2 * len(self.voters & self.up_to_date) > len(self.voters)

    def apply(self, step: Step) -> None:
        """Apply ``step``; :class:`PlanViolation` if it is not allowed here."""
        k, n = step.kind, step.node
        members = self.voters | self.learners
        if k is StepKind.ADD_LEARNER:
            _need(n not in members, f"{step}: node {n} is already a member")
            self.learners.add(n)
            self.up_to_date.discard(n)
        elif k is StepKind.CATCH_UP:
            # a wait: the executor goes on only once the learner has the log (a learner
            # on a down node holds the move here until it is back or evicted)
            _need(n in self.learners, f"{step}: node {n} is not a learner")
            self.up_to_date.add(n)
        elif k is StepKind.PROMOTE:
            _need(n in self.learners, f"{step}: node {n} is not a learner")
            _need(n in self.up_to_date, f"{step}: learner {n} has not caught up")
            self.learners.discard(n)
            self.voters.add(n)
        elif k is StepKind.TRANSFER_LEADER:
            t = step.to
            _need(t != n, f"{step}: transfer to itself")
            _need(t in self.voters and t in self.up_to_date, f"{step}: {t} is no up-to-date voter")
            if self.leader is None or self.leader == n:
                self.leader = t
        elif k is StepKind.REMOVE_VOTER:
            _need(n in self.voters, f"{step}: node {n} is not a voter")
            _need(self.leader != n, f"{step}: node {n} leads; transfer first")
            self.voters.discard(n)
            self.up_to_date.discard(n)
        elif k is StepKind.REMOVE_LEARNER:
            _need(n in self.learners, f"{step}: node {n} is not a learner")
            self.learners.discard(n)
            self.up_to_date.discard(n)
        _need(
            self.has_quorum(),
            f"after {step}: up-to-date voters are no majority of "
            f"{sorted(self.voters)} (up to date: {sorted(self.up_to_date & self.voters)})",
        )


def _need(ok: bool, why: str) -> None:
    if not ok:
        raise PlanViolation(why)


def _removal_order(
    old: Sequence[int], target: Collection[int], leader: int | None, down: Collection[int]
) -> list[int]:
    gone = [n for n in old if n not in target]
    # down replicas first (restores redundancy soonest), the leader last (fewest transfers)
    return sorted(gone, key=lambda n: (n not in down, n == leader, n))


def plan_shard(
    voters: Sequence[int],
    target: Sequence[int],
    *,
    learners: Sequence[int] = (),
    leader: int | None = None,
    down: Collection[int] = (),
) -> list[Step]:
    """The steps that take a shard from ``voters`` (+ ``learners``) to ``target``.

    ``target`` is in ring order (its first live member is the preferred new leader).
    Raises :class:`NoQuorum` when the live voters, or the live members of the target, are
    no majority (the move could not start, or would end without a quorum: it waits),
    ``ValueError`` for an empty or repeating target.
    """
    if not target:
        raise ValueError("a shard needs at least one replica")
    if len(set(target)) != len(target):
        raise ValueError(f"target {list(target)} names a node twice")
    cfg = ShardConfig.start(voters, learners, leader, down)
    if not cfg.has_quorum():
        raise NoQuorum(
            f"live voters {sorted(cfg.up_to_date)} are no majority of {sorted(cfg.voters)}"
        )
    want = set(target)
    live_target = want - set(down)
    if 2 * len(live_target) <= len(want):
        raise NoQuorum(
            f"the target {sorted(want)} has no live majority (down: {sorted(want & set(down))}):"
            " the move would end without a quorum"
        )
    steps: list[Step] = []

    def emit(step: Step) -> None:
        cfg.apply(step)
        steps.append(step)

    for n in sorted(cfg.learners - want):
        emit(Step(StepKind.REMOVE_LEARNER, n))
    adds = [n for n in target if n not in cfg.voters]
    removes = _removal_order(sorted(cfg.voters), want, leader, down)

    def remove(r: int) -> None:
        if cfg.leader is None or cfg.leader == r:
            heirs = [n for n in target if n in cfg.voters and n in cfg.up_to_date and n != r]
            heirs += sorted(n for n in cfg.voters & cfg.up_to_date if n != r and n not in want)
            emit(Step(StepKind.TRANSFER_LEADER, r, heirs[0]))
        emit(Step(StepKind.REMOVE_VOTER, r))

    for i, a in enumerate(adds):
        if a not in cfg.learners:
            emit(Step(StepKind.ADD_LEARNER, a))
        emit(Step(StepKind.CATCH_UP, a))
        emit(Step(StepKind.PROMOTE, a))
        if i < len(removes):
            remove(removes[i])
    for r in removes[len(adds) :]:
        remove(r)
    return steps


def check_plan(
    voters: Sequence[int],
    target: Sequence[int],
    steps: Iterable[Step],
    *,
    learners: Sequence[int] = (),
    leader: int | None = None,
    down: Collection[int] = (),
) -> ShardConfig:
    """Replay ``steps``; raises :class:`PlanViolation` on any broken rule: a step not
    allowed where it comes, up-to-date voters no majority, fewer voters than
    ``min(len(voters), len(target))``, or an end other than exactly ``target``."""
    cfg = ShardConfig.start(voters, learners, leader, down)
    floor = min(len(cfg.voters), len(target))
    for step in steps:
        cfg.apply(step)
        _need(len(cfg.voters) >= floor, f"after {step}: {len(cfg.voters)} voters < {floor}")
    _need(cfg.voters == set(target), f"ends at {sorted(cfg.voters)}, not {sorted(target)}")
    _need(not cfg.learners, f"ends with learners {sorted(cfg.learners)}")
    return cfg


def plan_moves(
    old: Mapping[int, Sequence[int]],
    new: Mapping[int, Sequence[int]],
    *,
    leaders: Mapping[int, int | None] | None = None,
    down: Collection[int] = (),
) -> dict[int, list[Step]]:
    """Plans for every shard whose replica *set* differs (order alone is no move)."""
    if set(old) != set(new):
        raise ValueError("the two maps must name the same shards")
    out: dict[int, list[Step]] = {}
    for s in sorted(new):
        if set(old[s]) != set(new[s]):
            ld = (leaders or {}).get(s)
            out[s] = plan_shard(old[s], new[s], leader=ld, down=down)
    return out
