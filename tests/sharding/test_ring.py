"""The ring against a dumb reference, and what moves when one node joins or leaves."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidekv.sharding.ring import RING_SIZE, Ring, point_hash, shard_position


def reference(members: dict[int, int], vnodes: int, shards: int, rf: int) -> list[tuple[int, ...]]:
    """Every point, sorted by clockwise distance from the shard; first rf distinct nodes."""
    points = [
        (point_hash(f"node:{n}:{i}"), n) for n, w in members.items() for i in range(w * vnodes)
    ]
    out = []
    for s in range(shards):
        pos = s * RING_SIZE // shards
        order = sorted(points, key=lambda p: ((p[0] - pos) % RING_SIZE, p[1]))
        picked: list[int] = []
        for _, n in order:
            if n not in picked:
                picked.append(n)
        out.append(tuple(picked[:rf]))
    return out


members_st = st.dictionaries(st.integers(1, 10_000), st.integers(1, 3), min_size=1, max_size=7)


@settings(max_examples=60, deadline=None)
@given(members_st, st.integers(1, 12), st.integers(1, 24), st.integers(1, 5))
def test_matches_the_reference(members: dict[int, int], vnodes: int, shards: int, rf: int) -> None:
    p = Ring(members, vnodes).place(shards, rf)
    assert list(p.replicas) == reference(members, vnodes, shards, rf)
    for reps in p.replicas:
        assert len(set(reps)) == len(reps) == min(rf, len(members))


@settings(max_examples=80, deadline=None)
@given(
    members_st, st.integers(1, 10_000), st.integers(1, 3), st.integers(1, 40), st.integers(1, 64)
)
def test_a_join_or_leave_changes_only_sets_with_that_node(
    members: dict[int, int], new: int, weight: int, vnodes: int, shards: int
) -> None:
    if new in members:
        return
    before = Ring(members, vnodes).place(shards, 3)
    after = Ring({**members, new: weight}, vnodes).place(shards, 3)
    for a, b in zip(before.replicas, after.replicas, strict=True):
        if set(a) == set(b):
            assert a == b  # unchanged sets keep their order (their preferred leader)
            continue
        # the new node came in and replaced exactly one replica (or filled a short set)
        assert new in b and new not in a
        assert len(set(a) - set(b)) == (1 if len(a) == 3 else 0)
        assert set(b) - {new} <= set(a)
    # and leaving is the reverse: removing `new` again restores the old placement
    assert Ring(members, vnodes).place(shards, 3) == before


def test_placement_does_not_depend_on_the_order_of_the_member_list() -> None:
    a = Ring({1: 1, 2: 2, 3: 1, 4: 1}).place()
    b = Ring({4: 1, 3: 1, 2: 2, 1: 1}).place()
    assert a == b


def _moved(before: tuple[tuple[int, ...], ...], after: tuple[tuple[int, ...], ...]) -> int:
    return sum(len(set(b) - set(a)) for a, b in zip(before, after, strict=True))


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7])
def test_a_node_joining_nodes_1_to_n_moves_close_to_the_ideal(n: int) -> None:
    """The cluster the real-process test builds: node ids 1..n, then n+1 joins."""
    before = Ring(dict.fromkeys(range(1, n + 1), 1)).place(64, 3)
    after = Ring(dict.fromkeys(range(1, n + 2), 1)).place(64, 3)
    ideal = 64 * 3 / (n + 1)
    assert abs(_moved(before.replicas, after.replicas) - ideal) <= 0.25 * ideal


@pytest.mark.parametrize("gone", [1, 2, 3, 4, 5, 6])
def test_a_node_leaving_moves_exactly_its_replicas(gone: int) -> None:
    """Decommissioning one of nodes 1..6: only its replicas move (each to one new node),
    and their number is within 25% of the ideal 32."""
    full = Ring(dict.fromkeys(range(1, 7), 1)).place(64, 3)
    rest = Ring({n: 1 for n in range(1, 7) if n != gone}).place(64, 3)
    moved = _moved(full.replicas, rest.replicas)
    assert moved == full.load()[gone]
    assert abs(moved - 32) <= 8


def test_moves_within_25_percent_over_many_member_lists() -> None:
    """The measured share (docs/sharding.md: 99.4% of 1000 member lists at 64 vnodes);
    here 200 lists, which must stay above 97%."""
    import random  # only the test draws node ids

    ok = 0
    trials = 200
    for t in range(trials):
        ids = random.Random(t).sample(range(1, 1_000_000), 6)
        before = Ring(dict.fromkeys(ids[:5], 1)).place(64, 3)
        after = Ring(dict.fromkeys(ids, 1)).place(64, 3)
        ok += abs(_moved(before.replicas, after.replicas) - 32) <= 8
    assert ok >= 0.97 * trials


def test_balance_bound() -> None:
    """Documented bound: 6 equal nodes, 64 shards, rf 3 -> every node holds within
    0.6..1.4 of the ideal 32 replicas (measured p1 0.72, p99 1.28 over 1000 lists)."""
    import random

    for t in range(100):
        ids = random.Random(1000 + t).sample(range(1, 1_000_000), 6)
        load = Ring(dict.fromkeys(ids, 1)).place(64, 3).load()
        assert all(0.6 * 32 <= x <= 1.4 * 32 for x in load.values()), load


def test_weight_takes_a_bigger_share() -> None:
    load = Ring({1: 1, 2: 1, 3: 1, 4: 1, 5: 3}).place(64, 3).load()
    assert load[5] > max(load[n] for n in (1, 2, 3, 4))


def test_fewer_nodes_than_the_replication_factor() -> None:
    p = Ring({1: 1, 2: 1}).place(8, 3)
    assert p.short and p.effective_replication == 2
    assert all(set(r) == {1, 2} for r in p.replicas)
    assert p.warning is not None and "replication factor 3" in p.warning
    full = Ring({1: 1, 2: 1, 3: 1}).place(8, 3)
    assert not full.short and full.warning is None


def test_shard_positions_are_evenly_spaced() -> None:
    assert [shard_position(s, 4) for s in range(4)] == [0, 1 << 62, 1 << 63, 3 << 62]


@pytest.mark.parametrize(
    ("members", "vnodes", "match"),
    [({0: 1}, 8, "positive integer"), ({1: 0}, 8, "weight"), ({1: 1}, 0, "vnodes")],
)
def test_bad_input(members: dict[int, int], vnodes: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Ring(members, vnodes)


def test_empty_ring_and_bad_replication() -> None:
    assert Ring({}).place(4, 3).replicas == ((), (), (), ())
    with pytest.raises(ValueError, match="replication"):
        Ring({1: 1}).place(4, 0)
