"""A linearizability checker for client histories (Wing & Gong, with Lowe's memoisation).

A history is a list of :class:`Operation` records: who called what, with which input,
what came back, and when the call started (``invoke``) and ended (``complete``). The
history is *linearizable* if every operation can be given one instant between its invoke
and its completion such that, executed one by one in that order, a sequential model
(:class:`RegisterModel`) produces exactly the outputs that were observed.

The search is the one of Porcupine and Knossos ("Testing for Linearizability", Lowe 2017;
"Faster linearizability checking via P-compositionality", Horn & Kroening 2015):

* every operation becomes two events, *call* and *return*, in one time-ordered linked
  list; at equal times calls come first, so touching operations count as concurrent
  (the permissive reading: a checker must never report a false violation);
* walk the list from the head; at a call, try to apply the operation to the model; if
  the model accepts it and the pair (set of linearized operations, model state) was not
  seen before, *lift* the operation out of the list (linearize it now), push it on a
  stack and restart from the head; at a return whose operation is still in the list,
  no order works on this branch: pop the last linearized operation, put it back, and try
  the next call after it;
* the memo of (linearized-set bitmask, model state) pairs is Lowe's improvement: a branch
  that reaches a configuration already explored is cut.

Operations with an unknown outcome never block anything (their return is at infinity)
and may be left out, so a configuration is *dominated* by one with the same known ops
linearized, the same model state, and a subset of the unknown ones linearized: it has
every option the other has, and more. The memo therefore keeps, per (known set, state),
the unknown sets seen, and cuts a branch whose unknown set contains one of them. With no
unknown operations this is exactly Lowe's memo; with many it avoids trying every subset
of them (each unknown write would otherwise double the worst-case search).

Outcomes:

* ``ok=True``: the operation took effect and ``output`` is what it returned;
* ``ok=False``: the operation definitely did not take effect (it is left out);
* ``ok=None``: unknown (a timeout, a lost leader). It may have taken effect at any
  instant after its invoke, or never: its completion is +infinity and the search may
  drop it. Its ``output`` is not known, so the model accepts any output for it.

Histories are split by key and each key is checked alone: a register per key is a
P-compositional model, so the whole history is linearizable exactly when every per-key
history is. The search can be bounded (``max_steps`` per key): it then answers
``unknown`` instead of running forever. No wall clock is read, so a verdict replays.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

__all__ = [
    "CheckResult",
    "KeyResult",
    "Model",
    "Operation",
    "RegisterModel",
    "Verdict",
    "check_history",
    "check_operations",
]

S = TypeVar("S", bound=Hashable)

_INF = math.inf


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation as the client saw it.

    ``kind`` is ``"write"`` (input: the value), ``"read"`` (output: the value read,
    ``None`` if the key was never written) or ``"cas"`` (input: ``(expected, new)``,
    output: ``True`` if it swapped, ``False`` if the current value differed).
    ``complete`` is ``None`` when the client never heard back; ``ok=None`` marks the
    outcome as unknown.
    """

    client: int | str
    kind: str
    key: Hashable
    input: Any = None
    output: Any = None
    invoke: float | int = 0
    complete: float | int | None = None
    ok: bool | None = True

    def __str__(self) -> str:
        end = "?" if self.complete is None or self.ok is None else f"{self.complete:g}"
        status = {True: "", False: " FAILED", None: " UNKNOWN"}[self.ok]
        if self.kind == "write":
            body = f"write({self.input!r})"
        elif self.kind == "read":
            body = f"read() -> {self.output!r}" if self.ok else "read()"
        elif self.kind == "cas":
            exp, new = self.input
            body = f"cas({exp!r}, {new!r})" + (f" -> {self.output!r}" if self.ok else "")
        else:
            body = f"{self.kind}({self.input!r}) -> {self.output!r}"
        return f"[{self.invoke:g}, {end}] client {self.client} {self.key!r} {body}{status}"


class Model(Protocol[S]):
    """A sequential specification: an initial state and a step function.

    ``step`` returns ``(accepted, next_state)``: whether the operation, applied in
    ``state``, could have produced what was observed. When ``op.ok`` is ``None`` the
    output was not observed and any output is acceptable.
    """

    def init(self) -> S: ...

    def step(self, state: S, op: Operation) -> tuple[bool, S]: ...

    def describe(self, state: S) -> str: ...


