"""How one Raft node is configured. Every random choice comes from ``rng``."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from tidekv.raft.errors import InvalidConfig
from tidekv.raft.storage import NO_LIMIT


class ReadOnlyOption(enum.Enum):
    SAFE = "safe"
    """ReadIndex: confirm leadership with a heartbeat round before answering (§6.4)."""
    LEASE_BASED = "lease_based"
    """Answer from the leader lease when it is valid (§6.4.1); needs check_quorum."""


@dataclass(slots=True)
class Config:
    """Configuration of one node. ``rng`` is the only source of randomness.

    Lease reads (``read_only_option=LEASE_BASED``) assume bounded clock drift: between
    any two nodes, over one election timeout, the tick counts differ by at most
    ``max_clock_drift_ticks``. A follower that heard from the leader refuses to vote for
    ``election_tick`` of its own ticks (CheckQuorum stickiness); the leader trusts its
    lease for ``election_tick - max_clock_drift_ticks`` of its ticks counted from the
    *sending* of a heartbeat a quorum acknowledged. If the drift bound is broken, a lease
    read may be stale; ReadIndex (the default) has no timing assumption.
    """

    id: int
    rng: random.Random
    election_tick: int = 10
    heartbeat_tick: int = 1
    applied: int = 0
    """The last applied index at (re)start; 0 means the storage's snapshot index."""
    pre_vote: bool = True
    check_quorum: bool = True
    max_size_per_msg: int = 1 << 20
    """Bytes of entries per AppendEntries (at least one entry is always sent)."""
    max_inflight_msgs: int = 256
    """AppendEntries in flight per follower while replicating (the pipeline window)."""
    max_committed_size_per_ready: int = NO_LIMIT
    read_only_option: ReadOnlyOption = ReadOnlyOption.SAFE
    max_clock_drift_ticks: int = 1
    step_down_on_removal: bool = True
    """A leader removed from the voters steps down once it applies that change."""
    quiesce: bool = False
    """Idle groups go quiet (CockroachDB-style): a leader with nothing to do sends one
    quiesce heartbeat and stops ticking; followers that get it stop their election timer.
    Needs a driver-side liveness signal: when a quiesced follower's leader node dies,
    the driver must call ``RawNode.unquiesce`` (see docs/raft.md, "Quiescence")."""

    def validate(self) -> None:
        if self.id <= 0:
            raise InvalidConfig("node id must be a positive int", id=self.id)
        if self.heartbeat_tick <= 0:
            raise InvalidConfig("heartbeat_tick must be > 0")
        if self.election_tick <= self.heartbeat_tick:
            raise InvalidConfig("election_tick must be greater than heartbeat_tick")
        if self.max_inflight_msgs <= 0:
            raise InvalidConfig("max_inflight_msgs must be > 0")
        if self.max_size_per_msg <= 0:
            raise InvalidConfig("max_size_per_msg must be > 0")
        if self.read_only_option == ReadOnlyOption.LEASE_BASED:
            if not self.check_quorum:
                raise InvalidConfig("lease-based reads require check_quorum")
            if not 0 <= self.max_clock_drift_ticks < self.election_tick:
                raise InvalidConfig("max_clock_drift_ticks must be in [0, election_tick)")
