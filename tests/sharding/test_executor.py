"""The pure move executor: its four rules, one test each, and a toy group driven through
whole moves under dropped proposals, leader changes and slow learners (hypothesis)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from tidekv.sharding.executor import (
    AllocateReplica,
    ConfKind,
    GroupView,
    ProposeConf,
    ReplicaBook,
    ReportConfSeen,
    ReportStepDone,
    ShutDown,
    TransferLeader,
    Wait,
    next_step,
    reconcile,
    remove_zombie,
)
from tidekv.sharding.metadata import ShardState
from tidekv.sharding.movement import Step, StepKind, plan_shard


def _book(nodes: dict[int, int]) -> ReplicaBook:
    b = ReplicaBook()
    for rid, node in sorted(nodes.items()):
        b.allocate(node, rid)
    return b


def _view(voters: set[int], learners: set[int] = frozenset(), *, leader: int = 1,  # type: ignore[assignment]
          commit: int = 10, applied: int = 10, pending: int = 0,
          match: dict[int, int] | None = None) -> GroupView:  # fmt: skip
    m = match if match is not None else {r: commit for r in voters | learners}
    return GroupView(leader, frozenset(voters), frozenset(learners), commit, applied, pending, m)


def _record(voters: list[int], steps: list[Step], nxt: int = 0, target: list[int] | None = None):  # type: ignore[no-untyped-def]
    return ShardState(voters, target=target or [9], steps=steps, next_step=nxt)


# -- rule 1: the group is the truth ----------------------------------------------------


def test_rule1_a_step_already_true_in_the_group_is_reported_not_proposed() -> None:
    book = _book({1: 1, 2: 2, 3: 3, 4: 9})
    rec = _record([1, 2, 3], [Step(StepKind.ADD_LEARNER, 9), Step(StepKind.PROMOTE, 9)])
    # replica 4 on node 9 is a learner already (the add committed, its StepDone was lost)
    act = next_step(0, rec, _view({1, 2, 3}, {4}), book)
    assert act == ReportStepDone(rec_done(0))
    rec.next_step = 1
    assert next_step(0, rec, _view({1, 2, 3, 4}), book) == ReportStepDone(rec_done(1))


def rec_done(i: int):  # type: ignore[no-untyped-def]
    from tidekv.sharding.metadata import StepDone

    return StepDone(0, i)


def test_rule1_a_record_that_differs_from_the_group_gets_conf_seen() -> None:
    book = _book({1: 1, 2: 2, 3: 3, 4: 9})
    rec = ShardState([1, 2, 3])
    acts = reconcile(0, rec, _view({1, 2, 4}), book)
    seen = [a for a in acts if isinstance(a, ReportConfSeen)]
    assert [a.command.voters for a in seen] == [[1, 2, 9]]
    # and the same record against an agreeing group: nothing to report
    rec2 = ShardState([1, 2, 9])
    assert not [
        a for a in reconcile(0, rec2, _view({1, 2, 4}), book) if isinstance(a, ReportConfSeen)
    ]


# -- rule 2: absence proves removal only when nothing is pending ------------------------


def test_rule2_absence_is_no_proof_while_a_conf_change_is_pending() -> None:
    book = _book({1: 1, 2: 2, 3: 3, 4: 9})
    rec = _record([1, 2, 3], [Step(StepKind.REMOVE_VOTER, 3)])
    book.observe(_view({1, 2, 3}))
    # 3 is absent, but an entry above applied is a conf change not yet applied
    pending = _view({1, 2}, leader=1, commit=12, applied=11, pending=12)
    act = next_step(0, rec, pending, book)
    assert isinstance(act, Wait)
    assert not [a for a in reconcile(0, rec, pending, book) if isinstance(a, ShutDown)]
    settled = _view({1, 2}, commit=12, applied=12, pending=12)
    assert next_step(0, rec, settled, book) == ReportStepDone(rec_done(0), (3,))
    assert ShutDown(3, 3) in reconcile(0, rec, settled, book)


# -- rule 3: dead ids stay dead; only a current learner is promoted ---------------------


def test_rule3_an_id_once_in_a_configuration_is_never_added_again() -> None:
    book = _book({1: 1, 2: 2, 3: 3, 4: 9})
    book.observe(_view({1, 2, 3}, {4}))  # 4 was a learner on node 9, then removed
    rec = _record([1, 2, 3], [Step(StepKind.ADD_LEARNER, 9)])
    view = _view({1, 2, 3})
    assert next_step(0, rec, view, book) == AllocateReplica(9)
    rid = book.allocate(9)
    assert rid == 5
    assert next_step(0, rec, view, book) == ProposeConf(ConfKind.ADD_LEARNER, 5)


def test_rule3_an_id_whose_removal_was_proposed_is_never_added_again() -> None:
    book = _book({1: 1, 2: 2, 3: 3, 4: 9})
    book.removal_proposed.add(4)  # never seen in a configuration, but its removal was proposed
    rec = _record([1, 2, 3], [Step(StepKind.ADD_LEARNER, 9)])
    assert next_step(0, rec, _view({1, 2, 3}), book) == AllocateReplica(9)


def test_rule3_only_a_current_learner_is_promoted() -> None:
    book = _book({1: 1, 2: 2, 3: 3, 4: 9})
    book.observe(_view({1, 2, 3}, {4}))
    rec = _record([1, 2, 3], [Step(StepKind.PROMOTE, 9)])
    # the learner was removed meanwhile (a stale record): ADD_VOTER would revive it
    assert isinstance(next_step(0, rec, _view({1, 2, 3}), book), Wait)
    # a fresh replica allocated on node 9 whose add never committed: ADD_VOTER would add
    # a voter with no log straight away
    book.allocate(9, 5)
    assert isinstance(next_step(0, rec, _view({1, 2, 3}), book), Wait)
    assert next_step(0, rec, _view({1, 2, 3}, {4}), book) == ProposeConf(ConfKind.ADD_VOTER, 4)


# -- rule 4: zombies first, on a settled configuration ----------------------------------


def test_rule4_a_member_without_its_replica_is_removed_first() -> None:
    book = _book({1: 1, 2: 2, 3: 3})
    book.shut_down.add(3)  # replica 3 applied an earlier removal of itself and stopped
    assert remove_zombie(_view({1, 2, 3}), book) == ProposeConf(ConfKind.REMOVE, 3)
    # a removal the leader has not applied yet is no zombie
    assert remove_zombie(_view({1, 2, 3}, applied=9, pending=10), book) is None
    assert remove_zombie(_view({1, 2}), book) is None


def test_the_leader_is_moved_off_a_replica_before_it_is_removed() -> None:
    book = _book({1: 1, 2: 2, 3: 3})
    rec = _record([1, 2, 3], [Step(StepKind.REMOVE_VOTER, 1)])
    assert next_step(0, rec, _view({1, 2, 3}, leader=1), book, down={2}) == TransferLeader(3)
    assert next_step(0, rec, _view({1, 2, 3}, leader=2), book) == ProposeConf(ConfKind.REMOVE, 1)
    tr = _record([1, 2, 3], [Step(StepKind.TRANSFER_LEADER, 1, 3)])
    assert next_step(0, tr, _view({1, 2, 3}, leader=1), book) == TransferLeader(3)
    assert next_step(0, tr, _view({1, 2, 3}, leader=2), book) == ReportStepDone(rec_done(0))


def test_catch_up_waits_for_match_at_commit() -> None:
    book = _book({1: 1, 2: 2, 3: 3, 4: 9})
    rec = _record([1, 2, 3], [Step(StepKind.CATCH_UP, 9)])
    behind = _view({1, 2, 3}, {4}, match={1: 10, 2: 10, 3: 10, 4: 9})
    assert isinstance(next_step(0, rec, behind, book), Wait)
    caught = _view({1, 2, 3}, {4}, match={1: 10, 2: 10, 3: 10, 4: 10})
    assert next_step(0, rec, caught, book) == ReportStepDone(rec_done(0))


# -- a toy group driven through whole moves ---------------------------------------------


@dataclass
class Toy:
    """A Raft group reduced to what the executor sees, with adversity on demand."""

    voters: set[int]
    learners: set[int]
    leader: int
    commit: int = 10
    applied: int = 10
    match: dict[int, int] = field(default_factory=dict)
    pending: tuple[ConfKind, int] | None = None
    ever: set[int] = field(default_factory=set)
    stopped: set[int] = field(default_factory=set)
    has_log: set[int] = field(default_factory=set)

    def view(self) -> GroupView:
        pend = self.applied + 1 if self.pending else self.applied
        return GroupView(self.leader, frozenset(self.voters), frozenset(self.learners),
                         self.commit, self.applied, pend, dict(self.match))  # fmt: skip


def _check_quorum(toy: Toy) -> None:
    """check_plan's rule: the voters that have the log (old voters, and learners promoted
    once caught up) are a majority of the voters."""
    ok = toy.voters & toy.has_log
    assert 2 * len(ok) > len(toy.voters), (toy.voters, toy.has_log)


def _commit(toy: Toy) -> None:
    assert toy.pending is not None
    kind, rid = toy.pending
    toy.pending = None
    toy.commit += 1
    toy.applied += 1
    toy.match[toy.leader] = toy.commit
    if kind is ConfKind.ADD_LEARNER:
        assert rid not in toy.ever and rid not in toy.stopped, f"re-added dead id {rid}"
        toy.learners.add(rid)
        toy.match[rid] = 0
    elif kind is ConfKind.ADD_VOTER:
        assert rid in toy.learners, f"promoted {rid}, not a learner"
        assert toy.match.get(rid, 0) >= toy.commit - 1, f"promoted {rid} before it caught up"
        toy.learners.discard(rid)
        toy.voters.add(rid)
        toy.has_log.add(rid)
    else:
        toy.voters.discard(rid)
        toy.learners.discard(rid)
        toy.match.pop(rid, None)
        if rid == toy.leader:  # elected after the removal was proposed: it steps down
            toy.leader = min(toy.voters & toy.has_log)
    toy.ever |= toy.voters | toy.learners
    _check_quorum(toy)


def _drive(toy: Toy, rec: ShardState, book: ReplicaBook, events: list[str]) -> None:
    """Run the executor; ``events`` are the adversity between its actions, then fair."""
    for i in range(400):
        ev = events[i] if i < len(events) else "fair"
        if ev == "commit" or (ev == "fair" and toy.pending):
            if toy.pending:
                _commit(toy)
        elif ev == "drop" and toy.pending:
            toy.pending = None  # the proposal was lost with a leader change
        elif ev == "elect":
            cands = sorted(r for r in toy.voters if toy.match.get(r, 0) >= toy.commit)
            if cands:
                toy.leader = cands[(i * 7) % len(cands)]
        if ev in ("catch_up", "fair"):
            for r in toy.learners | toy.voters:
                toy.match[r] = toy.commit
        if not rec.moving:
            return
        for _ in range(8):
            act = next_step(0, rec, toy.view(), book)
            if isinstance(act, AllocateReplica):
                book.allocate(act.node)
                continue
            if isinstance(act, ReportStepDone):
                for r in act.shut_down:
                    assert r not in toy.voters | toy.learners and toy.pending is None
                    toy.stopped.add(r)
                    book.shut_down.add(r)
                rec.next_step += 1
                if rec.next_step == len(rec.steps):
                    rec.voters, rec.learners = list(rec.target), []
                    rec.target, rec.steps, rec.next_step = [], [], 0
                    return
                continue
            if isinstance(act, ProposeConf) and toy.pending is None:
                if act.kind is ConfKind.REMOVE:
                    assert act.replica != toy.leader, "proposed to remove the leader"
                    book.removal_proposed.add(act.replica)
                toy.pending = (act.kind, act.replica)
            elif isinstance(act, TransferLeader):
                assert act.to in toy.voters and act.to != toy.leader
                toy.leader = act.to
            break
    raise AssertionError(f"the move did not finish: at {rec.next_step} of {rec.steps}")


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(3, 5),
    spare=st.integers(1, 3),
    drop=st.integers(1, 2),
    lead=st.integers(0, 4),
    events=st.lists(st.sampled_from(["commit", "drop", "elect", "catch_up", "idle"]), max_size=60),
)
def test_whole_moves_under_adversity_keep_the_plan_rules_and_finish(
    n: int, spare: int, drop: int, lead: int, events: list[str]
) -> None:
    nodes = list(range(1, n + 1))
    target = [x for x in nodes if x > drop] + [n + s for s in range(1, drop + spare)][:drop]
    book = _book({x: x for x in nodes})
    leader = nodes[lead % n]
    toy = Toy(
        set(nodes),
        set(),
        leader,
        match=dict.fromkeys(nodes, 10),
        ever=set(nodes),
        has_log=set(nodes),
    )
    steps = plan_shard(nodes, target, leader=leader)
    rec = ShardState(list(nodes), target=list(target), steps=steps)
    _drive(toy, rec, book, events)
    assert {book.node_of[r] for r in toy.voters} == set(target)
    assert not toy.learners
    # every replica out of the group was shut down, and none of the group's was
    assert not (toy.voters & toy.stopped)


def test_rule2_a_deposed_leader_behind_proves_nothing_absent() -> None:
    """Seed 15 of the ring run: the leader of term 4 added learner 7 and crashed; the
    deposed leader of term 3, which never heard of 7, was the highest-term live leader.
    Its settled configuration lacks 7, but that proves no removal."""
    book = _book({1: 1, 2: 2, 3: 3, 7: 9})
    new = GroupView(3, frozenset({1, 2, 3}), frozenset({7}), 47, 47, 47, {}, term=4)
    book.observe(new)
    old = GroupView(2, frozenset({1, 2, 3}), frozenset(), 45, 45, 35, {}, term=3)
    assert not [a for a in reconcile(0, ShardState([1, 2, 3], [9]), old, book)
                if isinstance(a, ShutDown)]  # fmt: skip
    rec = _record([1, 2, 3], [Step(StepKind.REMOVE_LEARNER, 9)])
    assert isinstance(next_step(0, rec, old, book), Wait)
    book.shut_down.add(3)
    assert remove_zombie(old, book) is None
    # the current leader's view does prove it
    newer = GroupView(3, frozenset({1, 2, 3}), frozenset(), 48, 48, 48, {}, term=4)
    assert next_step(0, rec, newer, book) == ReportStepDone(rec_done(0), (7,))
