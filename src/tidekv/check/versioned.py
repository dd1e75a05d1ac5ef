"""A linear-time register checker that uses the recovered version order.

The generic checker (:mod:`tidekv.check.linearizability`) must *find* an order of the
writes, which is exponential in the worst case. tidekv tells us that order: every write
creates a version whose parents are the previous heads, and after the run each key's
history (``GET /v1/kv/{key}/history``) lists them. With one Raft group per key the
versions form a chain ``v1 < v2 < ... < vm``; before ``v1`` the key is absent (``v0``).
This is the version-order inference of Elle (Kingsbury & Alvaro, "Elle: Inferring
Isolation Anomalies from Experimental Observations", VLDB 2020): once the write order and
the reads-from relation are known, checking is a matter of bounds, not search (as in
Gibbons & Korach, "Testing Shared Memories", SIAM J. Comput. 1997, where the
reads-from-known register case is polynomial).

**What is checked.** An operation has an interval ``[invoke, complete]`` (``complete =
+inf`` for an unknown outcome). The history is linearizable *with the writes in chain
order* iff there are points ``p(op)`` in the intervals whose order is a legal sequential
register history. Ties count as concurrent (an operation that completes at the instant
another is invoked may be ordered either way), as in the generic checker.

Let ``P_i`` be the point of the write of ``v_i`` (``P_0 = -inf``, ``P_{m+1} = +inf``).

* writes: ``P_1 <= P_2 <= ... <= P_m`` and ``P_i in [s_i, e_i]`` (the write's interval);
* a read ``[a, b]`` that returned ``v_k`` needs a point in ``[a, b]`` between ``P_k`` and
  ``P_{k+1}``: that is exactly ``P_k <= b`` and ``P_{k+1} >= a`` (two intervals meet
  iff each starts before the other ends). So a read is an upper bound on its version's
  write and a lower bound on the next write: the version it returned was written before
  the read completed, and the next one was not written before the read was invoked;
* a successful CAS is a write whose chain predecessor must be its expected version;
* a failed CAS ``[a, b]`` expecting ``v_j`` needs a point at which the current version
  is not ``v_j``: ``P_j >= a`` (before ``v_j``; impossible for ``j = 0``) or
  ``P_{j+1} <= b`` (after the next write; impossible for ``j = m``).

Plain bounds make ``lo_i <= P_i <= hi_i``; monotonicity is then checked in one forward
pass keeping the feasible set of ``P_i`` given the constraints on ``P_1..P_i``: an
interval ``[L_i, H_i]`` with ``L_i = max(L_{i-1}, lo_i)``, ``H_i = hi_i``. A failed
CAS between ``P_j`` and ``P_{j+1}`` is a disjunction, but the interval survives it: if
``H_j >= a`` take ``P_j`` as large as allowed (``min(P_{j+1}, H_j) >= a`` whenever
``P_{j+1} >= a``, and otherwise ``P_{j+1} < a <= b``), so it constrains nothing; if
``H_j < a`` the first disjunct is impossible and ``H_{j+1} <= b``. The history is
linearizable in chain order iff no ``[L_i, H_i]`` is empty: ``O(n + m)`` after grouping.
This is the exact condition (tests compare it with the generic search restricted to the
chain order, and with the unrestricted search).

**Anomalies** (each with the operations involved):

* ``lost-write``: an acknowledged write whose version is not in the chain;
* ``failed-write-applied``: a write that certainly failed, yet its version is there;
* ``phantom``: a version in the chain that no operation wrote; ``duplicate-writer``;
* ``unknown-version``: a read (or CAS) of a version that is not in the chain;
* ``sibling`` / ``merge``: a version with two children or two parents — concurrent heads,
  which a linearizable register never has; the check goes on in a topological order;
* ``cas``: a successful CAS whose chain predecessor is not the version it expected, or a
  failed CAS that no point of its interval can explain;
* ``stale-read``, ``reordered-writes``, ``real-time``: an empty ``[L_i, H_i]``, named
  after the two operations that set its bounds (a read invoked after ``v_i`` was
  written saw an older version; a write invoked after a later-in-chain write completed;
  a read saw a version before it or an earlier one was written).

Unknown writes are settled by the chain: one whose version is there happened (its
interval is ``[invoke, +inf)``), one whose version is not did not (it is dropped).

Pure: no clocks, I/O or randomness; times are whatever numbers the caller recorded.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Anomaly",
    "ChainVersion",
    "VOp",
    "VersionedResult",
    "chain_order",
    "check_versioned",
]

_INF = math.inf


@dataclass(frozen=True, slots=True)
class VOp:
    """One operation on one key, in version terms.

    ``kind``: ``read`` / ``write`` / ``cas``. ``ok``: ``True`` (it happened, and this is
    what it returned), ``False`` (it certainly did not happen) or ``None`` (unknown).
    ``version``: for a write or cas, the version it created if known (for an unknown
    one, the version found in the chain for its value, else ``None``); for a read, the
    version it returned (``None``: the key was absent). ``expected``: a cas's expected
    version (``None``: absent). ``swapped``: a completed cas's result. ``ref`` is shown
    in reports (the caller's own record of the operation).
    """

    kind: str
    invoke: float
    complete: float | None
    ok: bool | None = True
    version: Hashable | None = None
    expected: Hashable | None = None
    swapped: bool | None = None
    ref: Any = None

    @property
    def writes(self) -> bool:
        """Whether it is (or may be) a write: a write or a cas that did not fail to swap."""
        if self.kind == "write":
            return True
        return self.kind == "cas" and not (self.ok is True and self.swapped is False)

    @property
    def end(self) -> float:
        return _INF if self.ok is None or self.complete is None else float(self.complete)

    def __str__(self) -> str:
        if self.ref is not None:
            return str(self.ref)
        end = "?" if self.end == _INF else f"{self.end:g}"
        status = {True: "", False: " FAILED", None: " UNKNOWN"}[self.ok]
        body = f"{self.kind} {self.version!r}"
        if self.kind == "cas":
            body += f" if {self.expected!r}" + (" (no swap)" if self.swapped is False else "")
        return f"[{self.invoke:g}, {end}] {body}{status}"


@dataclass(frozen=True, slots=True)
class ChainVersion:
    """One version of the recovered history: its id and its parents' ids."""

    id: Hashable
    parents: tuple[Hashable, ...] = ()


@dataclass(frozen=True, slots=True)
class Anomaly:
    kind: str
    message: str
    ops: tuple[VOp, ...] = ()

    def __str__(self) -> str:
        lines = [f"{self.kind}: {self.message}"]
        lines += [f"    {op}" for op in self.ops]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class VersionedResult:
    """The verdict for one key: linearizable iff there is no anomaly."""

    key: Hashable
    operations: int
    versions: int
    anomalies: tuple[Anomaly, ...] = ()
    #: unknown writes found in the chain (they happened) and not found (they did not)
    unknown_applied: int = 0
    unknown_dropped: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.anomalies

    def __str__(self) -> str:
        if self.ok:
            return (
                f"key {self.key!r}: linearizable in chain order "
                f"({self.operations} operations, {self.versions} versions)"
            )
        head = (
            f"key {self.key!r}: not linearizable ({self.operations} operations, "
            f"{self.versions} versions): {len(self.anomalies)} anomalies "
            + ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items()))
        )
        return "\n".join([head, *(f"  {a}" for a in self.anomalies[:10])])


