"""What an HTTP answer means for the checker, and the conversion of a recorded history."""

from __future__ import annotations

from tidekv.chaos.history import (
    FAIL,
    INFO,
    OK,
    ClientOp,
    acknowledged_versions,
    classify_error,
    classify_response,
    to_check_operations,
)
from tidekv.check.linearizability import Verdict, check_history


def test_classify_response() -> None:
    assert classify_response("write", 200) == (OK, None)
    assert classify_response("cas", 200) == (OK, True)
    assert classify_response("cas", 412, "precondition_failed") == (OK, False)
    assert classify_response("read", 404, "not_found") == (OK, None)
    assert classify_response("read", 503, "unavailable") == (FAIL, None)
    assert classify_response("write", 503, "timeout") == (INFO, None)
    assert classify_response("cas", 500, "storage_error") == (INFO, None)
    assert classify_response("write", 400, "invalid_input") == (FAIL, None)


def test_classify_error() -> None:
    assert classify_error("write", "ConnectError") == FAIL  # never reached a node
    assert classify_error("write", "ReadTimeout") == INFO
    assert classify_error("cas", "RemoteProtocolError") == INFO
    assert classify_error("read", "ReadTimeout") == FAIL  # a read has no effect


def _w(c: int, v: int, t0: float, t1: float, outcome: str = OK) -> ClientOp:
    return ClientOp(c, 1, "write", "k", t0, t1, outcome, value=v, version=f"v{v}")


def _r(c: int, v: int | None, t0: float, t1: float) -> ClientOp:
    return ClientOp(c, 1, "read", "k", t0, t1, OK, value=v)


def test_a_stale_read_is_an_anomaly_and_a_fresh_one_is_not() -> None:
    ops = [_w(0, 1, 0, 1), _w(0, 2, 2, 3), _r(1, 2, 4, 5)]
    assert check_history(to_check_operations(ops)).verdict is Verdict.LINEARIZABLE
    stale = [*ops[:2], _r(1, 1, 4, 5)]
    assert check_history(to_check_operations(stale)).verdict is Verdict.NOT_LINEARIZABLE


def test_unknown_writes_may_or_may_not_have_happened() -> None:
    ops = [_w(0, 1, 0, 1), _w(0, 2, 2, 3, INFO), _r(1, 2, 10, 11), _r(1, 2, 12, 13)]
    assert check_history(to_check_operations(ops)).verdict is Verdict.LINEARIZABLE
    # a failed write certainly did not happen: reading its value is an anomaly
    failed = [_w(0, 1, 0, 1), _w(0, 2, 2, 3, FAIL), _r(1, 2, 10, 11)]
    assert check_history(to_check_operations(failed)).verdict is Verdict.NOT_LINEARIZABLE


def test_cas_conversion() -> None:
    ops = [
        _w(0, 1, 0, 1),
        ClientOp(0, 1, "cas", "k", 2, 3, OK, value=5, expected=1, swapped=True, version="v5"),
        ClientOp(1, 1, "cas", "k", 4, 5, OK, value=6, expected=1, swapped=False),
        _r(1, 5, 6, 7),
    ]
    conv = to_check_operations(ops)
    assert conv[1].input == (1, 5) and conv[1].output is True
    assert check_history(conv).verdict is Verdict.LINEARIZABLE
    # a cas that reports swapping from a value the register no longer had
    bad = [*ops[:2], ClientOp(1, 1, "cas", "k", 4, 5, OK, value=6, expected=1, swapped=True)]
    assert check_history(to_check_operations(bad)).verdict is Verdict.NOT_LINEARIZABLE
    assert acknowledged_versions(ops) == {"k": {"v1": 1, "v5": 5}}
