"""ReadIndex book-keeping on the leader (Raft thesis §6.4), batched by heartbeat rounds.

A read request is queued with :meth:`ReadOnly.add`. The leader starts a *round* by
recording its commit index and sending one heartbeat to every peer carrying the round
number; all requests queued before the round started ride on it. A peer's answer to
round ``r`` proves it still accepted this leader after round ``r`` (and every earlier
round) began, so each peer's highest acknowledged round is kept and the confirmed round
is the quorum's committed "index" over those (:func:`tidekv.raft.quorum.committed_index`).
Every request of a confirmed round may be served once the state machine has applied the
round's commit index. Thousands of requests cost one heartbeat round.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection

from tidekv.raft import quorum


class ReadOnly:
    __slots__ = ("acked", "next_round", "pending", "rounds")

    def __init__(self) -> None:
        self.pending: list[tuple[bytes, int]] = []
        """(request context, requester id) not yet covered by a round."""
        self.rounds: deque[tuple[int, int, list[tuple[bytes, int]]]] = deque()
        """(round, commit index at its start, its requests), oldest first."""
        self.next_round = 1
        self.acked: dict[int, int] = {}

    def add(self, ctx: bytes, frm: int) -> None:
        self.pending.append((ctx, frm))

    def has_pending(self) -> bool:
        return bool(self.pending)

    def last_round(self) -> int:
        return self.next_round - 1

    def start_round(self, commit: int, self_id: int) -> int:
        """Open a round for every pending request; returns its number."""
        r = self.next_round
        self.next_round += 1
        self.rounds.append((r, commit, self.pending))
        self.pending = []
        self.acked[self_id] = r
        return r

    def ack(self, node: int, r: int) -> None:
        if r > self.acked.get(node, 0):
            self.acked[node] = r

    def confirmed(self, voters: Collection[int]) -> list[tuple[int, list[tuple[bytes, int]]]]:
        """Pop and return (index, requests) of every round a quorum has acknowledged."""
        if not self.rounds:
            return []
        upto = quorum.committed_index(voters, self.acked)
        out: list[tuple[int, list[tuple[bytes, int]]]] = []
        rounds = self.rounds
        while rounds and rounds[0][0] <= upto:
            _, index, reqs = rounds.popleft()
            out.append((index, reqs))
        return out
