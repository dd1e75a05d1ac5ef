"""One Raft group on one node: a RawNode, its log, and the versioned state machine.

The :class:`Replica` owns no loop of its own: the node (:mod:`tidekv.node.server`)
calls :meth:`Replica.before_ready` (hand queued proposals and read requests to the
core), persists each Ready's entries in the shared WAL, and calls
:meth:`Replica.after_persist` (apply committed entries, answer reads, advance).
Requests wait on futures that those calls resolve:

* writes: the leader stamps a :class:`~tidekv.node.command.Command` with its HLC and
  proposes it; the future resolves when the entry is applied here (the outcome the
  state machine returned: a result, or the error a failed precondition gave).
* reads: one ReadIndex request per batch of waiting reads (every read that arrived
  during one loop turn shares it); each read then waits until the replica has applied
  up to the read index. Lease reads skip the round while the leader's lease holds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from tidekv.errors import CorruptionError, NotLeader, Timeout, Unavailable
from tidekv.node.command import (
    Command,
    decode_command,
    decode_peer,
    encode_command,
    encode_peer,
    load_peers,
    load_removed,
    peer_delete,
    peer_put,
    removed_put,
)
from tidekv.node.config import Peer
from tidekv.node.snapshot import (
    restore_engine,
    snapshot_meta_op,
    stored_snapshot_meta,
)
from tidekv.node.snapstream import (
    OUTGOING,
    SnapshotSink,
    decode_header,
    encode_header,
    install_staged,
    is_staged,
    recover_engine_dir,
)
from tidekv.raft import (
    NONE,
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    ProposalDropped,
    RawNode,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    decode_conf_change,
)
from tidekv.statemachine import WriteResult
from tidekv.storage import Engine, Op, open_engine
from tidekv.store import Store
from tidekv.versioning import HLC, HLCTimestamp

if TYPE_CHECKING:
    from tidekv.node.logstore import GroupStorage

log = logging.getLogger("tidekv.node")

Outcome = WriteResult | Exception


T = TypeVar("T")


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


async def _wait(fut: asyncio.Future[T], timeout: float) -> T:
    """``await fut``, or :class:`TimeoutError` after ``timeout`` seconds: one timer
    handle, where ``asyncio.wait_for`` adds a second future and its callbacks to every
    request."""
    timer = fut.get_loop().call_later(timeout, _expire, fut)
    try:
        return await fut
    finally:
        timer.cancel()


LEADER_WAIT = 2.0
"""Seconds a read waits for a replica that knows no leader to learn one (an election
takes 1-2 election timeouts; the default election timeout is 0.5 s)."""


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Replica:
    """A replica of one shard's Raft group."""

    node_of: Callable[[int], int] | None = None
    """Raft id -> node id for the transport, when the group's Raft ids are replica ids."""

    def __init__(
        self,
        *,
        group: int,
        node_id: int,
        storage: GroupStorage,
        engine_name: str,
        engine_path: str | None,
        origin: str,
        raft_config: Callable[[int], Config],
        wake: Callable[[], None],
        on_peers_changed: Callable[[dict[int, Peer]], None],
        max_key_bytes: int,
        max_value_bytes: int,
        compact_every: int,
        peer_of: Callable[[int], Peer | None] | None = None,
        on_leader: Callable[[Replica], None] | None = None,
        on_removed: Callable[[Replica], None] | None = None,
    ) -> None:
        self.group = group
        self.node_id = node_id
        self._peer_of = peer_of
        """Raft id -> the hosting node's addresses, when the group's Raft ids are replica
        ids (a sharded cluster's data groups); else the group's address book is used."""
        self._on_leader = on_leader
        self._on_removed = on_removed
        """Called when this replica applies its own removal (a sharded data group: the
        node retires it)."""
        self.storage = storage
        self._engine_name = engine_name
        self._engine_path = engine_path
        self._origin = origin
        self._wake = wake
        self._on_peers_changed = on_peers_changed
        self._max_key_bytes = max_key_bytes
        self._max_value_bytes = max_value_bytes
        self.compact_every = compact_every
        self._incoming: SnapshotSink | None = None  # the snapshot stream being received
        self._staged_mem: dict[bytes, Engine] = {}  # staged snapshots without a directory
        recover_engine_dir(engine_path)  # a crash while a snapshot was swapped in
        self.engine: Engine = open_engine(engine_name, engine_path)
        self.store = self._open_store(self.engine)
        self._repair_after_crash()
        self.peers: dict[int, Peer] = load_peers(self.engine)
        self.removed: frozenset[int] = load_removed(self.engine)
        """Tombstoned ids: never members again; their messages are dropped."""
        self.raw = RawNode(raft_config(self.store.sm.applied), storage)
        self._replay_conf_changes()
        self.storage.set_snapshot_provider(self._make_snapshot)
        self._hlc = HLC(self.store.sm.clock)
        self._rids = itertools.count(1)
        self._rid_prefix = node_id.to_bytes(8, "big") + time.time_ns().to_bytes(8, "big")
        self._proposals: list[bytes] = []
        self._waiters: dict[bytes, asyncio.Future[Outcome]] = {}
        self._forwarded: set[bytes] = set()  # rids proposed through the leader
        self._reads: list[asyncio.Future[int]] = []
        self._reads_in_flight: dict[bytes, list[asyncio.Future[int]]] = {}
        self._applied_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._changed = asyncio.Event()
        self._conf_changes: list[tuple[int, asyncio.Future[ConfState]]] = []
        self.lead = self.raw.raft.lead
        self.role = self.raw.raft.role
        self._last_compact = storage.first_index() - 1
        self.stats = {
            "proposed": 0,
            "applied": 0,
            "read_rounds": 0,
            "snapshots_installed": 0,
            "from_removed": 0,
        }

    # -- opening and crash repair ---------------------------------------------------------

    def _open_store(self, engine: Engine) -> Store:
        return Store(
            engine,
            origin=self._origin,
            sync=False,
            max_key_bytes=self._max_key_bytes,
            max_value_bytes=self._max_value_bytes,
        )

    def _repair_after_crash(self) -> None:
        """Make the log agree with the engine after a crash at the worst moment."""
        sm = self.store.sm
        meta = stored_snapshot_meta(self.engine)
        if meta is not None and meta.index > self.storage.last_index():
            # the engine installed a snapshot whose record in the log was lost
            self.storage.apply_snapshot(Snapshot(meta=meta))
        hs, _conf = self.storage.initial_state()
        if sm.applied > hs.commit:
            # applied entries were committed; the commit index in the log lagged (it is
            # written without an fsync of its own)
            self.storage.set_hard_state(HardState(hs.term, hs.vote, sm.applied))

    def _replay_conf_changes(self) -> None:
        """Give the core the membership this replica had applied before it stopped.

        The core starts from the log's compaction point, and entries up to the applied
        index are not handed out again: the conf changes among them are re-applied here.
        Additions of ids tombstoned by now are skipped: each such id ends up removed, as it
        did when the entries were first applied.
        """
        lo, hi = self.storage.first_index(), self.applied
        if hi < lo:
            return
        for e in self.storage.entries(lo, hi + 1):
            if e.kind is not EntryKind.CONF_CHANGE:
                continue
            cc = decode_conf_change(e.data)
            if cc.type is not ConfChangeType.REMOVE_NODE and cc.node_id in self.removed:
                continue
            self.raw.apply_conf_change(cc)

    @staticmethod
    def bootstrap(
        storage: GroupStorage,
        engine: Engine,
        peers: dict[int, Peer],
        *,
        voters: frozenset[int] | None = None,
        extra: list[Op] | None = None,
    ) -> None:
        """Write the initial membership as a snapshot at (index 1, term 1), as etcd does:
        a node added later receives it by snapshot and learns the whole membership.
        ``voters``: the Raft ids when they are not the peers' node ids (replica ids);
        ``extra``: more records of the initial state (the metadata group's state)."""
        conf = ConfState(voters=frozenset(peers) if voters is None else voters)
        ops: list[Op] = [peer_put(p) for p in peers.values()]
        ops.extend(extra or ())
        ops.append(snapshot_meta_op(1, 1, conf))
        store = Store(engine, sync=False)
        store.sm.mark_applied(1, ops)
        engine.sync()
        storage.apply_snapshot(Snapshot(meta=SnapshotMeta(index=1, term=1, conf=conf)))

    closed = False

    def close(self) -> None:
        self.closed = True
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(Unavailable("the node is shutting down"))
        # a replica retired by a move: its reads and watches end now (the client, or the
        # merged feed, goes to a node that holds the shard), not at their timeout
        gone = Unavailable(f"shard {self.group} is no longer served here", shard=self.group)
        pending: list[asyncio.Future[Any]] = list(self._reads)
        pending += [f for fs in self._reads_in_flight.values() for f in fs]
        pending += [f for _i, _s, f in self._applied_waiters]
        for f in pending:
            if not f.done():
                f.set_exception(gone)
        self._changed.set()
        OUTGOING.release_engine(self.engine)
        self.store.close()

    # -- state ----------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.raw.raft.role is Role.LEADER

    @property
    def applied(self) -> int:
        return self.store.sm.applied

    def leader_peer(self) -> Peer | None:
        lead = self.raw.raft.lead
        if lead == NONE:
            return None
        return self.peers.get(lead) if self._peer_of is None else self._peer_of(lead)

    def not_leader(self) -> NotLeader:
        peer = self.leader_peer()
        return NotLeader(
            f"node {self.node_id} does not lead shard {self.group}",
            shard=self.group,
            leader=None if peer is None else peer.id,
            leader_url=None if peer is None or peer.id == self.node_id else peer.http_url,
        )

    # -- requests (called on the event loop by the service) ------------------------------

    def can_propose(self) -> bool:
        """Whether a write may be proposed here: on the leader, or on a node that knows a
        leader (its core forwards the proposal to the leader, like etcd's MsgProp, and
        the write is answered here once this replica applies it)."""
        return self.is_leader or self.raw.raft.lead != NONE

    async def write(self, cmd_fields: dict[str, object], timeout: float) -> WriteResult:
        if not self.can_propose():
            raise self.not_leader()
        rid = self._rid_prefix + next(self._rids).to_bytes(8, "big")
        sm = self.store.sm
        if sm.clock > self._hlc.last:
            self._hlc.update(sm.clock, wall_ms())
        hlc = self._hlc.now(wall_ms())
        cmd = Command(
            rid=rid,
            hlc_wall=hlc.wall,
            hlc_logical=hlc.logical,
            origin=self._origin,
            **cmd_fields,  # type: ignore[arg-type]
        )
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters[rid] = fut
        self._proposals.append(encode_command(cmd))
        self._wake()
        try:
            outcome = await _wait(fut, timeout)
        except TimeoutError:
            raise Timeout(
                "the write was not committed in time; its outcome is unknown "
                "(retry with the same Idempotency-Key)",
                shard=self.group,
            ) from None
        finally:
            self._waiters.pop(rid, None)
            self._forwarded.discard(rid)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def _wait_for_leader(self, wait: float) -> None:
        """An election or a leadership transfer (leader balancing) leaves a short window
        in which this replica knows no leader: wait it out, bounded, rather than fail a
        read that a moment later would succeed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while self.raw.raft.lead == NONE:
            if loop.time() >= deadline:
                raise Unavailable(f"shard {self.group} has no leader", shard=self.group)
            self._wake()
            await asyncio.sleep(0.02)

    async def read_barrier(self, consistency: str, timeout: float) -> None:
        """Return once a read at ``consistency`` may be served from this replica."""
        if consistency == "stale":
            return
        raft = self.raw.raft
        if consistency == "lease":
            if not self.is_leader:
                raise self.not_leader()
            if raft.log.term(raft.log.committed) == raft.term and raft.lease_valid():
                await self.wait_applied(raft.log.committed, timeout)
                return
        if raft.lead == NONE:
            await self._wait_for_leader(min(timeout, LEADER_WAIT))
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads.append(fut)
        self._wake()
        try:
            index = await _wait(fut, timeout)
        except TimeoutError:
            raise Timeout("no read index in time (no quorum?)", shard=self.group) from None
        await self.wait_applied(index, timeout)

    async def wait_applied(self, index: int, timeout: float) -> None:
        if self.applied >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._applied_waiters, (index, next(self._seq), fut))
        try:
            await _wait(fut, timeout)
        except TimeoutError:
            raise Timeout(f"replica did not apply up to {index} in time") from None

    async def wait_change(self, after_revision: int) -> None:
        """Wait until the store's revision moves past ``after_revision``."""
        while self.store.sm.revision <= after_revision:
            if self.closed:
                raise Unavailable(f"shard {self.group} is no longer served here", shard=self.group)
            ev = self._changed
            await ev.wait()

    async def conf_change(self, cc: ConfChange, timeout: float) -> ConfState:
        if not self.is_leader:
            raise self.not_leader()
        try:
            self.raw.propose_conf_change(cc)
        except ProposalDropped as exc:
            raise Unavailable(f"membership change refused: {exc}") from None
        index = self.raw.raft.log.last_index()
        fut: asyncio.Future[ConfState] = asyncio.get_running_loop().create_future()
        self._conf_changes.append((index, fut))
        self._wake()
        try:
            return await _wait(fut, timeout)
        except TimeoutError:
            raise Timeout("the membership change was not applied in time") from None

    # -- the driver's hooks ---------------------------------------------------------------

    def before_ready(self) -> None:
        if self._proposals:
            batch, self._proposals = self._proposals, []
            self.stats["proposed"] += len(batch)
            try:
                if not self.is_leader:
                    if self.raw.raft.lead == NONE:
                        raise ProposalDropped("no leader to forward the proposal to")
                    # the core sends them to the leader, which stamps their HLC time
                    # (accept_forwarded); a leader change fails their waiters
                    self._forwarded.update(self._rid_of(d) for d in batch)
                self.raw.propose_batch(batch)
            except ProposalDropped:
                err = self.not_leader()
                for data in batch:
                    fut = self._waiters.pop(self._rid_of(data), None)
                    if fut is not None and not fut.done():
                        fut.set_exception(err)
        if self._reads:
            ctx = self._rid_prefix + next(self._rids).to_bytes(8, "big")
            batch_r, self._reads = self._reads, []
            try:
                self.raw.read_index(ctx)
            except ProposalDropped:
                err_r = Unavailable(f"shard {self.group} has no leader", shard=self.group)
                for f in batch_r:
                    if not f.done():
                        f.set_exception(err_r)
                return
            self.stats["read_rounds"] += 1
            self._reads_in_flight[ctx] = batch_r

    def persist(self, rd: Ready) -> bool:
        """Write the Ready's log state (buffered); True when it needs an fsync."""
        must_sync = False
        if rd.snapshot is not None:
            self._install_snapshot(rd.snapshot)
            must_sync = True
        if rd.entries:
            self.storage.append(rd.entries)
            must_sync = True
        if rd.hard_state is not None:
            prev = self.storage.initial_state()[0]
            self.storage.set_hard_state(rd.hard_state)
            if rd.hard_state.term != prev.term or rd.hard_state.vote != prev.vote:
                must_sync = True
        return must_sync

    def apply_durable(self, rd: Ready, durable: int) -> None:
        """Apply the Ready's committed entries up to index ``durable`` (already in this
        node's synced log) before the Ready's own writes are synced; the rest, and
        everything else of the Ready, waits for :meth:`after_persist`. Stops at the first
        membership change, and does nothing with a snapshot (those keep their order)."""
        if rd.snapshot is not None or not rd.committed_entries:
            return
        entries: list[Entry] = []
        for e in rd.committed_entries:
            if e.index > durable or e.kind is EntryKind.CONF_CHANGE:
                break
            entries.append(e)
        if entries:
            self._apply(entries)

    def after_persist(self, rd: Ready) -> None:
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.lead, rd.soft_state.role)
        if rd.committed_entries:
            self._apply(rd.committed_entries)
        for rs in rd.read_states:
            futs = self._reads_in_flight.pop(rs.request_ctx, None)
            for f in futs or ():
                if not f.done():
                    f.set_result(rs.index)
        self.raw.advance(rd)
        self._maybe_compact()

    def accept_forwarded(self, entries: list[Entry]) -> list[Entry]:
        """On the leader: take the write commands a follower forwarded (``MsgProp``)
        into this turn's proposals, their HLC time re-stamped from this leader's clock
        (the leader orders every version's time, whoever received the request); return
        any other entries (membership changes), to be stepped as they are."""
        rest: list[Entry] = []
        for e in entries:
            if e.kind is not EntryKind.NORMAL or not e.data:
                rest.append(e)
                continue
            cmd = decode_command(e.data)
            sm = self.store.sm
            if sm.clock > self._hlc.last:
                self._hlc.update(sm.clock, wall_ms())
            hlc = self._hlc.now(wall_ms())
            self._proposals.append(
                encode_command(
                    msgspec.structs.replace(cmd, hlc_wall=hlc.wall, hlc_logical=hlc.logical)
                )
            )
        if len(rest) < len(entries):
            self._wake()
        return rest

    def _fail_forwarded(self) -> None:
        """The leader changed: a forwarded write may be lost or may still commit."""
        err = Timeout(
            "the leader changed while the write was forwarded to it; its outcome is "
            "unknown (retry with the same Idempotency-Key)",
            shard=self.group,
        )
        for rid in self._forwarded:
            fut = self._waiters.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_exception(err)
        self._forwarded.clear()

    def _on_soft_state(self, lead: int, role: Role) -> None:
        was_leader = self.role is Role.LEADER
        if lead != self.lead and self._forwarded:
            self._fail_forwarded()
        self.lead, self.role = lead, role
        if self._reads_in_flight:
            # a read index request is dropped when the leader changes: ask again
            for futs in self._reads_in_flight.values():
                self._reads.extend(f for f in futs if not f.done())
            self._reads_in_flight.clear()
            self._wake()
        if was_leader and role is not Role.LEADER:
            log.info("group %d: node %d is no longer leader", self.group, self.node_id)
        if role is Role.LEADER and not was_leader and self._on_leader is not None:
            self._on_leader(self)

    @staticmethod
    def _rid_of(data: bytes) -> bytes:
        """The request id of a proposal's data."""
        return decode_command(data).rid

    # -- apply ----------------------------------------------------------------------------

    def _apply(self, entries: list[Entry]) -> None:
        sm = self.store.sm
        changed = False
        applied = 0
        for e in entries:
            if e.index <= sm.applied:
                continue
            applied += 1
            if e.kind is EntryKind.NORMAL and e.data:
                cmd = decode_command(e.data)
                outcome = sm.apply_entry(cmd.write_command(), e.index)
                changed = True
                fut = self._waiters.pop(cmd.rid, None)
                if fut is not None:
                    self._forwarded.discard(cmd.rid)
                    if not fut.done():
                        fut.set_result(outcome)
            elif e.kind is EntryKind.CONF_CHANGE:
                self._apply_conf_change(e)
            else:
                sm.mark_applied(e.index)
        self.stats["applied"] += applied
        self._applied_upto(changed)

    def _applied_upto(self, changed: bool) -> None:
        """Wake the waiters of what is applied now (and the watchers, if data changed)."""
        sm = self.store.sm
        w = self._applied_waiters
        while w and w[0][0] <= sm.applied:
            _i, _s, waiter = heapq.heappop(w)
            if not waiter.done():
                waiter.set_result(None)
        if changed:
            self._changed.set()
            self._changed = asyncio.Event()

    def _apply_conf_change(self, e: Entry) -> None:
        cc = decode_conf_change(e.data)
        ops: list[Op] = []
        if cc.type is not ConfChangeType.REMOVE_NODE and cc.node_id in self.removed:
            # the same decision on every replica (tombstones are replicated state): an
            # addition of a removed id, proposed before its removal was applied, is a no-op
            log.warning(
                "group %d: entry %d adds removed node %d: ignored", self.group, e.index, cc.node_id
            )
            conf = self.raw.raft.conf_state()
        else:
            conf = self.raw.apply_conf_change(cc)
            if cc.type is ConfChangeType.REMOVE_NODE:
                if cc.node_id not in conf.voters and cc.node_id not in conf.learners:
                    ops.append(peer_delete(cc.node_id))
                    ops.append(removed_put(cc.node_id))
            elif cc.context:
                ops.append(peer_put(decode_peer(cc.context)))
        self.store.sm.mark_applied(e.index, ops)
        self.peers = load_peers(self.engine)
        self.removed = load_removed(self.engine)
        self._on_peers_changed(self.peers)
        if (
            self._on_removed is not None
            and cc.type is ConfChangeType.REMOVE_NODE
            and cc.node_id == self.raw.raft.id
        ):
            self._on_removed(self)
        for idx, fut in list(self._conf_changes):
            if idx <= e.index:
                self._conf_changes.remove((idx, fut))
                if not fut.done():
                    fut.set_result(conf)

    # -- snapshots and compaction -----------------------------------------------------------

    def _make_snapshot(self) -> Snapshot:
        """Metadata only (format 3): the data streams from a point-in-time view of the
        engine taken now, at the applied index (:mod:`tidekv.node.snapstream`)."""
        sm = self.store.sm
        index = sm.applied
        meta = SnapshotMeta(
            index=index, term=self.storage.term(index), conf=self.raw.raft.conf_state()
        )
        return Snapshot(meta=meta, data=encode_header(OUTGOING.register(self.engine)))

    def snapshot_sink(self, m: Message) -> SnapshotSink | None:
        """Where a streamed snapshot from the leader is staged; None refuses a stale one
        (not past what is applied here) or a second one while one is being received."""
        snap = m.snapshot
        sid = None if snap is None else decode_header(snap.data)
        if snap is None or sid is None or self._incoming is not None:
            return None
        if snap.meta.index <= self.applied or m.term < self.raw.raft.term:
            return None

        def ended(sink: SnapshotSink, ok: bool) -> None:
            if self._incoming is sink:
                self._incoming = None
            if ok and sink.ready is not None:
                self._staged_mem = {sink.snap_id: sink.ready}

        self._incoming = SnapshotSink(self._engine_name, self._engine_path, snap.meta, sid, ended)
        return self._incoming

    def _install_snapshot(self, snap: Snapshot) -> None:
        log.info(
            "group %d: installing snapshot at %d (term %d)",
            self.group,
            snap.meta.index,
            snap.meta.term,
        )
        sid = decode_header(snap.data)
        if sid is None:  # format 1 or 2: the whole engine in the message (older nodes)
            restore_engine(self.engine, snap.data, snap.meta)
        else:  # format 3: staged by the stream; swap the engine's directory
            if not is_staged(self._engine_path, sid) or (
                self._engine_path is None and sid not in self._staged_mem
            ):  # cannot happen: the message is stepped only once the data is staged
                raise CorruptionError(f"group {self.group}: snapshot {sid.hex()} not staged")
            OUTGOING.release_engine(self.engine)
            self.store.close()
            install_staged(self._engine_name, self._engine_path, sid)
            staged = self._staged_mem.pop(sid, None)
            self.engine = staged or open_engine(self._engine_name, self._engine_path)
        self.store = self._open_store(self.engine)
        self._hlc = HLC(max(self.store.sm.clock, self._hlc.last))
        self.storage.apply_snapshot(Snapshot(meta=snap.meta))
        self.peers = load_peers(self.engine)
        self.removed = load_removed(self.engine)
        self._on_peers_changed(self.peers)
        self.stats["snapshots_installed"] += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def _maybe_compact(self) -> None:
        applied = self.applied
        if applied - self._last_compact < self.compact_every:
            return
        # the engine must hold everything up to `applied` durably before the log
        # forgets it; the snapshot marker records where the log now starts
        self.engine.write_batch(
            [snapshot_meta_op(applied, self.storage.term(applied), self.raw.raft.conf_state())],
            sync=True,
        )
        self.storage.compact(applied, self.raw.raft.conf_state())
        self._last_compact = applied

    # -- membership -----------------------------------------------------------------------

    @staticmethod
    def add_change(peer: Peer, learner: bool) -> ConfChange:
        return ConfChange(
            ConfChangeType.ADD_LEARNER if learner else ConfChangeType.ADD_VOTER,
            peer.id,
            encode_peer(peer),
        )

    def clock(self) -> HLCTimestamp:
        return self._hlc.last
