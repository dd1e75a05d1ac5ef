"""What a leader knows about each follower's log (etcd ``tracker/progress.go``).

Three states:

* ``PROBE``: the leader does not know where the follower's log matches; it sends one
  AppendEntries and waits for the answer (``probe_sent``) before sending another, stepping
  ``next`` back on each rejection (using the follower's conflict hint to skip terms).
* ``REPLICATE``: the logs match up to ``match``; the leader streams entries optimistically
  (``next`` moves on at send time), at most ``max_inflight`` messages unacknowledged.
* ``SNAPSHOT``: the follower needs a snapshot (``pending_snapshot``); nothing else is sent
  until the snapshot is reported done or failed.
"""

from __future__ import annotations

import enum
from collections import deque

import msgspec


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """The last indexes of the AppendEntries in flight to one follower (a bounded window)."""

    __slots__ = ("_q", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._q: deque[int] = deque()

    def add(self, last_index: int) -> None:
        self._q.append(last_index)

    def free_le(self, index: int) -> None:
        """Forget the messages acknowledged by an ack of ``index``."""
        q = self._q
        while q and q[0] <= index:
            q.popleft()

    def free_first_one(self) -> None:
        """Forget the oldest message in flight (it is presumed lost)."""
        if self._q:
            self._q.popleft()

    def full(self) -> bool:
        return len(self._q) >= self.size

    def count(self) -> int:
        return len(self._q)

    def reset(self) -> None:
        self._q.clear()


class Progress:
    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int, is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.recent_active = True
        self.is_learner = is_learner
        self.inflights = Inflights(max_inflight)

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.name}, match={self.match}, next={self.next}"
            f"{', learner' if self.is_learner else ''})"
        )

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, n: int) -> bool:
        """An ack of ``n``: move ``match`` (returns whether it moved) and ``next``."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        if self.next < n + 1:
            self.next = n + 1
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the append after ``rejected``; False when the reply is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def sent_entries(self, n: int, last_index: int) -> None:
        """Book-keeping after sending an append of ``n`` entries ending at ``last_index``."""
        if self.state == ProgressState.REPLICATE:
            if n:
                self.next = last_index + 1
                self.inflights.add(last_index)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def is_paused(self) -> bool:
        st = self.state
        if st == ProgressState.REPLICATE:
            return self.inflights.full()
        if st == ProgressState.PROBE:
            return self.probe_sent
        return True


class ProgressStatus(msgspec.Struct, frozen=True):
    """A snapshot of one follower's :class:`Progress` for ``RawNode.status()``."""

    match: int
    next: int
    state: ProgressState
    is_learner: bool
    recent_active: bool
    inflight: int
    pending_snapshot: int
