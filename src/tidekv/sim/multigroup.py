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

import random
import traceback
from dataclasses import dataclass, field

from tidekv.check import Verdict, check_history
from tidekv.raft import (
    ConfState,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDropped,
    Snapshot,
    SnapshotMeta,
)
from tidekv.sharding.ring import Ring
from tidekv.sim.cluster import LULL_LEN, LULL_PERIOD, TICK
from tidekv.sim.control import RingControl
from tidekv.sim.events import EventLoop
from tidekv.sim.faults import FaultConfig, gate
from tidekv.sim.groups import (
    Envelope,
    SimGroup,
    check_quorum_durable,
    final_state_check,
    leader_of,
    stable_leader,
)
from tidekv.sim.invariants import Invariants, SafetyViolation
from tidekv.sim.liveness import HostLiveness
from tidekv.sim.mover import ReusingBook, advance_moves, start_move
from tidekv.sim.network import NetConfig, Network
from tidekv.sim.node import Applied, Hooks, NodeOptions, SimNode
from tidekv.sim.statemachine import Command, KVStateMachine, encode_command
from tidekv.sim.workload import Gateway, Workload, WorkloadConfig

__all__ = ["MultiCluster", "MultiConfig", "MultiResult", "replay_command"]

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
    #: the cluster metadata decides the moves: joins, decommissions, evictions of hosts
    #: down too long (tidekv.sim.control); off: random replacements
    ring: bool = False
    #: idle groups quiesce; each host's node-level liveness wakes the quiesced replicas
    #: whose leader's host went silent (tidekv.sim.liveness); clients pause in lulls
    quiesce: bool = True


