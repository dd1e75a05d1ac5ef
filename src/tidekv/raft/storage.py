"""Log storage: the :class:`Storage` protocol the core reads, and :class:`MemoryStorage`.

The core only *reads* storage (etcd's ``storage.go``). The driver writes it while it
handles a :class:`~tidekv.raft.rawnode.Ready`: append ``rd.entries``, set
``rd.hard_state``, apply ``rd.snapshot``, all before sending ``rd.persisted_messages``
and before calling ``advance``. Compaction (``compact``/``create_snapshot``) is the
driver's decision too.

Index conventions (as in etcd): the log holds entries ``first_index() .. last_index()``;
the entry just before the first one is represented by the snapshot (its index and term),
so ``term(first_index() - 1)`` works and returns the snapshot's term.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Protocol

from tidekv.raft.errors import CompactedError, LogUnavailable
from tidekv.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta

NO_LIMIT = 1 << 62
"""``max_size`` that never limits."""

ENTRY_OVERHEAD = 16
"""Bytes counted per entry on top of its payload when batching by size."""


_data = attrgetter("data")


def limit_size(ents: list[Entry], max_size: int) -> list[Entry]:
    """The longest prefix of ``ents`` within ``max_size`` bytes, but at least one entry."""
    n = len(ents)
    if max_size >= NO_LIMIT or n <= 1:
        return ents
    # common case first, summed at C speed: everything fits
    if sum(map(len, map(_data, ents))) + n * ENTRY_OVERHEAD <= max_size:
        return ents
    size = 0
    for i, e in enumerate(ents):
        size += len(e.data) + ENTRY_OVERHEAD
        if size > max_size and i > 0:
            return ents[:i]
    return ents


class Storage(Protocol):
    """What the Raft core reads. Implementations raise the errors named below."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the membership of the latest snapshot."""
        ...

    def entries(self, lo: int, hi: int, max_size: int = NO_LIMIT) -> list[Entry]:
        """Entries ``[lo, hi)``, cut to ``max_size`` bytes but at least one.

        Raises ``CompactedError`` if ``lo <= first_index() - 1`` was compacted away and
        ``LogUnavailable`` if ``hi > last_index() + 1``.
        """
        ...

    def term(self, i: int) -> int:
        """Term of entry ``i``, for ``first_index() - 1 <= i <= last_index()``.

        Raises ``CompactedError`` below that range, ``LogUnavailable`` above it.
        """
        ...

    def first_index(self) -> int:
        """Index of the first entry still in the log (snapshot index + 1)."""
        ...

    def last_index(self) -> int:
        """Index of the last entry (the snapshot index when the log is empty)."""
        ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot (may raise ``SnapshotTemporarilyUnavailable``)."""
        ...


class MemoryStorage:
    """An in-memory :class:`Storage` for tests and the simulator.

    ``_ents[0]`` is a dummy entry holding the snapshot's (term, index); ``_ents[k]`` is
    the entry at index ``_ents[0].index + k``. ``entries`` is one list slice.
    """

    __slots__ = ("_ents", "_hard_state", "_snapshot")

    def __init__(self, conf: ConfState | None = None) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot(meta=SnapshotMeta(conf=conf or ConfState()))
        self._ents: list[Entry] = [Entry(0, 0)]

    # -- Storage (read side) --------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.meta.conf

    def entries(self, lo: int, hi: int, max_size: int = NO_LIMIT) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError(f"entry {lo} compacted (first is {offset + 1})")
        last = offset + len(self._ents) - 1
        if hi > last + 1:
            raise LogUnavailable(f"entries up to {hi - 1} requested, last is {last}")
        ents = self._ents[lo - offset : hi - offset]
        if max_size >= NO_LIMIT:
            return ents
        return limit_size(ents, max_size)

    def term(self, i: int) -> int:
        ents = self._ents
        offset = ents[0].index
        if i < offset:
            raise CompactedError(f"term of {i} compacted (first is {offset + 1})")
        k = i - offset
        if k >= len(ents):
            raise LogUnavailable(f"term of {i} requested, last is {offset + len(ents) - 1}")
        return ents[k].term

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- write side (the driver) -----------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def append(self, entries: list[Entry]) -> None:
        """Append ``entries``, replacing any existing entries from ``entries[0].index`` on.

        Entries at or before the snapshot index are ignored.
        """
        if not entries:
            return
        ents = self._ents
        offset = ents[0].index
        first = entries[0].index
        if first + len(entries) - 1 <= offset:
            return
        if first <= offset:
            entries = entries[offset + 1 - first :]
            first = offset + 1
        k = first - offset
        n = len(ents)
        if k == n:
            ents.extend(entries)
        elif k < n:
            del ents[k:]
            ents.extend(entries)
        else:
            raise LogUnavailable(f"missing log entry: last {offset + n - 1}, appending at {first}")

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log with ``snap`` (ignored if older than the current one)."""
        if snap.meta.index <= self._snapshot.meta.index:
            return
        self._snapshot = snap
        self._ents = [Entry(snap.meta.term, snap.meta.index)]

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine at applied ``index`` (does not compact)."""
        if index <= self._snapshot.meta.index:
            return self._snapshot
        offset = self._ents[0].index
        if index > self.last_index():
            raise LogUnavailable(f"snapshot at {index} is past last index {self.last_index()}")
        term = self._ents[index - offset].term
        self._snapshot = Snapshot(SnapshotMeta(index=index, term=term, conf=conf), data)
        return self._snapshot

    def compact(self, index: int) -> None:
        """Discard entries before ``index``; ``index`` becomes the dummy entry."""
        offset = self._ents[0].index
        if index <= offset:
            return
        if index > self.last_index():
            raise LogUnavailable(f"compact {index} is past last index {self.last_index()}")
        k = index - offset
        dummy = Entry(self._ents[k].term, index)
        self._ents = [dummy, *self._ents[k + 1 :]]
