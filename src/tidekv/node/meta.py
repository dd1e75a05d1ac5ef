"""The metadata group's replica: Raft over :class:`~tidekv.sharding.metadata.ClusterState`.

A sharded cluster runs one more Raft group, :data:`META_GROUP`, on the metadata voters
(``choose_meta_voters``: up to 5 nodes; Raft ids are node ids, the group's membership is
fixed at creation for now). Its state machine is the pure
:func:`tidekv.sharding.metadata.apply`; the state lives in the group's engine as ONE
record, ``M cluster`` (``encode_state``), written in the same batch as the applied index,
so snapshots, restarts and crash repair work exactly as for a data group. Every node
bootstraps the group with the same initial state (``Create`` applied to an empty state,
and the metadata voters), so the shard map is known before any election.

Only the apply differs from a data group (:class:`MetaReplica` overrides ``_apply`` and
the proposal encoding); the data groups' hot path is untouched.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import msgspec

from tidekv.errors import Conflict, Timeout
from tidekv.node.replica import Replica, _wait
from tidekv.raft import Entry, EntryKind
from tidekv.sharding import metadata
from tidekv.sharding.metadata import ClusterState, decode_state, encode_state
from tidekv.statemachine import meta_key
from tidekv.storage import Engine, Op

log = logging.getLogger("tidekv.node")

META_GROUP = 1 << 16
"""The metadata group's id: above every shard id (at most 4096 shards), so shard ``s`` is
group ``s`` and an unsharded cluster's one group keeps id 0."""

STATE_KEY = meta_key("cluster")
_MEMBER_CHANGES = (metadata.MarkDown, metadata.MarkUp, metadata.Evict)


class MetaEntry(msgspec.Struct, array_like=True, frozen=True):
    rid: bytes
    command: bytes  # metadata.encode_command


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(MetaEntry)


def encode_meta_entry(rid: bytes, cmd: metadata.Command) -> bytes:
    return _enc.encode(MetaEntry(rid, metadata.encode_command(cmd)))


def initial_state(
    cluster_id: str, shards: int, members: list[tuple[int, str]], replication: int
) -> ClusterState:
    """The state every node of a new sharded cluster starts from (pure, identical)."""
    state = ClusterState()
    err = metadata.apply(
        state,
        metadata.Create(
            cluster_id=cluster_id,
            shards=shards,
            members=[(i, a, 1) for i, a in members],
            replication=replication,
        ),
    )
    if err is not None:
        raise ValueError(err)
    state.meta_voters = metadata.choose_meta_voters(state)
    return state


def state_op(state: ClusterState) -> Op:
    return (STATE_KEY, encode_state(state))


def load_state(engine: Engine) -> ClusterState | None:
    raw = engine.get(STATE_KEY)
    return None if raw is None else decode_state(raw)


class MetaReplica(Replica):
    """A replica of the metadata group."""

    def __init__(self, *, on_state: Callable[[ClusterState], None], **kw: Any) -> None:
        super().__init__(**kw)
        self._on_state = on_state
        self.state: ClusterState = load_state(self.engine) or ClusterState()
        self.member_changes: Counter[tuple[str, int]] = Counter()
        """(``MarkDown``/``MarkUp``/``Evict``, node) -> how many this replica applied
        since the process started (the ``tidekv_nodes_marked_*``/``evictions`` metrics)."""

    def _renamed(self, p: tuple[bytes, int, bytes], term: int) -> tuple[bytes, int, bytes]:
        return (p[0], term, p[2])  # a metadata command carries no time and no term

    def _leader_changed(self) -> None:
        # metadata commands carry no term: a forwarded one may still commit, or be lost
        self._fail_unknown(
            "the leader changed while the metadata change was forwarded to it",
            forwarded_only=True,
        )

    async def propose(self, cmd: metadata.Command, timeout: float) -> None:
        """Propose ``cmd``; return once applied here, or raise Conflict with the reason
        the state machine refused it."""
        if not self.can_propose():
            raise self.not_leader()
        rid = self._rid_prefix + next(self._rids).to_bytes(8, "big")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[rid] = fut
        self._proposals.append((rid, 0, encode_meta_entry(rid, cmd)))
        self._wake()
        try:
            outcome = await _wait(fut, timeout)
        except TimeoutError:
            raise Timeout("the metadata change was not committed in time") from None
        finally:
            self._waiters.pop(rid, None)
            self._sent.pop(rid, None)
        if isinstance(outcome, str):
            raise Conflict(f"metadata refused {type(cmd).__name__}: {outcome}")

    def accept_forwarded(self, entries: list[Entry]) -> list[Entry]:
        return entries  # nothing to re-stamp: the core appends them as they are

    def _apply(self, entries: list[Entry]) -> None:
        sm = self.store.sm
        changed = False
        for e in entries:
            if e.index <= sm.applied:
                continue
            if e.kind is EntryKind.NORMAL and e.data:
                me = _dec.decode(e.data)
                cmd = metadata.decode_command(me.command)
                err = metadata.apply(self.state, cmd)
                if err is None and isinstance(cmd, _MEMBER_CHANGES):
                    self.member_changes[(type(cmd).__name__, cmd.node)] += 1
                # a refused command changes nothing, but the applied index still moves
                sm.mark_applied(e.index, [] if err is not None else [state_op(self.state)])
                changed = changed or err is None
                fut = self._waiters.pop(me.rid, None)
                if fut is not None:
                    self._sent.pop(me.rid, None)
                    if not fut.done():
                        cast(Any, fut).set_result(err)  # the refusal, or None
            elif e.kind is EntryKind.CONF_CHANGE:
                self._apply_conf_change(e)
            else:
                sm.mark_applied(e.index)
            self.stats["applied"] += 1
        self._applied_upto(changed)
        if changed:
            self._on_state(self.state)

    def _install_snapshot(self, snap: Any) -> None:
        super()._install_snapshot(snap)
        self.state = load_state(self.engine) or ClusterState()
        self._on_state(self.state)
