"""Several Raft groups on shared simulated hosts, with replicas moving while faults happen.

The single-group simulator (:mod:`tidekv.sim.cluster`) runs one group whose node ids are
its servers. Here ``hosts`` servers each host replicas of ``groups`` groups, as a tidekv
node hosts the replicas of many shards: one network between hosts carries every group's
messages (an envelope names the group and the two hosts), a host crash crashes every
replica on it at once, partitions and clogs cut hosts apart, and each host ticks all its
replicas together. The parts are the same as the single-group simulator's: each replica is
a :class:`~tidekv.sim.node.SimNode` (Ready loop, disk, snapshots), each group has its own
:class:`~tidekv.sim.invariants.Invariants` checked after every step, its own clients
(:class:`~tidekv.sim.workload.Workload`) and its own linearizability check at the end.

Groups start where the consistent-hash ring puts them (:mod:`tidekv.sharding.ring`).
During the chaos phase the ``membership`` fault starts *moves*: a group replaces one of
its replicas (often one on a crashed host: re-replication) by a host outside it, with the
steps of :func:`tidekv.sharding.movement.plan_shard` (add learner, catch up, promote,
transfer leadership away, remove), executed one at a time through the group's leader the
way the node's executor will. Raft ids are *replica* ids, fresh for every replica ever
created (CockroachDB's ReplicaID): a host that left a group and joins it again is a new
member, so a message from its old incarnation can never be taken for the new one's.

The liveness phase heals everything; within ``liveness_ticks`` every group must have a
stable leader, commit a probe, bring its members up to date, and finish its move.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import random
import traceback
from dataclasses import dataclass, field
from typing import Any, TextIO

from tidekv.check import Verdict, check_history
from tidekv.raft import (
    CompactedError,
    ConfChange,
    ConfChangeType,
    ConfState,
    HardState,
    LogUnavailable,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDropped,
    Role,
    Snapshot,
    SnapshotMeta,
)
from tidekv.sharding.movement import NoQuorum, Step, StepKind, plan_shard
from tidekv.sharding.ring import Ring
from tidekv.sim.cluster import TICK
from tidekv.sim.faults import FaultConfig, gate
from tidekv.sim.invariants import Invariants, SafetyViolation
from tidekv.sim.network import NetConfig, Network
from tidekv.sim.node import Applied, Hooks, NodeOptions, SimNode
from tidekv.sim.runner import percentiles
from tidekv.sim.statemachine import Command, KVStateMachine, encode_command
from tidekv.sim.workload import Gateway, Workload, WorkloadConfig

__all__ = ["MultiCluster", "MultiConfig", "MultiReport", "MultiResult", "run_multi_seeds"]

REPLICATION = 3


@dataclass(slots=True)
class MultiConfig:
    seed: int = 1
    hosts: int = 5
    groups: int = 4
    ticks: int = 400
    faults: FaultConfig = field(default_factory=FaultConfig)
    liveness_ticks: int = 300
    #: clients and keys per group
    clients: int = 2
    keys: int = 2
    check_steps: int = 2_000_000
    #: a deliberately broken mode for the simulator's own tests: a host that joins a
    #: group it left again comes back under its old Raft id (with an empty disk), as it
    #: would if Raft ids were node ids
    reuse_replica_ids: bool = False


def replay_command(cfg: MultiConfig) -> str:
    return (
        f"python -m tidekv.sim --groups {cfg.groups} --nodes {cfg.hosts} --seed {cfg.seed} "
        f"--ticks {cfg.ticks} --liveness-ticks {cfg.liveness_ticks} "
        f"--faults {cfg.faults.spec()}"
    )


@dataclass(slots=True)
class MultiResult:
    config: MultiConfig
    ok: bool = True
    rule: str | None = None
    violation: str | None = None
    digest: str = ""
    events: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: ticks from the start of a move to its last step
    move_ticks: list[float] = field(default_factory=list)

    @property
    def replay(self) -> str:
        return replay_command(self.config)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A Raft message of one group, between two hosts."""

    group: int
    frm: int
    to: int
    msg: Message


