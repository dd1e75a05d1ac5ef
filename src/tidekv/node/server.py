"""The node: one asyncio loop that drives every Raft group hosted in this process.

The loop (:meth:`Node._drive`), once per wake-up:

1. every replica hands its queued proposals and read requests to its core;
2. every replica with a Ready sends ``messages`` at once, writes entries, hard state
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

Quiescence (docs/raft.md): an idle group's replicas stop ticking, and the timer skips
them, so an idle group costs a flag test per tick and nothing on the wire. What wakes a
follower whose leader died is the node-level liveness signal: every heartbeat interval
the node pings each peer node once (one tiny message on the pseudo-group
:data:`LIVENESS_GROUP`, riding the per-destination frame, for all groups at once); a
peer not heard from (any frame counts) for an election timeout, or whose connection the
transport reports lost, is silent, and every quiesced replica whose leader is on it is
woken (``RawNode.unquiesce``) and elects a new leader as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from concurrent.futures import ThreadPoolExecutor

import msgspec

from tidekv.errors import InvalidInput
from tidekv.node.config import Identity, NodeConfig, Peer, load_or_create_identity
from tidekv.node.logstore import NodeLog
from tidekv.node.replica import Replica
from tidekv.node.transport import PeerTransport
from tidekv.raft import Config, Message, MessageType, ProposalDropped, Ready
from tidekv.storage import open_engine

log = logging.getLogger("tidekv.node")

DATA_GROUP = 0
"""The one data group of this stage (the sharding issue adds more)."""

LIVENESS_GROUP = -1
"""The pseudo-group of the per-node-pair liveness pings; no replica has it."""

QUIESCE_ENV = "TIDEKV_QUIESCE"
"""``0`` turns quiescence (and the liveness pings) off, for benchmarks and bisecting."""

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
        self._closing = False
        self._driver: asyncio.Task[None] | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._sync_pool = ThreadPoolExecutor(1, thread_name_prefix="tidekv-wal-sync")
        self._rng = random.Random()
        self.stats = {"loops": 0, "fsyncs": 0, "readies": 0, "liveness_wakes": 0}
        self.me = cfg.me()
        self.quiesce = cfg.quiesce and os.environ.get(QUIESCE_ENV, "1") != "0"
        self._ticks = 0
        self._heard: dict[int, float] = {}
        """Peer node id -> loop time of the last frame received from it."""
        self._started = 0.0

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.cfg
        self.identity, created = load_or_create_identity(cfg)
        if self.identity.engine != cfg.engine and not created:
            log.info("node uses the %s engine recorded in node.json", self.identity.engine)
        self.log = NodeLog(os.path.join(cfg.data_dir, "wal"))
        self.transport = PeerTransport(
            cfg.node_id,
            on_messages=self._on_messages,
            on_unreachable=self._on_unreachable,
            on_snapshot_status=self._on_snapshot_status,
        )
        rhost, rport = self.me.raft_address.rsplit(":", 1)
        await self.transport.start(rhost, int(rport))
        if cfg.join:
            # a joining node learns the membership from a snapshot, but must be able to
            # answer the leader before that: the addresses it was given seed its transport
            for p in cfg.peers.values():
                if p.id != cfg.node_id:
                    self.transport.set_peer(p.id, p.raft_address)
        self._open_group(DATA_GROUP, bootstrap=created)
        for group in range(1, 1 + int(os.environ.get(EXTRA_GROUPS_ENV, "0") or 0)):
            self._open_group(group, bootstrap=created)
        self._started = asyncio.get_running_loop().time()
        self._driver = asyncio.get_running_loop().create_task(self._drive())
        self._schedule_tick()

    def _engine_path(self, group: int) -> str | None:
        if self.identity.engine == "memory":
            return None
        return os.path.join(self.cfg.data_dir, "groups", str(group), "engine")

    def _open_group(self, group: int, *, bootstrap: bool) -> Replica:
        cfg = self.cfg
        storage = self.log.group(group)
        path = self._engine_path(group)
        if path is not None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        peers = cfg.initial_peers()
        if bootstrap and peers and storage.last_index() == 0:
            eng = open_engine(self.identity.engine, path)
            try:
                Replica.bootstrap(storage, eng, peers)
            finally:
                eng.close()
            self.log.sync()

        def raft_config(applied: int) -> Config:
            return Config(
                id=cfg.node_id,
                rng=random.Random(self._rng.getrandbits(64)),
                election_tick=cfg.election_tick,
                heartbeat_tick=cfg.heartbeat_tick,
                applied=applied,
                pre_vote=True,
                check_quorum=True,
                max_inflight_msgs=256,
                quiesce=self.quiesce,
            )

        rep = Replica(
            group=group,
            node_id=cfg.node_id,
            storage=storage,
            engine_name=self.identity.engine,
            engine_path=path,
            origin=self.identity.cluster_id,
            raft_config=raft_config,
            wake=self.wake,
            on_peers_changed=self._on_peers_changed,
            max_key_bytes=cfg.max_key_bytes,
            max_value_bytes=cfg.max_value_bytes,
            compact_every=cfg.compact_every,
        )
        self.replicas[group] = rep
        self._on_peers_changed(rep.peers)
        if len(rep.raw.raft.voters) == 1 and cfg.node_id in rep.raw.raft.voters:
            rep.raw.campaign()  # a single-node cluster need not wait an election timeout
        return rep

    async def stop(self) -> None:
        if self._closing:
            return
        self._closing = True
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

    def wake(self) -> None:
        self._wake_ev.set()

    def _schedule_tick(self) -> None:
        if self._closing:
            return
        loop = asyncio.get_running_loop()
        self._ticker = loop.call_later(self.cfg.tick_ms / 1000, self._tick)

    def _tick(self) -> None:
        ticked = False
        for rep in self.replicas.values():
            raw = rep.raw
            if not raw.raft.quiesced:  # a quiesced group's tick does nothing: skip it
                raw.tick()
                ticked = True
        self._ticks += 1
        if self.quiesce and self._ticks % self.cfg.heartbeat_tick == 0:
            self._ping_peers()
        if ticked:
            self.wake()
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
            if raw.quiesced and raw.raft.lead in nodes:
                raw.unquiesce()
                woke += 1
        if woke:
            self.stats["liveness_wakes"] += woke
            log.info("woke %d quiesced groups led by silent node(s) %s", woke, sorted(nodes))
            self.wake()

    def groups_quiesced(self) -> int:
        return sum(rep.raw.quiesced for rep in self.replicas.values())

    def _on_messages(self, frm: int, msgs: list[tuple[int, Message]]) -> None:
        if self.quiesce:
            self._heard[frm] = asyncio.get_running_loop().time()
        stepped = False
        for group, m in msgs:
            rep = self.replicas.get(group)
            if rep is None:
                continue  # a liveness ping (or a group not hosted here)
            stepped = True
            if frm in rep.removed or m.frm in rep.removed:
                # a removed member (still running, or restarted on its old data) must not
                # disturb the group: no votes for it, no acks counted from it
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
            self.wake()

    def _on_unreachable(self, peer: int) -> None:
        for rep in self.replicas.values():
            rep.raw.report_unreachable(peer)
        if self.quiesce and not self.transport.connected(peer):
            self._wake_groups_led_by({peer})  # the connection is lost: the node is silent
        self.wake()

    def _on_snapshot_status(self, group: int, to: int, ok: bool) -> None:
        rep = self.replicas.get(group)
        if rep is not None:
            rep.raw.report_snapshot(to, ok)
            self.wake()

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
        while not self._closing:
            await self._wake_ev.wait()
            self._wake_ev.clear()
            while True:
                self.stats["loops"] += 1
                readies: list[tuple[Replica, Ready]] = []
                for rep in self.replicas.values():
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
                        self.transport.send(rep.group, rd.messages)
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
                        self.transport.send(rep.group, rd.persisted_messages)
                    try:
                        rep.after_persist(rd)
                    except Exception:
                        log.exception("group %d: applying a Ready failed", rep.group)
                        raise

    # -- introspection ----------------------------------------------------------------------

    def replica(self, group: int = DATA_GROUP) -> Replica:
        try:
            return self.replicas[group]
        except KeyError:
            raise InvalidInput(f"no shard {group} on this node") from None
