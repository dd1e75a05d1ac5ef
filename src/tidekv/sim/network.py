"""The simulated network: a seeded queue of message deliveries in virtual time.

Every message handed to :meth:`Network.send` is, independently, dropped, delivered once
or delivered twice (a duplicate), each copy after its own random delay, so messages are
reordered as a matter of course. Links can be cut one way (``a`` cannot reach ``b``) or
both ways; a cut link drops what it carries at *delivery* time, so a partition also eats
the messages already in flight. Nothing here reads a clock or the global random module:
time is the integer ``now`` passed in, randomness is the ``random.Random`` given.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = ["Addressed", "Delivery", "NetConfig", "Network"]


class Addressed(Protocol):
    """What the network carries: anything with a sender and a receiver (a Raft
    ``Message``, or the multi-group simulator's envelope naming hosts)."""

    @property
    def frm(self) -> int: ...

    @property
    def to(self) -> int: ...


M = TypeVar("M", bound=Addressed)


@dataclass(slots=True)
class NetConfig:
    """Delivery behaviour; delays are in simulator time units (100 units = 1 tick)."""

    min_delay: int = 5
    max_delay: int = 60
    drop: float = 0.0
    duplicate: float = 0.0
    #: with this probability a message takes a long detour (up to ``slow_delay``)
    slow: float = 0.0
    slow_delay: int = 800


@dataclass(frozen=True, slots=True)
class Delivery(Generic[M]):
    time: int
    seq: int
    msg: M


class Network(Generic[M]):
    """A seeded, lossy, reordering network between node ids."""

    def __init__(
        self,
        rng: random.Random,
        config: NetConfig | None = None,
        on_drop: Callable[[M], None] | None = None,
    ) -> None:
        self.rng = rng
        #: told about every lost message (a transport learns that a send failed)
        self.on_drop = on_drop
        self.config = config or NetConfig()
        self._queue: list[tuple[int, int, M]] = []
        self._seq = 0
        #: directed links that drop everything: (from, to)
        self.blocked: set[tuple[int, int]] = set()
        #: directed links that hold messages until a time (FoundationDB's "clogging"):
        #: what is sent meanwhile leaves when the clog ends, then takes its usual delay
        self.clogged: dict[tuple[int, int], int] = {}
        self.sent = 0
        self.dropped = 0
        self.duplicated = 0

    # -- faults ---------------------------------------------------------------------------

    def partition(self, side_a: set[int], side_b: set[int], *, one_way: bool = False) -> None:
        """Cut every link from ``side_a`` to ``side_b`` (and back unless ``one_way``)."""
        for a in side_a:
            for b in side_b:
                if a != b:
                    self.blocked.add((a, b))
                    if not one_way:
                        self.blocked.add((b, a))

    def isolate(self, node: int, others: set[int]) -> None:
        self.partition({node}, others - {node})

    def heal(self) -> None:
        self.blocked.clear()

    def clog(self, frm: int, to: int, until: int) -> None:
        self.clogged[(frm, to)] = max(until, self.clogged.get((frm, to), 0))

    def unclog(self) -> None:
        self.clogged.clear()

    def clog_some(self, rng: random.Random, node: int, others: list[int], until: int) -> None:
        """Clog the links between ``node`` and a random non-empty subset of ``others``,
        each in one random direction, until ``until`` (a fault of both simulators)."""
        for other in rng.sample(others, rng.randint(1, len(others))):
            if rng.random() < 0.5:
                self.clog(node, other, until)
            else:
                self.clog(other, node, until)

    def calm(self) -> None:
        """The end of the faults: no partition, no clog, no drops, duplicates or delays."""
        self.heal()
        self.unclog()
        c = self.config
        c.drop = c.duplicate = c.slow = 0.0

    def reachable(self, frm: int, to: int) -> bool:
        return (frm, to) not in self.blocked

    # -- traffic --------------------------------------------------------------------------

    def _delay(self) -> int:
        cfg = self.config
        rng = self.rng
        if cfg.slow and rng.random() < cfg.slow:
            return rng.randint(cfg.max_delay, max(cfg.max_delay, cfg.slow_delay))
        return rng.randint(cfg.min_delay, cfg.max_delay)

    def _push(self, time: int, msg: M) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (time, self._seq, msg))

    def send(self, now: int, msg: M) -> None:
        cfg = self.config
        rng = self.rng
        self.sent += 1
        if cfg.drop and rng.random() < cfg.drop:
            self._lost(msg)
            return
        start = now
        if self.clogged:
            start = max(now, self.clogged.get((msg.frm, msg.to), now))
        self._push(start + self._delay(), msg)
        if cfg.duplicate and rng.random() < cfg.duplicate:
            self.duplicated += 1
            self._push(start + self._delay(), msg)

    def _lost(self, msg: M) -> None:
        self.dropped += 1
        if self.on_drop is not None:
            self.on_drop(msg)

    def next_time(self) -> int | None:
        return self._queue[0][0] if self._queue else None

    def pop(self) -> Delivery[M] | None:
        """The next delivery (None if the link was cut meanwhile: the message is lost)."""
        time, seq, msg = heapq.heappop(self._queue)
        if (msg.frm, msg.to) in self.blocked:
            self._lost(msg)
            return None
        return Delivery(time, seq, msg)

    def in_flight(self) -> int:
        return len(self._queue)
