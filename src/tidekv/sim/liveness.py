"""The node-level liveness signal of quiescence, as the simulator models it.

A quiesced follower does not time out, so when the host of its leader dies it must be
woken by its own host, which knows which peer hosts it still hears from: the real node
sends one ping per host pair per heartbeat interval (coalescing every group's heartbeats)
and counts a peer dead after an election timeout without one, or at once when its
connection is lost. The simulator models the pings rather than sending them: at each of
its ticks a host "hears" a peer when the peer is up and the link from it is neither cut
nor clogged (the same faults that stop Raft messages), and after ``timeout`` ticks in a
row without hearing it, the peer is dead until heard again. The cluster then wakes
(``RawNode.unquiesce``) every quiesced replica on the host whose leader is on a dead
peer, as the node does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

__all__ = ["HostLiveness"]


class HostLiveness:
    """Missed pings per (observer, peer) host pair, counted in the observer's ticks."""

    def __init__(self, timeout: int) -> None:
        self.timeout = timeout
        self.missed: dict[tuple[int, int], int] = {}

    def dead_peers(self, me: int, peers: Iterable[int], heard: Callable[[int], bool]) -> set[int]:
        """One tick of host ``me``: the peers it has not heard for ``timeout`` ticks."""
        dead: set[int] = set()
        missed = self.missed
        for p in peers:
            if p == me:
                continue
            if heard(p):
                missed[(me, p)] = 0
                continue
            n = missed.get((me, p), 0) + 1
            missed[(me, p)] = n
            if n >= self.timeout:
                dead.add(p)
        return dead
