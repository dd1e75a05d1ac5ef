"""The linearizability checker on known histories, and on generated ones.

Each hand-made history says in its name what it is; the property tests generate
histories from a sequential execution (always linearizable) and then break one read.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidekv.check import Operation, RegisterModel, Verdict, check_history, check_operations


def w(c: int, v: object, t0: float, t1: float | None, ok: bool | None = True, key: str = "x"):
    return Operation(c, "write", key, v, None, t0, t1, ok)


def r(c: int, v: object, t0: float, t1: float | None, ok: bool | None = True, key: str = "x"):
    return Operation(c, "read", key, None, v, t0, t1, ok)


def cas(
    c: int,
    old: object,
    new: object,
    swapped: bool | None,
    t0: float,
    t1: float | None,
    ok: bool | None = True,
    key: str = "x",
):
    return Operation(c, "cas", key, (old, new), swapped, t0, t1, ok)


def lin(ops: list[Operation]) -> bool:
    res = check_history(ops)
    assert res.verdict is not Verdict.UNKNOWN
    return res.ok


# --- linearizable -------------------------------------------------------------------


def test_empty_history_is_linearizable() -> None:
    assert lin([])


def test_read_of_initial_value() -> None:
    assert lin([r(1, None, 0, 1)])


def test_sequential_write_then_read() -> None:
    assert lin([w(1, 1, 0, 1), r(2, 1, 2, 3)])


def test_read_concurrent_with_write_may_see_either_value() -> None:
    assert lin([w(1, 1, 0, 1), w(1, 2, 2, 10), r(2, 1, 3, 4), r(3, 2, 5, 6)])


def test_overlapping_ops_whose_order_differs_from_invoke_order() -> None:
    # write(2) is invoked after write(1) but linearized before it
    ops = [w(1, 1, 0, 10), w(2, 2, 1, 5), r(3, 1, 11, 12)]
    assert lin(ops)


def test_cas_chain_concurrent() -> None:
    ops = [
        w(1, 0, 0, 1),
        cas(2, 0, 1, True, 2, 10),
        cas(3, 1, 2, True, 3, 9),  # must go after client 2's CAS, fine: both overlap
        r(4, 2, 11, 12),
    ]
    assert lin(ops)


def test_failed_cas_sees_a_different_value() -> None:
    assert lin([w(1, 5, 0, 1), cas(2, 4, 9, False, 2, 3), r(3, 5, 4, 5)])


def test_definitely_failed_write_is_ignored() -> None:
    assert lin([w(1, 1, 0, 1), w(2, 9, 2, 3, ok=False), r(3, 1, 4, 5)])


def test_unknown_write_that_took_effect_later() -> None:
    # the client timed out at t=3, yet the write becomes visible at t=20
    ops = [w(1, 1, 0, 1), w(2, 2, 2, None, ok=None), r(3, 1, 4, 5), r(3, 2, 20, 21)]
    assert lin(ops)


def test_unknown_write_that_never_took_effect() -> None:
    ops = [w(1, 1, 0, 1), w(2, 2, 2, None, ok=None), r(3, 1, 4, 5), r(3, 1, 20, 21)]
    assert lin(ops)


def test_unknown_cas_may_take_effect() -> None:
    ops = [w(1, 1, 0, 1), cas(2, 1, 7, None, 2, None, ok=None), r(3, 7, 10, 11)]
    assert lin(ops)


def test_keys_are_independent() -> None:
    ops = [
        w(1, 1, 0, 1, key="a"),
        w(1, 2, 2, 3, key="b"),
        r(2, 1, 4, 5, key="a"),
        r(2, 2, 4, 5, key="b"),
    ]
    assert lin(ops)


def test_touching_ops_count_as_concurrent() -> None:
    # the read is invoked at the instant the write completes: either order is allowed
    assert lin([w(1, 1, 0, 5), r(2, None, 5, 6)])


# --- not linearizable ---------------------------------------------------------------


def test_stale_read_after_completed_write() -> None:
    res = check_history([w(1, 1, 0, 1), w(1, 2, 2, 3), r(2, 1, 4, 5)])
    assert res.verdict is Verdict.NOT_LINEARIZABLE
    assert res.key == "x"
    bad = res.failing
    assert bad is not None
    # the explanation names the stale read among the ops that could not come next
    assert any(op.kind == "read" and op.output == 1 for op in bad.stuck)
    assert "read() -> 1" in res.explanation


def test_two_readers_see_writes_in_opposite_orders() -> None:
    ops = [
        w(1, 1, 0, 10),
        w(2, 2, 0, 10),
        r(3, 1, 1, 2),
        r(3, 2, 3, 4),  # reader 3: 1 then 2
        r(4, 2, 1, 2),
        r(4, 1, 3, 4),  # reader 4: 2 then 1
    ]
    assert not lin(ops)


def test_lost_cas() -> None:
    # both CAS(0 -> own id) report success: one of them was lost
    ops = [w(0, 0, 0, 1), cas(1, 0, 1, True, 2, 5), cas(2, 0, 2, True, 2, 5)]
    assert not lin(ops)


def test_lost_write_after_acknowledged_cas() -> None:
    ops = [w(0, 0, 0, 1), cas(1, 0, 1, True, 2, 3), r(2, 0, 4, 5)]
    assert not lin(ops)


def test_read_of_never_written_value() -> None:
    res = check_history([w(1, 1, 0, 1), r(2, 42, 2, 3)])
    assert not res.ok and res.verdict is Verdict.NOT_LINEARIZABLE


def test_failed_cas_that_should_have_succeeded() -> None:
    assert not lin([w(1, 4, 0, 1), cas(2, 4, 9, False, 2, 3)])


def test_definitely_failed_write_must_not_be_visible() -> None:
    assert not lin([w(1, 1, 0, 1), w(2, 9, 2, 3, ok=False), r(3, 9, 4, 5)])


def test_unknown_write_cannot_take_effect_before_its_invoke() -> None:
    ops = [w(1, 1, 0, 1), r(3, 2, 2, 3), w(2, 2, 4, None, ok=None)]
    assert not lin(ops)


def test_value_flipping_back_is_caught() -> None:
    # after 2 was read, the value cannot revert to 1 without a new write
    ops = [w(1, 1, 0, 1), w(2, 2, 2, 10), r(3, 2, 3, 4), r(3, 1, 5, 6)]
    assert not lin(ops)


def test_one_bad_key_among_good_ones() -> None:
    ops = [
        w(1, 1, 0, 1, key="a"),
        r(1, 1, 2, 3, key="a"),
        w(1, 1, 0, 1, key="b"),
        r(1, None, 2, 3, key="b"),
    ]
    res = check_history(ops)
    assert res.verdict is Verdict.NOT_LINEARIZABLE and res.key == "b"


# --- bounds and input checks --------------------------------------------------------


def test_step_bound_answers_unknown() -> None:
    # many concurrent writes and one impossible read: the search must explore a lot
    ops = [w(i, i, 0, 100) for i in range(14)] + [r(99, -1, 101, 102)]
    res = check_history(ops, max_steps=50)
    assert res.verdict is Verdict.UNKNOWN and res.unknown and not res.ok
    assert "undecided" in res.explanation
    # without the bound it is decided (memoisation keeps it small: 2^14 subsets)
    assert check_history(ops).verdict is Verdict.NOT_LINEARIZABLE


def test_completion_before_invoke_is_rejected() -> None:
    with pytest.raises(ValueError):
        check_history([w(1, 1, 5, 4)])


def test_unknown_operation_kind_is_rejected() -> None:
    with pytest.raises(ValueError):
        check_history([Operation(1, "append", "x", 1, None, 0, 1, True)])


# --- generated histories ------------------------------------------------------------


def sequential_history(rnd: random.Random, n: int, clients: int, keys: int) -> list[Operation]:
    """Run ``n`` random operations one at a time against a dict, then widen each
    operation's [invoke, complete] interval around its real instant with random jitter.

    Operation i happens at instant 10*i; it is invoked somewhere in (10*(i-k), 10*i]
    and completes somewhere in [10*i, 10*(i+k)). The real instants stay inside the
    intervals, so the sequential order is a valid linearization: the history is
    linearizable whatever the overlaps. Some writes get an unknown outcome.
    """
    model: dict[str, int] = {}
    ops: list[Operation] = []
    for i in range(n):
        key = f"k{rnd.randrange(keys)}"
        c = rnd.randrange(clients)
        t = 10 * i
        t0 = t - rnd.uniform(0, 10 * rnd.choice((0.5, 2, 5)))
        t1 = t + rnd.uniform(0, 10 * rnd.choice((0.5, 2, 5)))
        kind = rnd.choice(("write", "read", "cas"))
        cur = model.get(key)
        if kind == "write":
            v = rnd.randrange(5)
            model[key] = v
            if rnd.random() < 0.1:
                ops.append(Operation(c, kind, key, v, None, t0, None, None))
            else:
                ops.append(Operation(c, kind, key, v, None, t0, t1, True))
        elif kind == "read":
            ops.append(Operation(c, kind, key, None, cur, t0, t1, True))
        else:
            old = rnd.choice((cur, rnd.randrange(5)))
            new = rnd.randrange(5)
            swapped = old == cur
            if swapped:
                model[key] = new
            ops.append(Operation(c, kind, key, (old, new), swapped, t0, t1, True))
    return ops


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(0, 60), keys=st.integers(1, 3))
def test_generated_sequential_histories_are_linearizable(seed: int, n: int, keys: int) -> None:
    ops = sequential_history(random.Random(seed), n, clients=5, keys=keys)
    res = check_history(ops)
    assert res.ok, res.explanation


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 60), keys=st.integers(1, 3))
def test_reading_an_impossible_value_is_not_linearizable(seed: int, n: int, keys: int) -> None:
    rnd = random.Random(seed)
    ops = sequential_history(rnd, n, clients=5, keys=keys)
    reads = [i for i, op in enumerate(ops) if op.kind == "read"]
    if not reads:
        ops.append(Operation(0, "read", "k0", None, None, 10 * n, 10 * n + 1, True))
        reads = [len(ops) - 1]
    i = rnd.choice(reads)
    bad = ops[i]
    # 999 is never written, so no order explains it
    ops[i] = Operation(bad.client, "read", bad.key, None, 999, bad.invoke, bad.complete, True)
    res = check_history(ops)
    assert res.verdict is Verdict.NOT_LINEARIZABLE
    assert res.key == bad.key


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_stale_read_mutation_is_caught(seed: int) -> None:
    # strictly sequential history (no overlap), then make one read return the value
    # from two writes ago: with no overlap that is always stale
    rnd = random.Random(seed)
    ops: list[Operation] = []
    t = 0
    for v in range(1, 6):
        ops.append(w(0, v, t, t + 1))
        ops.append(r(1, v, t + 2, t + 3))
        t += 4
    i = rnd.randrange(2, 5)  # one of the reads after the 3rd write
    stale = ops[2 * i + 1]
    ops[2 * i + 1] = r(1, stale.output - 1, stale.invoke, stale.complete)
    assert check_history(ops).verdict is Verdict.NOT_LINEARIZABLE
    assert check_operations(ops[: 2 * i + 1], key="x").verdict is Verdict.LINEARIZABLE


def test_a_few_thousand_operations_per_key_are_decided() -> None:
    """Size, not speed: 3000 ops on one key with overlap are decided within a step
    budget that is linear in the history (no exponential blow-up)."""
    ops = sequential_history(random.Random(7), 3000, clients=8, keys=1)
    res = check_history(ops, max_steps=200 * len(ops))
    assert res.ok, res.explanation


def test_model_is_pluggable() -> None:
    class Counter:
        def init(self) -> int:
            return 0

        def step(self, state: int, op: Operation) -> tuple[bool, int]:
            if op.kind == "inc":
                return True, state + 1
            return op.ok is None or op.output == state, state

        def describe(self, state: int) -> str:
            return str(state)

    ops = [Operation(1, "inc", "c", None, None, 0, 5), Operation(2, "get", "c", None, 1, 1, 2)]
    assert check_history(ops, Counter()).ok
    ops.append(Operation(2, "get", "c", None, 0, 6, 7))
    assert not check_history(ops, Counter()).ok
    assert RegisterModel().init() is None


def test_many_unknown_writes_do_not_blow_up_the_search() -> None:
    """25 writes with unknown outcomes overlap everything, then an impossible read: the
    dominance cut decides it without trying all 2^25 subsets of the unknown writes."""
    ops = [w(i, 100 + i, 0, None, ok=None) for i in range(25)]
    ops += [w(99, 1, 0, 1), r(98, 1, 2, 3), r(98, -5, 4, 5)]
    res = check_history(ops, max_steps=100_000)
    assert res.verdict is Verdict.NOT_LINEARIZABLE, res.explanation
    # and with a possible read instead, it is linearizable
    ops[-1] = r(98, 117, 4, 5)
    assert check_history(ops, max_steps=100_000).ok


def test_unknown_write_needed_by_a_failed_cas_is_kept() -> None:
    # the CAS(expected=1) failed, so something other than 1 was there: the unknown
    # write(7), never read, is what explains it
    ops = [w(1, 1, 0, 1), w(2, 7, 2, None, ok=None), cas(3, 1, 5, False, 10, 11)]
    assert lin(ops)
    ops[1] = w(2, 7, 2, 3, ok=False)  # had it definitely failed: not linearizable
    assert not lin(ops)


def test_simplify_keeps_observed_unknown_writes() -> None:
    ops = [w(1, 5, 0, None, ok=None), w(2, 6, 0, None, ok=None), r(3, 5, 1, 2)]
    kept = RegisterModel().simplify(ops)
    assert [op.input for op in kept if op.kind == "write"] == [5]
