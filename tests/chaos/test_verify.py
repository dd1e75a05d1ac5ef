"""Lost writes, replica convergence and HLC order, on collected data."""

from __future__ import annotations

from tidekv.chaos.verify import compare_replicas, hlc_violations, lost_writes


def test_lost_writes_counts_missing_acknowledged_versions() -> None:
    acked = {"a": {"v1": 1, "v2": 2}, "b": {"v3": 3}}
    histories = {"a": [{"version": "v1"}, {"version": "v2"}], "b": []}
    lost = lost_writes(acked, histories)
    assert lost.acked == 3 and lost.count == 1 and lost.missing == (("b", "v3", 3),)
    assert lost_writes(acked, {**histories, "b": [{"version": "v3"}]}).count == 0


def test_compare_replicas() -> None:
    same = {1: {"a": "v1"}, 2: {"a": "v1"}, 3: {"a": "v1"}}
    assert compare_replicas(same).converged
    differ = {1: {"a": "v1"}, 2: {"a": "v2"}, 3: {}}
    c = compare_replicas(differ)
    assert not c.converged and c.differences == {"a": {1: "v1", 2: "v2", 3: None}}
    assert not compare_replicas({}).converged


def test_hlc_violations() -> None:
    ok = {
        "k": [
            {"version": "b", "parents": ["a"], "hlc": "100.1"},
            {"version": "a", "parents": [], "hlc": "100.0"},
        ]
    }
    assert hlc_violations(ok) == []
    bad = {
        "k": [
            {"version": "b", "parents": ["a"], "hlc": "99.5"},
            {"version": "a", "parents": [], "hlc": "100.0"},
        ]
    }
    assert hlc_violations(bad) == [("k", "b", "a")]


def test_unknown_writes_are_settled_by_the_recovered_history() -> None:
    import hashlib

    from tidekv.chaos.history import FAIL, INFO, OK, ClientOp, to_check_operations
    from tidekv.chaos.verify import resolve_unknown
    from tidekv.check.linearizability import Verdict, check_history

    def digest(v: int) -> str:
        return hashlib.sha256(str(v).encode()).hexdigest()

    ops = [
        ClientOp(0, 1, "write", "k", 0, 1, OK, value=1, version="a"),
        ClientOp(1, 2, "write", "k", 2, 4, INFO, value=2, error="ReadTimeout"),  # happened
        ClientOp(2, 3, "write", "k", 2, 4, INFO, value=3, error="ReadTimeout"),  # did not
        ClientOp(0, 1, "read", "k", 5, 6, OK, value=3),  # ... yet someone read it
    ]
    history = {"k": [{"version": "a", "digest": digest(1)}, {"version": "b", "digest": digest(2)}]}
    settled, failed, applied = resolve_unknown(ops, history)
    assert (failed, applied) == (1, 1)
    assert [op.outcome for op in settled] == [OK, INFO, FAIL, OK]
    assert "not in the recovered history" in settled[2].error
    # unsettled, the read of 3 is explained by the timed-out write; settled, it is an anomaly
    assert check_history(to_check_operations(ops)).verdict is Verdict.LINEARIZABLE
    assert check_history(to_check_operations(settled)).verdict is Verdict.NOT_LINEARIZABLE


def test_an_applied_unknown_write_is_bounded_by_what_saw_it() -> None:
    import hashlib

    from tidekv.chaos.history import INFO, OK, ClientOp, to_check_operations
    from tidekv.chaos.verify import resolve_unknown
    from tidekv.check.linearizability import Verdict, check_history

    def entry(vid: str, value: int, parents: list[str]) -> dict[str, object]:
        return {
            "version": vid,
            "digest": hashlib.sha256(str(value).encode()).hexdigest(),
            "parents": parents,
        }

    history = {"k": [entry("c", 3, ["b"]), entry("b", 2, ["a"]), entry("a", 1, [])]}
    ops = [
        ClientOp(0, 1, "write", "k", 0, 1, OK, value=1, version="a"),
        ClientOp(1, 2, "cas", "k", 2, 9, INFO, value=2, expected=1, error="ReadTimeout"),
        ClientOp(2, 3, "write", "k", 3, 5, OK, value=3, version="c"),  # after b in the chain
    ]
    settled, failed, applied = resolve_unknown(ops, history)
    assert (failed, applied) == (0, 1)
    cas = settled[1]
    assert cas.outcome == OK and cas.complete == 5 and cas.swapped is True and cas.version == "b"
    assert check_history(to_check_operations(settled)).verdict is Verdict.LINEARIZABLE
    # the bound only states what the history already implies: same verdicts, found faster
    late = ClientOp(3, 1, "read", "k", 6, 7, OK, value=1, version="a")
    assert check_history(to_check_operations([*settled, late])).verdict is Verdict.NOT_LINEARIZABLE
    assert check_history(to_check_operations([*ops, late])).verdict is Verdict.NOT_LINEARIZABLE
    # without an acknowledged observer the cas stays unknown
    alone, _, _ = resolve_unknown(ops[:2], {"k": history["k"][1:]})
    assert alone[1].outcome == INFO


