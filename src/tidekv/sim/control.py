"""Ring-driven moves for the multi-group simulator: the cluster metadata decides.

With ``MultiConfig.ring`` the groups are the shards of a :class:`ClusterState`
(:mod:`tidekv.sharding.metadata`), applied here in one place (its own replication is the
metadata group's business, a later stage). What the simulation does becomes commands:

* the ``membership`` fault joins a spare host (``Join``) or decommissions a ring member
  (``Decommission``); the metadata re-plans every shard whose target changed;
* every tick of a live host is a heartbeat; the pure failure detector
  (:mod:`tidekv.sharding.liveness`) turns their ages into ``MarkDown``/``MarkUp`` and
  evicts hosts down longer than ``DOWN_AFTER`` (re-replication);
* the executor (the pure :mod:`tidekv.sharding.executor`, driven by
  :func:`tidekv.sim.mover.try_step`) runs each shard's next step through the group's
  leader and reports ``StepDone``; a group leader whose applied configuration differs
  from the record reports ``ConfSeen`` (the group is the truth).

At the end every shard's record, its group's real configuration and the ring's
placement of the ring members must agree.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from tidekv.sharding.balancer import BalancerConfig, LeaderBalancer
from tidekv.sharding.executor import ShutDown, reconcile, remove_zombie
from tidekv.sharding.leaders import Transfer, spread
from tidekv.sharding.liveness import FailureDetector, LivenessConfig
from tidekv.sharding.metadata import (
    ClusterState,
    Create,
    Decommission,
    Evict,
    Join,
    LeaderSeen,
    MarkDown,
    MarkUp,
    MemberState,
    StepDone,
    apply,
)
from tidekv.sharding.ring import Ring
from tidekv.sim.cluster import TICK
from tidekv.sim.groups import Move, SimGroup, leader_of
from tidekv.sim.invariants import SafetyViolation
from tidekv.sim.mover import propose_conf, try_step, view_of

if TYPE_CHECKING:
    from tidekv.sim.multigroup import MultiCluster

__all__ = ["RingControl"]

DOWN_AFTER = 40 * TICK
"""How long a host is down before its replicas are re-created elsewhere."""

LIVENESS = LivenessConfig(
    down_after=3 * TICK,
    up_after=5 * TICK,
    evict_after=DOWN_AFTER,
    retry_after=3 * TICK,
    max_hold=40 * TICK,
    flap_window=60 * TICK,
)
"""The failure detector's delays: a host silent for 3 ticks is marked down, and up again
after 5 ticks of heartbeats (longer if it flaps)."""

BALANCER = BalancerConfig(max_concurrent=2, timeout=10 * TICK, cooldown=20 * TICK)
"""At most 2 balancing transfers at once, each shard at most every 20 ticks."""


class RingControl:
    def __init__(self, mc: MultiCluster, hosts: list[int], shards: int) -> None:
        self.mc = mc
        self.state = ClusterState()
        ring_hosts = hosts[:-1]  # the last host starts as a spare, outside the ring
        err = apply(self.state, Create("sim", shards, [(h, f"h{h}", 1) for h in ring_hosts]))
        assert err is None, err
        self.counts = {"joins": 0, "decommissions": 0, "evictions": 0, "conf_seen": 0,
                       "marked_down": 0, "marked_up": 0, "leader_transfers": 0}  # fmt: skip
        #: the failure detector of the metadata leader, fed by the hosts' ticks
        self.detector = FailureDetector(LIVENESS)
        #: leader balancing, as the metadata leader will run it
        self.balancer = LeaderBalancer(BALANCER)
        self.last_heard: dict[int, int] = {}
        #: (group, replica id) of members found without a replica
        self.zombies: set[tuple[int, int]] = set()

    def placement(self) -> list[tuple[int, ...]]:
        return [tuple(self.state.shard_map[s].voters) for s in range(self.state.shards)]

    def _apply(self, cmd: object) -> str | None:
        err = apply(self.state, cmd)  # type: ignore[arg-type]
        self.mc.trace(f"{self.mc.now}|meta|{cmd}|{err};")
        return err

    # -- what happens to hosts ------------------------------------------------------------

    def membership(self, rng: random.Random) -> None:
        st = self.state
        members = st.members
        spare = [h for h in self.mc.hosts if h not in members
                 or members[h].state is MemberState.REMOVED]  # fmt: skip
        ring = sorted(st.ring_members())
        choices = []
        if spare:
            choices.append("join")
        if len(ring) > 3 and not any(
            m.state is MemberState.DECOMMISSIONING for m in members.values()
        ):
            choices.append("decommission")
        if not choices:
            return
        if rng.choice(choices) == "join":
            h = rng.choice(spare)
            if self._apply(Join(h, f"h{h}")) is None:
                self.counts["joins"] += 1
        else:
            if self._apply(Decommission(rng.choice(ring))) is None:
                self.counts["decommissions"] += 1

    def heard(self, host: int) -> None:
        """A heartbeat: the host ticked (a crashed host does not)."""
        self.last_heard[host] = self.mc.now

    # -- the executor ---------------------------------------------------------------------

    def tick(self) -> None:
        mc = self.mc
        for cmd in self.detector.poll(mc.now, self.last_heard, self.state):
            if isinstance(cmd, Evict) and mc.phase != "chaos":
                continue  # healed: every host comes back
            if self._apply(cmd) is None:
                key = {Evict: "evictions", MarkDown: "marked_down", MarkUp: "marked_up"}
                self.counts[key[type(cmd)]] += 1
        for gid, g in sorted(mc.groups.items()):
            self._run_group(gid, g)
            self._leader_seen(gid, g)
        for t in self.balancer.poll(mc.now, self.state):
            self._transfer(t)

    # -- leaders --------------------------------------------------------------------------

    def _leader_seen(self, gid: int, g: SimGroup) -> None:
        """The shard leader reports itself (newer terms only)."""
        ld = leader_of(g)
        if ld is None or ld.rawnode is None:
            return
        host, term = g.host_of[ld.id], ld.rawnode.raft.term
        seen = self.state.leaders.get(gid)
        if seen is None or ((seen.node, seen.term) != (host, term) and term >= seen.term):
            self._apply(LeaderSeen(gid, host, term))

    def _transfer(self, t: Transfer) -> None:
        """A balancing hint to the shard's leader: hand leadership to ``t.to``."""
        g = self.mc.groups[t.shard]
        ld = leader_of(g)
        if ld is None or ld.rawnode is None or g.host_of[ld.id] != t.frm:
            return  # stale: the leader changed meanwhile
        view = view_of(ld)
        rid = g.book.replica_on(t.to, view)
        if rid is None or rid not in view.voters:
            return
        self.counts["leader_transfers"] += 1
        ld.rawnode.transfer_leader(rid)
        ld.pump(self.mc.now)

    def _run_group(self, gid: int, g: SimGroup) -> None:
        mc = self.mc
        if self._remove_zombies(g):
            return
        for _ in range(16):  # steps that are already done confirm at once
            sh = self.state.shard_map[gid]
            if not sh.moving or sh.blocked:
                break
            mv = g.move
            if mv is None or mv.steps != sh.steps or mv.next != sh.next_step:
                mv = g.move = Move(list(sh.steps), mc.now, sh.next_step,
                                   mv.last_try if mv else -(10**9))  # fmt: skip
            if not try_step(mc, g, mv, sh):
                break
            mc.trace(f"{mc.now}|step|{gid}|{sh.steps[sh.next_step]};")
            err = self._apply(StepDone(gid, sh.next_step))
            assert err is None, err
            if not self.state.shard_map[gid].moving:
                mc.moves_done += 1
        if not self.state.shard_map[gid].moving:
            g.move = None
        self._reconcile(gid, g)

    def _remove_zombies(self, g: SimGroup) -> bool:
        """A member whose replica is gone (it applied an earlier removal of its id) can
        never catch up: take it out of the configuration before anything else."""
        ld = leader_of(g)
        if ld is None or ld.rawnode is None:
            return False
        act = remove_zombie(view_of(ld), g.book)
        if act is None:
            return False
        self.zombies.add((g.gid, act.replica))
        self.counts["zombies"] = len(self.zombies)
        propose_conf(self.mc, g, ld, act)
        return True

    def _reconcile(self, gid: int, g: SimGroup) -> None:
        ld = leader_of(g)
        if ld is None or ld.rawnode is None:
            return
        for act in reconcile(gid, self.state.shard_map[gid], view_of(ld), g.book):
            if isinstance(act, ShutDown):
                self.mc.retire(g, act.replica)
            elif self._apply(act.command) is None:
                self.counts["conf_seen"] += 1
                g.move = None

    # -- the end --------------------------------------------------------------------------

    def settled(self) -> bool:
        return not self.state.movements() and self.balancer.settled(self.state)

    def check_final(self) -> None:
        """Record, real configuration and ring placement agree for every shard."""
        st = self.state
        if self.balancer.plan(st):
            raise SafetyViolation(
                "leader balance", f"transfers still to do: {self.balancer.plan(st)}"
            )
        most, fewest = spread({s: ld.node for s, ld in st.leaders.items()}, st.ring_members())
        self.counts["leaders_most"] = most
        self.counts["leaders_fewest"] = fewest
        want = Ring(st.ring_members(), st.vnodes).place(st.shards, st.replication)
        for gid, g in self.mc.groups.items():
            ld = leader_of(g)
            assert ld is not None and ld.rawnode is not None
            seen = st.leaders.get(gid)
            if seen is None or seen.node != g.host_of[ld.id]:
                raise SafetyViolation(
                    "leaders seen",
                    f"shard {gid}: led by {g.host_of[ld.id]}, the metadata saw {seen}",
                )
            real = {g.host_of[v] for v in ld.rawnode.raft.voters}
            rec = set(st.shard_map[gid].voters)
            if not real == rec == set(want.replicas[gid]):
                raise SafetyViolation(
                    "placement",
                    f"shard {gid}: group has {sorted(real)}, the metadata {sorted(rec)}, the "
                    f"ring wants {sorted(want.replicas[gid])}",
                )