@dataclass(slots=True)
class _Move:
    steps: list[Step]
    started: int
    next: int = 0
    #: host -> the replica id created for it by this move
    rids: dict[int, int] = field(default_factory=dict)
    last_try: int = -(10**9)


@dataclass(slots=True)
class _Group:
    gid: int
    inv: Invariants
    workload: Workload
    replicas: dict[int, SimNode] = field(default_factory=dict)
    host_of: dict[int, int] = field(default_factory=dict)
    retired: set[int] = field(default_factory=set)
    next_rid: int = 1
    move: _Move | None = None
    probe_seq: int = 0
    probe_sent: int | None = None
    probe_done: int | None = None
    stable_at: int | None = None
    catch_to: int | None = None
    converged: bool = False
    why: str = ""

    def live_rid_on(self, host: int) -> int | None:
        for rid, h in self.host_of.items():
            if h == host and rid not in self.retired:
                return rid
        return None


class _Stop(Exception):
    pass


class MultiCluster:
    def __init__(self, config: MultiConfig) -> None:
        if config.hosts < REPLICATION:
            raise ValueError(f"need at least {REPLICATION} hosts")
        self.cfg = config
        faults, notes = gate(config.faults)
        # lease reads are the single-group simulator's subject; here every read is ReadIndex
        faults.lease = False
        self.faults = faults
        self.notes = notes
        root = random.Random(config.seed)
        self.net_rng = random.Random(root.getrandbits(64))
        self.fault_rng = random.Random(root.getrandbits(64))
        self.work_rng = random.Random(root.getrandbits(64))
        self.node_rng = random.Random(root.getrandbits(64))
        p = random.Random(root.getrandbits(64))
        net = NetConfig()
        if faults.net:
            net.drop = p.choice((0.0, 0.01, 0.05))
            net.duplicate = p.choice((0.0, 0.01, 0.05))
            net.slow = p.choice((0.0, 0.01, 0.03))
        self.network: Network[Envelope] = Network(self.net_rng, net, on_drop=self._on_drop)
        self.drift = 2 if faults.drift else 0
        self.options = NodeOptions(
            max_clock_drift_ticks=2,
            disk_max=p.choice((0, 30, 120)) if faults.disk else 0,
            compact_every=p.choice((20, 50)) if faults.snapshot else 0,
            max_inflight_msgs=p.choice((4, 64)),
        )
        self.timers: list[tuple[int, int, str, int, int, int]] = []
        self._seq = 0
        self.now = 0
        self.events = 0
        self.hasher = hashlib.blake2b(digest_size=16)
        self.phase = "chaos"
        self.hosts = list(range(1, config.hosts + 1))
        self.down: set[int] = set()
        self.periods = {h: TICK + (p.randint(-self.drift, self.drift) if self.drift else 0)
                        for h in self.hosts}  # fmt: skip
        self.partition_gen = 0
        self.moves_started = 0
        self.moves_done = 0
        #: moves that replace a replica on a crashed host (re-replication)
        self.moves_off_down = 0
        self.move_ticks: list[float] = []
        self.groups: dict[int, _Group] = {}
        placement = Ring(dict.fromkeys(self.hosts, 1)).place(config.groups, REPLICATION)
        for gid, hosts in enumerate(placement.replicas):
            self._make_group(gid, hosts)
        for h in self.hosts:
            self._schedule(self.node_rng.randint(1, self.periods[h]), "tick", 0, h)

    # -- plumbing -------------------------------------------------------------------------

    def _schedule(self, time: int, kind: str, g: int = 0, a: int = 0, b: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self.timers, (time, self._seq, kind, g, a, b))

    def _trace(self, s: str) -> None:
        self.hasher.update(s.encode())

    def _make_group(self, gid: int, hosts: tuple[int, ...]) -> None:
        wl_rng = random.Random(self.work_rng.getrandbits(64))
        box: list[_Group] = []
        gw = Gateway(
            node_ids=lambda: [r for r in box[0].replicas if r not in box[0].retired],
            propose=lambda rid, data: self._client_propose(box[0], rid, data),
            read_index=lambda rid, ctx: self._client_read(box[0], rid, ctx),
            schedule=lambda t, kind, arg: self._schedule(t, kind, gid, arg[0], arg[1]),
        )
        wl = Workload(wl_rng, WorkloadConfig(clients=self.cfg.clients, keys=self.cfg.keys), gw)
        g = _Group(gid, Invariants(), wl)
        box.append(g)
        self.groups[gid] = g
        voters = frozenset(range(1, len(hosts) + 1))
        for rid, host in zip(sorted(voters), hosts, strict=True):
            self._add_replica(g, rid, host, ConfState(voters=voters), bootstrap=True)
        g.next_rid = len(hosts) + 1

    def _hooks(self, g: _Group) -> Hooks:
        return Hooks(
            send=lambda m: self._send(g, m),
            schedule_disk=lambda t, rid: self._schedule(t, "disk", g.gid, rid),
            on_apply=lambda a: self._on_apply(g, a),
            on_read=lambda rid, ctx, sm: g.workload.on_read(self.now, rid, ctx, sm),
            on_removed=lambda rid: self._retire(g, rid),
            on_leader_commit=lambda node: self._check_quorum_durable(g, node),
        )

    def _add_replica(
        self, g: _Group, rid: int, host: int, conf: ConfState, *, bootstrap: bool = False
    ) -> SimNode:
        storage = MemoryStorage(conf)
        if bootstrap:  # as in the single-group simulator: membership in a snapshot at 1
            meta = SnapshotMeta(index=1, term=1, conf=conf)
            storage.apply_snapshot(Snapshot(meta, KVStateMachine().snapshot()))
            storage.set_hard_state(HardState(term=1, commit=1))
        node = SimNode(
            id=rid,
            options=self.options,
            rng=random.Random(self.node_rng.getrandbits(64)),
            hooks=self._hooks(g),
            invariants=g.inv,
            storage=storage,
        )
        g.replicas[rid] = node
        g.host_of[rid] = host
        if host not in self.down:
            node.start()
        return node

    def _retire(self, g: _Group, rid: int) -> None:
        if rid not in g.retired:
            g.retired.add(rid)
            self._trace(f"{self.now}|retire|{g.gid}|{rid};")

    def _send(self, g: _Group, m: Message) -> None:
        if m.to in g.retired or m.to not in g.host_of:
            return
        self.network.send(self.now, Envelope(g.gid, g.host_of[m.frm], g.host_of[m.to], m))

    def _on_drop(self, env: Envelope) -> None:
        if env.msg.type == MessageType.SNAP:
            self._schedule(self.now, "snap_status", env.group, env.msg.frm, env.msg.to)

    def _client_propose(self, g: _Group, rid: int, data: bytes) -> bool:
        node = g.replicas[rid]
        if node.rawnode is None:
            return False
        try:
            node.rawnode.propose(data)
        except ProposalDropped:
            return False
        node.pump(self.now)
        return True

    def _client_read(self, g: _Group, rid: int, ctx: bytes) -> bool:
        node = g.replicas[rid]
        if node.rawnode is None:
            return False
        try:
            node.rawnode.read_index(ctx)
        except ProposalDropped:
            return False
        node.pump(self.now)
        return True

    def _on_apply(self, g: _Group, a: Applied) -> None:
        if a.command.client == 0:
            if g.probe_done is None and g.probe_sent is not None and a.command.seq == g.probe_seq:
                g.probe_done = self.now
            return
        g.workload.on_apply(self.now, a)

    def _check_quorum_durable(self, g: _Group, leader: SimNode) -> None:
        rn = leader.rawnode
        assert rn is not None
        r = rn.raft
        c = r.log.committed
        term = r.log.term(c)
        if term is None:
            return
        durable = 0
        for v in r.voters:
            node = g.replicas.get(v)
            if node is None:
                continue
            try:
                durable += node.storage.term(c) == term
            except CompactedError:
                durable += 1
            except LogUnavailable:
                pass
        if durable * 2 <= len(r.voters):
            raise SafetyViolation(
                "commit without quorum",
                f"group {g.gid}: leader {leader.id} committed index {c} but only {durable} "
                f"of voters {sorted(r.voters)} hold it durably",
            )

    def _leader(self, g: _Group) -> SimNode | None:
        best: SimNode | None = None
        for rid, n in g.replicas.items():
            rn = n.rawnode
            if rn is None or rid in g.retired or rn.raft.role is not Role.LEADER:
                continue
            if best is None or rn.raft.term > best.rawnode.raft.term:  # type: ignore[union-attr]
                best = n
        return best

    # -- faults ---------------------------------------------------------------------------

    def _fault(self) -> None:
        f = self.faults
        rng = self.fault_rng
        actions: list[str] = []
        if f.partition:
            actions += ["partition", "one_way", "heal"]
        if f.crash:
            actions += ["crash", "crash"]
        if f.membership:
            actions += ["move", "move", "move"]
        if f.transfer:
            actions += ["transfer"]
        if f.clog:
            actions += ["clog"]
        if not actions:
            return
        act = rng.choice(actions)
        self._trace(f"{self.now}|fault|{act};")
        if act in ("partition", "one_way", "heal"):
            self.network.heal()
            self.partition_gen += 1
            if act == "heal":
                return
            side = set(rng.sample(self.hosts, rng.randint(1, len(self.hosts) // 2)))
            self.network.partition(side, set(self.hosts) - side, one_way=act == "one_way")
            self._schedule(self.now + rng.randint(3, 40) * TICK, "heal_partition", 0,
                           self.partition_gen)  # fmt: skip
        elif act == "crash":
            up = [h for h in self.hosts if h not in self.down]
            if len(self.down) >= (len(self.hosts) - 1) // 2 or not up:
                return  # keep a majority of hosts up, so most groups can keep moving
            victim = rng.choice(up)
            self._crash_host(victim)
            self._schedule(self.now + rng.randint(5, 60) * TICK, "restart", 0, victim)
        elif act == "move":
            self._start_move(rng)
        elif act == "transfer":
            g = self.groups[rng.choice(sorted(self.groups))]
            ld = self._leader(g)
            if ld is not None and ld.rawnode is not None:
                voters = sorted(ld.rawnode.raft.voters - {ld.id})
                if voters:
                    ld.rawnode.transfer_leader(rng.choice(voters))
                    ld.pump(self.now)
        elif act == "clog":
            host = rng.choice(self.hosts)
            others = [h for h in self.hosts if h != host]
            until = self.now + rng.randint(3, 25) * TICK
            for other in rng.sample(others, rng.randint(1, len(others))):
                if rng.random() < 0.5:
                    self.network.clog(host, other, until)
                else:
                    self.network.clog(other, host, until)

    def _crash_host(self, host: int) -> None:
        self.down.add(host)
        self._trace(f"{self.now}|crash|{host};")
        for g in self.groups.values():
            for rid, h in g.host_of.items():
                if h == host and rid not in g.retired:
                    g.replicas[rid].crash()

    def _restart_host(self, host: int) -> None:
        if host not in self.down:
            return
        self.down.discard(host)
        for g in self.groups.values():
            for rid, h in g.host_of.items():
                if h == host and rid not in g.retired:
                    node = g.replicas[rid]
                    node.start()
                    node.pump(self.now)

    # -- moves (what the node's executor of a shard move will do) -------------------------

    def _members(self, g: _Group, ld: SimNode) -> tuple[list[int], list[int]]:
        """(voter hosts, learner hosts) in the leader's configuration."""
        assert ld.rawnode is not None
        r = ld.rawnode.raft
        return sorted(g.host_of[v] for v in r.voters), sorted(g.host_of[n] for n in r.learners)

    def _start_move(self, rng: random.Random) -> None:
        idle = [g for g in self.groups.values() if g.move is None]
        if not idle:
            return
        g = rng.choice(idle)
        ld = self._leader(g)
        if ld is None or ld.rawnode is None or ld.rawnode.raft.learners:
            return
        voters, _ = self._members(g, ld)
        outside = [h for h in self.hosts if h not in voters]
        if not outside:
            return
        downs = [h for h in voters if h in self.down]
        # replace a replica on a crashed host when there is one (re-replication)
        gone = rng.choice(downs) if downs and rng.random() < 0.7 else rng.choice(voters)
        self.moves_off_down += gone in self.down
        target = [h for h in voters if h != gone] + [rng.choice(outside)]
        try:
            steps = plan_shard(voters, target, leader=g.host_of[ld.id], down=self.down)
        except NoQuorum:
            return
        g.move = _Move(steps, self.now)
        self.moves_started += 1
        self._trace(f"{self.now}|move|{g.gid}|{voters}->{target};")

    def _advance_moves(self) -> None:
        for g in self.groups.values():
            mv = g.move
            while mv is not None and self._try_step(g, mv):
                self._trace(f"{self.now}|step|{g.gid}|{mv.steps[mv.next]};")
                mv.next += 1
                if mv.next == len(mv.steps):
                    self.moves_done += 1
                    self.move_ticks.append((self.now - mv.started) / TICK)
                    g.move = mv = None

    def _try_step(self, g: _Group, mv: _Move) -> bool:
        """Try to do or confirm the next step; True once it is done."""
        ld = self._leader(g)
        if ld is None or ld.rawnode is None:
            return False
        rn = ld.rawnode
        r = rn.raft
        step = mv.steps[mv.next]
        k, host = step.kind, step.node
        retry = self.now - mv.last_try >= 3 * TICK

        def propose(cc: ConfChange) -> None:
            if retry:
                mv.last_try = self.now
                try:
                    rn.propose_conf_change(cc)
                except ProposalDropped:
                    return
                ld.pump(self.now)

        if k is StepKind.ADD_LEARNER:
            rid = mv.rids.get(host)
            if rid is not None and (rid in r.learners or rid in r.voters):
                return True
            if host in self.down:
                return False
            if rid is None:
                old_rids = [x for x, h in g.host_of.items() if h == host and x in g.retired]
                if self.cfg.reuse_replica_ids and old_rids:
                    rid = max(old_rids)
                    g.retired.discard(rid)
                else:
                    rid = g.next_rid
                    g.next_rid += 1
                mv.rids[host] = rid
                # the new replica starts empty and waits for the leader (snapshot first)
                self._add_replica(g, rid, host, ConfState())
            propose(ConfChange(ConfChangeType.ADD_LEARNER, rid))
            return False
        if k is StepKind.CATCH_UP:
            pr = r.prs.get(mv.rids[host])
            return pr is not None and pr.match >= r.log.committed
        if k is StepKind.PROMOTE:
            rid = mv.rids[host]
            if rid in r.voters:
                return True
            propose(ConfChange(ConfChangeType.ADD_VOTER, rid))
            return False
        old = g.live_rid_on(host)
        if k is StepKind.TRANSFER_LEADER:
            if old is None or ld.id != old:
                return True
            heirs = [v for v in sorted(r.voters) if v != old and g.host_of[v] not in self.down]
            prefer = [v for v in heirs if g.host_of[v] == step.to]
            if retry and heirs:
                mv.last_try = self.now
                rn.transfer_leader((prefer or heirs)[0])
                ld.pump(self.now)
            return False
        # REMOVE_VOTER / REMOVE_LEARNER
        if old is None or (old not in r.voters and old not in r.learners):
            if old is not None:
                self._retire(g, old)  # out of the committed configuration: shut it down
            return True
        if ld.id == old:
            # it leads again (elected after the plan was made): move leadership away first
            heirs = [v for v in sorted(r.voters) if v != old and g.host_of[v] not in self.down]
            if retry and heirs:
                mv.last_try = self.now
                rn.transfer_leader(heirs[0])
                ld.pump(self.now)
            return False
        propose(ConfChange(ConfChangeType.REMOVE_NODE, old))
        return False

    # -- the loop -------------------------------------------------------------------------

    def _step(self, end: int) -> bool:
        nt = self.network.next_time()
        tt = self.timers[0][0] if self.timers else None
        if nt is None and tt is None:
            return False
        if tt is None or (nt is not None and nt <= tt):
            assert nt is not None
            if nt > end:
                return False
            self.now = nt
            d = self.network.pop()
            self.events += 1
            if d is None:
                return True
            env = d.msg
            m = env.msg
            self._trace(f"{nt}|m|{env.group}|{int(m.type)}|{m.frm}|{m.to}|{m.term}|{m.index};")
            g = self.groups[env.group]
            node = g.replicas.get(m.to)
            if node is None or m.to in g.retired:
                return True
            node.deliver(self.now, m)
            if m.type == MessageType.SNAP:
                sender = g.replicas.get(m.frm)
                if sender is not None and sender.rawnode is not None:
                    sender.rawnode.report_snapshot(m.to, ok=True)
                    sender.pump(self.now)
            return True
        if tt > end:
            return False
        time, _, kind, gid, a, b = heapq.heappop(self.timers)
        self.now = time
        self.events += 1
        self._trace(f"{time}|{kind}|{gid}|{a}|{b};")
        g = self.groups[gid]
        if kind == "tick":
            if a not in self.down:
                for grp in self.groups.values():  # one host ticks all its replicas
                    for rid, h in grp.host_of.items():
                        if h == a and rid not in grp.retired:
                            grp.replicas[rid].tick(self.now)
            self._schedule(self.now + self.periods[a], "tick", 0, a)
        elif kind == "disk":
            g.replicas[a].disk_done(self.now)
        elif kind == "client":
            g.workload.on_client_timer(self.now, a)
        elif kind == "timeout":
            g.workload.on_timeout(self.now, a, b)
        elif kind == "fault":
            if self.phase == "chaos":
                self._fault()
                self._schedule(self.now + self.fault_rng.randint(2, 12) * TICK, "fault")
        elif kind == "mover":
            self._advance_moves()
            if self.phase != "done":
                self._schedule(self.now + TICK, "mover")
        elif kind == "heal_partition":
            if a == self.partition_gen:
                self.network.heal()
        elif kind == "restart":
            if self.phase == "chaos":
                self._restart_host(a)
        elif kind == "snap_status":
            node = g.replicas.get(a)
            if node is not None and node.rawnode is not None:
                node.rawnode.report_snapshot(b, ok=False)
                node.pump(self.now)
        elif kind == "probe":
            self._liveness_probe()
        return True

    def _run_until(self, end: int) -> None:
        while self._step(end):
            if self.phase == "done":
                return
        self.now = max(self.now, end)

    # -- liveness -------------------------------------------------------------------------

    def _heal_all(self) -> None:
        self.phase = "liveness"
        self.network.heal()
        self.network.unclog()
        self.partition_gen += 1
        c = self.network.config
        c.drop = c.duplicate = c.slow = 0.0
        for h in sorted(self.down):
            self._restart_host(h)
        self.heal_time = self.now
        self._schedule(self.now + TICK, "probe")

    def _stable_leader(self, g: _Group) -> SimNode | None:
        ld = self._leader(g)
        if ld is None or ld.rawnode is None:
            return None
        r = ld.rawnode.raft
        for v in r.voters:
            n = g.replicas.get(v)
            if n is None or v in g.retired or n.rawnode is None:
                continue
            if n.rawnode.raft.lead != ld.id or n.rawnode.raft.term != r.term:
                return None
        return ld

    def _group_live(self, g: _Group) -> bool:
        """Has the group converged: a stable leader, its probe committed, its move done,
        and every member applied up to the leader's commit index of that moment?"""
        if g.converged:
            return True
        ld = self._stable_leader(g)
        if ld is None or ld.rawnode is None:
            g.stable_at = None
            g.why = "no stable leader"
            if g.probe_sent is not None and g.probe_done is None:
                g.probe_sent = None  # retry with the next leader
            return False
        if g.stable_at is None:
            g.stable_at = self.now
        if g.probe_sent is None:
            g.probe_seq += 1
            g.why = "probe not committed"
            try:
                ld.rawnode.propose(encode_command(Command(0, g.probe_seq, "write", "__probe__", 0)))
                g.probe_sent = self.now
                ld.pump(self.now)
            except ProposalDropped:
                pass
            return False
        if g.probe_done is None:
            return False
        if g.move is not None:
            g.why = f"move stuck at step {g.move.steps[g.move.next]}"
            return False
        r = ld.rawnode.raft
        if g.catch_to is None:
            g.catch_to = r.log.committed
        for rid in sorted(r.voters | r.learners):
            n = g.replicas.get(rid)
            if n is None or rid in g.retired or n.rawnode is None:
                continue
            if n.applied < g.catch_to:
                g.why = f"replica {rid} applied {n.applied} < {g.catch_to}"
                return False
        g.converged = True
        return True

    def _liveness_probe(self) -> None:
        if all([self._group_live(g) for g in self.groups.values()]):
            self.phase = "done"
            return
        self._schedule(self.now + TICK, "probe")

    # -- run ------------------------------------------------------------------------------

    def run(self) -> MultiResult:
        cfg = self.cfg
        res = MultiResult(config=cfg, notes=list(self.notes))
        try:
            for g in self.groups.values():
                g.workload.start(self.now)
            self._schedule(self.fault_rng.randint(5, 30) * TICK, "fault")
            self._schedule(TICK, "mover")
            self._run_until(cfg.ticks * TICK)
            self._heal_all()
            self._run_until(self.now + cfg.liveness_ticks * TICK)
            if self.phase != "done":
                stuck = [f"group {g.gid}: {g.why}" for g in self.groups.values() if not g.converged]
                raise SafetyViolation(
                    "liveness", f"within {cfg.liveness_ticks} ticks of healing: {stuck}"
                )
            for g in self.groups.values():
                g.workload.stop()
                g.workload.give_up_all(self.now)
                self._final_state_check(g)
                hist = g.workload.history()
                chk = check_history(hist, max_steps=cfg.check_steps)
                res.checks.append(f"group {g.gid}: {chk.verdict.value}, {len(hist)} ops")
                if chk.verdict is Verdict.NOT_LINEARIZABLE:
                    raise SafetyViolation("linearizability", f"group {g.gid}: {chk.explanation}")
                if chk.verdict is Verdict.UNKNOWN:
                    res.notes.append(f"group {g.gid}: linearizability undecided")
        except SafetyViolation as e:
            res.ok = False
            res.rule = e.rule
            res.violation = f"{e} (at t={self.now / TICK:.2f} ticks, phase {self.phase})"
        except Exception as e:  # the core (or the executor) raised: a finding too
            res.ok = False
            res.rule = f"raised {type(e).__name__}"
            res.violation = f"{type(e).__name__}: {e}\n" + traceback.format_exc(limit=8)
        res.digest = self.hasher.hexdigest()
        res.events = self.events
        res.move_ticks = self.move_ticks
        counts: dict[str, int] = {"ok": 0, "ops": 0}
        for g in self.groups.values():
            for k, v in g.workload.counts().items():
                counts[k] = counts.get(k, 0) + v
        counts["moves_started"] = self.moves_started
        counts["moves_done"] = self.moves_done
        counts["moves_off_down"] = self.moves_off_down
        counts["replicas_created"] = sum(len(g.replicas) for g in self.groups.values())
        counts["messages"] = self.network.sent
        counts["crashes"] = sum(
            n.crashes for g in self.groups.values() for n in g.replicas.values()
        )
        res.counts = counts
        return res

    def _final_state_check(self, g: _Group) -> None:
        seen: dict[int, tuple[int, tuple[tuple[str, int], ...]]] = {}
        for rid, n in sorted(g.replicas.items()):
            if n.rawnode is None or rid in g.retired:
                continue
            d = n.sm.digest()
            first = seen.setdefault(n.applied, (rid, d))
            if first[1] != d:
                raise SafetyViolation(
                    "state-machine safety",
                    f"group {g.gid}: replicas {first[0]} and {rid} applied up to {n.applied} "
                    f"but hold different data",
                )


# -- many seeds ---------------------------------------------------------------------------


@dataclass(slots=True)
class MultiReport:
    results: list[MultiResult] = field(default_factory=list)

    @property
    def failures(self) -> list[MultiResult]:
        return [r for r in self.results if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        rs = self.results
        total: dict[str, int] = {}
        for r in rs:
            for k, v in r.counts.items():
                total[k] = total.get(k, 0) + v
        mt = [x for r in rs for x in r.move_ticks]
        pc = percentiles(mt)
        moves = (
            f"n={len(mt)} p50={pc[50]:.1f} p90={pc[90]:.1f} p99={pc[99]:.1f} max={pc[100]:.1f}"
            if mt
            else "n/a"
        )
        return "\n".join(
            [
                f"seeds: {len(rs)}  passed: {len(rs) - len(self.failures)}  failed: "
                f"{len(self.failures)}  events: {sum(r.events for r in rs)}  groups checked: "
                f"{sum(len(r.checks) for r in rs)}  client ops answered: {total.get('ok', 0)}",
                f"moves started: {total.get('moves_started', 0)}  finished: "
                f"{total.get('moves_done', 0)}  (away from a crashed host: "
                f"{total.get('moves_off_down', 0)})  replicas created: "
                f"{total.get('replicas_created', 0)}  host crashes (replica crashes): "
                f"{total.get('crashes', 0)}",
                f"move duration (ticks, first step to last): {moves}",
            ]
        )


def run_multi_seeds(
    seeds: list[int],
    config: MultiConfig | None = None,
    *,
    verbose: bool = False,
    stop_on_failure: bool = False,
    out: TextIO | None = None,
) -> MultiReport:
    base = config or MultiConfig()
    rep = MultiReport()
    for seed in seeds:
        r = MultiCluster(dataclasses.replace(base, seed=seed)).run()
        rep.results.append(r)
        if out is not None:
            if not r.ok:
                print(f"FAIL seed {seed}: {r.rule}\n  replay: {r.replay}", file=out)
                if verbose or len(seeds) == 1:
                    print("  " + (r.violation or "").replace("\n", "\n  "), file=out)
            elif verbose:
                print(f"seed {seed} ok: {r.counts}; {r.checks}; digest {r.digest}", file=out)
        if stop_on_failure and not r.ok:
            break
    if out is not None:
        print(rep.summary(), file=out)
    return rep


def run_multi(seed: int, **options: Any) -> MultiResult:
    return MultiCluster(MultiConfig(seed=seed, **options)).run()
