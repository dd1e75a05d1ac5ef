"""The failure detector, pure: heartbeat ages in, ``MarkDown``/``MarkUp``/``Evict`` out.

The metadata leader keeps, per node, the last time it heard from it (a heartbeat, any
message, a successful RPC: the caller's choice, on the caller's clock) and calls
:meth:`FailureDetector.poll` on a timer with that map, its clock's ``now`` and the
current :class:`~tidekv.sharding.metadata.ClusterState`. It proposes what comes back to
the metadata group. Nothing here reads a clock: time comes in as integers, in whatever
unit the caller uses (the same unit as the commands' ``at``).

* A live member not heard for ``down_after`` is marked down (``MarkDown(node, at=now)``).
* A down member is marked up only after it has been heard *continuously* (never silent
  for ``down_after``) for its hold time. The hold starts at ``up_after`` and doubles,
  up to ``max_hold``, every time the node goes down again within ``flap_window`` of being
  marked up; a node that stays up for ``flap_window`` gets the short hold back. A node
  that flaps therefore costs at most one down/up pair per hold, and the holds grow (the
  route-flap damping of BGP, in its simplest form).
* ``Evict`` comes from :func:`~tidekv.sharding.metadata.evictions`: members down for at
  least ``evict_after`` (since their ``MarkDown``'s ``at``).
* A command the state does not show yet (the metadata group has not applied it) is not
  proposed again before ``retry_after``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tidekv.sharding.metadata import (
    ClusterState,
    Evict,
    MarkDown,
    MarkUp,
    MemberState,
    evictions,
)

__all__ = ["FailureDetector", "LivenessConfig"]


@dataclass(frozen=True, slots=True)
class LivenessConfig:
    down_after: int
    up_after: int
    evict_after: int
    retry_after: int
    max_hold: int
    flap_window: int

    def __post_init__(self) -> None:
        if min(self.down_after, self.up_after, self.evict_after, self.retry_after) <= 0:
            raise ValueError("the liveness delays must be positive")
        if self.max_hold < self.up_after:
            raise ValueError("max_hold must be at least up_after")


@dataclass(slots=True)
class FailureDetector:
    config: LivenessConfig
    #: node -> since when it has been heard continuously while marked down
    back_since: dict[int, int] = field(default_factory=dict)
    #: node -> its hold before a MarkUp (flap damping); up_after when absent
    hold: dict[int, int] = field(default_factory=dict)
    #: node -> when it was last marked up by this detector
    marked_up: dict[int, int] = field(default_factory=dict)
    #: (command kind, node) -> when it was last proposed
    sent: dict[tuple[str, int], int] = field(default_factory=dict)
    #: the first poll's time: a member never heard counts as heard then
    started: int | None = None

    def hold_of(self, node: int) -> int:
        return self.hold.get(node, self.config.up_after)

    def _fresh(self, kind: str, node: int, now: int) -> bool:
        last = self.sent.get((kind, node))
        if last is not None and now - last < self.config.retry_after:
            return False
        self.sent[(kind, node)] = now
        return True

    def poll(
        self, now: int, last_heard: Mapping[int, int], state: ClusterState
    ) -> list[MarkDown | MarkUp | Evict]:
        """The commands to propose now, in node order (downs and ups, then evictions)."""
        cfg = self.config
        if self.started is None:
            self.started = now
        out: list[MarkDown | MarkUp | Evict] = []
        for m in sorted(state.members.values(), key=lambda m: m.id):
            if m.state is MemberState.REMOVED:
                continue
            heard = last_heard.get(m.id, self.started)
            silent = now - heard >= cfg.down_after
            if m.live:
                self.back_since.pop(m.id, None)
                if silent and self._fresh("down", m.id, now):
                    up_at = self.marked_up.get(m.id)
                    if up_at is not None and now - up_at < cfg.flap_window:
                        self.hold[m.id] = min(cfg.max_hold, 2 * self.hold_of(m.id))
                    out.append(MarkDown(m.id, now))
                continue
            if silent:
                self.back_since.pop(m.id, None)
                continue
            since = self.back_since.setdefault(m.id, now)
            if now - since >= self.hold_of(m.id) and self._fresh("up", m.id, now):
                out.append(MarkUp(m.id, now))
                self.marked_up[m.id] = now
        for ev in evictions(state, now, cfg.evict_after):
            # not a node heard again (its MarkUp is on the way)
            if ev.node not in self.back_since and self._fresh("evict", ev.node, now):
                out.append(ev)
        for node, up_at in list(self.marked_up.items()):
            mem = state.members.get(node)
            if mem is not None and mem.live and now - up_at >= cfg.flap_window:
                del self.marked_up[node]  # it stayed up: the short hold again
                self.hold.pop(node, None)
        return out
