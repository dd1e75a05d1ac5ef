"""Recorded client operations, how an HTTP answer becomes an outcome, and the
conversion to the linearizability checker's :class:`~tidekv.check.linearizability.Operation`.

Pure: the workload measures times and catches exceptions; this module only decides
what they mean.

Outcomes (as in Jepsen): ``ok`` (it happened, and this is what it returned), ``fail``
(it certainly did not happen) and ``info`` (unknown: it may have happened, at any time
after its invocation). A write or compare-and-set that timed out, lost its connection
mid-request or got a 5xx is unknown; one whose connection was refused never reached a
node and failed. A read that did not return a value failed (a read has no effect, so
"unknown" would say nothing more).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tidekv.check.linearizability import Operation

__all__ = [
    "FAIL",
    "INFO",
    "OK",
    "ClientOp",
    "classify_error",
    "classify_response",
    "to_check_operations",
]

OK = "ok"
FAIL = "fail"
INFO = "info"

#: transport errors raised before any byte of the request could reach a node
_NOT_SENT = {"ConnectError", "ConnectTimeout", "PoolTimeout"}


@dataclass(frozen=True, slots=True)
class ClientOp:
    """One operation as a client saw it (times in seconds since the workload began).

    ``kind``: ``read`` / ``write`` / ``cas``. ``value`` is the value written (write), the
    value read (read, ``None`` when absent) or the new value (cas); ``expected`` is a
    cas's expected value. ``swapped`` is a completed cas's result. ``version`` is the
    version id the node answered with (a write's new version, a read's ETag).
    """

    client: int
    node: int
    kind: str
    key: str
    invoke: float
    complete: float
    outcome: str
    value: int | None = None
    expected: int | None = None
    swapped: bool | None = None
    version: str | None = None
    error: str = ""

    @property
    def latency(self) -> float:
        return self.complete - self.invoke


def classify_response(kind: str, status: int, code: str = "") -> tuple[str, bool | None]:
    """``(outcome, swapped)`` for an HTTP answer to a read, write or cas.

    412 to a cas is a completed cas that did not swap. A read's 404 is a completed
    read of an absent key (the caller records ``value=None``).
    """
    if status == 200:
        return OK, True if kind == "cas" else None
    if kind == "read":
        return (OK, None) if status == 404 and code == "not_found" else (FAIL, None)
    if kind == "cas" and status == 412:
        return OK, False
    if status >= 500:
        return INFO, None
    # 4xx: the request was refused before anything was proposed
    return FAIL, None


def classify_error(kind: str, exc_name: str) -> str:
    """The outcome of an operation whose request raised the transport error ``exc_name``."""
    if kind == "read" or exc_name in _NOT_SENT:
        return FAIL
    return INFO


def _to_op(op: ClientOp) -> Operation:
    ok: bool | None = {OK: True, FAIL: False, INFO: None}[op.outcome]
    complete: float | None = op.complete if ok is not None else None
    if op.kind == "read":
        return Operation(op.client, "read", op.key, None, op.value, op.invoke, complete, ok)
    if op.kind == "write":
        return Operation(op.client, "write", op.key, op.value, None, op.invoke, complete, ok)
    if op.kind == "cas":
        return Operation(
            op.client, "cas", op.key, (op.expected, op.value), op.swapped, op.invoke, complete, ok
        )
    raise ValueError(f"unknown operation kind {op.kind!r}")


def to_check_operations(ops: Iterable[ClientOp]) -> list[Operation]:
    """The history in the checker's terms (each value is the register's state)."""
    return [_to_op(op) for op in ops]


def acknowledged_versions(ops: Iterable[ClientOp]) -> dict[str, dict[str, Any]]:
    """Per key, the version ids of acknowledged writes and swaps, with the value written."""
    out: dict[str, dict[str, Any]] = {}
    for op in ops:
        if (
            op.outcome == OK
            and op.kind in ("write", "cas")
            and op.version
            and op.swapped is not False
        ):
            out.setdefault(op.key, {})[op.version] = op.value
    return out
