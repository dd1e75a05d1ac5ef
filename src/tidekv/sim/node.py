"""One simulated server: a :class:`RawNode` plus its "disk" and its state machine.

The driver follows the Ready contract literally, with a disk that takes time:

1. ``ready()``; ``rd.messages`` go to the network at once;
2. the writes (``entries``, ``hard_state``, ``snapshot``) are *in flight* until the disk
   completes them ``disk_delay`` units later (possibly 0);
3. on completion they land in :class:`MemoryStorage` (the only state a crash keeps), then
   ``rd.persisted_messages`` are sent, the snapshot and ``committed_entries`` are applied
   to the state machine, read states are queued, and ``advance`` is called.

A crash drops the RawNode, the in-flight Ready (its writes never land, its persisted
messages are never sent), the state machine and pending reads; only the storage survives.
A restart builds a new RawNode on that storage and restores the state machine from the
storage snapshot; the committed entries after it are applied again from the log.

Every ``compact_every`` applied entries the node snapshots its state machine and
compacts its log (keeping ``keep_entries``), so slow followers need InstallSnapshot.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tidekv.raft import (
    CompactedError,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryKind,
    LogUnavailable,
    MemoryStorage,
    Message,
    ProposalDropped,
    RawNode,
    ReadOnlyOption,
    ReadState,
    Ready,
    Role,
    decode_conf_change,
)
from tidekv.sim.invariants import Invariants
from tidekv.sim.statemachine import Command, KVStateMachine, decode_command

__all__ = ["NodeOptions", "SimNode"]


@dataclass(slots=True)
class NodeOptions:
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    read_only: ReadOnlyOption = ReadOnlyOption.SAFE
    max_clock_drift_ticks: int = 1
    max_inflight_msgs: int = 64
    max_size_per_msg: int = 4096
    #: disk latency range (units); 0 means the write completes within the same step
    disk_min: int = 0
    disk_max: int = 0
    compact_every: int = 0  # 0: never snapshot/compact
    keep_entries: int = 5
    #: idle groups quiesce (``Config.quiesce``); the cluster provides node liveness
    quiesce: bool = False


@dataclass(slots=True)
class _Flight:
    """A Ready whose writes are on their way to the disk."""

    rd: Ready
    incarnation: int
    done_at: int


@dataclass(slots=True)
class Applied:
    """What a node reports when it applies a client command."""

    node: int
    index: int
    command: Command
    fresh: bool
    result: Any


@dataclass(slots=True)
class Hooks:
    """How a node talks to the rest of the simulation."""

    send: Callable[[Message], None]
    schedule_disk: Callable[[int, int], None]  # (time, node id)
    on_apply: Callable[[Applied], None]
    on_read: Callable[[int, bytes, Any], None]  # (node, ctx, value)
    on_removed: Callable[[int], None]  # the node applied its own removal
    on_leader_commit: Callable[[SimNode], None]


@dataclass(slots=True)
class SimNode:
    id: int
    options: NodeOptions
    rng: random.Random
    hooks: Hooks
    invariants: Invariants
    storage: MemoryStorage
    rawnode: RawNode | None = None
    sm: KVStateMachine = field(default_factory=KVStateMachine)
    applied: int = 0
    incarnation: int = 0
    flight: _Flight | None = None
    #: read states waiting for ``applied >= index``
    reads: list[ReadState] = field(default_factory=list)
    last_snapshot: int = 0
    conf: ConfState = field(default_factory=ConfState)
    crashes: int = 0

    # -- life cycle -----------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self.rawnode is not None

    def start(self) -> None:
        """(Re)start from storage: a fresh RawNode, state machine from the snapshot."""
        o = self.options
        self.incarnation += 1
        cfg = Config(
            id=self.id,
            rng=random.Random(self.rng.getrandbits(64)),
            election_tick=o.election_tick,
            heartbeat_tick=o.heartbeat_tick,
            pre_vote=o.pre_vote,
            check_quorum=o.check_quorum,
            read_only_option=o.read_only,
            max_clock_drift_ticks=o.max_clock_drift_ticks,
            max_inflight_msgs=o.max_inflight_msgs,
            max_size_per_msg=o.max_size_per_msg,
            quiesce=o.quiesce,
        )
        self.rawnode = RawNode(cfg, self.storage)
        snap = self.storage.snapshot()
        self.sm = KVStateMachine.restore(snap.data)
        self.applied = snap.meta.index
        self.last_snapshot = snap.meta.index
        self.conf = self.rawnode.status().conf
        self.flight = None
        self.reads = []
        self.invariants.node_restarted(self.id, self.storage.hard_state.commit, self.applied)

    def crash(self) -> None:
        self.rawnode = None
        self.flight = None
        self.reads = []
        self.sm = KVStateMachine()
        self.crashes += 1

    # -- inputs ---------------------------------------------------------------------------

    def tick(self, now: int) -> None:
        rn = self.rawnode
        if rn is not None and not rn.quiesced:  # a node skips quiesced groups' ticks
            rn.tick()
            self.pump(now)

    def wake(self, now: int) -> bool:
        """Node liveness: the leader's host is gone; wake if quiesced (True if so)."""
        rn = self.rawnode
        if rn is None or not rn.quiesced:
            return False
        rn.unquiesce()
        self.pump(now)
        return True

    def deliver(self, now: int, m: Message) -> None:
        if self.rawnode is not None:
            self.rawnode.step(m)
            self.pump(now)

    def propose(self, now: int, data: bytes) -> bool:
        """A client's proposal; False when it is refused at once (down, no leader)."""
        rn = self.rawnode
        if rn is None:
            return False
        try:
            rn.propose(data)
        except ProposalDropped:
            return False
        self.pump(now)
        return True

    def read_index(self, now: int, ctx: bytes) -> bool:
        """A client's ReadIndex request; False when it is refused at once."""
        rn = self.rawnode
        if rn is None:
            return False
        try:
            rn.read_index(ctx)
        except ProposalDropped:
            return False
        self.pump(now)
        return True

    # -- the Ready loop -------------------------------------------------------------------

    def pump(self, now: int) -> None:
        """Hand out Readys until there is nothing to do or a write is in flight."""
        rn = self.rawnode
        while rn is not None and self.flight is None and rn.has_ready():
            self.observe()
            rd = rn.ready()
            for m in rd.messages:
                self.hooks.send(m)
            o = self.options
            delay = self.rng.randint(o.disk_min, o.disk_max) if o.disk_max else 0
            self.flight = _Flight(rd, self.incarnation, now + delay)
            if delay:
                self.hooks.schedule_disk(now + delay, self.id)
                return
            self.disk_done(now)
            rn = self.rawnode
        self.observe()

    def disk_done(self, now: int) -> None:
        """The in-flight writes are durable: finish the Ready."""
        fl = self.flight
        rn = self.rawnode
        if fl is None or rn is None or fl.incarnation != self.incarnation:
            return
        rd = fl.rd
        st = self.storage
        inv = self.invariants
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        if rd.entries:
            first = rd.entries[0].index
            try:
                prev: int | None = st.term(first - 1)
            except (CompactedError, LogUnavailable):
                prev = None
            commit = max(st.hard_state.commit, rd.hard_state.commit if rd.hard_state else 0)
            inv.observe_persist(self.id, rd.entries, prev, commit)
            st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        for m in rd.persisted_messages:
            self.hooks.send(m)
        if rd.snapshot is not None and rd.snapshot.meta.index > self.applied:
            self.sm = KVStateMachine.restore(rd.snapshot.data)
            self.applied = rd.snapshot.meta.index
            self.last_snapshot = max(self.last_snapshot, rd.snapshot.meta.index)
            self.conf = rd.snapshot.meta.conf
            inv.observe_snapshot_applied(self.id, self.applied)
        if rd.committed_entries:
            self.observe()
            self.apply(rd.committed_entries)
        self.reads.extend(rd.read_states)
        self.flight = None
        rn.advance(rd)
        self.serve_reads()
        self.maybe_compact()
        self.pump(now)

    def apply(self, entries: list[Entry]) -> None:
        rn = self.rawnode
        assert rn is not None
        for e in entries:
            if e.index <= self.applied:
                continue
            self.invariants.observe_apply(self.id, e)
            self.applied = e.index
            if e.kind == EntryKind.NORMAL:
                if e.data:
                    cmd = decode_command(e.data)
                    fresh, result = self.sm.apply(cmd)
                    self.hooks.on_apply(Applied(self.id, e.index, cmd, fresh, result))
            elif e.kind == EntryKind.CONF_CHANGE:
                cc = decode_conf_change(e.data)
                self.conf = rn.apply_conf_change(cc)
                if cc.type == ConfChangeType.REMOVE_NODE and cc.node_id == self.id:
                    self.hooks.on_removed(self.id)

    def serve_reads(self) -> None:
        if not self.reads:
            return
        keep: list[ReadState] = []
        for rs in self.reads:
            if rs.index <= self.applied:
                self.hooks.on_read(self.id, rs.request_ctx, self.sm)
            else:
                keep.append(rs)
        self.reads = keep

    def maybe_compact(self) -> None:
        every = self.options.compact_every
        if not every or self.applied - self.last_snapshot < every:
            return
        st = self.storage
        if self.applied > st.last_index():
            return
        st.create_snapshot(self.applied, self.conf, self.sm.snapshot())
        self.last_snapshot = self.applied
        cut = self.applied - self.options.keep_entries
        if cut > st.first_index():
            st.compact(cut)

    # -- observation ----------------------------------------------------------------------

    def observe(self) -> None:
        """Report role and commit to the invariant checker."""
        rn = self.rawnode
        if rn is None:
            return
        r = rn.raft
        log = r.log
        inv = self.invariants
        if r.role is Role.LEADER and inv.leaders.get(r.term) != self.id:
            inv.observe_leader(self.id, r.term, log.term, log.first_index())
        if log.committed != inv.node_commit.get(self.id, 0):
            before = inv.node_commit.get(self.id, 0)
            inv.observe_commit(self.id, r.term, log.committed, log.slice, log.first_index())
            if r.role is Role.LEADER and log.committed > before:
                self.hooks.on_leader_commit(self)