def chain_order(versions: Iterable[ChainVersion]) -> tuple[list[Hashable], list[Anomaly]]:
    """The versions oldest first, and any sibling (two children) or merge (two parents).

    A topological order, ties broken by the order given; parents that are not among the
    versions (a compacted prefix) are ignored.
    """
    vs = list(versions)
    ids = {v.id for v in vs}
    anomalies: list[Anomaly] = []
    children: dict[Hashable, list[Hashable]] = {}
    indeg: dict[Hashable, int] = {}
    for v in vs:
        parents = [p for p in v.parents if p in ids]
        indeg[v.id] = len(parents)
        if len(parents) > 1:
            anomalies.append(Anomaly("merge", f"version {v.id!r} has parents {parents!r}"))
        for p in parents:
            children.setdefault(p, []).append(v.id)
    for p, cs in children.items():
        if len(cs) > 1:
            anomalies.append(
                Anomaly("sibling", f"version {p!r} has concurrent children {cs!r} (sibling heads)")
            )
    pos = {v.id: i for i, v in enumerate(vs)}
    ready = sorted((v.id for v in vs if indeg[v.id] == 0), key=pos.__getitem__, reverse=True)
    roots = len(ready)
    if roots > 1:
        anomalies.append(Anomaly("sibling", f"{roots} versions without a parent (sibling roots)"))
    order: list[Hashable] = []
    while ready:
        vid = ready.pop()
        order.append(vid)
        new = []
        for c in children.get(vid, ()):
            indeg[c] -= 1
            if indeg[c] == 0:
                new.append(c)
        ready += sorted(new, key=pos.__getitem__, reverse=True)
    if len(order) < len(vs):
        raise ValueError("the version history has a cycle")
    return order, anomalies


@dataclass(slots=True)
class _Bound:
    value: float
    op: VOp | None
    what: str


