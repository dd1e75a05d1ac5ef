"""One simulated run: nodes, network, clients and faults, all driven by one seed.

Time is an integer (100 units = one nominal tick). ``random.Random(seed)`` is the root;
each component gets its own generator drawn from it in a fixed order, so adding a draw
in one component does not shift the others. Events come from two queues, the network's
deliveries and the timers (node ticks, disk completions, client timers, faults); at
equal times deliveries go first and ties break by insertion order, so a run is a pure
function of (seed, options) and its event trace digest is reproducible.

A run has two phases:

1. **chaos** (``ticks`` ticks): clients run while faults come and go;
2. **liveness**: every fault is healed (links restored, crashed nodes restarted, the
   network made clean); within ``liveness_ticks`` ticks the cluster must have a leader
   that every live voter follows, commit a fresh probe entry, and bring every live member
   up to the leader's commit index. Then the client history goes to the
   linearizability checker.

Safety invariants (:mod:`tidekv.sim.invariants`) are checked after every event.
"""

from __future__ import annotations

import random
import traceback
from dataclasses import dataclass, field

from tidekv.check import Verdict, check_history
from tidekv.raft import (
    ConfChange,
    ConfChangeType,
    ConfState,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDropped,
    ReadOnlyOption,
    Role,
    Snapshot,
    SnapshotMeta,
)
from tidekv.sim.events import EventLoop
from tidekv.sim.faults import FaultConfig, gate
from tidekv.sim.groups import check_quorum_durable, final_state_check
from tidekv.sim.invariants import Invariants, SafetyViolation
from tidekv.sim.liveness import HostLiveness
from tidekv.sim.network import NetConfig, Network
from tidekv.sim.node import Applied, Hooks, NodeOptions, SimNode
from tidekv.sim.statemachine import Command, KVStateMachine, encode_command
from tidekv.sim.workload import Gateway, Workload, WorkloadConfig

__all__ = ["TICK", "Cluster", "SimConfig", "SimResult", "replay_command"]

TICK = 100
"""Simulator time units per nominal tick."""

LIVENESS_TICKS = 200
"""Default bound for the liveness phase (ticks from healing to a converged cluster)."""

LULL_PERIOD = 60 * TICK
LULL_LEN = 25 * TICK
"""With quiescence on, clients start nothing in the last 25 ticks of every 60."""


@dataclass(slots=True)
class SimConfig:
    seed: int = 1
    nodes: int = 5
    ticks: int = 400
    faults: FaultConfig = field(default_factory=FaultConfig)
    liveness_ticks: int = LIVENESS_TICKS
    clients: int = 4
    keys: int = 3
    check_steps: int = 2_000_000
    #: a deliberately broken mode for the simulator's own tests: reads are answered
    #: from the contacted node's state at once, without ReadIndex (stale reads)
    unsafe_local_reads: bool = False
    #: which seeds serve reads from the leader lease (when the 'lease' fault is on):
    #: "mixed" (30% of seeds), "always" or "never"
    lease: str = "mixed"
    #: the transport tells the sender about every lost message (report_unreachable),
    #: as a connection-oriented transport would; off by default (silent loss)
    report_unreachable: bool = False
    #: idle groups quiesce (RawNode quiescence + the node-level liveness signal that
    #: wakes followers of a dead or cut-off leader host); clients pause in lulls
    quiesce: bool = True


def replay_command(cfg: SimConfig) -> str:
    cmd = (
        f"python -m tidekv.sim --seed {cfg.seed} --nodes {cfg.nodes} --ticks {cfg.ticks} "
        f"--faults {cfg.faults.spec()}"
    )
    if cfg.liveness_ticks != LIVENESS_TICKS:
        cmd += f" --liveness-ticks {cfg.liveness_ticks}"
    if cfg.lease != "mixed":
        cmd += f" --lease {cfg.lease}"
    if cfg.report_unreachable:
        cmd += " --report-unreachable"
    if not cfg.quiesce:
        cmd += " --no-quiesce"
    return cmd


@dataclass(slots=True)
class SimResult:
    config: SimConfig
    ok: bool = True
    violation: str | None = None
    rule: str | None = None
    digest: str = ""
    events: int = 0
    end_time: int = 0
    notes: list[str] = field(default_factory=list)
    #: ticks from the first candidate of a term to its leader, for every elected term
    election_ticks: list[float] = field(default_factory=list)
    #: invoke -> answer of completed writes/CAS, in ticks
    commit_ticks: list[float] = field(default_factory=list)
    read_ticks: list[float] = field(default_factory=list)
    liveness_election_ticks: float | None = None
    liveness_commit_ticks: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    check: str = ""
    lease: bool = False

    @property
    def replay(self) -> str:
        return replay_command(self.config)


