"""The invariant checks can fail: each rule fires on a hand-made violating state."""

from __future__ import annotations

import pytest

from tidekv.raft import Entry
from tidekv.sim import Invariants, SafetyViolation


def e(index: int, term: int, data: bytes = b"") -> Entry:
    return Entry(term, index, data=data)


def log_of(*entries: Entry):  # type: ignore[no-untyped-def]
    by_index = {x.index: x for x in entries}

    def term_at(i: int) -> int | None:
        x = by_index.get(i)
        return None if x is None else x.term

    def slice_(lo: int, hi: int) -> list[Entry]:
        return [by_index[i] for i in range(lo, hi) if i in by_index]

    return term_at, slice_


def test_two_leaders_in_one_term() -> None:
    inv = Invariants()
    t, _ = log_of()
    inv.observe_leader(1, 3, t, 1)
    inv.observe_leader(1, 3, t, 1)  # the same leader again is fine
    inv.observe_leader(2, 4, t, 1)  # another term is fine
    with pytest.raises(SafetyViolation) as err:
        inv.observe_leader(2, 3, t, 1)
    assert err.value.rule == "election safety"


def test_divergent_applied_entries() -> None:
    inv = Invariants()
    inv.observe_apply(1, e(1, 1, b"a"))
    inv.observe_apply(2, e(1, 1, b"a"))
    with pytest.raises(SafetyViolation) as err:
        inv.observe_apply(3, e(1, 1, b"b"))
    assert err.value.rule == "state-machine safety"


def test_applying_out_of_order() -> None:
    inv = Invariants()
    inv.observe_apply(1, e(1, 1))
    with pytest.raises(SafetyViolation):
        inv.observe_apply(1, e(3, 1))


def test_applied_entry_differs_from_committed_one() -> None:
    inv = Invariants()
    _, sl = log_of(e(1, 1, b"x"))
    inv.observe_commit(1, 1, 1, sl, 1)
    with pytest.raises(SafetyViolation) as err:
        inv.observe_apply(2, e(1, 2, b"y"))
    assert err.value.rule == "state-machine safety"


def test_lost_committed_entry_new_leader_lacks_it() -> None:
    inv = Invariants()
    _, sl = log_of(e(1, 1), e(2, 1, b"w"))
    inv.observe_commit(1, 1, 2, sl, 1)
    t_ok, _ = log_of(e(1, 1), e(2, 1, b"w"), e(3, 2))
    inv.observe_leader(2, 2, t_ok, 1)
    t_bad, _ = log_of(e(1, 1), e(2, 3))  # term 4 leader whose index 2 is not the committed one
    with pytest.raises(SafetyViolation) as err:
        inv.observe_leader(3, 4, t_bad, 1)
    assert err.value.rule == "leader completeness"


def test_lost_committed_entry_overwritten_below_commit() -> None:
    inv = Invariants()
    _, sl = log_of(e(1, 1), e(2, 1, b"w"))
    inv.observe_commit(1, 1, 2, sl, 1)
    inv.observe_persist(2, [e(2, 1, b"w")], 1, commit=2)  # same entry: fine
    with pytest.raises(SafetyViolation) as err:
        inv.observe_persist(3, [e(2, 5, b"other")], 1, commit=2)
    assert err.value.rule == "committed entry lost"


def test_commit_index_moving_back() -> None:
    inv = Invariants()
    _, sl = log_of(e(1, 1), e(2, 1))
    inv.observe_commit(1, 1, 2, sl, 1)
    with pytest.raises(SafetyViolation) as err:
        inv.observe_commit(1, 1, 1, sl, 1)
    assert err.value.rule == "committed entry lost"
    inv.node_restarted(1, 1, 1)  # after a restart the in-memory commit may be lower
    inv.observe_commit(1, 1, 1, sl, 1)


def test_committed_twice_differently() -> None:
    inv = Invariants()
    _, sl1 = log_of(e(1, 1, b"a"))
    _, sl2 = log_of(e(1, 2, b"b"))
    inv.observe_commit(1, 1, 1, sl1, 1)
    with pytest.raises(SafetyViolation):
        inv.observe_commit(2, 2, 1, sl2, 1)


def test_log_matching_same_position_different_entry() -> None:
    inv = Invariants()
    inv.observe_persist(1, [e(1, 1, b"a"), e(2, 1, b"b")], 0, commit=0)
    with pytest.raises(SafetyViolation) as err:
        inv.observe_persist(2, [e(2, 1, b"c")], 1, commit=0)
    assert err.value.rule == "log matching"


def test_log_matching_different_predecessor() -> None:
    inv = Invariants()
    inv.observe_persist(1, [e(2, 2, b"a"), e(3, 2, b"b")], 1, commit=0)
    with pytest.raises(SafetyViolation) as err:
        inv.observe_persist(2, [e(3, 2, b"b")], 1, commit=0)  # its index 2 has term 1
    assert err.value.rule == "log matching"