class RegisterModel:
    """A read/write/compare-and-set register; the initial value is ``None``."""

    def init(self) -> Any:
        return None

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        kind = op.kind
        if kind == "write":
            return True, op.input
        if kind == "read":
            # an unknown read has no effect, so it is always acceptable
            return op.ok is None or op.output == state, state
        if kind == "cas":
            expected, new = op.input
            if op.ok is None:  # outcome unknown: if it happened, it did what CAS does
                return True, new if state == expected else state
            if op.output:
                return state == expected, new
            return state != expected, state
        raise ValueError(f"RegisterModel: unknown operation kind {kind!r}")

    def describe(self, state: Any) -> str:
        return repr(state)

    def simplify(self, ops: Sequence[Operation]) -> list[Operation]:
        """Drop unknown-outcome writes and CASes that no one could have observed.

        Such an operation only ever sets the register to a value ``v``; if no read
        returned ``v`` and no CAS expected ``v``, the only way its effect shows is by
        making a failed CAS fail (the value was not the expected one). So when the key's
        history has no failed CAS, any linearization that uses it stays valid without it
        (the register just keeps its previous value until the next write), and leaving
        it out is exact. Each unknown write kept doubles the worst-case search, so this
        matters for histories with many timeouts.
        """
        observed: set[Any] = set()
        for op in ops:
            if op.kind == "cas" and op.ok is True and op.output is False:
                return list(ops)
            if op.kind == "read" and op.ok is True:
                observed.add(op.output)
            elif op.kind == "cas":
                observed.add(op.input[0])
        out: list[Operation] = []
        for op in ops:
            if op.ok is None or op.complete is None:
                v = op.input if op.kind == "write" else op.input[1] if op.kind == "cas" else None
                if op.kind in ("write", "cas") and v not in observed:
                    continue
                if op.kind == "read":
                    continue  # an unknown read has no effect and says nothing
            out.append(op)
        return out


class Verdict(enum.Enum):
    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    UNKNOWN = "unknown"  # the step bound was reached first


@dataclass(frozen=True, slots=True)
class KeyResult:
    """The verdict for one key's history."""

    key: Hashable
    verdict: Verdict
    steps: int
    operations: int
    #: the longest sequence of operations the search managed to linearize (in order)
    longest_prefix: tuple[Operation, ...] = ()
    #: the operations that were still pending when the search got stuck
    stuck: tuple[Operation, ...] = ()
    #: the model state after ``longest_prefix``
    state: str = ""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict for a whole history: linearizable iff every key is."""

    verdict: Verdict
    keys: tuple[KeyResult, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """True only when the history is proven linearizable."""
        return self.verdict is Verdict.LINEARIZABLE

    @property
    def unknown(self) -> bool:
        return self.verdict is Verdict.UNKNOWN

    @property
    def failing(self) -> KeyResult | None:
        """The first key that is not linearizable (or, failing that, undecided)."""
        for want in (Verdict.NOT_LINEARIZABLE, Verdict.UNKNOWN):
            for k in self.keys:
                if k.verdict is want:
                    return k
        return None

    @property
    def key(self) -> Hashable | None:
        bad = self.failing
        return None if bad is None else bad.key

    @property
    def states_explored(self) -> int:
        return sum(k.steps for k in self.keys)

    @property
    def explanation(self) -> str:
        bad = self.failing
        if bad is None:
            n = sum(k.operations for k in self.keys)
            return (
                f"linearizable: {n} operations on {len(self.keys)} keys, "
                f"{self.states_explored} steps"
            )
        if bad.verdict is Verdict.UNKNOWN:
            return (
                f"key {bad.key!r}: undecided after {bad.steps} steps "
                f"({bad.operations} operations); raise max_steps"
            )
        lines = [
            f"key {bad.key!r}: not linearizable ({bad.operations} operations, {bad.steps} steps)",
            f"  longest linearizable prefix: {len(bad.longest_prefix)} operations"
            f" ending in state {bad.state}; its last ones:",
        ]
        lines += [f"    {op}" for op in bad.longest_prefix[-8:]]
        lines.append("  none of these can come next:")
        lines += [f"    {op}" for op in bad.stuck[:12]]
        if len(bad.stuck) > 12:
            lines.append(f"    ... and {len(bad.stuck) - 12} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.explanation


class _Budget(Exception):
    pass


class _KeyChecker(Generic[S]):
    """The search over one key's history (an object only to keep the loop readable)."""

    def __init__(self, model: Model[S], ops: Sequence[Operation]) -> None:
        self.model = model
        self.ops = ops

    def run(self, key: Hashable, max_steps: int | None) -> KeyResult:
        ops = self.ops
        n = len(ops)
        model = self.model
        # Events 1..2n; 0 is the head sentinel and 2n+1 the tail sentinel.
        # Event layout: sort (time, return?, op) so calls come before returns at ties.
        raw: list[tuple[float, int, int]] = []
        for i, op in enumerate(ops):
            end: float = _INF if op.ok is None or op.complete is None else float(op.complete)
            if end < op.invoke:
                raise ValueError(f"operation completes before it is invoked: {op}")
            raw.append((float(op.invoke), 0, i))
            raw.append((end, 1, i))
        raw.sort()
        size = 2 * n + 2
        tail = size - 1
        ev_op = [0] * size
        ev_is_call = [False] * size
        ev_unknown_ret = [False] * size
        match = [0] * size  # call event -> its return event
        call_of = [0] * n
        for pos, (t, is_ret, i) in enumerate(raw, start=1):
            ev_op[pos] = i
            if is_ret:
                match[call_of[i]] = pos
                ev_unknown_ret[pos] = t == _INF
            else:
                ev_is_call[pos] = True
                call_of[i] = pos
        nxt = list(range(1, size + 1))
        prv = list(range(-1, size - 1))

        unknown_op = [op.ok is None or op.complete is None for op in ops]
        state: S = model.init()
        known = 0  # bitmask of linearized ops with a known outcome
        unknown = 0  # bitmask of linearized ops with an unknown outcome
        stack: list[tuple[int, S]] = []
        seen: dict[tuple[int, S], list[int]] = {}
        steps = 0
        best_len = -1
        best_order: list[int] = []
        best_state: S = state
        best_pending: list[int] = []
        step = model.step

        entry = nxt[0]
        try:
            while True:
                if entry == tail or ev_unknown_ret[entry]:
                    # everything with a known completion is linearized; what remains
                    # (unknown outcomes) may be dropped
                    return KeyResult(key, Verdict.LINEARIZABLE, steps, n)
                if ev_is_call[entry]:
                    i = ev_op[entry]
                    steps += 1
                    if max_steps is not None and steps > max_steps:
                        raise _Budget
                    accepted, new_state = step(state, ops[i])
                    if accepted:
                        bit = 1 << i
                        if unknown_op[i]:
                            new_known, new_unknown = known, unknown | bit
                        else:
                            new_known, new_unknown = known | bit, unknown
                        memo = (new_known, new_state)
                        prior = seen.get(memo)
                        if prior is None:
                            seen[memo] = [new_unknown]
                            fresh = True
                        else:
                            # dominated if an explored unknown set is a subset of ours
                            fresh = all(u & ~new_unknown for u in prior)
                            if fresh:
                                prior.append(new_unknown)
                        if fresh:
                            stack.append((entry, state))
                            state = new_state
                            known, unknown = new_known, new_unknown
                            # lift: take the call and its return out of the list
                            ret = match[entry]
                            nxt[prv[entry]] = nxt[entry]
                            prv[nxt[entry]] = prv[entry]
                            nxt[prv[ret]] = nxt[ret]
                            prv[nxt[ret]] = prv[ret]
                            entry = nxt[0]
                            continue
                    entry = nxt[entry]
                    continue
                # a return event of an operation that is not linearized yet: backtrack
                if len(stack) > best_len:
                    best_len = len(stack)
                    best_order = [ev_op[c] for c, _ in stack]
                    best_state = state
                    best_pending = self._pending(nxt, ev_op, ev_is_call, tail, entry)
                if not stack:
                    break
                call, state = stack.pop()
                i = ev_op[call]
                if unknown_op[i]:
                    unknown &= ~(1 << i)
                else:
                    known &= ~(1 << i)
                # unlift: put the return back, then the call (reverse of the lift)
                ret = match[call]
                nxt[prv[ret]] = ret
                prv[nxt[ret]] = ret
                nxt[prv[call]] = call
                prv[nxt[call]] = call
                entry = nxt[call]
        except _Budget:
            return KeyResult(key, Verdict.UNKNOWN, steps - 1, n)
        return KeyResult(
            key,
            Verdict.NOT_LINEARIZABLE,
            steps,
            n,
            longest_prefix=tuple(ops[i] for i in best_order),
            stuck=tuple(ops[i] for i in best_pending),
            state=model.describe(best_state),
        )

    @staticmethod
    def _pending(
        nxt: list[int], ev_op: list[int], ev_is_call: list[bool], tail: int, blocking: int
    ) -> list[int]:
        """The operations whose calls precede the blocking return (the candidates that
        were tried and refused), the blocking operation first."""
        out = [ev_op[blocking]]
        e = nxt[0]
        while e != tail and e != blocking:
            if ev_is_call[e] and ev_op[e] != out[0]:
                out.append(ev_op[e])
            e = nxt[e]
        return out


