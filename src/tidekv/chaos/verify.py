"""The end-of-run checks that are not linearizability, on data the runner collected.

Pure: the runner reads each key's history from the healed cluster and each node's
state with ``consistency=stale``; these functions only compare.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tidekv.chaos.history import FAIL, INFO, OK, ClientOp, to_check_operations
from tidekv.check.linearizability import Operation
from tidekv.check.versioned import ChainVersion, VersionedResult, VOp, check_versioned

__all__ = [
    "Convergence",
    "Lost",
    "applied_values",
    "check_registers",
    "compare_replicas",
    "hlc_violations",
    "lost_writes",
    "resolve_unknown",
    "versioned_inputs",
]


@dataclass(frozen=True, slots=True)
class Lost:
    """Acknowledged writes (``acked``) missing from the recovered histories."""

    acked: int
    missing: tuple[tuple[str, str, Any], ...] = ()  # (key, version, value)

    @property
    def count(self) -> int:
        return len(self.missing)


def lost_writes(
    acked: Mapping[str, Mapping[str, Any]], histories: Mapping[str, Sequence[Mapping[str, Any]]]
) -> Lost:
    """Every acknowledged version id must appear in its key's recovered history."""
    missing = []
    total = 0
    for key, versions in acked.items():
        present = {str(v["version"]) for v in histories.get(key, ())}
        for vid, value in versions.items():
            total += 1
            if vid not in present:
                missing.append((key, vid, value))
    return Lost(total, tuple(missing))


@dataclass(frozen=True, slots=True)
class Convergence:
    converged: bool
    nodes: tuple[int, ...]
    keys: int
    #: key -> {node: version or None}, for every key on which the nodes differ
    differences: dict[str, dict[int, str | None]] = field(default_factory=dict)


def compare_replicas(states: Mapping[int, Mapping[str, str]]) -> Convergence:
    """``states``: node -> {key: current version}. Converged when all maps are equal."""
    nodes = tuple(sorted(states))
    keys = sorted({k for s in states.values() for k in s})
    diff: dict[str, dict[int, str | None]] = {}
    for k in keys:
        seen = {n: states[n].get(k) for n in nodes}
        if len(set(seen.values())) > 1:
            diff[k] = seen
    return Convergence(not diff and len(nodes) > 0, nodes, len(keys), diff)


def _hlc(text: str) -> tuple[int, int]:
    wall, _, logical = str(text).partition(".")
    return int(wall), int(logical or 0)


def hlc_violations(
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
) -> list[tuple[str, str, str]]:
    """Versions whose HLC time is not after a parent's: ``(key, version, parent)``.

    A child is written after its parents, so its time stamp must be larger, whatever the
    writing node's wall clock did (the HLC's monotonicity, seen from the data).
    """
    bad = []
    for key, versions in histories.items():
        by_id = {str(v["version"]): v for v in versions}
        for v in versions:
            for parent in v.get("parents", ()):
                p = by_id.get(str(parent))
                if p is not None and _hlc(v["hlc"]) <= _hlc(p["hlc"]):
                    bad.append((key, str(v["version"]), str(parent)))
    return bad


def applied_values(histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, set[str]]:
    """Per key, the value digests of every version in its recovered history."""
    return {k: {str(v.get("digest", "")) for v in vs} for k, vs in histories.items()}


def _observed_by(
    ops: Sequence[ClientOp], histories: Mapping[str, Sequence[Mapping[str, Any]]]
) -> dict[tuple[str, str], float]:
    """Per (key, version): the earliest completion of an acknowledged operation that saw
    this version or a later one (a read of it, the write that made it, or either of
    those for a descendant). The version was applied before that instant."""
    seen: dict[tuple[str, str], float] = {}
    for op in ops:
        if op.outcome != OK or not op.version or op.swapped is False:
            continue
        k = (op.key, op.version)
        seen[k] = min(seen.get(k, math.inf), op.complete)
    best: dict[tuple[str, str], float] = {}
    for key, versions in histories.items():
        children: dict[str, list[str]] = {}
        for v in versions:
            for parent in v.get("parents", ()):
                children.setdefault(str(parent), []).append(str(v["version"]))
        # newest first: every child comes before its parents
        for v in versions:
            vid = str(v["version"])
            t = seen.get((key, vid), math.inf)
            for c in children.get(vid, ()):
                t = min(t, best.get((key, c), math.inf))
            best[(key, vid)] = t
    return best


