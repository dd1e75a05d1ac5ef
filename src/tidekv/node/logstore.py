"""The Raft log storage of every group on a node, over one shared WAL.

:class:`NodeLog` opens the node's :class:`~tidekv.node.wal.WAL` (its on-disk format is
drawn in :mod:`tidekv.node.wal`) and rebuilds, per group, an in-memory copy of the log
by replaying it. :meth:`NodeLog.group` hands out one :class:`GroupStorage` per Raft
group: the :class:`tidekv.raft.Storage` the core reads, plus the write side the driver
uses while it handles a ``Ready`` (the methods of
:class:`~tidekv.raft.storage.MemoryStorage`).

Each write changes the in-memory copy at once (the core reads what it just wrote) and
buffers one WAL record; it is durable after the next :meth:`NodeLog.sync`, which covers
every group's writes with one ``fdatasync`` (group commit)::

    for group, rd in readies:                      # event loop thread
        g = log.group(group)
        g.append(rd.entries); g.set_hard_state(rd.hard_state) ...
    await loop.run_in_executor(pool, log.sync)     # one fsync for all of them
    send persisted messages, apply, advance

The in-memory copy of a group is a :class:`~tidekv.raft.storage.MemoryStorage` whose
snapshot is the group's *compaction point* (index, term, membership) with no data: so
the read side answers exactly as MemoryStorage does. A write first checks what
MemoryStorage would refuse, then buffers its record and changes the copy under the WAL's
lock (the record's ``apply``), so a checkpoint taken by ``sync`` in another thread sees
the copy and the record stream at the same point. A group is written from one thread
at a time (the node's event loop); ``sync`` may run in any thread.

Snapshot data is not in the WAL: the state machine (the engine) holds it. The driver
makes the engine durable first, then records the compaction point here
(:meth:`GroupStorage.compact` after applying, :meth:`GroupStorage.apply_snapshot` after
installing a received snapshot). :meth:`GroupStorage.snapshot` asks the provider set
with :meth:`GroupStorage.set_snapshot_provider` to build one when a follower needs it.

Memory: every retained entry of every group stays in RAM (as in MemoryStorage), so the
driver compacts each group once its state machine holds the entries.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

from tidekv.errors import CorruptionError, InvalidInput
from tidekv.node.wal import DEFAULT_MAX_SEGMENT_SIZE, MAX_GROUP_ID, WAL, GroupImage
from tidekv.raft.errors import LogUnavailable
from tidekv.raft.storage import NO_LIMIT, MemoryStorage
from tidekv.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta

SnapshotProvider = Callable[[], Snapshot]
"""Builds a snapshot of the state machine (``meta.index`` = its applied index)."""


class GroupStorage:
    """The log of one Raft group: :class:`tidekv.raft.Storage` plus the driver's writes."""

    __slots__ = ("_mem", "_provider", "_wal", "group_id")

    def __init__(self, group_id: int, wal: WAL) -> None:
        self.group_id = group_id
        self._wal = wal
        self._mem = MemoryStorage()
        self._provider: SnapshotProvider | None = None

    def __repr__(self) -> str:
        return (
            f"GroupStorage(group={self.group_id}, first={self.first_index()}, "
            f"last={self.last_index()})"
        )

    # -- Storage (read side) ------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._mem.initial_state()

    def entries(self, lo: int, hi: int, max_size: int = NO_LIMIT) -> list[Entry]:
        return self._mem.entries(lo, hi, max_size)

    def term(self, i: int) -> int:
        return self._mem.term(i)

    def first_index(self) -> int:
        return self._mem.first_index()

    def last_index(self) -> int:
        return self._mem.last_index()

    def snapshot(self) -> Snapshot:
        """The provider's snapshot, or (without one) the compaction point with no data."""
        provider = self._provider
        if provider is not None:
            return provider()
        return self._mem.snapshot()

    # -- write side (the driver) --------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._mem.hard_state

    @property
    def compaction_point(self) -> SnapshotMeta:
        """(index, term, membership) before which the log is in the state machine."""
        return self._mem.snapshot().meta

    def set_snapshot_provider(self, fn: SnapshotProvider | None) -> None:
        self._provider = fn

    def append(self, entries: list[Entry]) -> None:
        """Append ``entries``, replacing any existing entries from ``entries[0].index`` on.

        Entries at or before the compaction point are ignored; a gap after the last
        entry raises ``LogUnavailable``.
        """
        if not entries:
            return
        mem = self._mem
        offset = mem.first_index() - 1
        first = entries[0].index
        if first + len(entries) - 1 <= offset:
            return
        if first <= offset:
            entries = entries[offset + 1 - first :]
            first = offset + 1
        last = mem.last_index()
        if first > last + 1:
            raise LogUnavailable(f"missing log entry: last {last}, appending at {first}")
        self._wal.append_entries(self.group_id, entries, partial(mem.append, entries))

    def set_hard_state(self, hs: HardState) -> None:
        self._wal.append_hard_state(self.group_id, hs, partial(self._mem.set_hard_state, hs))

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Make ``snap.meta`` the compaction point and drop the whole log.

        Ignored when it is not newer than the current compaction point. ``snap.data`` is
        not stored: the engine holds the state (install it there first).
        """
        meta = snap.meta
        if meta.index <= self._mem.snapshot().meta.index:
            return
        self._wal.append_reset(self.group_id, meta, partial(self._reset, meta))

    def compact(self, index: int, conf: ConfState) -> None:
        """Drop the entries up to ``index``: the state machine holds them (durably).

        ``(index, term(index), conf)`` becomes the compaction point. Ignored when
        ``index`` is not past the current one; ``LogUnavailable`` past the last entry.
        """
        mem = self._mem
        if index <= mem.first_index() - 1:
            return
        if index > mem.last_index():
            raise LogUnavailable(f"compact {index} is past last index {mem.last_index()}")
        meta = SnapshotMeta(index=index, term=mem.term(index), conf=conf)
        self._wal.append_compact(self.group_id, meta, partial(self._compact, meta))

    def drop(self) -> None:
        """Forget the whole log and hard state (the replica here was retired): the group
        is empty again, as if it never had a log on this node. Two records (RESET at index
        0, a zero HARD_STATE), durable at the next sync; a checkpoint keeps only the empty
        image."""
        meta = SnapshotMeta(index=0, term=0, conf=ConfState())
        self._wal.append_reset(self.group_id, meta, partial(self._reset, meta))
        hs = HardState()
        self._wal.append_hard_state(self.group_id, hs, partial(self._mem.set_hard_state, hs))

    # -- shared by the writes above and by replay ---------------------------------------

    def _reset(self, meta: SnapshotMeta) -> None:
        hs = self._mem.hard_state
        mem = MemoryStorage(meta.conf)
        mem.apply_snapshot(Snapshot(meta=meta))
        mem.set_hard_state(hs)
        self._mem = mem

    def _compact(self, meta: SnapshotMeta) -> None:
        self._mem.create_snapshot(meta.index, meta.conf, b"")
        self._mem.compact(meta.index)

    def _replay_entries(self, entries: list[Entry]) -> None:
        mem = self._mem
        first = entries[0].index if entries else 0
        if not entries or not mem.first_index() <= first <= mem.last_index() + 1:
            raise CorruptionError(
                f"entries from {first} do not fit the log [{mem.first_index()}, {mem.last_index()}]"
            )
        mem.append(entries)

    def _replay_compact(self, meta: SnapshotMeta) -> None:
        mem = self._mem
        if not mem.first_index() <= meta.index <= mem.last_index():
            raise CorruptionError(
                f"compaction at {meta.index} outside the log "
                f"[{mem.first_index()}, {mem.last_index()}]"
            )
        if mem.term(meta.index) != meta.term:
            raise CorruptionError(f"compaction at {meta.index}: term {meta.term} differs")
        self._compact(meta)

    def _image(self) -> GroupImage:
        mem = self._mem
        ents = mem.entries(mem.first_index(), mem.last_index() + 1)
        return GroupImage(self.group_id, mem.snapshot().meta, ents, mem.hard_state)


class _Replay:
    """Feeds the WAL's records into the groups of a :class:`NodeLog` (``WALState``)."""

    __slots__ = ("_log",)

    def __init__(self, log: NodeLog) -> None:
        self._log = log

    def replay_entries(self, group: int, entries: list[Entry]) -> None:
        self._log._get(group)._replay_entries(entries)

    def replay_hard_state(self, group: int, hs: HardState) -> None:
        self._log._get(group)._mem.set_hard_state(hs)

    def replay_compact(self, group: int, meta: SnapshotMeta) -> None:
        self._log._get(group)._replay_compact(meta)

    def replay_reset(self, group: int, meta: SnapshotMeta) -> None:
        self._log._get(group)._reset(meta)

    def images(self) -> list[GroupImage]:
        return [g._image() for g in self._log._groups.values()]


