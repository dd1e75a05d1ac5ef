"""Move plans keep a quorum of up-to-date voters at every step and end at the target;
leader balancing is optimal (brute force) and meets the 1.5x target on ring placements."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidekv.sharding import Ring, StepKind, balance_leaders, plan_moves, plan_shard, spread
from tidekv.sharding.movement import NoQuorum, PlanViolation, Step, check_plan


@st.composite
def shard_moves(draw: st.DrawFn) -> tuple[list[int], list[int], list[int], int | None, set[int]]:
    nodes = list(range(1, 10))
    voters = draw(st.lists(st.sampled_from(nodes), min_size=1, max_size=5, unique=True))
    target = draw(st.lists(st.sampled_from(nodes), min_size=1, max_size=5, unique=True))
    others = [n for n in nodes if n not in voters]
    learners = draw(st.lists(st.sampled_from(others), max_size=2, unique=True)) if others else []
    leader = draw(st.one_of(st.none(), st.sampled_from(voters)))
    # down nodes anywhere: old voters, new ones, learners
    down = set(draw(st.lists(st.sampled_from(nodes), max_size=4)))
    return voters, target, learners, leader, down


@settings(max_examples=1000, deadline=None)
@given(shard_moves())
def test_every_plan_keeps_a_quorum_and_ends_at_the_target(
    case: tuple[list[int], list[int], list[int], int | None, set[int]],
) -> None:
    voters, target, learners, leader, down = case
    live_voters = [v for v in voters if v not in down]
    live_target = [n for n in target if n not in down]
    if 2 * len(live_voters) <= len(voters) or 2 * len(live_target) <= len(target):
        with pytest.raises(NoQuorum):
            plan_shard(voters, target, learners=learners, leader=leader, down=down)
        return
    steps = plan_shard(voters, target, learners=learners, leader=leader, down=down)
    end = check_plan(voters, target, steps, learners=learners, leader=leader, down=down)
    assert end.voters == set(target)
    # one membership change per step, and only the changes the move needs
    added = [s.node for s in steps if s.kind is StepKind.PROMOTE]
    removed = [s.node for s in steps if s.kind is StepKind.REMOVE_VOTER]
    assert sorted(added) == sorted(set(target) - set(voters))
    assert sorted(removed) == sorted(set(voters) - set(target))
    # a node is promoted only after it caught up, and it caught up as a learner
    for i, s in enumerate(steps):
        if s.kind is StepKind.PROMOTE:
            assert Step(StepKind.CATCH_UP, s.node) in steps[:i]


def test_replacing_the_whole_set_step_by_step() -> None:
    steps = plan_shard([1, 2, 3], [4, 5, 6], leader=1)
    assert [str(s) for s in steps] == [
        "add_learner 4", "catch_up 4", "promote 4", "remove_voter 2",
        "add_learner 5", "catch_up 5", "promote 5", "remove_voter 3",
        "add_learner 6", "catch_up 6", "promote 6", "transfer_leader 1->4", "remove_voter 1",
    ]  # fmt: skip


def test_a_down_replica_is_replaced_first() -> None:
    steps = plan_shard([1, 2, 3], [1, 4, 5], leader=1, down={3})
    assert next(s for s in steps if s.kind is StepKind.REMOVE_VOTER).node == 3


def test_no_quorum_is_refused() -> None:
    with pytest.raises(NoQuorum, match="no majority"):
        plan_shard([1, 2, 3], [1, 4, 5], down={2, 3})
    with pytest.raises(NoQuorum, match="target"):  # it would end without a quorum
        plan_shard([1, 2, 3], [3, 4], down={3})


def test_the_checker_catches_unsafe_plans() -> None:
    with pytest.raises(PlanViolation, match="majority"):
        # removing two of three voters at once leaves no up-to-date majority... one by one
        check_plan([1, 2, 3], [1], [Step(StepKind.REMOVE_VOTER, 2)], down={3})
    with pytest.raises(PlanViolation, match="caught up"):
        check_plan([1, 2, 3], [1, 2, 3, 4], [Step(StepKind.ADD_LEARNER, 4),
                                              Step(StepKind.PROMOTE, 4)])  # fmt: skip
    with pytest.raises(PlanViolation, match="leads"):
        check_plan([1, 2, 3], [2, 3], [Step(StepKind.REMOVE_VOTER, 1)], leader=1)
    with pytest.raises(PlanViolation, match="ends at"):
        check_plan([1, 2, 3], [1, 2, 4], [])


def test_plan_moves_covers_exactly_the_changed_sets() -> None:
    old = Ring(dict.fromkeys(range(1, 6), 1)).place().as_map()
    new = Ring(dict.fromkeys(range(1, 7), 1)).place().as_map()
    plans = plan_moves(old, new)
    assert set(plans) == {s for s in old if set(old[s]) != set(new[s])}
    for s, steps in plans.items():
        check_plan(old[s], new[s], steps)
        assert {st.node for st in steps if st.kind is StepKind.ADD_LEARNER} == {6}


# -- leader balancing --------------------------------------------------------------------


def _cost(leaders: dict[int, int], nodes: set[int]) -> list[int]:
    c = dict.fromkeys(nodes, 0)
    for n in leaders.values():
        c[n] += 1
    return sorted(c.values(), reverse=True)


@st.composite
def small_clusters(draw: st.DrawFn) -> tuple[dict[int, list[int]], dict[int, int | None]]:
    n = draw(st.integers(2, 5))
    shards = draw(st.integers(1, 7))
    reps = {
        s: draw(st.lists(st.integers(1, n), min_size=1, max_size=3, unique=True))
        for s in range(shards)
    }
    leaders = {s: draw(st.one_of(st.none(), st.sampled_from(r))) for s, r in reps.items()}
    return reps, leaders


@settings(max_examples=300, deadline=None)
@given(small_clusters())
def test_leader_balance_is_optimal_by_brute_force(
    case: tuple[dict[int, list[int]], dict[int, int | None]],
) -> None:
    reps, leaders = case
    moves = balance_leaders(leaders, reps)
    final = {s: ld for s, ld in leaders.items() if ld is not None}
    for t in moves:
        assert final[t.shard] == t.frm and t.to in reps[t.shard] and t.to != t.frm
        final[t.shard] = t.to
    nodes = {n for r in reps.values() for n in r}
    known = sorted(final)
    best = min(
        (sum(c * c for c in _cost(dict(zip(known, pick, strict=True)), nodes)), pick)
        for pick in itertools.product(*(reps[s] for s in known))
    )[0]
    assert sum(c * c for c in _cost(final, nodes)) == best


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7, 8])
def test_leaders_spread_within_one_and_a_half(n: int) -> None:
    import random

    for t in range(20):
        ids = random.Random(t).sample(range(1, 10_000), n)
        reps = Ring(dict.fromkeys(ids, 1)).place(64, 3).as_map()
        rng = random.Random(t)
        # worst start: every shard led by its first replica, or a random one
        leaders: dict[int, int | None] = {
            s: (r[0] if t % 2 else rng.choice(r)) for s, r in reps.items()
        }
        for m in balance_leaders(leaders, reps):
            leaders[m.shard] = m.to
        most, fewest = spread(leaders, ids)
        assert most <= 1.5 * fewest and most - fewest <= 1, (n, t, most, fewest)


def test_balance_skips_down_nodes_and_unknown_leaders() -> None:
    reps = {0: [1, 2, 3], 1: [1, 2, 3], 2: [1, 2, 3], 3: [1, 2, 3]}
    leaders: dict[int, int | None] = {0: 1, 1: 1, 2: 1, 3: None}
    moves = balance_leaders(leaders, reps, live={1, 2})
    assert all(m.to == 2 for m in moves) and len(moves) == 1
