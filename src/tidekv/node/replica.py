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

Both ride out a leader change (an election, or a transfer by the leader balancer):
requests wait a bounded time (``leader_wait``) for a leader instead of failing, a
leader holds proposals while it hands over (its core would drop them), and a write
whose proposal provably never commits is proposed again. The proof: every proposal
records the term it was handed over in (:attr:`Command.term`), a leader appends a
forwarded command only in that term, so once this replica applies an entry of a later
term without having seen the request id, the command is lost for good (docs/raft.md,
"Riding out a leader change"). A ReadIndex request is simply asked again (a read
changes nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
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
"""Seconds a request waits for a replica that knows no leader to learn one, by default
(an election takes 1-2 election timeouts; the default election timeout is 0.5 s):
``NodeConfig.leader_wait``."""
READ_RETRY = 1.0
"""Seconds after which an unanswered ReadIndex request is asked again, by default (two
election timeouts: the request or its answer was lost; a leader change is noticed at
once)."""


def open_group_engine(name: str, path: str | None, options: dict[str, Any]) -> Engine:
    """Open a group's engine, first finishing or undoing a snapshot swap that a crash
    interrupted (:func:`~tidekv.node.snapstream.recover_engine_dir`). Safe in a worker
    thread: it touches only the group's own directory."""
    recover_engine_dir(path)
    return open_engine(name, path, **options)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Replica:
    """A replica of one shard's Raft group.

    Waking the node's loop: the loop looks only at the replicas marked since its last
    turn (:mod:`tidekv.node.server`, "dirty replicas"). Whatever gives this replica's
    core work from outside the loop's own turn (a proposal, a read, a conf change, a
    ``raw.step``/``transfer_leader``/``unquiesce``/``campaign``/``report_*``, a retry
    from a background task) must be followed by :meth:`wake` (the same as
    ``node.wake(rep)``); the requests below do it themselves. A missed wake is a stall
    until the next message or tick of this group, forever if the group is quiesced.
    """

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
        leader_wait: float = LEADER_WAIT,
        read_retry: float = READ_RETRY,
        engine: Engine | None = None,
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        self.group = group
        self.leader_wait = leader_wait
        """Seconds a request waits for a leader (none known, or a transfer under way)."""
        self.read_retry = read_retry
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
        self._engine_options = dict(engine_options or {})
        self._origin = origin
        self._wake = wake
        self._on_peers_changed = on_peers_changed
        self._max_key_bytes = max_key_bytes
        self._max_value_bytes = max_value_bytes
        self.compact_every = compact_every
        self._incoming: SnapshotSink | None = None  # the snapshot stream being received
        self._staged_mem: dict[bytes, Engine] = {}  # staged snapshots without a directory
        self.engine: Engine = (
            engine
            if engine is not None  # opened by the caller with open_group_engine
            else open_group_engine(engine_name, engine_path, self._engine_options)
        )
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
        self._proposals: list[tuple[bytes, int, bytes]] = []
        """(rid, term it names, data), in the order of their HLC stamps: not handed to
        the core yet. ``rid`` is empty for a command a follower forwarded to this leader
        (taken in that term only; its waiter is on the follower)."""
        self._waiters: dict[bytes, asyncio.Future[Outcome]] = {}
        self._sent: dict[bytes, tuple[int, bytes, bool]] = {}
        """rid -> (term, data, forwarded): handed to the core in that term (appended here
        as leader, or forwarded to that term's leader), outcome not applied yet."""
        self._held_since: float | None = None
        """Since when proposals wait for a leader to take them (monotonic seconds)."""
        self._applied_term = 0
        """The term of the last entry applied (a proof that older proposals are lost)."""
        self._reads: list[asyncio.Future[int]] = []
        self._reads_held_since: float | None = None
        self._reads_in_flight: dict[bytes, tuple[float, list[asyncio.Future[int]]]] = {}
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
            "led": 0,
            "proposals_held": 0,
            "proposals_retried": 0,
            "forwarded_dropped": 0,
            "reads_retried": 0,
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
        ``extra``: more records of the initial state (the metadata group's state).
        The log's record is durable after the caller's next ``NodeLog.sync``."""
        conf = Replica.bootstrap_engine(engine, peers, voters=voters, extra=extra)
        Replica.bootstrap_log(storage, conf)

    @staticmethod
    def bootstrap_engine(
        engine: Engine,
        peers: dict[int, Peer],
        *,
        voters: frozenset[int] | None = None,
        extra: list[Op] | None = None,
        origin: str | None = None,
    ) -> ConfState:
        """The engine's half of :meth:`bootstrap`, durable on return (it touches only
        ``engine``: groups are bootstrapped in parallel threads). Returns the membership
        for :meth:`bootstrap_log`, which must follow on the loop's thread. ``origin``:
        the replica's (the cluster id), written now rather than replaced at its open."""
        conf = ConfState(voters=frozenset(peers) if voters is None else voters)
        ops: list[Op] = [peer_put(p) for p in peers.values()]
        ops.extend(extra or ())
        ops.append(snapshot_meta_op(1, 1, conf))
        store = Store(engine, origin=origin, sync=False)
        store.sm.mark_applied(1, ops)
        engine.sync()
        return conf

    @staticmethod
    def bootstrap_log(storage: GroupStorage, conf: ConfState) -> None:
        """The log's half of :meth:`bootstrap`: the initial snapshot's record."""
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
        pending += [f for _at, fs in self._reads_in_flight.values() for f in fs]
        pending += [f for _i, _s, f in self._applied_waiters]
        for f in pending:
            if not f.done():
                f.set_exception(gone)
        self._changed.set()
        OUTGOING.release_engine(self.engine)
        self.store.close()

    def wake(self) -> None:
        """Make the node's loop look at this replica in its next turn (class docstring)."""
        self._wake()

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

    def _stamp(self) -> HLCTimestamp:
        """A new HLC time, after everything this replica applied."""
        sm = self.store.sm
        if sm.clock > self._hlc.last:
            self._hlc.update(sm.clock, wall_ms())
        return self._hlc.now(wall_ms())

    async def write(self, cmd_fields: dict[str, object], timeout: float) -> WriteResult:
        if self.raw.raft.lead == NONE:
            await self.wait_for_leader(min(timeout, self.leader_wait), self.not_leader)
        rid = self._rid_prefix + next(self._rids).to_bytes(8, "big")
        hlc = self._stamp()
        term = self.raw.raft.term
        cmd = Command(
            rid=rid,
            hlc_wall=hlc.wall,
            hlc_logical=hlc.logical,
            origin=self._origin,
            term=term,
            **cmd_fields,  # type: ignore[arg-type]
        )
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters[rid] = fut
        self._proposals.append((rid, term, encode_command(cmd)))
        self._wake()
        try:
            outcome = await _wait(fut, timeout)
        except TimeoutError:
            if self._unqueue(rid):  # never handed to the core: certainly not applied
                raise self.not_leader() from None
            raise Timeout(
                "the write was not committed in time; its outcome is unknown "
                "(retry with the same Idempotency-Key)",
                shard=self.group,
            ) from None
        finally:
            self._waiters.pop(rid, None)
            self._sent.pop(rid, None)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _unqueue(self, rid: bytes) -> bool:
        """Take ``rid`` out of the proposals not handed to the core yet; False if it was
        handed over already."""
        for i, p in enumerate(self._proposals):
            if p[0] == rid:
                del self._proposals[i]
                return True
        return False

    async def wait_for_leader(
        self, wait: float, error: Callable[[], Exception] | None = None
    ) -> None:
        """An election or a leadership transfer (leader balancing) leaves a short window
        in which this replica knows no leader: wait it out, bounded, rather than fail a
        request that a moment later would succeed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while self.raw.raft.lead == NONE:
            if loop.time() >= deadline:
                if error is not None:
                    raise error()
                raise Unavailable(f"shard {self.group} has no leader", shard=self.group)
            self._wake()
            await asyncio.sleep(0.02)

    async def read_barrier(self, consistency: str, timeout: float) -> None:
        """Return once a read at ``consistency`` may be served from this replica."""
        if consistency == "stale":
            return
        raft = self.raw.raft
        if consistency == "lease":
            if raft.lead == NONE:  # a leader change: wait for the leader, then forward
                await self.wait_for_leader(min(timeout, self.leader_wait))
            if not self.is_leader:
                raise self.not_leader()
            if raft.log.term(raft.log.committed) == raft.term and raft.lease_valid():
                await self.wait_applied(raft.log.committed, timeout)
                return
        if raft.lead == NONE:
            await self.wait_for_leader(min(timeout, self.leader_wait))
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
            self._hand_proposals()
        if self._reads or self._reads_in_flight:
            self._hand_reads()

    def _hand_proposals(self) -> None:
        """Give the queued proposals to the core: appended here on the leader, forwarded
        (``MsgProp``) on a follower. Held, not dropped, while no leader can take them: a
        leader handing over (its core drops proposals then), no leader known. Held for
        more than :attr:`leader_wait`, they fail (never proposed: not applied)."""
        raft = self.raw.raft
        term = raft.term
        batch = self._proposals
        if raft.role is Role.LEADER:
            if raft.lead_transferee != NONE or raft.id not in raft.prs:
                self._hold()
                return
            out: list[tuple[bytes, int, bytes]] = []
            restamp = False  # keep the HLC stamps increasing in log order
            for p in batch:
                if p[1] != term:
                    if not p[0]:  # forwarded to this node as leader of an earlier term
                        self.stats["forwarded_dropped"] += 1
                        continue
                    restamp = True
                out.append(self._renamed(p, term) if restamp else p)
        else:
            if raft.lead == NONE or raft.role is not Role.FOLLOWER:
                self._hold()
                return
            # forwarded to this node while it led an earlier term: never appended now,
            # their proposers find out from the terms they apply. The leader appends a
            # command only in the term it names: name this one
            out = [p if p[1] == term else self._renamed(p, term) for p in batch if p[0]]
            self.stats["forwarded_dropped"] += len(batch) - len(out)
        self._proposals = []
        try:
            self.raw.propose_batch([d for _r, _t, d in out])
        except ProposalDropped:  # not expected after the checks above: hold them
            self._proposals = out + self._proposals
            self._hold()
            return
        self._held_since = None
        self.stats["proposed"] += len(out)
        forwarded = raft.role is not Role.LEADER
        if not forwarded:
            self.stats["led"] += len(out)
        sent = self._sent
        for rid, _t, data in out:
            if rid:
                sent[rid] = (term, data, forwarded)

    def _hold(self) -> None:
        now = time.monotonic()
        if self._held_since is None:
            self._held_since = now
            self.stats["proposals_held"] += len(self._proposals)
            self._wake_later()
        elif now - self._held_since > self.leader_wait:
            err = self.not_leader()
            held, self._proposals = self._proposals, []
            self._held_since = None
            for rid, _t, _d in held:
                fut = self._waiters.pop(rid, None) if rid else None
                if fut is not None and not fut.done():
                    fut.set_exception(err)
        else:
            self._wake_later()

    def _wake_later(self) -> None:
        """Come back to held requests even if nothing else wakes the loop."""
        with contextlib.suppress(RuntimeError):  # no running loop (tests of the class)
            asyncio.get_running_loop().call_later(0.05, self._wake)

    def _renamed(self, p: tuple[bytes, int, bytes], term: int) -> tuple[bytes, int, bytes]:
        """Proposal ``p`` for ``term``, stamped anew."""
        cmd = decode_command(p[2])
        hlc = self._stamp()
        new = msgspec.structs.replace(cmd, hlc_wall=hlc.wall, hlc_logical=hlc.logical, term=term)
        return (p[0], term, encode_command(new))

    def _hand_reads(self) -> None:
        """Ask the core for a read index for the waiting reads (one request for all),
        and ask again for requests not answered within :attr:`read_retry`."""
        now = time.monotonic()
        if self._reads_in_flight:
            retry = self.read_retry
            stale = [c for c, (at, _f) in self._reads_in_flight.items() if now - at > retry]
            for ctx in stale:
                _at, futs = self._reads_in_flight.pop(ctx)
                again = [f for f in futs if not f.done()]
                self.stats["reads_retried"] += len(again)
                self._reads.extend(again)
        if not self._reads:
            return
        ctx = self._rid_prefix + next(self._rids).to_bytes(8, "big")
        try:
            self.raw.read_index(ctx)
        except ProposalDropped:  # no leader: wait for one, bounded
            if self._reads_held_since is None:
                self._reads_held_since = now
                self._wake_later()
            elif now - self._reads_held_since > self.leader_wait:
                err_r = Unavailable(f"shard {self.group} has no leader", shard=self.group)
                held, self._reads, self._reads_held_since = self._reads, [], None
                for f in held:
                    if not f.done():
                        f.set_exception(err_r)
            return
        self._reads_held_since = None
        batch_r, self._reads = self._reads, []
        self.stats["read_rounds"] += 1
        self._reads_in_flight[ctx] = (now, batch_r)

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
            flight = self._reads_in_flight.pop(rs.request_ctx, None)
            for f in () if flight is None else flight[1]:
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
        term = self.raw.raft.term
        for e in entries:
            if e.kind is not EntryKind.NORMAL or not e.data:
                rest.append(e)
                continue
            cmd = decode_command(e.data)
            if cmd.term not in (0, term):
                # meant for another term's leader: the proposer finds it lost (by the
                # terms it applies) and proposes it again; appending it here could
                # apply it twice
                self.stats["forwarded_dropped"] += 1
                continue
            hlc = self._stamp()
            new = msgspec.structs.replace(cmd, hlc_wall=hlc.wall, hlc_logical=hlc.logical)
            self._proposals.append((b"", term, encode_command(new)))
        if len(rest) < len(entries):
            self._wake()
        return rest

    def _leader_changed(self) -> None:
        """The leader changed. A data group's writes in flight need nothing: each either
        applies or is proven lost and proposed again (:meth:`_retry_lost`)."""

    def _fail_unknown(self, why: str, *, forwarded_only: bool = False) -> None:
        """Fail the writes in flight whose fate this replica can no longer learn."""
        err = Timeout(f"{why}; the outcome is unknown", shard=self.group)
        for rid, (_t, _d, fwd) in list(self._sent.items()):
            if forwarded_only and not fwd:
                continue
            del self._sent[rid]
            fut = self._waiters.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_exception(err)

    def _retry_lost(self) -> None:
        """Propose again the writes handed over in a term older than an applied entry's
        and not applied: a leader appends a command only in the term it names, and
        every entry of an older term that commits comes before the first entry of a
        newer one, so these can never commit. Each goes to the current leader, stamped
        anew, under the same request id."""
        newer = self._applied_term
        lost = [rid for rid, (t, _d, _f) in self._sent.items() if t < newer]
        if not lost:
            return
        term = self.raw.raft.term
        for rid in lost:
            _t, data, _f = self._sent.pop(rid)
            fut = self._waiters.get(rid)
            if fut is None or fut.done():
                continue
            self.stats["proposals_retried"] += 1
            self._proposals.append(self._renamed((rid, term, data), term))
        self._wake()

    def _on_soft_state(self, lead: int, role: Role) -> None:
        was_leader = self.role is Role.LEADER
        if lead != self.lead and self._sent:
            self._leader_changed()
        self.lead, self.role = lead, role
        if self._reads_in_flight:
            # a read index request is dropped when the leader changes: ask again
            for _at, futs in self._reads_in_flight.values():
                self._reads.extend(f for f in futs if not f.done())
            self._reads_in_flight.clear()
            self._wake()
        if was_leader and role is not Role.LEADER:
            log.info("group %d: node %d is no longer leader", self.group, self.node_id)
        if role is Role.LEADER and not was_leader and self._on_leader is not None:
            self._on_leader(self)

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
                    self._sent.pop(cmd.rid, None)
                    if not fut.done():
                        fut.set_result(outcome)
            elif e.kind is EntryKind.CONF_CHANGE:
                self._apply_conf_change(e)
            else:
                sm.mark_applied(e.index)
        self.stats["applied"] += applied
        self._applied_upto(changed)
        self._applied_entries(entries)

    def _applied_entries(self, entries: list[Entry]) -> None:
        """After applying ``entries``: an entry of a newer term proves the older terms'
        unapplied proposals lost."""
        if entries and entries[-1].term > self._applied_term:
            self._applied_term = entries[-1].term
            if self._sent:
                self._retry_lost()

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
            self.engine = staged or open_engine(
                self._engine_name, self._engine_path, **self._engine_options
            )
        self.store = self._open_store(self.engine)
        self._hlc = HLC(max(self.store.sm.clock, self._hlc.last))
        self.storage.apply_snapshot(Snapshot(meta=snap.meta))
        self.peers = load_peers(self.engine)
        self.removed = load_removed(self.engine)
        self._on_peers_changed(self.peers)
        self.stats["snapshots_installed"] += 1
        # the entries the snapshot covers are never applied here one by one: whether a
        # write in flight is among them cannot be known
        self._applied_term = max(self._applied_term, snap.meta.term)
        if self._sent:
            self._fail_unknown("a snapshot replaced this replica's state")
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