def resolve_unknown(
    ops: Sequence[ClientOp], histories: Mapping[str, Sequence[Mapping[str, Any]]]
) -> tuple[list[ClientOp], int, int]:
    """Settle unknown writes with the recovered histories: ``(ops, failed, applied)``.

    Every applied write leaves a version in its key's history, and every workload value
    is unique, so an unknown write or cas whose value is in no version of its key
    certainly did not take effect: it becomes ``fail`` (that it is absent is itself
    checked: a read that saw its value is then an anomaly). One whose value is there did
    take effect: it swapped, if a cas, and it took effect before any acknowledged
    operation saw its version or a later one completed; with such an operation it becomes
    ``ok`` completing at that instant (the true instant lies inside the window, so no
    linearization is lost), else it stays unknown. Without this the checker would have to
    consider every timed-out write as possibly pending forever (exponential in them).
    """
    present: dict[str, dict[str, str]] = {
        k: {str(v.get("digest", "")): str(v["version"]) for v in vs} for k, vs in histories.items()
    }
    bound = _observed_by(ops, histories)
    out: list[ClientOp] = []
    failed = applied = 0
    for op in ops:
        if op.outcome == INFO and op.kind in ("write", "cas") and op.value is not None:
            digest = hashlib.sha256(str(op.value).encode()).hexdigest()
            vid = present.get(op.key, {}).get(digest)
            if vid is None:
                failed += 1
                op = replace(op, outcome=FAIL, error=op.error + " (not in the recovered history)")
            else:
                applied += 1
                t = bound.get((op.key, vid), math.inf)
                if op.invoke <= t < math.inf:
                    op = replace(
                        op,
                        outcome=OK,
                        complete=t,
                        version=vid,
                        swapped=True if op.kind == "cas" else None,
                        error=op.error + " (applied: bounded by the recovered history)",
                    )
        out.append(op)
    return out, failed, applied


def _digest(value: Any) -> str:
    return hashlib.sha256(str(value).encode()).hexdigest()


def versioned_inputs(
    ops: Sequence[ClientOp], histories: Mapping[str, Sequence[Mapping[str, Any]]]
) -> dict[str, tuple[list[VOp], list[ChainVersion]]]:
    """Per key, the operations in version terms and the chain (oldest first).

    A write's version is the one its answer named, else the version whose digest is its
    value's (values are unique); a read's is its ETag (else found by value); a cas's
    expected value becomes the version that wrote it (a value in no version becomes a
    name no version has: such a cas must fail). Each operation keeps the generic
    checker's record of it for the report.
    """
    out: dict[str, tuple[list[VOp], list[ChainVersion]]] = {}
    by_digest: dict[str, dict[str, str]] = {}
    for key, versions in histories.items():
        chain = [
            ChainVersion(str(v["version"]), tuple(str(p) for p in v.get("parents", ())))
            for v in reversed(versions)  # the history is newest first
        ]
        out[key] = ([], chain)
        by_digest[key] = {str(v.get("digest", "")): str(v["version"]) for v in versions}
    checked: list[Operation] = to_check_operations(ops)
    for op, ref in zip(ops, checked, strict=True):
        vops, _ = out.setdefault(op.key, ([], []))
        found = by_digest.get(op.key, {})
        ok: bool | None = {OK: True, FAIL: False, INFO: None}[op.outcome]
        complete = op.complete if ok is not None else None
        version: str | None = op.version
        if op.value is not None and version is None:
            version = found.get(_digest(op.value))
        if op.kind == "read":
            vops.append(VOp("read", op.invoke, complete, ok, version, ref=ref))
            continue
        expected: str | None = None
        if op.kind == "cas" and op.expected is not None:
            expected = found.get(_digest(op.expected), f"(value {op.expected}, in no version)")
        if op.kind == "cas" and op.swapped is False:
            version = None
        vops.append(VOp(op.kind, op.invoke, complete, ok, version, expected, op.swapped, ref))
    return out


def check_registers(
    ops: Sequence[ClientOp], histories: Mapping[str, Sequence[Mapping[str, Any]]]
) -> dict[str, VersionedResult]:
    """Every key's operations checked against its recovered version chain."""
    return {
        key: check_versioned(vops, chain, key=key)
        for key, (vops, chain) in versioned_inputs(ops, histories).items()
    }