def check_versioned(
    ops: Sequence[VOp], chain: Sequence[ChainVersion], *, key: Hashable = None
) -> VersionedResult:
    """Check one key's operations against its recovered version chain."""
    order, anomalies = chain_order(chain)
    m = len(order)
    index: dict[Hashable, int] = {vid: i for i, vid in enumerate(order, start=1)}
    writer: list[VOp | None] = [None] * (m + 1)
    applied = dropped = 0
    for op in ops:
        if op.kind not in ("read", "write", "cas"):
            raise ValueError(f"unknown operation kind {op.kind!r}")
        if op.complete is not None and op.complete < op.invoke:
            raise ValueError(f"operation completes before it is invoked: {op}")
        if not op.writes:
            continue
        i = index.get(op.version) if op.version is not None else None
        if i is None:
            if op.ok is True:
                anomalies.append(
                    Anomaly(
                        "lost-write",
                        f"acknowledged version {op.version!r} is not in the chain",
                        (op,),
                    )
                )
            elif op.ok is None:
                dropped += 1
            continue
        if op.ok is False:
            anomalies.append(
                Anomaly(
                    "failed-write-applied",
                    f"a failed write's version {op.version!r} is in the chain",
                    (op,),
                )
            )
            continue
        if op.ok is None:
            applied += 1
        prior = writer[i]
        if prior is not None:
            anomalies.append(
                Anomaly("duplicate-writer", f"two writes made version {op.version!r}", (prior, op))
            )
            continue
        writer[i] = op
        if op.kind == "cas":
            before = order[i - 2] if i >= 2 else None
            if op.expected != before:
                anomalies.append(
                    Anomaly(
                        "cas",
                        f"cas expecting {op.expected!r} made version {op.version!r}, "
                        f"whose predecessor in the chain is {before!r}",
                        (op,),
                    )
                )

    lo = [_Bound(-_INF, None, "") for _ in range(m + 2)]
    hi = [_Bound(_INF, None, "") for _ in range(m + 2)]
    for i in range(1, m + 1):
        w = writer[i]
        if w is None:
            anomalies.append(Anomaly("phantom", f"no operation wrote version {order[i - 1]!r}"))
            continue
        lo[i] = _Bound(float(w.invoke), w, "write-invoke")
        hi[i] = _Bound(w.end, w, "write-complete")

    def lower(i: int, a: float, op: VOp, what: str) -> None:
        if a > lo[i].value:
            lo[i] = _Bound(a, op, what)

    def upper(i: int, b: float, op: VOp, what: str) -> None:
        if b < hi[i].value:
            hi[i] = _Bound(b, op, what)

    failed_cas: list[list[VOp]] = [[] for _ in range(m + 1)]
    for op in ops:
        if op.ok is not True or op.writes:
            continue
        seen = op.version if op.kind == "read" else op.expected
        k = 0 if seen is None else index.get(seen)
        a, b = float(op.invoke), op.end
        if k is None:
            if op.kind == "read":
                anomalies.append(
                    Anomaly(
                        "unknown-version",
                        f"read returned version {seen!r}, not in the chain",
                        (op,),
                    )
                )
            continue  # a cas expecting a version that never was: it must fail, and did
        if op.kind == "read":
            if k >= 1:
                upper(k, b, op, "read-complete")
            if k < m:
                lower(k + 1, a, op, "read-invoke")
        elif k == 0:
            if m == 0:
                anomalies.append(
                    Anomaly("cas", "cas expecting absence failed on an absent key", (op,))
                )
            else:
                upper(1, b, op, "cas-complete")
        elif k == m:
            lower(m, a, op, "cas-invoke")
        else:
            failed_cas[k].append(op)

    low = _Bound(-_INF, None, "")
    prev_high = _INF
    for i in range(1, m + 1):
        if lo[i].value > low.value:
            low = lo[i]
        high = hi[i]
        for c in failed_cas[i - 1] if i >= 2 else ():
            if prev_high < c.invoke and c.end < high.value:
                high = _Bound(c.end, c, "cas-complete")
        if low.value > high.value:
            anomalies.append(_conflict(order, i, low, high, writer[i]))
            low = _Bound(high.value, high.op, high.what)
        prev_high = high.value
    kinds: dict[str, int] = {}
    for an in anomalies:
        kinds[an.kind] = kinds.get(an.kind, 0) + 1
    return VersionedResult(key, len(ops), m, tuple(anomalies), applied, dropped, kinds)


def _conflict(
    order: Sequence[Hashable], i: int, low: _Bound, high: _Bound, w: VOp | None
) -> Anomaly:
    vid = order[i - 1]
    lw, hw = low.what, high.what
    if lw.startswith("cas") or hw.startswith("cas"):
        kind = "cas"
    elif lw == "read-invoke":
        kind = "stale-read"
    elif hw == "write-complete":
        kind = "reordered-writes"
    else:
        kind = "real-time"
    why = {
        "write-invoke": "a write at or before it in the chain was invoked then",
        "read-invoke": "a read of an older version was invoked then",
        "cas-invoke": "a cas that failed on it (it was not current yet) was invoked then",
        "write-complete": "its write was acknowledged then",
        "read-complete": "a read that returned it completed then",
        "cas-complete": "a cas that failed on the version before it completed then",
    }
    msg = (
        f"version {vid!r} (#{i} in the chain) must take effect at or after {low.value:g} "
        f"({why[lw]}) and at or before {high.value:g} ({why[hw]})"
    )
    ops = tuple(o for o in (low.op, high.op) if o is not None)
    if w is not None and w not in ops:
        ops += (w,)
    return Anomaly(kind, msg, ops)
