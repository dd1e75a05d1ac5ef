"""The version-order checker: targeted anomalies, and agreement with the WGL search.

The property tests generate a sequential execution (linearization points in time, a
register with read/write/cas), widen every operation into a random interval around
its point, make some writes unknown (applied or not) and some reads failed; then maybe
break it (a read returns another version, an interval moves, two chain entries swap, a
write is dropped from the chain). The version checker must agree exactly with the WGL
search whose model only lets writes happen in chain order, and whenever it says
linearizable, the unrestricted register search must agree.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tidekv.check.linearizability import (
    Operation,
    RegisterModel,
    Verdict,
    check_operations,
)
from tidekv.check.versioned import ChainVersion, VOp, chain_order, check_versioned


def chain(*ids: Hashable) -> list[ChainVersion]:
    out, prev = [], None
    for v in ids:
        out.append(ChainVersion(v, () if prev is None else (prev,)))
        prev = v
    return out


def W(v: Hashable, t0: float, t1: float | None, ok: bool | None = True) -> VOp:
    return VOp("write", t0, t1, ok, version=v)


def R(v: Hashable | None, t0: float, t1: float) -> VOp:
    return VOp("read", t0, t1, True, version=v)


def CAS(exp: Hashable | None, new: Hashable, swapped: bool, t0: float, t1: float) -> VOp:
    return VOp("cas", t0, t1, True, version=new if swapped else None, expected=exp, swapped=swapped)


def kinds(ops: Sequence[VOp], ch: Sequence[ChainVersion]) -> set[str]:
    return {a.kind for a in check_versioned(ops, ch).anomalies}


# --- targeted histories ---------------------------------------------------------------


def test_a_clean_history_passes() -> None:
    ops = [W(1, 0, 2), R(None, 0, 1), R(1, 1, 3), W(2, 3, 5), R(2, 4, 6), CAS(2, 3, True, 6, 7)]
    res = check_versioned(ops, chain(1, 2, 3))
    assert res.ok, str(res)


def test_stale_read_after_an_acknowledged_write() -> None:
    ops = [W(1, 0, 1), W(2, 2, 3), R(1, 4, 5)]
    res = check_versioned(ops, chain(1, 2))
    assert [a.kind for a in res.anomalies] == ["stale-read"]
    assert set(res.anomalies[0].ops) == {ops[1], ops[2]}


def test_a_read_concurrent_with_the_next_write_may_see_the_old_version() -> None:
    assert check_versioned([W(1, 0, 1), W(2, 2, 5), R(1, 4, 6)], chain(1, 2)).ok


def test_non_monotonic_reads_are_stale() -> None:
    # the write is still in flight, but one read saw 2 and a later one saw 1
    ops = [W(1, 0, 1), W(2, 2, 10), R(2, 3, 4), R(1, 5, 6)]
    assert kinds(ops, chain(1, 2)) == {"stale-read"}


def test_lost_write() -> None:
    ops = [W(1, 0, 1), W(2, 2, 3), R(1, 4, 5)]
    assert kinds(ops, chain(1)) == {"lost-write"}


def test_reordered_writes() -> None:
    # write 1 completed before write 2 began, yet the chain puts 2 first
    ops = [W(1, 0, 1), W(2, 2, 3)]
    res = check_versioned(ops, chain(2, 1))
    assert [a.kind for a in res.anomalies] == ["reordered-writes"]
    assert set(res.anomalies[0].ops) == set(ops)
    assert check_versioned(ops, chain(1, 2)).ok


def test_concurrent_writes_may_be_in_either_order() -> None:
    ops = [W(1, 0, 3), W(2, 1, 2)]
    assert check_versioned(ops, chain(2, 1)).ok and check_versioned(ops, chain(1, 2)).ok


def test_read_from_the_future() -> None:
    assert kinds([W(1, 5, 6), R(1, 0, 1)], chain(1)) == {"real-time"}


def test_sibling_heads_are_reported() -> None:
    ch = [ChainVersion(1), ChainVersion(2, (1,)), ChainVersion(3, (1,))]
    ops = [W(1, 0, 1), W(2, 2, 3), W(3, 2, 3)]
    assert "sibling" in kinds(ops, ch)
    order, anomalies = chain_order(ch)
    assert order == [1, 2, 3] and [a.kind for a in anomalies] == ["sibling"]
    merge = [*ch, ChainVersion(4, (2, 3))]
    assert {a.kind for a in chain_order(merge)[1]} == {"sibling", "merge"}


def test_two_roots_are_siblings() -> None:
    assert "sibling" in kinds([W(1, 0, 1), W(2, 0, 1)], [ChainVersion(1), ChainVersion(2)])


def test_unknown_writes_are_settled_by_the_chain() -> None:
    ops = [W(1, 0, 1), W(2, 2, None, ok=None), W(3, 2, None, ok=None), R(2, 10, 11)]
    res = check_versioned(ops, chain(1, 2))
    assert res.ok and (res.unknown_applied, res.unknown_dropped) == (1, 1)
    # an unknown write in the chain did happen: a read may not skip it later
    bad = [W(1, 0, 1), W(2, 2, None, ok=None), W(3, 20, 21), R(1, 30, 31)]
    assert kinds(bad, chain(1, 2, 3)) == {"stale-read"}


def test_a_failed_write_in_the_chain() -> None:
    assert kinds([W(1, 0, 1, ok=False)], chain(1)) == {"failed-write-applied", "phantom"}


def test_read_of_a_version_not_in_the_chain() -> None:
    assert kinds([W(1, 0, 1), R(9, 2, 3)], chain(1)) == {"unknown-version"}


def test_cas_must_follow_its_expected_version() -> None:
    ops = [W(1, 0, 1), W(2, 2, 3), CAS(1, 3, True, 4, 5)]
    assert kinds(ops, chain(1, 2, 3)) == {"cas"}
    assert check_versioned([W(1, 0, 1), CAS(1, 3, True, 4, 5)], chain(1, 3)).ok


def test_failed_cas_needs_a_moment_when_the_version_was_not_current() -> None:
    # 1 is current during the whole cas: it cannot have failed
    ops = [W(1, 0, 1), CAS(1, 5, False, 2, 3), W(2, 4, 5)]
    assert kinds(ops, chain(1, 2)) == {"cas"}
    # overlapping the next write, it may have come after it
    assert check_versioned([W(1, 0, 1), CAS(1, 5, False, 2, 4), W(2, 3, 5)], chain(1, 2)).ok
    # overlapping the write of 1 itself, it may have come before it
    assert check_versioned([W(1, 0, 3), CAS(1, 5, False, 2, 4)], chain(1)).ok
    # on the last version, after it was written
    assert kinds([W(1, 0, 1), CAS(1, 5, False, 2, 3)], chain(1)) == {"cas"}
    # expecting absence: it fails once the key is written, not before
    assert check_versioned([W(1, 0, 1), CAS(None, 5, False, 2, 3)], chain(1)).ok
    assert kinds([CAS(None, 5, False, 0, 1), W(1, 2, 3)], chain(1)) == {"cas"}
    assert kinds([CAS(None, 5, False, 2, 3)], []) == {"cas"}


def test_bad_input_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="kind"):
        check_versioned([VOp("delete", 0, 1)], [])
    with pytest.raises(ValueError, match="before it is invoked"):
        check_versioned([W(1, 2, 1)], chain(1))
    with pytest.raises(ValueError, match="cycle"):
        chain_order([ChainVersion(1, (2,)), ChainVersion(2, (1,))])


# --- agreement with the WGL search ---------------------------------------------------


class ChainRegister:
    """The register model with the writes forced into chain order (state: chain index)."""

    def __init__(self, order: Sequence[Hashable]) -> None:
        self.order = list(order)
        self.index = {v: i for i, v in enumerate(order, start=1)}

    def init(self) -> int:
        return 0

    def cur(self, k: int) -> Hashable | None:
        return self.order[k - 1] if k else None

    def step(self, k: int, op: Operation) -> tuple[bool, int]:
        if op.kind == "write":
            return self.index.get(op.input) == k + 1, k + 1
        if op.kind == "read":
            return op.ok is None or op.output == self.cur(k), k
        expected, new = op.input
        if op.ok is None:
            if expected != self.cur(k):
                return True, k
            return self.index.get(new) == k + 1, k + 1
        if op.output:
            return expected == self.cur(k) and self.index.get(new) == k + 1, k + 1
        return expected != self.cur(k), k

    def describe(self, k: int) -> str:
        return repr(self.cur(k))


def to_wgl(op: VOp, value: Hashable) -> Operation:
    if op.kind == "read":
        return Operation(0, "read", "x", None, op.version, op.invoke, op.complete, op.ok)
    if op.kind == "write":
        return Operation(0, "write", "x", value, None, op.invoke, op.complete, op.ok)
    return Operation(0, "cas", "x", (op.expected, value), op.swapped, op.invoke, op.complete, op.ok)


def generate(
    seed: int, n: int, spread: int, break_it: int
) -> tuple[list[VOp], list[Any], list[Hashable]]:
    """``(ops, values, chain)``: values[i] is what ops[i] writes (its version id)."""
    rng = random.Random(seed)
    cur: int | None = None
    order: list[Hashable] = []
    ops: list[VOp] = []
    values: list[Any] = []
    for i in range(n):
        t = 10 * i + rng.randrange(10)
        a, b = t - rng.randrange(spread + 1), t + rng.randrange(spread + 1)
        new = 100 + i
        kind = rng.choice(["read", "read", "write", "write", "cas"])
        if kind == "read":
            ok = rng.random() < 0.9
            ops.append(VOp("read", a, b, ok, version=cur if ok else None))
        elif kind == "write" or not order:
            fate = rng.random()
            if fate < 0.15:  # unknown, did not happen
                ops.append(VOp("write", a, None, None, version=None))
            elif fate < 0.3:  # unknown, happened
                order.append(new)
                cur = new
                ops.append(VOp("write", a, None, None, version=new))
            else:
                order.append(new)
                cur = new
                ops.append(VOp("write", a, b, True, version=new))
        else:
            exp = rng.choice([*order, None])
            if exp == cur:
                order.append(new)
                cur = new
                ops.append(VOp("cas", a, b, True, version=new, expected=exp, swapped=True))
            else:
                ops.append(VOp("cas", a, b, True, version=None, expected=exp, swapped=False))
        values.append(new)
    end = 10 * n + spread + 10
    ops.append(VOp("read", end, end + 1, True, version=cur))  # the harness's final read
    values.append(None)
    what = break_it % 5
    if break_it >= 5 or not ops:
        return ops, values, order
    j = rng.randrange(len(ops))
    op = ops[j]
    if what == 0 and op.kind == "read":
        ops[j] = VOp("read", op.invoke, op.complete, op.ok, version=rng.choice([*order, None]))
    elif what == 1:
        shift = rng.randrange(-3 * spread - 10, 3 * spread + 10)
        end_t = None if op.complete is None else op.complete + shift
        ops[j] = VOp(op.kind, op.invoke + shift, end_t, op.ok, op.version, op.expected, op.swapped)
    elif what == 2 and len(order) >= 2:
        k = rng.randrange(len(order) - 1)
        order[k], order[k + 1] = order[k + 1], order[k]
    elif what == 3 and order:
        order.remove(rng.choice(order))
    elif what == 4 and op.kind == "cas" and op.ok:
        ops[j] = VOp(
            "cas", op.invoke, op.complete, True, op.version, rng.choice([*order, None]), op.swapped
        )
    return ops, values, order


@settings(max_examples=600, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(1, 12),
    spread=st.integers(0, 40),
    break_it=st.integers(0, 9),
)
def test_agrees_with_the_wgl_search(seed: int, n: int, spread: int, break_it: int) -> None:
    ops, values, order = generate(seed, n, spread, break_it)
    mine = check_versioned(ops, chain(*order))
    # a write's value is its version id (an unknown write that did not happen: its own)
    wgl_ops = [
        to_wgl(op, op.version if op.version is not None else v)
        for op, v in zip(ops, values, strict=True)
    ]
    in_chain = check_operations(wgl_ops, ChainRegister(order))
    assert in_chain.verdict is not Verdict.UNKNOWN
    assert mine.ok == (in_chain.verdict is Verdict.LINEARIZABLE), (str(mine), str(in_chain))
    if mine.ok:
        free = check_operations(wgl_ops, RegisterModel())
        assert free.verdict is Verdict.LINEARIZABLE, str(free)
    if break_it >= 5:  # not broken: the real execution is a witness
        assert mine.ok, str(mine)