def check_operations(
    ops: Sequence[Operation],
    model: Model[Any] | None = None,
    *,
    key: Hashable = None,
    max_steps: int | None = None,
) -> KeyResult:
    """Check one key's history (no partitioning). ``ok=False`` operations are dropped."""
    mdl: Model[Any] = model or RegisterModel()
    kept = [op for op in ops if op.ok is not False]
    simplify = getattr(mdl, "simplify", None)
    if simplify is not None:
        kept = simplify(kept)
    return _KeyChecker(mdl, kept).run(key, max_steps)


def check_history(
    ops: Iterable[Operation],
    model: Model[Any] | None = None,
    *,
    max_steps: int | None = None,
    stop_at_first: bool = True,
) -> CheckResult:
    """Check a whole history, one key at a time (keys in first-seen order).

    ``max_steps`` bounds the model steps spent on each key; a key that runs out is
    ``unknown`` (and so is the history, unless another key is not linearizable).
    """
    mdl: Model[Any] = model or RegisterModel()
    by_key: dict[Hashable, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    results: list[KeyResult] = []
    verdict = Verdict.LINEARIZABLE
    for k, key_ops in by_key.items():
        r = check_operations(key_ops, mdl, key=k, max_steps=max_steps)
        results.append(r)
        if r.verdict is Verdict.NOT_LINEARIZABLE:
            verdict = Verdict.NOT_LINEARIZABLE
            if stop_at_first:
                break
        elif r.verdict is Verdict.UNKNOWN and verdict is Verdict.LINEARIZABLE:
            verdict = Verdict.UNKNOWN
    return CheckResult(verdict, tuple(results))
