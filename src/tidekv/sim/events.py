"""The event loop plumbing both simulators share (:mod:`tidekv.sim.cluster`, one group;
:mod:`tidekv.sim.multigroup`, many groups on shared hosts).

Time is an integer. Two sources of events: the network's deliveries and a heap of timers
``(time, seq, kind, ...)`` (``seq`` breaks ties in the order they were scheduled). The
next event is the earlier of the two, a delivery first on a tie; ``now`` is set to its
time before anything else happens (a delivery whose link was cut meanwhile reports the
loss, and the report schedules at ``now``). Every event, lost deliveries included,
counts in ``events``; the trace of what happened feeds ``hasher``, the run's digest.
"""

from __future__ import annotations

import hashlib
import heapq
from typing import Any, Generic

from tidekv.sim.network import Delivery, M, Network

__all__ = ["EventLoop"]


class EventLoop(Generic[M]):
    """Time, timers, the event count and the trace digest; the subclass owns ``network``
    and handles the events :meth:`_next_event` hands it."""

    network: Network[M]
    phase: str

    def __init__(self) -> None:
        self.timers: list[tuple[Any, ...]] = []
        self._seq = 0
        self.now = 0
        self.events = 0
        self.hasher = hashlib.blake2b(digest_size=16)

    def _push_timer(self, time: int, *what: Any) -> None:
        self._seq += 1
        heapq.heappush(self.timers, (time, self._seq, *what))

    def trace(self, s: str) -> None:
        self.hasher.update(s.encode())

    def _next_event(self, end: int) -> tuple[Delivery[M] | None, tuple[Any, ...] | None] | None:
        """The next event at or before ``end``, now at its time: ``(delivery, None)``
        (a None delivery: the message was lost on its way), ``(None, timer)``, or None
        when nothing happens by ``end``."""
        nt = self.network.next_time()
        tt = self.timers[0][0] if self.timers else None
        if nt is None and tt is None:
            return None
        if tt is None or (nt is not None and nt <= tt):
            assert nt is not None
            if nt > end:
                return None
            self.now = nt
            d = self.network.pop()
            self.events += 1
            return d, None
        if tt > end:
            return None
        timer = heapq.heappop(self.timers)
        self.now = timer[0]
        self.events += 1
        return None, timer

    def _step(self, end: int) -> bool:
        raise NotImplementedError

    def _run_until(self, end: int) -> None:
        while self._step(end):
            if self.phase == "done":
                return
        self.now = max(self.now, end)
