"""The leader-balancing driver, pure: when to issue which leadership transfers.

:func:`~tidekv.sharding.leaders.balance_leaders` says which transfers would spread the
leaders evenly; this says which of them to issue *now*. The metadata leader calls
:meth:`LeaderBalancer.poll` on a timer with its clock's ``now`` and the current
:class:`~tidekv.sharding.metadata.ClusterState` (leaders seen, shard voters, liveness,
moves) and sends each returned :class:`~tidekv.sharding.leaders.Transfer` to the shard's
leader as a hint. Rules:

* at most ``max_concurrent`` transfers in flight; a transfer is in flight until the
  leaders seen show its target leading, or ``timeout`` passes;
* never a shard that is moving (its executor moves leadership itself), nor one
  transferred less than ``cooldown`` ago;
* only live members lead; shards without a leader seen are left alone.

Shards that may not move now are pinned to their current leader, and shards with a
transfer in flight to its target, so the plan for the others still counts them (without
that, two transfers planned a tick apart undo each other: the simulator found it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tidekv.sharding.leaders import Transfer, balance_leaders
from tidekv.sharding.metadata import ClusterState, MemberState

__all__ = ["BalancerConfig", "LeaderBalancer"]


@dataclass(frozen=True, slots=True)
class BalancerConfig:
    max_concurrent: int
    timeout: int
    cooldown: int

    def __post_init__(self) -> None:
        if self.max_concurrent < 1 or self.timeout <= 0 or self.cooldown < 0:
            raise ValueError("max_concurrent >= 1, timeout > 0, cooldown >= 0")


@dataclass(slots=True)
class LeaderBalancer:
    config: BalancerConfig
    #: shard -> (the transfer, when it was issued)
    inflight: dict[int, tuple[Transfer, int]] = field(default_factory=dict)
    #: shard -> when a transfer was last issued for it
    last: dict[int, int] = field(default_factory=dict)
    #: the rest of the current plan, not issued yet
    queue: list[Transfer] = field(default_factory=list)

    def plan(self, state: ClusterState) -> list[Transfer]:
        """Every transfer that would balance the leaders now (none issued)."""
        live = {m.id for m in state.members.values() if m.live and m.state is MemberState.ACTIVE}
        leaders = {s: seen.node for s, seen in state.leaders.items()}
        # a transfer in flight counts as done (else a second plan would undo the first)
        leaders.update({s: t.to for s, (t, _) in self.inflight.items()})
        replicas: dict[int, list[int]] = {}
        for s, sh in state.shard_map.items():
            ld = leaders.get(s)
            pinned = sh.moving or s in self.inflight
            replicas[s] = [ld] if pinned and ld is not None else list(sh.voters)
        return [t for t in balance_leaders(leaders, replicas, live) if t.shard not in self.inflight]

    def settled(self, state: ClusterState) -> bool:
        return not self.inflight and not self.plan(state)

    def _stale(self, t: Transfer, state: ClusterState) -> bool:
        seen = state.leaders.get(t.shard)
        sh = state.shard_map.get(t.shard)
        return (
            seen is None
            or seen.node != t.frm
            or sh is None
            or sh.moving
            or t.to not in sh.voters
            or t.to in state.down()
        )

    def poll(self, now: int, state: ClusterState) -> list[Transfer]:
        """The transfers to issue now (each one is then in flight)."""
        cfg = self.config
        for s, (t, at) in list(self.inflight.items()):
            seen = state.leaders.get(s)
            if (seen is not None and seen.node == t.to) or now - at >= cfg.timeout:
                del self.inflight[s]
        # follow one plan to its end (re-planning after every transfer would take other
        # paths and more transfers); plan again once it is done or the cluster changed
        if not self.queue or any(self._stale(t, state) for t in self.queue):
            self.queue = self.plan(state)
        budget = cfg.max_concurrent - len(self.inflight)
        out: list[Transfer] = []
        for t in list(self.queue):
            if budget <= 0:
                break
            last = self.last.get(t.shard)
            if last is not None and now - last < cfg.cooldown:
                continue
            self.queue.remove(t)
            self.inflight[t.shard] = (t, now)
            self.last[t.shard] = now
            out.append(t)
            budget -= 1
        return out
