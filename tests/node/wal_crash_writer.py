"""The WAL tests' model of log operations, and the child process of the SIGKILL test.

An :class:`Op` is one write the Raft driver makes on a group's log (append, hard state,
compaction, installed snapshot) or a sync of the whole node log. :func:`apply_model`
feeds it to a :class:`MemoryStorage` (the reference), :func:`apply_group` to a
:class:`GroupStorage`; :func:`answers` is everything the ``Storage`` protocol says about
a log, so two logs agree when their answers are equal.

Run as ``python wal_crash_writer.py PATH SEED GROUPS`` it opens a NodeLog at PATH and
performs :func:`plan` (seeded, endless) for the comma-separated GROUPS, printing
``<ops done>\\n`` on stdout after every sync returns: the acknowledgement.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tidekv.node.logstore import GroupStorage, NodeLog
from tidekv.raft import (
    CompactedError,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    LogUnavailable,
    MemoryStorage,
    Snapshot,
    SnapshotMeta,
)

#: segments this small make the crash test rotate and checkpoint often
CRASH_SEGMENT_SIZE = 48 << 10


@dataclass(frozen=True)
class Op:
    kind: str  # append | hs | compact | snapshot | sync
    group: int = 0
    entries: tuple[Entry, ...] = ()
    hs: HardState = field(default_factory=HardState)
    meta: SnapshotMeta = field(default_factory=SnapshotMeta)

    def __repr__(self) -> str:
        if self.kind == "append":
            e = self.entries
            return f"append(g{self.group}, {e[0].index}..{e[-1].index} t{e[0].term})"
        if self.kind == "hs":
            return f"hs(g{self.group}, {self.hs.term}/{self.hs.vote}/{self.hs.commit})"
        if self.kind in ("compact", "snapshot"):
            return f"{self.kind}(g{self.group}, {self.meta.index} t{self.meta.term})"
        return self.kind


def payload(group: int, index: int, term: int, size: int) -> bytes:
    """Deterministic entry data: says whose it is, padded to ``size`` bytes."""
    head = b"g%d i%d t%d " % (group, index, term)
    return (head * (size // len(head) + 1))[: max(size, len(head))]


def apply_model(m: MemoryStorage, op: Op) -> None:
    """The reference semantics of ``op`` on an in-memory log."""
    if op.kind == "append":
        m.append(list(op.entries))
    elif op.kind == "hs":
        m.set_hard_state(op.hs)
    elif op.kind == "compact":
        offset = m.first_index() - 1
        if op.meta.index <= offset:
            return
        m.create_snapshot(op.meta.index, op.meta.conf, b"")  # LogUnavailable past the end
        m.compact(op.meta.index)
    elif op.kind == "snapshot":
        m.apply_snapshot(Snapshot(op.meta, b"snapshot data"))
    else:
        raise AssertionError(f"not a group op: {op}")


def apply_group(g: GroupStorage, op: Op) -> None:
    if op.kind == "append":
        g.append(list(op.entries))
    elif op.kind == "hs":
        g.set_hard_state(op.hs)
    elif op.kind == "compact":
        g.compact(op.meta.index, op.meta.conf)
    elif op.kind == "snapshot":
        g.apply_snapshot(Snapshot(op.meta, b"snapshot data"))
    else:
        raise AssertionError(f"not a group op: {op}")


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except (CompactedError, LogUnavailable) as exc:
        return type(exc).__name__


def answers(s: Any, *, all_ranges: bool = True) -> dict[str, Any]:
    """Everything the Storage protocol answers about a log (``s``: any Storage).

    ``all_ranges``: every ``entries(lo, hi)`` around the log, else one full read.
    """
    first, last = s.first_index(), s.last_index()
    snap = s.snapshot()
    out: dict[str, Any] = {
        "initial_state": s.initial_state(),
        "first": first,
        "last": last,
        "snapshot_meta": snap.meta,
        "terms": [(i, _outcome(s.term, i)) for i in range(first - 2, last + 3)],
        "all": _outcome(s.entries, first, last + 1),
        "below": _outcome(s.entries, first - 1, last + 1),
        "above": _outcome(s.entries, first, last + 2),
    }
    if all_ranges:
        out["ranges"] = [
            (lo, hi, _outcome(s.entries, lo, hi))
            for lo in range(first - 1, last + 2)
            for hi in range(lo, last + 3)
        ]
        out["limited"] = [
            (n, _outcome(s.entries, first, last + 1, n)) for n in (0, 1, 40, 200, 1000)
        ]
    return out


def clone(m: MemoryStorage) -> MemoryStorage:
    """A copy of ``m`` built through its public API (snapshot data is dropped)."""
    meta = m.snapshot().meta
    c = MemoryStorage(meta.conf)
    if meta.index:
        c.apply_snapshot(Snapshot(meta))
    c.append(m.entries(m.first_index(), m.last_index() + 1))
    c.set_hard_state(m.hard_state)
    return c


def plan(seed: int, groups: list[int]) -> Iterator[Op]:
    """The endless op sequence of the crash test: Raft-like writes, a sync every step.

    Each step writes to some of ``groups``: a batch of entries (sometimes replacing a
    tail of the log with a newer term), the hard state, now and then a compaction or an
    installed snapshot; then one sync covers the step.
    """
    rng = random.Random(seed)
    model = {g: MemoryStorage() for g in groups}
    term = dict.fromkeys(groups, 1)
    conf = ConfState(voters=frozenset({1, 2, 3}))
    while True:
        for g in rng.sample(groups, rng.randint(1, len(groups))):
            m = model[g]
            last = m.last_index()
            start = last + 1
            if last - m.first_index() > 3 and rng.random() < 0.15:
                start = rng.randint(max(m.first_index(), last - 8), last)
                term[g] += 1
            t = term[g]
            sizes = [rng.choice((20, 150, 150, 150, 900)) for _ in range(rng.randint(1, 24))]
            if rng.random() < 0.02:
                sizes[0] = 40_000  # a big payload now and then
            ents = tuple(
                Entry(t, start + k, EntryKind.NORMAL, payload(g, start + k, t, n))
                for k, n in enumerate(sizes)
            )
            for op in (
                Op("append", g, entries=ents),
                Op("hs", g, hs=HardState(t, 1, max(m.first_index() - 1, ents[-1].index - 5))),
            ):
                apply_model(m, op)
                yield op
            r = rng.random()
            if r < 0.25 and m.last_index() - m.first_index() > 10:
                idx = rng.randint(max(m.first_index(), m.last_index() - 30), m.last_index() - 5)
                op = Op("compact", g, meta=SnapshotMeta(idx, m.term(idx), conf))
                apply_model(m, op)
                yield op
            elif r < 0.27:
                idx = m.last_index() + rng.randint(1, 30)
                term[g] += 1
                op = Op("snapshot", g, meta=SnapshotMeta(idx, term[g], conf))
                apply_model(m, op)
                yield op
        yield Op("sync")


def main(argv: list[str]) -> None:
    path, seed, groups_arg = argv
    groups = [int(g) for g in groups_arg.split(",")]
    log = NodeLog(path, max_segment_size=CRASH_SEGMENT_SIZE)
    for done, op in enumerate(plan(int(seed), groups), 1):
        if op.kind == "sync":
            log.sync()
            os.write(1, b"%d\n" % done)  # acknowledged: every op before it is durable
        else:
            apply_group(log.group(op.group), op)


if __name__ == "__main__":
    main(sys.argv[1:])