def test_register_histories_are_checked_against_the_recovered_chain() -> None:
    import hashlib

    from tidekv.chaos.history import FAIL, INFO, OK, ClientOp
    from tidekv.chaos.verify import check_registers, versioned_inputs

    def digest(v: int) -> str:
        return hashlib.sha256(str(v).encode()).hexdigest()

    history = {
        "k": [  # newest first, as GET /v1/kv/{key}/history answers
            {"version": "c", "parents": ["b"], "digest": digest(3)},
            {"version": "b", "parents": ["a"], "digest": digest(2)},
            {"version": "a", "parents": [], "digest": digest(1)},
        ]
    }
    ops = [
        ClientOp(0, 1, "read", "k", 0, 1, OK, value=None),
        ClientOp(0, 1, "write", "k", 1, 2, OK, value=1, version="a"),
        ClientOp(1, 2, "write", "k", 3, 9, INFO, value=2, error="ReadTimeout"),  # in the chain
        ClientOp(2, 3, "write", "k", 3, 4, INFO, value=7, error="ReadTimeout"),  # not
        ClientOp(1, 2, "read", "k", 5, 6, OK, value=2, version="b"),
        ClientOp(0, 1, "cas", "k", 7, 8, OK, value=3, expected=2, swapped=True, version="c"),
        ClientOp(2, 3, "cas", "k", 7, 8, OK, value=8, expected=1, swapped=False),
        ClientOp(2, 3, "read", "k", 9, 10, FAIL, error="ConnectError"),
    ]
    vops, chain = versioned_inputs(ops, history)["k"]
    assert [v.id for v in chain] == ["a", "b", "c"]
    assert [v.version for v in vops] == [None, "a", "b", None, "b", "c", None, None]
    assert vops[5].expected == "b" and vops[6].expected == "a"
    assert str(vops[4]) == "[5, 6] client 1 'k' read() -> 2"
    res = check_registers(ops, history)["k"]
    assert res.ok, str(res)
    assert (res.unknown_applied, res.unknown_dropped) == (1, 1)
    stale = [*ops, ClientOp(3, 1, "read", "k", 11, 12, OK, value=1, version="a")]
    bad = check_registers(stale, history)["k"]
    assert [a.kind for a in bad.anomalies] == ["stale-read"]
    assert "read() -> 1" in str(bad)


def test_the_runner_cross_checks_small_keys_with_the_wgl_search() -> None:
    import hashlib

    from tidekv.chaos.history import OK, ClientOp
    from tidekv.chaos.runner import _check
    from tidekv.check.linearizability import Verdict

    def digest(v: int) -> str:
        return hashlib.sha256(str(v).encode()).hexdigest()

    ops = [
        ClientOp(0, 1, "write", "k", 0, 1, OK, value=1, version="a"),
        ClientOp(1, 2, "write", "k", 2, 3, OK, value=2, version="b"),
        ClientOp(2, 3, "read", "k", 4, 5, OK, value=2, version="b"),
    ]
    in_order = {
        "k": [
            {"version": "b", "parents": ["a"], "digest": digest(2)},
            {"version": "a", "parents": [], "digest": digest(1)},
        ]
    }
    log: list[str] = []
    check, notes = _check(ops, in_order, 10_000, 2_000, log.append)
    assert check.verdict is Verdict.LINEARIZABLE and check.bad_keys == [] and check.text == []
    assert "WGL cross-check of 1 keys" in notes[0] and log == notes
    # the servers recorded b before a although a was acknowledged before b began: the
    # clients' view is linearizable (a, b), the recorded order is not
    reordered = {
        "k": [
            {"version": "a", "parents": ["b"], "digest": digest(1)},
            {"version": "b", "parents": [], "digest": digest(2)},
        ]
    }
    check, _ = _check(ops, reordered, 10_000, 2_000, log.append)
    assert check.verdict is Verdict.NOT_LINEARIZABLE and check.bad_keys == ["k"]
    assert "stale-read" in check.text[0]  # the read of b bounds a from below, binding
    assert "the checkers disagree on key 'k'" in check.text[1]
    assert "CHECKER BUG" not in check.text[1]
    # above the cross-check size only the version check runs
    check, notes = _check(ops, reordered, 10_000, 2, log.append)
    assert len(check.text) == 1 and "WGL cross-check of 0 keys" in notes[0]
