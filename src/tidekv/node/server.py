"""The node: one asyncio loop that drives every Raft group hosted in this process.

The loop (:meth:`Node._drive`), once per wake-up:

1. every replica that may have work (the *dirty* ones, below) hands its queued proposals
   and read requests to its core;
2. every such replica with a Ready sends ``messages`` at once, writes entries, hard state
   and snapshot to the shared WAL (buffered);
3. ONE ``fsync`` of the WAL, in a worker thread, covers every group's writes since the
   last one (group commit) — the loop keeps accepting requests meanwhile, and they are
   proposed in the next turn, so the batch grows with the load; while it runs, the
   committed entries that were already durable on this node before this turn are
   applied and answered (the CPU work overlaps the disk wait);
4. every replica sends ``persisted_messages`` (votes and append acks promise durable
   state), applies committed entries to its engine, answers reads and advances.

Ticks come from a timer every ``tick_ms``. Messages from peers are stepped as they
arrive (the transport calls :meth:`Node._on_messages`) and wake the loop.

Dirty replicas: a turn looks only at the replicas marked since the last turn, not at every
hosted one (64+ groups on a node, one of them busy, would cost 64 ``has_ready`` calls a
turn). Whatever can give a replica's core work marks it: a queued proposal, read or
membership change (the replica's own wake callback, :meth:`Replica.wake`), a message
stepped, a tick of a group that is not quiesced, a liveness wake-up, a transport report
(unreachable peer, snapshot status), a new group's campaign; a replica that had a Ready in
a turn is looked at again in the next (``advance`` may leave more). Code that touches a
replica's ``raw`` from outside calls ``node.wake(rep)`` afterwards; ``node.wake()`` marks
every replica (always safe). A missed mark is a stall: ``TIDEKV_DRIVE_ALL=1`` makes every
turn look at every replica again, to bisect one (and for the side-by-side bench).

Quiescence (docs/raft.md): an idle group's replicas stop ticking, and the timer skips
them, so an idle group costs a flag test per tick and nothing on the wire. What wakes a
follower whose leader died is the node-level liveness signal: every heartbeat interval
the node pings each peer node once (one tiny message on the pseudo-group
:data:`LIVENESS_GROUP`, riding the per-destination frame, for all groups at once); a
peer not heard from (any frame counts) for an election timeout, or whose connection the
transport reports lost, is silent, and every quiesced replica whose leader is on it is
woken (``RawNode.unquiesce``) and elects a new leader as usual. On a sharded node the
pings also feed the failure detector (node/failures.py), so they run there even with
quiescence off.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import shutil
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgspec

from tidekv.errors import InvalidInput, TideError
from tidekv.node.config import (
    NODE_FILE,
    Identity,
    NodeConfig,
    Peer,
    default_raft_address,
    load_or_create_identity,
)
from tidekv.node.failures import FailureWatch, StepFreeClock
from tidekv.node.logstore import GroupStorage, NodeLog
from tidekv.node.meta import (
    META_GROUP,
    MetaReplica,
    encode_meta_entry,
    initial_state,
    state_op,
)
from tidekv.node.mover import Mover
from tidekv.node.pseudo import BALANCE_GROUP, CLUSTER_GROUP, LIVENESS_GROUP, RETIRE_GROUP
from tidekv.node.registry import (
    ReplicaRegistry,
    load_pushed_state,
    save_pushed_state,
)
from tidekv.node.replica import Replica, open_group_engine
from tidekv.node.snapstream import SnapshotSink
from tidekv.node.transport import PeerTransport
from tidekv.raft import (
    NONE,
    Config,
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    ProposalDropped,
    Ready,
)
from tidekv.sharding import metadata
from tidekv.sharding.balancer import BalancerConfig, LeaderBalancer
from tidekv.sharding.metadata import ClusterState
from tidekv.sharding.replicas import incarnation_of, node_of, replica_id
from tidekv.sharding.ring import DEFAULT_REPLICATION
from tidekv.storage import Engine, Op

log = logging.getLogger("tidekv.node")

DATA_GROUP = 0
"""The one data group of an unsharded cluster (``--shards 1``); in a sharded cluster shard
``s`` is group ``s`` and the metadata is group :data:`~tidekv.node.meta.META_GROUP`."""

BALANCER = BalancerConfig(max_concurrent=4, timeout=10_000, cooldown=30_000)
"""Leader balancing: at most 4 transfers in flight, 10 s for one to show in the leaders
seen, 30 s between two transfers of one shard (ms)."""
BALANCE_EVERY = 1.0
"""Seconds between two polls of the leader balancer."""


QUIESCE_ENV = "TIDEKV_QUIESCE"
"""``0`` turns quiescence (and the liveness pings) off, for benchmarks and bisecting."""

DRIVE_ALL_ENV = "TIDEKV_DRIVE_ALL"
"""``1``: every loop turn looks at every replica, not just the dirty ones (bisecting a
missed wake-up; bench/busy_shard.py's reference)."""

EXTRA_GROUPS_ENV = "TIDEKV_IDLE_GROUPS_FOR_BENCH"
"""Testing/benchmarks only: open this many extra groups (ids 1..N) with the same peers.
They hold no data reachable through the API; bench/idle_groups.py measures their cost."""


class Node:
    """A tidekv node process: the replicas, the WAL, the peer transport and the loop."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.identity: Identity
        self.replicas: dict[int, Replica] = {}
        self.log: NodeLog
        self.transport: PeerTransport
        self._wake_ev = asyncio.Event()
        self._dirty: dict[int, None] = {}
        """Groups the loop looks at in its next turn (an ordered set, see the module doc)."""
        self._drive_all = os.environ.get(DRIVE_ALL_ENV, "0") == "1"
        self._closing = False
        self._driver: asyncio.Task[None] | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._sync_pool = ThreadPoolExecutor(1, thread_name_prefix="tidekv-wal-sync")
        self._rng = random.Random()
        self.stats = {
            "loops": 0,
            "fsyncs": 0,
            "readies": 0,
            "liveness_wakes": 0,
            "balance_transfers": 0,
            "balance_hints": 0,
        }
        self.me = cfg.me()
        self.meta: MetaReplica | None = None
        """This node's replica of the metadata group (sharded clusters, meta voters)."""
        self.cluster: ClusterState | None = None
        """The cluster metadata as this node knows it (sharded clusters): the metadata
        group's state when this node hosts it, else the state at creation."""
        self.members: dict[int, Peer] = {}
        """A sharded cluster's address book (node id -> addresses)."""
        self.leader_hint: dict[int, int] = {}
        """shard -> the node last seen leading it (from local replicas)."""
        self._bg: set[asyncio.Task[None]] = set()
        self.quiesce = cfg.quiesce and os.environ.get(QUIESCE_ENV, "1") != "0"
        self._ticks = 0
        self._heard: dict[int, float] = {}
        """Peer node id -> loop time of the last frame received from it."""
        self._started = 0.0
        self.failures: FailureWatch | None = None
        """The failure detector's driver (sharded clusters; it acts on the metadata leader)."""
        # -- moves (sharded clusters; docs/sharding.md "Joining and leaving") -------------
        self.mover = Mover(self)
        self.registry: ReplicaRegistry | None = None
        self._creation: ClusterState | None = None
        """The state at creation: what bootstraps incarnation-0 replicas and the
        metadata group (whose membership is fixed at creation)."""
        self.meta_voters: list[int] = []
        """The metadata group's real voters (the creation state's)."""
        self.meta_leader_hint: int | None = None
        """The node that last pushed the metadata (its leader), for nodes outside it."""
        self._retiring: dict[int, tuple[int, str]] = {}
        """group -> (replica id, why): replicas to retire between two loop turns."""
        self._state_saved = -1

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.cfg
        if cfg.join and not os.path.exists(os.path.join(cfg.data_dir, NODE_FILE)):
            from tidekv.node.join import join_sharded, probe_shards

            if cfg.shards is None:  # the cluster's count, sharded or not
                cfg.shards = await probe_shards(cfg)
            if cfg.shards > 1:
                await join_sharded(cfg)  # writes node.json (once) from a member's answer
        self.identity, created = load_or_create_identity(cfg)
        if self.identity.engine != cfg.engine and not created:
            log.info("node uses the %s engine recorded in node.json", self.identity.engine)
        self.log = NodeLog(os.path.join(cfg.data_dir, "wal"))
        self.transport = PeerTransport(
            cfg.node_id,
            on_messages=self._on_messages,
            on_unreachable=self._on_unreachable,
            on_snapshot_status=self._on_snapshot_status,
            snapshot_sink=self._snapshot_sink,
        )
        rhost, rport = self.me.raft_address.rsplit(":", 1)
        await self.transport.start(rhost, int(rport))
        if cfg.join:
            # a joining node learns the membership from a snapshot, but must be able to
            # answer the leader before that: the addresses it was given seed its transport
            for p in cfg.peers.values():
                if p.id != cfg.node_id:
                    self.transport.set_peer(p.id, p.raft_address)
        if self.identity.sharded:
            self._start_sharded()
        else:
            extra = int(os.environ.get(EXTRA_GROUPS_ENV, "0") or 0)
            self._open_groups([DATA_GROUP, *range(1, 1 + extra)], bootstrap=created)
        self._started = asyncio.get_running_loop().time()
        self._driver = asyncio.get_running_loop().create_task(self._drive())
        self._schedule_tick()

    def _engine_path(self, group: int) -> str | None:
        if self.identity.engine == "memory":
            return None
        return os.path.join(self.cfg.data_dir, "groups", str(group), "engine")

    @property
    def engine_options(self) -> dict[str, Any]:
        """The options of every group's engine on this node (:func:`group_engine_options`)."""
        return group_engine_options(self.identity.engine, self.identity.shards)

    @property
    def sharded(self) -> bool:
        return self.identity.sharded

    @property
    def shard_count(self) -> int:
        return self.identity.shards

    def _start_sharded(self) -> None:
        """Open the metadata group (if this node is a metadata voter) and the data groups
        this node hosts (``replicas.json``; at first start, the creation placement). The
        creation state is a pure function of node.json (cluster id, shard count, members),
        identical on every node; the live state is the metadata group's (voters), or the
        newest one its leader pushed (everyone else, kept in ``cluster.state``)."""
        ident = self.identity
        me = self.cfg.node_id
        self.members = {p.id: p for p in ident.members}
        for p in ident.members:
            if p.id != me:
                self.transport.set_peer(p.id, p.raft_address)
        creation = initial_state(
            ident.cluster_id,
            ident.shards,
            [(p.id, p.address) for p in ident.members],
            DEFAULT_REPLICATION,
        )
        self._creation = creation
        self.meta_voters = list(creation.meta_voters)
        self.cluster = creation
        pushed = load_pushed_state(self.cfg.data_dir)
        if pushed is not None and pushed.cluster_id == creation.cluster_id:
            self.cluster = pushed
            self._state_saved = pushed.revision
        reg = self.registry = ReplicaRegistry(self.cfg.data_dir)
        if not reg.existed:
            for shard, ss in creation.shard_map.items():
                if me in ss.voters:
                    reg.live[shard] = replica_id(me)
            if me in creation.meta_voters:
                reg.live[META_GROUP] = me
            reg.save()
        for group in self.log.group_ids():  # logs of replicas retired before a crash
            if group not in reg.live:
                self._wipe_group(group)
        if META_GROUP in reg.live:
            # a creation voter bootstraps it; one added later waits for a snapshot
            # the metadata group first: its state (not the creation's) places the shards
            (meta,) = self._open_groups([META_GROUP], bootstrap=me in creation.meta_voters)
            assert isinstance(meta, MetaReplica)
            self.meta = meta
            if me in meta.removed:  # it applied its own removal, then the node stopped
                self.retire_replica(META_GROUP, me, "removed before the restart")
            if meta.state.shards and meta.state.revision >= self.cluster.revision:
                self.cluster = meta.state
        self._sync_members(self.cluster)
        live = {s: r for s, r in sorted(reg.live.items()) if s != META_GROUP}
        opened = self._open_groups(
            list(live),
            bootstrap={s for s, r in live.items() if incarnation_of(r) == 0},
            raft_ids=live,
        )
        for rep in opened:
            rid = live[rep.group]
            if rid in rep.removed:  # it applied its own removal, then the node stopped
                self.retire_replica(rep.group, rid, "removed before the restart")
        self._spawn(self.mover.run())
        if self.cfg.balance_leaders:
            self._spawn(self._balance_leaders())
        self._start_failure_watch()

    def _start_failure_watch(self) -> None:
        """Failure handling (node/failures.py): the metadata leader marks silent members
        down, up again, and evicts the long-down ones; the pings that feed it run on
        every sharded node (:attr:`pings_peers`)."""
        self.failures = FailureWatch(self, StepFreeClock(asyncio.get_running_loop().time()))
        self._spawn(self.failures.run())

    @property
    def pings_peers(self) -> bool:
        """Node-level liveness pings: for quiescence, and on every sharded node for the
        failure detector (every node pings every member node, group or no group)."""
        return self.quiesce or self.sharded

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _balance_leaders(self) -> None:
        """On the metadata leader: spread the shard leaders evenly
        (:class:`~tidekv.sharding.balancer.LeaderBalancer` over the leaders seen). A
        transfer is a hint: stepped into this node's replica of the shard, which hands it
        to the shard's leader when it is a follower (Raft's MsgTransferLeader), or, for a
        shard this node does not replicate, sent to the node that leads it
        (:data:`BALANCE_GROUP`)."""
        lb = LeaderBalancer(BALANCER)
        loop = asyncio.get_running_loop()
        while not self._closing:
            await asyncio.sleep(BALANCE_EVERY)
            meta, st = self.meta, self.cluster
            if meta is None or st is None or not meta.is_leader:
                continue
            try:
                for t in lb.poll(int(loop.time() * 1000), st):
                    log.info("shard %d: leadership %d -> %d (balancing)", t.shard, t.frm, t.to)
                    if t.shard in self.replicas:
                        self._transfer_shard_leader(t.shard, t.to)
                    else:
                        hint = Message(
                            MessageType.TRANSFER_LEADER,
                            to=t.frm,
                            frm=self.cfg.node_id,
                            index=t.shard,
                            commit=t.to,
                        )
                        self.transport.send(BALANCE_GROUP, [hint])
                    self.stats["balance_transfers"] += 1
            except Exception:  # balancing is an optimisation: never take the node down
                log.exception("leader balancing failed")

    def _transfer_shard_leader(self, shard: int, to_node: int) -> bool:
        """Ask shard ``shard``'s leader (this node's replica, or through it the leader it
        knows) to hand the leadership to ``to_node``'s replica; False if this node has no
        replica of the shard or knows none on ``to_node``."""
        rep = self.replicas.get(shard)
        if rep is None or rep.node_of is None:
            return False
        to = [r for r in rep.raw.raft.voters if rep.node_of(r) == to_node]
        if not to:
            return False
        rep.raw.transfer_leader(to[0])
        self.wake()
        return True

    def _on_balance_hint(self, frm: int, m: Message) -> None:
        """A leader-balancing hint from the metadata leader (:data:`BALANCE_GROUP`)."""
        if m.type is not MessageType.TRANSFER_LEADER or frm not in self.members:
            return
        if self._transfer_shard_leader(m.index, m.commit):
            self.stats["balance_hints"] += 1
        else:
            log.debug("shard %d: balancing hint from node %d not applicable", m.index, frm)

    def _on_meta_state(self, state: ClusterState) -> None:
        self.adopt_state(state)

    def peer_of_replica(self, rid: int) -> Peer | None:
        return self.members.get(node_of(rid))

    def _on_shard_leader(self, rep: Replica) -> None:
        """This node now leads shard ``rep.group``: tell the metadata (LeaderSeen)."""
        self.leader_hint[rep.group] = self.cfg.node_id
        task = asyncio.get_running_loop().create_task(self._report_leader(rep, rep.raw.raft.term))
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def _tell_meta_voters(self, cmd: metadata.Command) -> None:
        """From a node outside the metadata group: send ``cmd`` as a Raft proposal
        (``MsgProp``) to every metadata voter; a follower forwards it to its leader, the
        leader appends it. Best effort, no answer (for reports such as LeaderSeen, which
        may apply more than once)."""
        assert self.cluster is not None
        data = encode_meta_entry(os.urandom(16), cmd)
        msgs = [
            Message(
                MessageType.PROPOSE,
                to=v,
                frm=self.cfg.node_id,
                entries=[Entry(term=0, index=0, kind=EntryKind.NORMAL, data=data)],
            )
            for v in self.meta_group_voters(every=True)
            if v != self.cfg.node_id
        ]
        self.transport.send(META_GROUP, msgs)

    async def _report_leader(self, rep: Replica, term: int) -> None:
        meta = self.meta
        cmd = metadata.LeaderSeen(shard=rep.group, node=self.cfg.node_id, term=term)
        if meta is None:
            # no answer comes back: send a few times (the metadata group may be electing)
            for delay in (0.0, 1.0, 2.0, 4.0, 8.0):
                await asyncio.sleep(delay)
                if self._closing or not rep.is_leader or rep.raw.raft.term != term:
                    return
                self._tell_meta_voters(cmd)
            return
        for _ in range(40):  # at cluster start the metadata group elects at the same time
            if self._closing or not rep.is_leader or rep.raw.raft.term != term:
                return
            try:
                await meta.propose(cmd, self.cfg.request_timeout)
                return
            except TideError as exc:
                log.debug("shard %d: LeaderSeen not recorded yet: %s", rep.group, exc)
            await asyncio.sleep(0.25)

    def _open_group(self, group: int, *, bootstrap: bool, raft_id: int | None = None) -> Replica:
        """Open (bootstrap first, if asked and the log is empty) the replica of
        ``group``. ``raft_id``: a sharded data group's replica id (default: incarnation
        0, the creation placement's)."""
        ids = None if raft_id is None else {group: raft_id}
        return self._open_groups([group], bootstrap=bootstrap, raft_ids=ids)[0]

    def _open_groups(
        self,
        groups: list[int],
        *,
        bootstrap: bool | set[int],
        raft_ids: dict[int, int] | None = None,
    ) -> list[Replica]:
        """Open the replicas of ``groups`` (``bootstrap``: for all, or the groups in the
        set; ``raft_ids``: replica ids of sharded data groups, see :meth:`_open_group`).
        Their engines are opened, and a new group's initial state written into its
        engine, in up to :data:`OPEN_THREADS` worker threads (RocksDB and LMDB release the
        GIL while they create and fsync files: that is most of a 64-shard node's start).
        The log records of new groups are then written here and made durable by one WAL
        sync for all of them."""
        if not groups:
            return []
        ids = raft_ids or {}
        plans = [
            self._plan(
                g,
                bootstrap=bootstrap if isinstance(bootstrap, bool) else g in bootstrap,
                raft_id=ids.get(g),
            )
            for g in groups
        ]
        if len(plans) == 1:
            engines = [self._prepare_engine(plans[0])]
        else:
            with ThreadPoolExecutor(min(OPEN_THREADS, len(plans))) as pool:
                futures = [pool.submit(self._prepare_engine, p) for p in plans]
            errors = [f.exception() for f in futures if f.exception() is not None]
            if errors:
                for f in futures:
                    if f.exception() is None:
                        f.result()[0].close()
                raise errors[0]  # type: ignore[misc]
            engines = [f.result() for f in futures]
        for plan, (_, conf) in zip(plans, engines, strict=True):
            if conf is not None:
                Replica.bootstrap_log(plan.storage, conf)
        if any(conf is not None for _, conf in engines):
            self.log.sync()
        return [
            self._make_replica(plan, engine)
            for plan, (engine, _) in zip(plans, engines, strict=True)
        ]

    def _plan(self, group: int, *, bootstrap: bool, raft_id: int | None) -> _GroupPlan:
        """What opening ``group`` takes: its Raft id, initial members, and whether its log
        is empty and must be bootstrapped (on the loop's thread: reads the shared log)."""
        cfg = self.cfg
        storage = self.log.group(group)
        voters: frozenset[int] | None = None
        extra: list[Op] | None = None
        if not self.sharded:
            raft_id = cfg.node_id
            peers = cfg.initial_peers()
        elif group == META_GROUP:
            assert self._creation is not None
            raft_id = cfg.node_id
            peers = {n: self.members[n] for n in self._creation.meta_voters}
            extra = [state_op(self._creation)]
        else:
            # a data group of a sharded cluster: Raft ids are replica ids (incarnation 0
            # at creation), the address book is the cluster's
            assert self._creation is not None
            raft_id = replica_id(cfg.node_id) if raft_id is None else raft_id
            peers = {}
            if bootstrap:
                voters = frozenset(replica_id(n) for n in self._creation.shard_map[group].voters)
        new = bootstrap and bool(peers or voters) and storage.last_index() == 0
        path = self._engine_path(group)
        return _GroupPlan(group, storage, path, raft_id, peers, voters, extra, new)

    def _prepare_engine(self, plan: _GroupPlan) -> tuple[Engine, ConfState | None]:
        """In a worker thread: open the group's engine and, for a new group, write its
        initial state (durable on return). Touches only the group's own directory."""
        if plan.path is not None:
            os.makedirs(os.path.dirname(plan.path), exist_ok=True)
        eng = open_group_engine(self.identity.engine, plan.path, self.engine_options)
        if not plan.bootstrap:
            return eng, None
        try:
            conf = Replica.bootstrap_engine(
                eng,
                plan.peers,
                voters=plan.voters,
                extra=plan.extra,
                origin=self.identity.cluster_id,
            )
        except BaseException:
            eng.close()
            raise
        return eng, conf

    def _make_replica(self, plan: _GroupPlan, engine: Engine) -> Replica:
        cfg = self.cfg
        group, storage, path, raft_id = plan.group, plan.storage, plan.path, plan.raft_id

        def raft_config(applied: int) -> Config:
            return Config(
                id=raft_id,
                rng=random.Random(self._rng.getrandbits(64)),
                election_tick=cfg.election_tick,
                heartbeat_tick=cfg.heartbeat_tick,
                applied=applied,
                pre_vote=True,
                check_quorum=True,
                max_inflight_msgs=256,
                quiesce=self.quiesce,
            )

        kw: dict[str, Any] = dict(
            group=group,
            node_id=cfg.node_id,
            storage=storage,
            engine_name=self.identity.engine,
            engine_path=path,
            origin=self.identity.cluster_id,
            raft_config=raft_config,
            wake=functools.partial(self._wake_group, group),
            on_peers_changed=self._on_peers_changed if not self.sharded else _ignore_peers,
            max_key_bytes=cfg.max_key_bytes,
            max_value_bytes=cfg.max_value_bytes,
            compact_every=cfg.compact_every,
            leader_wait=cfg.leader_wait_s(),
            read_retry=2 * cfg.election_timeout(),
            engine=engine,
            engine_options=self.engine_options,
        )
        rep: Replica
        if not self.sharded:
            rep = Replica(**kw)
        elif group == META_GROUP:
            rep = MetaReplica(
                on_state=self._on_meta_state, on_removed=self._on_replica_removed, **kw
            )
        else:
            rep = Replica(
                peer_of=self.peer_of_replica,
                on_leader=self._on_shard_leader,
                on_removed=self._on_replica_removed,
                **kw,
            )
            rep.node_of = node_of
        self.replicas[group] = rep
        if not self.sharded:
            self._on_peers_changed(rep.peers)
        if len(rep.raw.raft.voters) == 1 and raft_id in rep.raw.raft.voters:
            rep.raw.campaign()  # a single-node cluster need not wait an election timeout
        self.wake(rep)  # a new replica may have work at once (its campaign, a restart)
        return rep

    async def stop(self) -> None:
        if self._closing:
            return
        self._closing = True
        for task in list(self._bg):
            task.cancel()
        if self._ticker is not None:
            self._ticker.cancel()
        self.wake()
        if self._driver is not None:
            self._driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver
        await self.transport.close()
        for rep in self.replicas.values():
            rep.close()
        self.log.sync()
        self.log.close()
        self._sync_pool.shutdown(wait=True)

    # -- inputs -----------------------------------------------------------------------------

    def wake(self, rep: Replica | None = None) -> None:
        """Make the loop look at ``rep`` in its next turn; no replica: at every one.
        Call it after touching a replica's core (``rep.raw``) from outside the loop."""
        if rep is None:
            self._dirty.update(dict.fromkeys(self.replicas))
        else:
            self._dirty[rep.group] = None
        self._wake_ev.set()

    def _wake_group(self, group: int) -> None:
        """A replica's own wake callback (:meth:`Replica.wake`)."""
        self._dirty[group] = None
        self._wake_ev.set()

    def _schedule_tick(self) -> None:
        if self._closing:
            return
        loop = asyncio.get_running_loop()
        self._ticker = loop.call_later(self.cfg.tick_ms / 1000, self._tick)

    def _tick(self) -> None:
        dirty = self._dirty
        for group, rep in self.replicas.items():
            raw = rep.raw
            if not raw.raft.quiesced:  # a quiesced group's tick does nothing: skip it
                raw.tick()
                dirty[group] = None
        self._ticks += 1
        if self.pings_peers and self._ticks % self.cfg.heartbeat_tick == 0:
            self._ping_peers()
        if dirty:
            self._wake_ev.set()
        self._schedule_tick()

    # -- node liveness (quiescence) ---------------------------------------------------------

    def _ping_peers(self) -> None:
        """One ping per peer node; wake the groups whose leader's node went silent."""
        now = asyncio.get_running_loop().time()
        silent_after = self.cfg.election_tick * self.cfg.tick_ms / 1000
        me = self.cfg.node_id
        pings: list[Message] = []
        silent: set[int] = set()
        for nid in self.transport.peers:
            pings.append(Message(MessageType.HEARTBEAT, to=nid, frm=me))
            if now - self._heard.get(nid, self._started) > silent_after:
                silent.add(nid)
        self.transport.send(LIVENESS_GROUP, pings)
        if silent:
            self._wake_groups_led_by(silent)

    def _wake_groups_led_by(self, nodes: set[int]) -> None:
        woke = 0
        for rep in self.replicas.values():
            raw = rep.raw
            lead = raw.raft.lead
            if not raw.quiesced or lead == NONE:
                continue
            # a sharded data group's Raft ids are replica ids: name the leader's node
            if (lead if rep.node_of is None else rep.node_of(lead)) in nodes:
                raw.unquiesce()
                self._dirty[rep.group] = None
                woke += 1
        if woke:
            self.stats["liveness_wakes"] += woke
            log.info("woke %d quiesced groups led by silent node(s) %s", woke, sorted(nodes))
            self._wake_ev.set()

    def heard_ago(self, node: int) -> float | None:
        """Seconds since a frame last came from ``node`` (0 for this node; None: never
        heard, or liveness pings off)."""
        if node == self.cfg.node_id:
            return 0.0
        heard = self._heard.get(node)
        if heard is None:
            return None
        return round(asyncio.get_running_loop().time() - heard, 3)

    def groups_quiesced(self) -> int:
        return sum(rep.raw.quiesced for rep in self.replicas.values())

    def _on_messages(self, frm: int, msgs: list[tuple[int, Message]]) -> None:
        if self.pings_peers:
            self._heard[frm] = asyncio.get_running_loop().time()
        stepped = False
        for group, m in msgs:
            if group == BALANCE_GROUP:
                self._on_balance_hint(frm, m)
                continue
            rep = self.replicas.get(group)
            if rep is None or (rep.node_of is not None and m.to != rep.raw.raft.id):
                rep = self._route_sharded(frm, group, m, rep)
                if rep is None:
                    continue  # a liveness ping, or a group (incarnation) not hosted here
            stepped = True
            self._dirty[group] = None
            if (m.frm in rep.removed or (rep.node_of is None and frm in rep.removed)) and not (
                group == META_GROUP and m.type is MessageType.PROPOSE
            ):
                # a removed member (still running, or restarted on its old data) must not
                # disturb the group: no votes for it, no acks counted from it (a node that
                # left the metadata group still reports to it: its proposals are taken)
                rep.stats["from_removed"] += 1
                continue
            try:
                if m.type is MessageType.PROPOSE and rep.is_leader:
                    rest = rep.accept_forwarded(m.entries)
                    if not rest:
                        continue
                    m = msgspec.structs.replace(m, entries=rest)
                rep.raw.step(m)
            except ProposalDropped as exc:  # the forwarder's waiter fails on a leader change
                log.debug("group %d: dropped a proposal from node %d: %s", group, frm, exc)
            except Exception:  # a malformed message must not take the node down
                log.exception("group %d: bad message from node %d", group, frm)
        if stepped:
            self._wake_ev.set()

    def _on_unreachable(self, peer: int) -> None:
        for rep in self.replicas.values():
            rid = _raft_id(rep, peer)
            if rid is not None:
                rep.raw.report_unreachable(rid)
        if self.quiesce and not self.transport.connected(peer):
            self._wake_groups_led_by({peer})  # the connection is lost: the node is silent
        self.wake()

    def _on_snapshot_status(self, group: int, to: int, ok: bool) -> None:
        rep = self.replicas.get(group)
        rid = None if rep is None else _raft_id(rep, to)
        if rep is not None and rid is not None:
            rep.raw.report_snapshot(rid, ok)
            self.wake(rep)

    def _snapshot_sink(self, frm: int, group: int, m: Message) -> SnapshotSink | None:
        rep = self.replicas.get(group)
        if rep is None or (rep.node_of is not None and m.to != rep.raw.raft.id):
            rep = self._route_sharded(frm, group, m, rep)
        if rep is None or frm in rep.removed or m.frm in rep.removed:
            return None
        return rep.snapshot_sink(m)

    def _on_peers_changed(self, peers: dict[int, Peer]) -> None:
        if not hasattr(self, "transport"):
            return
        for p in peers.values():
            if p.id != self.cfg.node_id:
                self.transport.set_peer(p.id, p.raft_address)
        known = {p.id for rep in self.replicas.values() for p in rep.peers.values()}
        known |= set(peers)
        if not known - {self.cfg.node_id}:
            return  # nothing learnt yet (a joining node): keep the seed addresses
        for nid in list(self.transport.peers):
            if nid not in known:
                self.transport.remove_peer(nid)

    # -- the loop ---------------------------------------------------------------------------

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        replicas = self.replicas
        while not self._closing:
            await self._wake_ev.wait()
            self._wake_ev.clear()
            while True:
                if self._retiring:
                    self._retire_pending()  # between two turns: no Ready is in flight
                self.stats["loops"] += 1
                # the dirty groups (every group with TIDEKV_DRIVE_ALL); a mark made while
                # this turn runs sets the event again, so the next turn sees it
                dirty, self._dirty = self._dirty, {}
                readies: list[tuple[Replica, Ready]] = []
                for rep in replicas.values() if self._drive_all else _hosted(replicas, dirty):
                    rep.before_ready()
                    if rep.raw.has_ready():
                        readies.append((rep, rep.raw.ready()))
                if not readies:
                    break
                self.stats["readies"] += len(readies)
                must_sync = False
                durable: list[int] = []
                for rep, rd in readies:
                    if rd.messages:
                        self.transport.send(rep.group, rd.messages, rep.node_of)
                    durable.append(rep.storage.last_index())  # every earlier write is synced
                    if rep.persist(rd):
                        must_sync = True
                if must_sync:
                    self.stats["fsyncs"] += 1
                    synced = loop.run_in_executor(self._sync_pool, self.log.sync)
                    # while the WAL thread fsyncs, apply (and answer) what was committed
                    # from entries that were durable here before this Ready
                    for (rep, rd), last in zip(readies, durable, strict=True):
                        try:
                            rep.apply_durable(rd, last)
                        except Exception:
                            log.exception("group %d: applying a Ready failed", rep.group)
                            raise
                    await synced
                for rep, rd in readies:
                    if rd.persisted_messages:
                        self.transport.send(rep.group, rd.persisted_messages, rep.node_of)
                    try:
                        rep.after_persist(rd)
                    except Exception:
                        log.exception("group %d: applying a Ready failed", rep.group)
                        raise
                    self._dirty[rep.group] = None  # advance may have left more work

    # -- moves: the live metadata, replicas created and retired ----------------------------
    # (docs/sharding.md, "Joining and leaving"; the executor's driver is node/mover.py)

    def adopt_state(self, state: ClusterState, *, pushed: bool = False) -> None:
        """A newer metadata state (applied here, or pushed by the metadata leader)."""
        cur = self.cluster
        if cur is not None and state.revision < cur.revision:
            return
        self.cluster = state
        self._sync_members(state)
        if pushed and state.revision > self._state_saved and self.meta is None:
            self._state_saved = state.revision
            try:
                save_pushed_state(self.cfg.data_dir, state)
            except OSError:
                log.exception("could not save the pushed metadata")
        self.mover.kick()

    def _sync_members(self, state: ClusterState) -> None:
        """The address book follows the metadata's members (a joining node becomes
        reachable; a member's own addresses stay as node.json gave them)."""
        me = self.cfg.node_id
        for nid, m in state.members.items():
            known = self.members.get(nid)
            if (
                known is not None
                and known.address == m.address
                and m.raft_address in ("", known.raft_address)
            ):
                continue
            try:
                raft = m.raft_address or default_raft_address(m.address)
            except TideError:
                continue
            peer = Peer(nid, m.address, raft)
            self.members[nid] = peer
            if nid != me and hasattr(self, "transport"):
                self.transport.set_peer(nid, raft)

    def _route_sharded(
        self, frm: int, group: int, m: Message, rep: Replica | None
    ) -> Replica | None:
        """The replica a message of ``group`` addressed to ``m.to`` is for, when it is not
        the one hosted here: a pseudo-group's message is handled; a leader's first message
        to a new incarnation on this node creates it, empty (it waits for a snapshot);
        a replica whose newer incarnation is addressed is out of the group (retired)."""
        if group < 0:
            if group in (CLUSTER_GROUP, RETIRE_GROUP) and self.sharded:
                self.mover.on_control(frm, group, m)
            return None
        if not self.sharded or self._closing or m.type not in _LEADER_MESSAGES:
            return None
        reg = self.registry
        if group == META_GROUP:
            return self._maybe_join_meta(m)
        rid = m.to
        if not 0 <= group < self.shard_count or node_of(rid) != self.cfg.node_id:
            return None
        if reg is None or not reg.may_create(group, rid):
            return None
        if rep is not None:
            if incarnation_of(rid) > incarnation_of(rep.raw.raft.id):
                self.retire_replica(group, rep.raw.raft.id, f"replica {rid:x} replaces it")
            return None  # the leader sends again once the old one is gone
        if group in self._retiring:
            return None
        log.info("shard %d: creating replica %x (added by %x)", group, rid, m.frm)
        self._wipe_group(group)
        reg.add(group, rid)
        return self._open_group(group, bootstrap=False, raft_id=rid)

    def _maybe_join_meta(self, m: Message) -> Replica | None:
        """The metadata leader added this node to the metadata group (Raft ids there are
        node ids): open an empty replica that waits for its snapshot, unless this node
        was removed from the group before (it never comes back)."""
        reg = self.registry
        me = self.cfg.node_id
        if reg is None or m.to != me or self.meta is not None or META_GROUP in reg.tombstones:
            return None
        if META_GROUP in self._retiring:
            return None
        log.info("joining the metadata group (added by node %d)", m.frm)
        self._wipe_group(META_GROUP)
        reg.add(META_GROUP, me)
        meta = self._open_group(META_GROUP, bootstrap=False)
        assert isinstance(meta, MetaReplica)
        self.meta = meta
        return meta

    def meta_group_voters(self, *, every: bool = False) -> list[int]:
        """The metadata group's voters: its real configuration where this node has a
        replica, else the metadata's choice (``every``: with the creation voters too, for
        a message that must reach the group whatever its state)."""
        st = self.cluster
        if self.meta is not None and self.meta.raw.raft.voters:
            out = set(self.meta.raw.raft.voters)
        else:
            out = set(st.meta_voters if st is not None else self.meta_voters)
        if every:
            out |= set(self.meta_voters) | set(st.meta_voters if st is not None else ())
        return sorted(out)

    def _on_replica_removed(self, rep: Replica) -> None:
        """``rep`` applied its own removal: it is out of a committed configuration."""
        self.retire_replica(rep.group, rep.raw.raft.id, "it applied its own removal")

    def retire_replica(self, group: int, rid: int, why: str) -> None:
        """Retire replica ``rid`` of ``group`` at the next loop turn (if it is still the
        one hosted here): tombstone, close, delete its log and its data."""
        if self.registry is None:
            return
        rep = self.replicas.get(group)
        if group == META_GROUP and (rep is None or rep.raw.raft.id != rid):
            return
        if rep is None or rep.raw.raft.id != rid:
            if self.registry.may_create(group, rid):
                self.registry.retire(group, rid)  # a later stale message will not create it
            return
        self._retiring[group] = (rid, why)
        self.wake()

    def _retire_pending(self) -> None:
        reg = self.registry
        assert reg is not None
        pending, self._retiring = self._retiring, {}
        for group, (rid, why) in sorted(pending.items()):
            rep = self.replicas.get(group)
            if rep is None or rep.raw.raft.id != rid:
                continue
            log.info("shard %d: retiring replica %x (%s)", group, rid, why)
            reg.retire(group, rid)  # durable first: it never comes back
            del self.replicas[group]
            if group == META_GROUP:
                self.meta = None  # the pushed metadata keeps this node informed
            rep.close()
            self.leader_hint.pop(group, None)
            self.mover.forget(group)
            self._wipe_group(group)
            self.stats["replicas_retired"] = self.stats.get("replicas_retired", 0) + 1

    def _wipe_group(self, group: int) -> None:
        """Delete a group's log and data directory on this node (nothing hosted)."""
        storage = self.log.group(group)
        if storage.last_index() > 0 or storage.hard_state.term > 0:
            storage.drop()
        path = os.path.join(self.cfg.data_dir, "groups", str(group))
        shutil.rmtree(path, ignore_errors=True)

    # -- introspection ----------------------------------------------------------------------

    def replica(self, group: int = DATA_GROUP) -> Replica:
        try:
            return self.replicas[group]
        except KeyError:
            raise InvalidInput(f"no shard {group} on this node") from None


def _hosted(replicas: dict[int, Replica], groups: dict[int, None]) -> list[Replica]:
    """The replicas of ``groups`` still hosted (a group may close between two turns)."""
    return [rep for g in groups if (rep := replicas.get(g)) is not None]


_LEADER_MESSAGES = frozenset({MessageType.APP, MessageType.HEARTBEAT, MessageType.SNAP})
"""What a shard leader sends a new member first (a replica is created on them)."""


OPEN_THREADS = 8
"""Worker threads that open a node's group engines at start (parallel fsyncs)."""


def group_engine_options(engine: str, shards: int) -> dict[str, Any]:
    """The options of each group's engine on a node of a cluster of ``shards`` shards.

    An unsharded node's one engine keeps the engine's defaults. A sharded node hosts up to
    ``shards + 1`` engines, so what the defaults size for one engine is split or shared
    (measured in bench/shard_cost.py, docs/sharding.md "Choosing a shard count"):

    * lsm: every engine shares the process's 64 MB block cache (always, in
      :mod:`tidekv.storage.lsm`); memtables of ``max(4, 64 / shards)`` MB (each
      memtable's bloom filter is allocated in full when it is created: 1.3 MB per column
      family at 64 MB, 160 MB of RSS on an empty 64-shard node), all of them under one
      256 MB limit (RocksDB's WriteBufferManager: the most an unsharded node's two
      column families may hold); at most ``max(64, 4096 / shards)`` open table files
      each.
    * btree: a map of ``max(256 MB, 16 GB / shards)`` (address space; the engine doubles
      it when it fills), so 4096 shards do not reserve 64 TB of address space.
    """
    if shards <= 1:
        return {}
    if engine == "lsm":
        return {
            "write_buffer_mb": max(4, 64 // shards),
            "write_buffer_total_mb": 256,
            "max_open_files": max(64, 4096 // shards),
        }
    if engine == "btree":
        return {"map_size": max(256 << 20, (16 << 30) // shards)}
    return {}


@dataclass(frozen=True, slots=True)
class _GroupPlan:
    group: int
    storage: GroupStorage
    path: str | None
    raft_id: int
    peers: dict[int, Peer]
    voters: frozenset[int] | None
    extra: list[Op] | None
    bootstrap: bool
    """The group's log is empty: write its initial state (engine, then log)."""


def _ignore_peers(peers: dict[int, Peer]) -> None:
    """A sharded cluster's transport follows the cluster's address book, not a group's."""


def _raft_id(rep: Replica, node: int) -> int | None:
    """The Raft id of ``node``'s replica in ``rep``'s group (None: it has none). The
    transport reports by node; a sharded data group's Raft ids are replica ids."""
    if rep.node_of is None:
        return node
    prs = rep.raw.raft.prs
    if node in prs:  # already a replica id (a message to an unknown peer)
        return node
    for rid in prs:  # the leader's progress: the only place these reports matter
        if rep.node_of(rid) == node:
            return rid
    return None
