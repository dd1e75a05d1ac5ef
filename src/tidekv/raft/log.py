"""The Raft log as the core sees it: stable storage (read-only) plus an unstable tail.

``unstable`` holds entries (and possibly a snapshot) the driver has not yet persisted;
``offset`` is the index of ``unstable[0]`` and always equals last stable index + 1. The
core never writes storage: the driver persists what ``Ready`` hands it and ``advance``
calls :meth:`RaftLog.stable_to`, which drops the persisted prefix from ``unstable``.
"""

from __future__ import annotations

from tidekv.raft.errors import CompactedError, LogUnavailable
from tidekv.raft.storage import NO_LIMIT, Storage, limit_size
from tidekv.raft.types import Entry, Snapshot


class RaftLogError(AssertionError):
    """An invariant of the log broke (a bug, or storage that lost committed entries)."""


class RaftLog:
    __slots__ = ("applied", "committed", "offset", "storage", "unstable", "unstable_snapshot")

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable: list[Entry] = []
        self.offset = last + 1
        self.unstable_snapshot: Snapshot | None = None
        self.committed = first - 1
        self.applied = first - 1

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"offset={self.offset}, unstable={len(self.unstable)})"
        )

    # -- positions ------------------------------------------------------------------

    def first_index(self) -> int:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable:
            return self.offset + len(self.unstable) - 1
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.meta.index
        return self.storage.last_index()

    def last_term(self) -> int:
        t = self.term(self.last_index())
        if t is None:
            raise RaftLogError("term of the last index is unknown")
        return t

    def term(self, i: int) -> int | None:
        """Term of entry ``i``, or None if it was compacted away or does not exist."""
        off = self.offset
        if i >= off:
            k = i - off
            if k < len(self.unstable):
                return self.unstable[k].term
            return None
        snap = self.unstable_snapshot
        if snap is not None:
            if i == snap.meta.index:
                return snap.meta.term
            return None
        try:
            return self.storage.term(i)
        except (CompactedError, LogUnavailable):
            return None

    def match_term(self, i: int, t: int) -> bool:
        return self.term(i) == t

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """§5.4.1: is a log ending at (``term``, ``last_index``) at least as up-to-date?"""
        lt = self.last_term()
        return term > lt or (term == lt and last_index >= self.last_index())

    # -- reading --------------------------------------------------------------------

    def slice(self, lo: int, hi: int, max_size: int = NO_LIMIT) -> list[Entry]:
        """Entries ``[lo, hi)`` within ``max_size`` bytes (at least one).

        Raises ``CompactedError`` if ``lo`` is before the first index.
        """
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise CompactedError(f"entry {lo} compacted")
        if hi > self.last_index() + 1:
            raise RaftLogError(f"slice [{lo}, {hi}) beyond last index {self.last_index()}")
        off = self.offset
        if lo >= off:
            ents = self.unstable[lo - off : hi - off]
            return ents if max_size >= NO_LIMIT else limit_size(ents, max_size)
        stored = self.storage.entries(lo, min(hi, off), max_size)
        if hi <= off or len(stored) < min(hi, off) - lo:
            return stored
        ents = stored + self.unstable[: hi - off]
        return ents if max_size >= NO_LIMIT else limit_size(ents, max_size)

    def entries_from(self, i: int, max_size: int = NO_LIMIT) -> list[Entry]:
        last = self.last_index()
        if i > last:
            return []
        return self.slice(i, last + 1, max_size)

    def snapshot(self) -> Snapshot:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot
        return self.storage.snapshot()

    def has_next_committed(self, applying: int) -> bool:
        return self.committed > applying and applying + 1 >= self.first_index()

    def next_committed(self, applying: int) -> list[Entry]:
        """Committed entries after ``applying`` (the index already handed out to apply)."""
        lo = max(applying + 1, self.first_index())
        if self.committed + 1 <= lo:
            return []
        return self.slice(lo, self.committed + 1)

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest ``i <= index`` whose term is ``<= term``, with that term.

        The follower's rejection hint and the leader's probe skip (§5.3 optimization):
        every entry after it has a larger term, so none can match a log whose entry at
        ``index`` has ``term``.
        """
        while index > 0:
            t = self.term(index)
            if t is None:
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    # -- writing (in memory) ------------------------------------------------------------

    def find_conflict(self, ents: list[Entry]) -> int:
        """Index of the first entry of ``ents`` that is new or conflicts; 0 if none."""
        if not ents:
            return 0
        last = self.last_index()
        if ents[0].index > last:
            return ents[0].index
        for e in ents:
            if e.index > last:
                return e.index
            if self.term(e.index) != e.term:
                return e.index
        return 0

    def maybe_append(
        self, index: int, log_term: int, committed: int, ents: list[Entry]
    ) -> int | None:
        """AppendEntries receiver (Figure 2): the last new index, or None on mismatch."""
        if self.term(index) != log_term:
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            if ci <= self.committed:
                raise RaftLogError(f"entry {ci} conflicts with committed {self.committed}")
            self.append(ents[ci - index - 1 :] if ci != index + 1 else ents)
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, ents: list[Entry]) -> int:
        """Put ``ents`` at the end of the log, truncating a conflicting tail first."""
        if not ents:
            return self.last_index()
        after = ents[0].index
        if after <= self.committed:
            raise RaftLogError(f"append at {after} would overwrite committed {self.committed}")
        off = self.offset
        n = len(self.unstable)
        if after == off + n:
            self.unstable.extend(ents)
        elif after <= off:
            # replaces stable entries too; the driver's storage.append truncates them
            self.offset = after
            self.unstable = list(ents)
        else:
            del self.unstable[after - off :]
            self.unstable.extend(ents)
        return self.last_index()

    def commit_to(self, tocommit: int) -> None:
        if tocommit > self.committed:
            if tocommit > self.last_index():
                raise RaftLogError(
                    f"commit {tocommit} is out of range (last index {self.last_index()})"
                )
            self.committed = tocommit

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """Commit up to ``max_index`` only if that entry is from ``term`` (§5.4.2)."""
        if max_index > self.committed and self.term(max_index) == term:
            self.committed = max_index
            return True
        return False

    def applied_to(self, i: int) -> None:
        if i > self.applied:
            self.applied = i

    def restore(self, snap: Snapshot) -> None:
        """Replace the log by ``snap`` (the driver persists it from ``Ready.snapshot``)."""
        self.committed = snap.meta.index
        self.unstable = []
        self.offset = snap.meta.index + 1
        self.unstable_snapshot = snap

    def stable_to(self, i: int, t: int) -> None:
        """Entries up to ``i`` (of term ``t``) are now in storage."""
        off = self.offset
        if i < off:
            return
        k = i - off
        if k >= len(self.unstable) or self.unstable[k].term != t:
            return  # the entry was replaced meanwhile; a later Ready persists the new one
        del self.unstable[: k + 1]
        self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.unstable_snapshot is not None and self.unstable_snapshot.meta.index == i:
            self.unstable_snapshot = None

    def persisted_last(self) -> int:
        """Last index known to be in storage (0 while a snapshot is still unstable)."""
        if self.unstable_snapshot is not None:
            return 0
        return self.offset - 1
