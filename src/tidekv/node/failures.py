"""Failure handling on a sharded node: the failure detector's driver on the metadata leader.

Every node pings every member node once per heartbeat interval (``Node._ping_peers``, the
pseudo-group ``LIVENESS_GROUP``; any frame from a peer counts as hearing from it, in
``Node._heard``), whether or not the two share a group, so the metadata leader hears from
every member. On the metadata leader, :class:`FailureWatch` polls the pure
:class:`~tidekv.sharding.liveness.FailureDetector` every :data:`POLL_EVERY` seconds with
those last-heard times and proposes what it returns (``MarkDown``, ``MarkUp``, ``Evict``)
to the metadata group. An ``Evict`` takes the node out of the ring; the metadata then
plans the moves that re-create its replicas elsewhere (the move executor runs them).

**Time.** ``MarkDown.at`` is kept in the replicated state as the member's ``down_since``
and compared later, perhaps by another metadata leader, to decide the eviction; so it
must mean the same on every node. It is **wall-clock milliseconds** (Unix epoch), read
through a :class:`StepFreeClock`: the system clock once, when the node starts, plus the
loop's monotonic time since. Within a process the detector's time never steps (an NTP
step of the system clock changes nothing); between two leaders the error is the
difference of their system clocks when each process started (NTP keeps it to
milliseconds, against delays of seconds to minutes). A ``down_since`` in the future
(a leader whose clock is behind) only delays an eviction. And ``down_since`` is readable
in ``GET /v1/cluster``.

**Grace.** A new metadata leader (a new term, or the first leadership of this process)
starts a fresh detector, and counts every member that is live in the state as heard at
its election (the detector's ``started``): a node that has not heard from the others yet
does not mark them all down. The same grace restarts when this process itself stalled
for half of ``down_after`` (a SIGSTOP, swapping): the silence was its own. A member that
is already down is not given the grace (it must be heard to come up).

The detector's soft state (flap damping holds, retries) is not replicated: a new leader
starts with the short hold, so a leader change can cost one extra down/up pair of a
flapping node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from tidekv.errors import TideError
from tidekv.sharding.liveness import FailureDetector, LivenessConfig
from tidekv.sharding.metadata import ClusterState, Evict, MarkDown, MarkUp, MemberState

if TYPE_CHECKING:
    from tidekv.node.server import Node

__all__ = ["POLL_EVERY", "FailureWatch", "StepFreeClock", "liveness_config"]

log = logging.getLogger("tidekv.node")

POLL_EVERY = 0.25
"""Seconds between two polls of the failure detector on the metadata leader."""
PROPOSE_TIMEOUT = 2.0
"""Seconds to wait for one liveness command to commit (the detector retries later)."""


def liveness_config(down_after: float, evict_after: float) -> LivenessConfig:
    """The detector's delays (ms) from ``--down-after`` and ``--evict-after`` (seconds).

    A member is marked up again once heard continuously for ``down_after`` (its hold);
    the hold doubles, up to 16 x ``down_after``, each time it goes down again within
    16 x ``down_after`` of being marked up (flap damping). A command not applied yet is
    proposed again after a second at the earliest."""
    down = max(1, round(down_after * 1000))
    return LivenessConfig(
        down_after=down,
        up_after=down,
        evict_after=max(1, round(evict_after * 1000)),
        retry_after=max(1000, down // 2),
        max_hold=16 * down,
        flap_window=16 * down,
    )


class StepFreeClock:
    """Wall-clock milliseconds that never step: the system clock read once, plus the
    monotonic time elapsed since (``loop.time()`` values in, ms since the epoch out)."""

    def __init__(self, mono: float, wall: float | None = None) -> None:
        self._offset = (time.time() if wall is None else wall) - mono

    def ms(self, mono: float) -> int:
        return int((mono + self._offset) * 1000)


class FailureWatch:
    """The failure detector's loop; it acts only while its node leads the metadata."""

    def __init__(self, node: Node, clock: StepFreeClock) -> None:
        self.node = node
        self.clock = clock
        self.config = liveness_config(node.cfg.down_after, node.cfg.evict_after)
        self.detector: FailureDetector | None = None
        self._term = -1
        self._grace = 0.0  # loop time: live members count as heard then at the latest
        self._last_poll: float | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.node._closing:
            await asyncio.sleep(POLL_EVERY)
            try:
                for cmd in self.poll(loop.time()):
                    await self._propose(cmd)
            except Exception:  # failure detection must never take the node down
                log.exception("the failure detector failed")

    def poll(self, now: float) -> list[MarkDown | MarkUp | Evict]:
        """The commands to propose at loop time ``now`` (none unless leading the metadata)."""
        meta = self.node.meta
        if meta is None or not meta.is_leader or not meta.state.shards:
            self.detector = None
            self._last_poll = None
            return []
        term = meta.raw.raft.term
        stalled = self._last_poll is not None and (
            now - self._last_poll > self.node.cfg.down_after / 2
        )
        self._last_poll = now
        if self.detector is None or term != self._term:
            self.detector = FailureDetector(self.config)
            self._term = term
            self._grace = now
            log.info("metadata leader (term %d): failure detection starts", term)
        elif stalled:
            self._grace = now  # our own silence: nobody is marked down for it
            log.warning("this node stalled; failure detection grants a new grace period")
            return []  # let the frames that waited be read first
        return self.detector.poll(self.clock.ms(now), self.last_heard(now, meta.state), meta.state)

    def last_heard(self, now: float, state: ClusterState) -> dict[int, int]:
        """Member -> when it was last heard (ms, the clock of ``at``), with the grace."""
        node = self.node
        me = node.cfg.node_id
        never = self._grace - 2 * node.cfg.down_after  # silent, whatever the grace
        out: dict[int, int] = {}
        for nid, m in state.members.items():
            if m.state is MemberState.REMOVED:
                continue
            if nid == me:
                heard = now
            else:
                heard = node._heard.get(nid, never)
                if m.live:
                    heard = max(heard, self._grace)
            out[nid] = self.clock.ms(heard)
        return out

    async def _propose(self, cmd: MarkDown | MarkUp | Evict) -> None:
        meta = self.node.meta
        if meta is None or self.node._closing:
            return
        log.warning("failure detector: %s", cmd)
        try:
            await meta.propose(cmd, PROPOSE_TIMEOUT)
        except TideError as exc:  # not leader any more, refused, not committed in time
            log.info("failure detector: %s not applied: %s", cmd, exc.message)