def replay_command(cfg: MultiConfig) -> str:
    return (
        f"python -m tidekv.sim --groups {cfg.groups} --nodes {cfg.hosts} --seed {cfg.seed} "
        f"--ticks {cfg.ticks} --liveness-ticks {cfg.liveness_ticks} "
        f"--faults {cfg.faults.spec()}"
        + (" --ring" if cfg.ring else "")
        + ("" if cfg.quiesce else " --no-quiesce")
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


class MultiCluster(EventLoop[Envelope]):
    def __init__(self, config: MultiConfig) -> None:
        if config.hosts < REPLICATION:
            raise ValueError(f"need at least {REPLICATION} hosts")
        super().__init__()
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
            quiesce=config.quiesce,
        )
        self.liveness = HostLiveness(self.options.election_tick)
        self.quiet_ticks = 0
        self.wakes = 0
        self.phase = "chaos"
        self.hosts = list(range(1, config.hosts + 1))
        self.down: set[int] = set()
        self.periods = {h: TICK + (p.randint(-self.drift, self.drift) if self.drift else 0)
                        for h in self.hosts}  # fmt: skip
        self.partition_gen = 0
        self.moves_started = 0
        self.moves_done = 0
        #: snapshots delivered (new learners catch up by snapshot first)
        self.snapshots = 0
        #: moves that replace a replica on a crashed host (re-replication)
        self.moves_off_down = 0
        self.move_ticks: list[float] = []
        self.groups: dict[int, SimGroup] = {}
        self.control: RingControl | None = None
        if config.ring:
            self.control = RingControl(self, self.hosts, config.groups)
            placement = self.control.placement()
        else:
            ring = Ring(dict.fromkeys(self.hosts, 1))
            placement = list(ring.place(config.groups, REPLICATION).replicas)
        for gid, hosts in enumerate(placement):
            self._make_group(gid, hosts)
        for h in self.hosts:
            self._schedule(self.node_rng.randint(1, self.periods[h]), "tick", 0, h)

    # -- plumbing -------------------------------------------------------------------------

    def _schedule(self, time: int, kind: str, g: int = 0, a: int = 0, b: int = 0) -> None:
        self._push_timer(time, kind, g, a, b)

    def _make_group(self, gid: int, hosts: tuple[int, ...]) -> None:
        wl_rng = random.Random(self.work_rng.getrandbits(64))
        box: list[SimGroup] = []
        gw = Gateway(
            node_ids=lambda: [r for r in box[0].replicas if r not in box[0].retired],
            propose=lambda rid, data: box[0].replicas[rid].propose(self.now, data),
            read_index=lambda rid, ctx: box[0].replicas[rid].read_index(self.now, ctx),
            schedule=lambda t, kind, arg: self._schedule(t, kind, gid, arg[0], arg[1]),
        )
        wcfg = WorkloadConfig(clients=self.cfg.clients, keys=self.cfg.keys)
        if self.cfg.quiesce:
            wcfg.lull_period, wcfg.lull_len = LULL_PERIOD, LULL_LEN
        wl = Workload(wl_rng, wcfg, gw)
        g = SimGroup(gid, Invariants(), wl)
        if self.cfg.reuse_replica_ids:
            g.book = ReusingBook()
        box.append(g)
        self.groups[gid] = g
        voters = frozenset(range(1, len(hosts) + 1))
        for rid, host in zip(sorted(voters), hosts, strict=True):
            self.add_replica(g, rid, host, ConfState(voters=voters), bootstrap=True)
        g.book.next_id = len(hosts) + 1

    def _hooks(self, g: SimGroup) -> Hooks:
        return Hooks(
            send=lambda m: self._send(g, m),
            schedule_disk=lambda t, rid: self._schedule(t, "disk", g.gid, rid),
            on_apply=lambda a: self._on_apply(g, a),
            on_read=lambda rid, ctx, sm: g.workload.on_read(self.now, rid, ctx, sm),
            on_removed=lambda rid: self.retire(g, rid),
            on_leader_commit=lambda node: check_quorum_durable(
                g.replicas, node, f"group {g.gid}: "
            ),
        )

    def add_replica(
        self, g: SimGroup, rid: int, host: int, conf: ConfState, *, bootstrap: bool = False
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

    def retire(self, g: SimGroup, rid: int) -> None:
        if rid not in g.retired:
            g.retired.add(rid)
            self.trace(f"{self.now}|retire|{g.gid}|{rid};")

    def _send(self, g: SimGroup, m: Message) -> None:
        if m.to in g.retired or m.to not in g.host_of:
            return
        self.network.send(self.now, Envelope(g.gid, g.host_of[m.frm], g.host_of[m.to], m))

    def _on_drop(self, env: Envelope) -> None:
        if env.msg.type == MessageType.SNAP:
            self._schedule(self.now, "snap_status", env.group, env.msg.frm, env.msg.to)

    def _on_apply(self, g: SimGroup, a: Applied) -> None:
        if a.command.client == 0:
            if g.probe_done is None and g.probe_sent is not None and a.command.seq == g.probe_seq:
                g.probe_done = self.now
            return
        g.workload.on_apply(self.now, a)

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
        self.trace(f"{self.now}|fault|{act};")
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
            if self.control is not None:
                self.control.membership(rng)
            else:
                start_move(self, rng)
        elif act == "transfer":
            g = self.groups[rng.choice(sorted(self.groups))]
            ld = leader_of(g)
            if ld is not None and ld.rawnode is not None:
                voters = sorted(ld.rawnode.raft.voters - {ld.id})
                if voters:
                    ld.rawnode.transfer_leader(rng.choice(voters))
                    ld.pump(self.now)
        elif act == "clog":
            host = rng.choice(self.hosts)
            others = [h for h in self.hosts if h != host]
            until = self.now + rng.randint(3, 25) * TICK
            self.network.clog_some(rng, host, others, until)

    def _crash_host(self, host: int) -> None:
        self.down.add(host)
        self.trace(f"{self.now}|crash|{host};")
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

    # -- the loop -------------------------------------------------------------------------

    def _step(self, end: int) -> bool:
        ev = self._next_event(end)
        if ev is None:
            return False
        d, timer = ev
        if timer is None:
            if d is None:
                return True
            env = d.msg
            m = env.msg
            nt = self.now
            self.trace(f"{nt}|m|{env.group}|{int(m.type)}|{m.frm}|{m.to}|{m.term}|{m.index};")
            g = self.groups[env.group]
            node = g.replicas.get(m.to)
            if node is None or m.to in g.retired:
                return True
            node.deliver(self.now, m)
            if m.type == MessageType.SNAP:
                self.snapshots += 1
                sender = g.replicas.get(m.frm)
                if sender is not None and sender.rawnode is not None:
                    sender.rawnode.report_snapshot(m.to, ok=True)
                    sender.pump(self.now)
            return True
        time, _, kind, gid, a, b = timer
        self.trace(f"{time}|{kind}|{gid}|{a}|{b};")
        g = self.groups[gid]
        if kind == "tick":
            if a not in self.down and self.control is not None:
                self.control.heard(a)
            if a not in self.down:
                dead = (
                    self.liveness.dead_peers(a, self.hosts, lambda p: self._hears(a, p))
                    if self.cfg.quiesce
                    else set()
                )
                for grp in self.groups.values():  # one host ticks all its replicas
                    for rid, h in grp.host_of.items():
                        if h == a and rid not in grp.retired:
                            node = grp.replicas[rid]
                            rn = node.rawnode
                            if rn is not None and rn.quiesced:
                                self.quiet_ticks += 1
                                lead_host = grp.host_of.get(rn.raft.lead)
                                if lead_host in dead and node.wake(self.now):
                                    self.wakes += 1
                                    self.trace(f"{self.now}|wake|{grp.gid}|{rid};")
                            node.tick(self.now)
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
            if self.control is not None:
                self.control.tick()
            else:
                advance_moves(self)
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

    def _hears(self, me: int, peer: int) -> bool:
        net = self.network
        return (
            peer not in self.down
            and (peer, me) not in net.blocked
            and net.clogged.get((peer, me), 0) <= self.now
        )

    # -- liveness -------------------------------------------------------------------------

    def _heal_all(self) -> None:
        self.phase = "liveness"
        self.network.calm()
        self.partition_gen += 1
        for h in sorted(self.down):
            self._restart_host(h)
        self.heal_time = self.now
        self._schedule(self.now + TICK, "probe")

    def _group_live(self, g: SimGroup) -> bool:
        """Has the group converged: a stable leader, its probe committed, its move done,
        and every member applied up to the leader's commit index of that moment?"""
        if g.converged:
            return True
        ld = stable_leader(g)
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
        live = all([self._group_live(g) for g in self.groups.values()])
        if live and (self.control is None or self.control.settled()):
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
                if self.control is not None:
                    stuck += [
                        f"shard {s}: {'blocked: ' + sh.blocked if sh.blocked else 'moving'} "
                        f"at step {sh.next_step} of {[str(x) for x in sh.steps]}"
                        for s, sh in sorted(self.control.state.movements().items())
                    ]
                raise SafetyViolation(
                    "liveness", f"within {cfg.liveness_ticks} ticks of healing: {stuck}"
                )
            if self.control is not None:
                self.control.check_final()
            for g in self.groups.values():
                g.workload.stop()
                g.workload.give_up_all(self.now)
                final_state_check(g.replicas, g.retired, f"group {g.gid}: ")
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
        counts["snapshots"] = self.snapshots
        if self.control is not None:
            counts.update(self.control.counts)
            counts["moves_started"] = counts["moves_done"] + len(self.control.state.movements())
        counts["replicas_created"] = sum(len(g.replicas) for g in self.groups.values())
        counts["messages"] = self.network.sent
        counts["quiet_ticks"] = self.quiet_ticks
        counts["liveness_wakes"] = self.wakes
        counts["crashes"] = sum(
            n.crashes for g in self.groups.values() for n in g.replicas.values()
        )
        res.counts = counts
        return res