class _Stop(Exception):
    pass


class Cluster(EventLoop[Message]):
    def __init__(self, config: SimConfig) -> None:
        super().__init__()
        self.cfg = config
        faults, notes = gate(config.faults)
        self.faults = faults
        self.notes = notes
        root = random.Random(config.seed)
        # one generator per component, drawn in a fixed order
        self.net_rng = random.Random(root.getrandbits(64))
        self.fault_rng = random.Random(root.getrandbits(64))
        self.work_rng = random.Random(root.getrandbits(64))
        self.node_rng = random.Random(root.getrandbits(64))
        self.param_rng = random.Random(root.getrandbits(64))

        p = self.param_rng
        net = NetConfig()
        if faults.net:
            net.drop = p.choice((0.0, 0.01, 0.05, 0.1))
            net.duplicate = p.choice((0.0, 0.01, 0.05))
            net.slow = p.choice((0.0, 0.01, 0.03))
        self.net_config = net
        self.network = Network(self.net_rng, net, on_drop=self._on_drop)
        draw = p.random()  # drawn in every mode, so the later draws do not shift
        self.lease = faults.lease and {"always": True, "never": False}.get(config.lease, draw < 0.3)
        drift = 2 if faults.drift else 0
        opts = NodeOptions(
            read_only=ReadOnlyOption.LEASE_BASED if self.lease else ReadOnlyOption.SAFE,
            # ticks are counted, so two clocks differ by up to one tick of phase on top
            # of the drift: +-2% over an election timeout stays within 2 ticks
            max_clock_drift_ticks=2,
            disk_max=p.choice((0, 30, 120)) if faults.disk else 0,
            compact_every=p.choice((20, 50)) if faults.snapshot else 0,
            max_inflight_msgs=p.choice((4, 64)),
            quiesce=config.quiesce,
        )
        self.options = opts
        self.drift = drift

        self.inv = Invariants()
        self.nodes: dict[int, SimNode] = {}
        self.retired: set[int] = set()
        self.periods: dict[int, int] = {}
        self.next_id = config.nodes + 1
        self.voters0 = frozenset(range(1, config.nodes + 1))
        self.partition_gen = 0
        self.cand_start: dict[int, int] = {}
        self.elected: set[int] = set()
        self.election_ticks: list[float] = []
        self.probe_seq = 0
        self.probe_sent: int | None = None
        self.probe_done: int | None = None
        self.phase = "chaos"
        self.local_reads: list[bytes] = []

        gw = Gateway(
            node_ids=self._client_nodes,
            propose=self._client_propose,
            read_index=self._client_read,
            schedule=lambda t, kind, arg: self._schedule(t, kind, arg[0], arg[1]),
        )
        wl = WorkloadConfig(clients=config.clients, keys=config.keys)
        if config.quiesce:
            wl.lull_period, wl.lull_len = LULL_PERIOD, LULL_LEN
        self.liveness = HostLiveness(opts.election_tick)
        self.quiet_ticks = 0
        self.wakes = 0
        self.workload = Workload(self.work_rng, wl, gw)
        for nid in sorted(self.voters0):
            self._add_node(nid, ConfState(voters=self.voters0), bootstrap=True)

    # -- plumbing -------------------------------------------------------------------------

    def _schedule(self, time: int, kind: str, a: int = 0, b: int = 0) -> None:
        self._push_timer(time, kind, a, b)

    def _hooks(self) -> Hooks:
        return Hooks(
            send=self._send,
            schedule_disk=lambda t, nid: self._schedule(t, "disk", nid),
            on_apply=self._on_apply,
            on_read=lambda nid, ctx, sm: self._on_read(nid, ctx, sm),
            on_removed=self._on_removed,
            on_leader_commit=lambda node: check_quorum_durable(self.nodes, node),
        )

    def _add_node(self, nid: int, conf: ConfState, *, bootstrap: bool = False) -> SimNode:
        storage = MemoryStorage(conf)
        if bootstrap:
            # The initial membership lives in a snapshot at (index 1, term 1), as in
            # etcd's bootstrap: a server added later (empty storage) then needs that
            # snapshot and so learns the full membership. Were the log to start at
            # index 1 instead, the newcomer would replay the conf changes on top of an
            # empty membership and count votes among the wrong voters.
            meta = SnapshotMeta(index=1, term=1, conf=conf)
            storage.apply_snapshot(Snapshot(meta, KVStateMachine().snapshot()))
            storage.set_hard_state(HardState(term=1, commit=1))
        node = SimNode(
            id=nid,
            options=self.options,
            rng=random.Random(self.node_rng.getrandbits(64)),
            hooks=self._hooks(),
            invariants=self.inv,
            storage=storage,
        )
        self.nodes[nid] = node
        node.start()
        period = TICK + (self.node_rng.randint(-self.drift, self.drift) if self.drift else 0)
        self.periods[nid] = period
        self._schedule(self.now + self.node_rng.randint(1, period), "tick", nid)
        return node

    def _on_drop(self, m: Message) -> None:
        # The transport knows when a snapshot did not get through and says so
        # (etcd's ReportSnapshot); without it the leader would wait for it forever.
        if m.type == MessageType.SNAP:
            self._schedule(self.now, "snap_status", m.frm, m.to)
        if self.cfg.report_unreachable:
            self._schedule(self.now, "unreachable", m.frm, m.to)

    def _send(self, m: Message) -> None:
        if m.to in self.retired:
            return
        self.network.send(self.now, m)

    # -- client gateway -------------------------------------------------------------------

    def _client_nodes(self) -> list[int]:
        return [nid for nid in self.nodes if nid not in self.retired]

    def _client_propose(self, nid: int, data: bytes) -> bool:
        return self.nodes[nid].propose(self.now, data)

    def _client_read(self, nid: int, ctx: bytes) -> bool:
        node = self.nodes[nid]
        if node.rawnode is None:
            return False
        if self.cfg.unsafe_local_reads:
            self._schedule(self.now + 1, "local_read", nid, len(self.local_reads))
            self.local_reads.append(ctx)
            return True
        return node.read_index(self.now, ctx)

    def _on_apply(self, a: Applied) -> None:
        if a.command.client == 0:
            if (
                self.probe_done is None
                and a.command.seq == self.probe_seq
                and self.probe_sent is not None
            ):
                self.probe_done = self.now
            return
        self.workload.on_apply(self.now, a)

    def _on_read(self, nid: int, ctx: bytes, sm: KVStateMachine) -> None:
        self.workload.on_read(self.now, nid, ctx, sm)

    def _on_removed(self, nid: int) -> None:
        # a node that applied its own removal is shut down by the operator (a snapshot
        # without it is no such sign: it may predate the node's addition)
        self.retired.add(nid)
        self.trace(f"{self.now}|retire|{nid};")

    # -- faults ---------------------------------------------------------------------------

    def _leader(self) -> SimNode | None:
        best: SimNode | None = None
        best_term = -1
        for n in self.nodes.values():
            rn = n.rawnode
            if rn is None or n.id in self.retired or rn.raft.role is not Role.LEADER:
                continue
            if rn.raft.term > best_term:
                best, best_term = n, rn.raft.term
        return best

    def _fault(self) -> None:
        f = self.faults
        rng = self.fault_rng
        actions: list[str] = []
        if f.partition:
            actions += ["partition", "one_way", "isolate_leader", "heal"]
        if f.crash:
            actions += ["crash", "crash", "crash_leader"]
        if f.membership:
            actions += ["membership", "membership"]
        if f.transfer:
            actions += ["transfer"]
        if f.clog:
            actions += ["clog"]
            if f.transfer:
                actions += ["clogged_transfer"]
        if not actions:
            return
        act = rng.choice(actions)
        self.trace(f"{self.now}|fault|{act};")
        live = sorted(nid for nid, n in self.nodes.items() if n.up and nid not in self.retired)
        members = sorted(nid for nid in self.nodes if nid not in self.retired)
        if act in ("partition", "one_way", "isolate_leader", "heal"):
            self.network.heal()
            self.partition_gen += 1
            if act == "heal":
                return
            if act == "isolate_leader":
                ld = self._leader()
                if ld is None:
                    return
                side = {ld.id}
            else:
                k = rng.randint(1, max(1, len(members) // 2))
                side = set(rng.sample(members, k))
            self.network.partition(side, set(members) - side, one_way=act == "one_way")
            self._schedule(
                self.now + rng.randint(3, 40) * TICK, "heal_partition", self.partition_gen
            )
        elif act in ("crash", "crash_leader"):
            if act == "crash_leader":
                ld = self._leader()
                victim = ld.id if ld is not None else None
            else:
                victim = rng.choice(live) if live else None
            if victim is None:
                return
            self.nodes[victim].crash()
            self.trace(f"{self.now}|crash|{victim};")
            self._schedule(self.now + rng.randint(2, 40) * TICK, "restart", victim)
        elif act == "membership":
            self._membership(rng)
        elif act == "clog":
            node = rng.choice(members)
            others = [m for m in members if m != node]
            until = self.now + rng.randint(3, 25) * TICK
            self.network.clog_some(rng, node, others, until)
        elif act == "clogged_transfer":
            # a transfer whose TimeoutNow is held up on its way to the target
            ld = self._leader()
            if ld is None or ld.rawnode is None:
                return
            voters = sorted(ld.rawnode.raft.voters - {ld.id})
            if voters:
                target = rng.choice(voters)
                until = self.now + rng.randint(5, 25) * TICK
                self.network.clog(ld.id, target, until)
                ld.rawnode.transfer_leader(target)
                ld.pump(self.now)
                if rng.random() < 0.5:
                    # and when the TimeoutNow finally leaves, the old leader goes deaf:
                    # it can still send but hears nobody (the worst case for a lease)
                    self._schedule(until, "deafen", ld.id)
        elif act == "transfer":
            ld = self._leader()
            if ld is None or ld.rawnode is None:
                return
            voters = sorted(ld.rawnode.raft.voters - {ld.id})
            if voters:
                target = rng.choice(voters)
                ld.rawnode.transfer_leader(target)
                ld.pump(self.now)

    def _membership(self, rng: random.Random) -> None:
        ld = self._leader()
        if ld is None or ld.rawnode is None:
            return
        r = ld.rawnode.raft
        voters, learners = r.voters, r.learners
        choices: list[str] = []
        if len(voters) + len(learners) < 8:
            choices.append("add_learner")
        if learners:
            choices.append("promote")
        if len(voters) > 3:
            choices.append("remove")
        if learners:
            choices.append("remove_learner")
        if not choices:
            return
        what = rng.choice(choices)
        if what == "add_learner":
            nid = self.next_id
            cc = ConfChange(ConfChangeType.ADD_LEARNER, nid)
        elif what == "promote":
            nid = rng.choice(sorted(learners))
            cc = ConfChange(ConfChangeType.ADD_VOTER, nid)
        elif what == "remove":
            nid = rng.choice(sorted(voters))
            cc = ConfChange(ConfChangeType.REMOVE_NODE, nid)
        else:
            nid = rng.choice(sorted(learners))
            cc = ConfChange(ConfChangeType.REMOVE_NODE, nid)
        try:
            ld.rawnode.propose_conf_change(cc)
        except ProposalDropped:
            return
        self.trace(f"{self.now}|conf|{what}|{nid};")
        if what == "add_learner":
            self.next_id += 1
            # the new server starts empty and waits for the leader to contact it
            self._add_node(nid, ConfState())
        ld.pump(self.now)

    # -- the loop -------------------------------------------------------------------------

    def _observe_roles(self, node: SimNode) -> None:
        rn = node.rawnode
        if rn is None:
            return
        r = rn.raft
        if r.role is Role.CANDIDATE and r.term not in self.cand_start:
            self.cand_start[r.term] = self.now
        elif r.role is Role.LEADER and r.term not in self.elected:
            self.elected.add(r.term)
            start = self.cand_start.get(r.term)
            if start is not None:
                self.election_ticks.append((self.now - start) / TICK)

    def _step(self, end: int) -> bool:
        ev = self._next_event(end)
        if ev is None:
            return False
        d, timer = ev
        if timer is None:
            if d is None:
                return True
            m = d.msg
            nt = self.now
            self.trace(f"{nt}|m|{int(m.type)}|{m.frm}|{m.to}|{m.term}|{m.index}|{len(m.entries)};")
            node = self.nodes.get(m.to)
            if node is None or m.to in self.retired:
                return True
            node.deliver(self.now, m)
            self._observe_roles(node)
            if m.type == MessageType.SNAP:
                sender = self.nodes.get(m.frm)
                if sender is not None and sender.rawnode is not None:
                    sender.rawnode.report_snapshot(m.to, ok=True)
                    sender.pump(self.now)
            return True
        time, _, kind, a, b = timer
        self.trace(f"{time}|{kind}|{a}|{b};")
        if kind == "tick":
            node = self.nodes[a]
            if a not in self.retired:
                if node.rawnode is not None and node.rawnode.quiesced:
                    self.quiet_ticks += 1
                node.tick(self.now)
                if self.cfg.quiesce:
                    self._node_liveness(node)
                self._observe_roles(node)
                self._schedule(self.now + self.periods[a], "tick", a)
        elif kind == "disk":
            node = self.nodes[a]
            node.disk_done(self.now)
            self._observe_roles(node)
        elif kind == "client":
            self.workload.on_client_timer(self.now, a)
        elif kind == "timeout":
            self.workload.on_timeout(self.now, a, b)
        elif kind == "fault":
            if self.phase == "chaos":
                self._fault()
                self._schedule(self.now + self.fault_rng.randint(2, 15) * TICK, "fault")
        elif kind == "deafen":
            if self.phase == "chaos":
                self.network.heal()
                self.partition_gen += 1
                others = {nid for nid in self.nodes if nid != a and nid not in self.retired}
                self.network.partition(others, {a}, one_way=True)
                heal_at = self.now + self.fault_rng.randint(5, 30) * TICK
                self._schedule(heal_at, "heal_partition", self.partition_gen)
        elif kind == "heal_partition":
            if a == self.partition_gen:
                self.network.heal()
        elif kind == "restart":
            node = self.nodes[a]
            if not node.up and a not in self.retired and self.phase == "chaos":
                node.start()
                node.pump(self.now)
        elif kind == "snap_status":
            node = self.nodes[a]
            if node.rawnode is not None:
                node.rawnode.report_snapshot(b, ok=False)
                node.pump(self.now)
        elif kind == "unreachable":
            node = self.nodes[a]
            if node.rawnode is not None:
                node.rawnode.report_unreachable(b)
                node.pump(self.now)
        elif kind == "local_read":
            node = self.nodes[a]
            if node.rawnode is not None:
                self._on_read(a, self.local_reads[b], node.sm)
        elif kind == "probe":
            self._liveness_probe()
        return True

    def _hears(self, me: int, peer: int) -> bool:
        n = self.nodes.get(peer)
        net = self.network
        return (
            n is not None
            and n.up
            and (peer, me) not in net.blocked
            and net.clogged.get((peer, me), 0) <= self.now
        )

    def _node_liveness(self, node: SimNode) -> None:
        """The node's pings: wake the group if its leader's node went silent."""
        me = node.id
        peers = [nid for nid in self.nodes if nid not in self.retired]
        dead = self.liveness.dead_peers(me, peers, lambda p: self._hears(me, p))
        rn = node.rawnode
        if dead and rn is not None and rn.raft.lead in dead and node.wake(self.now):
            self.wakes += 1
            self.trace(f"{self.now}|wake|{me}|{rn.raft.lead};")

    # -- liveness -------------------------------------------------------------------------

    def _heal_all(self) -> None:
        self.phase = "liveness"
        self.network.calm()
        self.partition_gen += 1
        for nid in sorted(self.nodes):
            node = self.nodes[nid]
            if not node.up and nid not in self.retired:
                node.start()
                node.pump(self.now)
        self.heal_time = self.now
        self.stable_leader_at: int | None = None
        self._schedule(self.now + TICK, "probe")

    def _stable_leader(self) -> SimNode | None:
        ld = self._leader()
        if ld is None or ld.rawnode is None:
            return None
        r = ld.rawnode.raft
        for v in r.voters:
            n = self.nodes.get(v)
            if n is None or v in self.retired or n.rawnode is None:
                continue
            if n.rawnode.raft.lead != ld.id or n.rawnode.raft.term != r.term:
                return None
        return ld

    def _liveness_probe(self) -> None:
        ld = self._stable_leader()
        if ld is not None and ld.rawnode is not None:
            if self.stable_leader_at is None:
                self.stable_leader_at = self.now
            if self.probe_sent is None:
                self.probe_seq += 1
                cmd = Command(0, self.probe_seq, "write", "__probe__", self.probe_seq)
                try:
                    ld.rawnode.propose(encode_command(cmd))
                    self.probe_sent = self.now
                    ld.pump(self.now)
                except ProposalDropped:
                    pass
            elif self.probe_done is not None and self._converged(ld):
                self.phase = "done"
                return
        else:
            self.stable_leader_at = None
            if self.probe_sent is not None and self.probe_done is None:
                self.probe_sent = None  # retry with the next leader
        self._schedule(self.now + TICK, "probe")

    def _converged(self, ld: SimNode) -> bool:
        assert ld.rawnode is not None
        r = ld.rawnode.raft
        commit = r.log.committed
        for nid in r.voters | r.learners:
            n = self.nodes.get(nid)
            if n is None or nid in self.retired or n.rawnode is None:
                continue
            if n.applied < commit:
                return False
        return True

    # -- run ------------------------------------------------------------------------------

    def run(self) -> SimResult:
        cfg = self.cfg
        res = SimResult(config=cfg, notes=list(self.notes), lease=self.lease)
        try:
            self.workload.start(self.now)
            if any(
                (
                    self.faults.partition,
                    self.faults.crash,
                    self.faults.membership,
                    self.faults.transfer,
                    self.faults.clog,
                )
            ):
                self._schedule(self.fault_rng.randint(5, 30) * TICK, "fault")
            self._run_until(cfg.ticks * TICK)
            self._heal_all()
            deadline = self.now + cfg.liveness_ticks * TICK
            self._run_until(deadline)
            if self.phase != "done":
                ld = self._stable_leader()
                what = (
                    "no stable leader"
                    if ld is None
                    else "probe entry not committed"
                    if self.probe_done is None
                    else "members did not catch up"
                )
                raise SafetyViolation(
                    "liveness",
                    f"{what} within {cfg.liveness_ticks} ticks after healing every fault\n"
                    + self.describe(),
                )
            self.workload.stop()
            self.workload.give_up_all(self.now)
            assert self.stable_leader_at is not None and self.probe_sent is not None
            assert self.probe_done is not None
            res.liveness_election_ticks = (self.stable_leader_at - self.heal_time) / TICK
            res.liveness_commit_ticks = (self.probe_done - self.probe_sent) / TICK
            final_state_check(self.nodes, self.retired)
            hist = self.workload.history()
            chk = check_history(hist, max_steps=cfg.check_steps)
            res.check = f"{chk.verdict.value}, {len(hist)} ops, {chk.states_explored} steps"
            if chk.verdict is Verdict.NOT_LINEARIZABLE:
                raise SafetyViolation("linearizability", chk.explanation)
            if chk.verdict is Verdict.UNKNOWN:
                res.notes.append(f"linearizability undecided: {chk.explanation}")
        except SafetyViolation as e:
            res.ok = False
            res.rule = e.rule
            res.violation = f"{e} (at t={self.now / TICK:.2f} ticks, phase {self.phase})"
        except Exception as e:  # the core raised: that is a finding too
            res.ok = False
            res.rule = f"core raised {type(e).__name__}"
            res.violation = (
                f"{type(e).__name__}: {e} (at t={self.now / TICK:.2f} ticks, phase "
                f"{self.phase})\n" + traceback.format_exc(limit=8)
            )
        res.digest = self.hasher.hexdigest()
        res.events = self.events
        res.end_time = self.now
        res.election_ticks = self.election_ticks
        res.commit_ticks = [x / TICK for x in self.workload.latencies]
        res.read_ticks = [x / TICK for x in self.workload.read_latencies]
        res.counts = self.workload.counts()
        res.counts["messages"] = self.network.sent
        res.counts["dropped"] = self.network.dropped
        res.counts["crashes"] = sum(n.crashes for n in self.nodes.values())
        res.counts["nodes"] = len(self.nodes)
        res.counts["max_commit"] = self.inv.max_committed
        res.counts["quiet_ticks"] = self.quiet_ticks
        res.counts["liveness_wakes"] = self.wakes
        return res

    def describe(self) -> str:
        """Every node's state (and the leaders' view of their followers), for reports."""
        lines: list[str] = []
        for nid, n in sorted(self.nodes.items()):
            rn = n.rawnode
            tag = " (retired)" if nid in self.retired else ""
            if rn is None:
                lines.append(f"node {nid}{tag}: down")
                continue
            st = rn.status()
            lines.append(
                f"node {nid}{tag}: {st.role.name} term {st.term} lead {st.lead} commit "
                f"{st.commit} applied {n.applied} last {st.last_index} first "
                f"{n.storage.first_index()} voters {sorted(st.conf.voters)} learners "
                f"{sorted(st.conf.learners)}"
            )
            for k, p in st.progress.items():
                lines.append(
                    f"    -> {k}: match {p.match} next {p.next} {p.state.name} inflight "
                    f"{p.inflight} active {p.recent_active} pending_snap {p.pending_snapshot}"
                )
        return "\n".join(lines)