class NodeLog:
    """Every Raft group's log on this node, in one WAL at ``path`` (a directory).

    ``max_segment_size``: see :mod:`tidekv.node.wal`. Opening replays the WAL (a torn
    tail is cut; damage elsewhere raises :class:`~tidekv.errors.CorruptionError`).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, max_segment_size: int = DEFAULT_MAX_SEGMENT_SIZE
    ) -> None:
        self._groups: dict[int, GroupStorage] = {}
        self._wal = WAL(path, max_segment_size=max_segment_size)
        self._wal.recover(_Replay(self))

    def _get(self, group_id: int) -> GroupStorage:
        gs = self._groups.get(group_id)
        if gs is None:
            gs = self._groups[group_id] = GroupStorage(group_id, self._wal)
        return gs

    def group(self, group_id: int) -> GroupStorage:
        """The log of ``group_id`` (an int in [0, 2**64)); empty if it has none yet."""
        gs = self._groups.get(group_id)
        if gs is not None:
            return gs
        if not isinstance(group_id, int) or not 0 <= group_id <= MAX_GROUP_ID:
            raise InvalidInput(f"a group id is an int in [0, 2**64), not {group_id!r}")
        self._wal.check()
        with self._wal.lock:  # a checkpoint may be iterating the groups
            return self._get(group_id)

    def group_ids(self) -> list[int]:
        """Groups with a log here: every group found on disk or opened since."""
        return sorted(self._groups)

    def sync(self) -> None:
        """Make every write of every group made before this call durable (one fsync).

        Safe to call from a worker thread while the event loop keeps writing.
        """
        self._wal.sync()

    def checkpoint(self) -> None:
        """Sync, then rewrite the live state of every group into a fresh segment and
        delete the older segments (normally done at rotation when it pays off)."""
        self._wal.checkpoint()

    def stats(self) -> dict[str, int]:
        return self._wal.stats()

    @property
    def wal(self) -> WAL:
        return self._wal

    @property
    def closed(self) -> bool:
        return self._wal.closed

    def close(self) -> None:
        """Sync what is buffered and close the WAL; the groups cannot be written after."""
        self._wal.close()
