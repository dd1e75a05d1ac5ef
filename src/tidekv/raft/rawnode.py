"""The driver-facing API: :class:`RawNode` and the :class:`Ready` batch (etcd ``rawnode.go``).

The driver loop::

    node.tick()                      # every tick of the (real or simulated) clock
    node.step(msg)                   # every message received from a peer
    node.propose(data)               # client writes
    if node.has_ready():
        rd = node.ready()
        send(rd.messages)                        # may leave at once
        storage.append(rd.entries)               # \\
        if rd.hard_state: storage.set_hard_state(rd.hard_state)   # > make durable
        if rd.snapshot: storage.apply_snapshot(rd.snapshot)       # /
        send(rd.persisted_messages)              # only after the writes are durable
        apply(rd.snapshot, rd.committed_entries) # conf changes: node.apply_conf_change
        serve(rd.read_states)                    # once applied >= read_state.index
        node.advance(rd)

Only one Ready is outstanding at a time: call ``advance`` before the next ``ready``
(``step``/``tick``/``propose`` may be called in between; their effects go into the next
Ready).
"""

from __future__ import annotations

import msgspec

from tidekv.raft.config import Config
from tidekv.raft.errors import InvalidMessage, ProposalDropped
from tidekv.raft.progress import ProgressStatus
from tidekv.raft.raft import Raft, Role
from tidekv.raft.storage import Storage
from tidekv.raft.types import (
    LOCAL_MESSAGES,
    NONE,
    ConfChange,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    ReadState,
    Snapshot,
    encode_conf_change,
)

MT = MessageType

_AFTER_PERSIST = frozenset({MT.APP_RESP, MT.VOTE_RESP, MT.PRE_VOTE_RESP})
"""Answers that promise something about our durable state (log, term, vote)."""


class SoftState(msgspec.Struct, frozen=True):
    """Volatile state worth telling the driver about; not persisted."""

    lead: int
    role: Role


class Ready(msgspec.Struct):
    """What the driver must do now, field by field.

    * ``entries``: append to stable storage (they may replace a conflicting tail).
    * ``hard_state``: persist (None when unchanged).
    * ``snapshot``: persist/install (None when there is none); the state machine must be
      restored from it before ``committed_entries`` are applied.
    * ``messages``: may be sent immediately, in parallel with the writes.
    * ``persisted_messages``: may be sent only once ``entries``, ``hard_state`` and
      ``snapshot`` of this Ready are durable ("persist before send").
    * ``committed_entries``: committed; apply them in order (call
      ``RawNode.apply_conf_change`` for CONF_CHANGE entries; skip NOOP entries).
    * ``read_states``: reads that are linearizable once applied index >= ``index``.
    * ``soft_state``: new leader/role, or None when unchanged.
    """

    entries: list[Entry]
    hard_state: HardState | None
    snapshot: Snapshot | None
    messages: list[Message]
    persisted_messages: list[Message]
    committed_entries: list[Entry]
    read_states: list[ReadState]
    soft_state: SoftState | None


class Status(msgspec.Struct, frozen=True):
    """A point-in-time view of a node (``progress`` is filled only on a leader)."""

    id: int
    role: Role
    term: int
    vote: int
    lead: int
    commit: int
    applied: int
    last_index: int
    conf: ConfState
    lead_transferee: int
    progress: dict[int, ProgressStatus]


class RawNode:
    """A Raft node driven by the caller: no threads, no I/O, no clock, no global random."""

    __slots__ = ("_applying", "_outstanding", "_prev_hs", "_prev_ss", "raft")

    def __init__(self, config: Config, storage: Storage) -> None:
        self.raft = Raft(config, storage)
        self._prev_hs = self.raft.hard_state()
        self._prev_ss = SoftState(self.raft.lead, self.raft.role)
        self._applying = self.raft.log.applied
        self._outstanding: Ready | None = None

    # -- inputs ---------------------------------------------------------------------------

    def tick(self) -> None:
        """One unit of logical time: drives election timeouts and heartbeats."""
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now (a pre-vote first when enabled)."""
        self.raft.step(Message(MT.HUP, frm=self.raft.id))

    def step(self, m: Message) -> None:
        """Feed a message received from a peer. Local message types are refused."""
        if m.type in LOCAL_MESSAGES:
            raise InvalidMessage("local message types cannot be stepped", type=m.type.name)
        r = self.raft
        if m.frm not in r.prs and m.type in (MT.APP_RESP, MT.HEARTBEAT_RESP, MT.VOTE_RESP):
            return  # an answer from a node that is not (or no longer) a member
        try:  # noqa: SIM105 (try/except is cheaper than contextlib.suppress on this path)
            r.step(m)
        except ProposalDropped:
            pass  # forwarded proposals are dropped silently; the client retries

    def propose(self, data: bytes) -> None:
        """Propose application data; raises ``ProposalDropped`` if no leader is known.

        On the leader this is the hot path (no message is built); a follower forwards the
        proposal to its leader. Acceptance is not commitment: watch ``committed_entries``.
        """
        r = self.raft
        if r.role is Role.LEADER and r.lead_transferee == NONE and r.id in r.prs:
            if r.quiesced:
                r.unquiesce()
            log = r.log
            unstable = log.unstable
            unstable.append(Entry(r.term, log.offset + len(unstable), EntryKind.NORMAL, data))
            r.needs_bcast = True
        else:
            r.step(Message(MT.PROPOSE, frm=r.id, entries=[Entry(0, 0, EntryKind.NORMAL, data)]))

    def propose_batch(self, data: list[bytes]) -> None:
        """Propose several payloads at once (cheaper per entry than :meth:`propose`)."""
        if not data:
            return
        r = self.raft
        if r.role is Role.LEADER and r.id in r.prs:
            r.propose_fast(data)
        else:
            ents = [Entry(0, 0, EntryKind.NORMAL, d) for d in data]
            r.step(Message(MT.PROPOSE, frm=r.id, entries=ents))

    def propose_conf_change(self, cc: ConfChange) -> None:
        """Propose a single-server membership change (see :mod:`tidekv.raft.raft`)."""
        r = self.raft
        e = Entry(0, 0, EntryKind.CONF_CHANGE, encode_conf_change(cc))
        r.step(Message(MT.PROPOSE, frm=r.id, entries=[e]))

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed conf change (call it while applying that entry)."""
        return self.raft.apply_conf_change(cc)

    def read_index(self, ctx: bytes) -> None:
        """Request a linearizable read; the answer is a ``ReadState`` with this ``ctx``.

        ``ctx`` should be unique per request. Requests are dropped (no answer) if the
        leader changes before they are confirmed: time out and retry.
        """
        r = self.raft
        if r.lead == NONE:
            raise ProposalDropped("no leader to serve a read index")
        r.step(Message(MT.READ_INDEX, frm=r.id, context=ctx))

    def transfer_leader(self, target: int) -> None:
        """Ask the leader (this node or, forwarded, its leader) to hand over to ``target``."""
        self.raft.step(Message(MT.TRANSFER_LEADER, frm=target))

    @property
    def quiesced(self) -> bool:
        """Idle and silent (``Config.quiesce``): ``tick`` does nothing, the driver may
        skip it. Any proposal, read, transfer, conf change or message that needs an
        answer wakes the node by itself."""
        return self.raft.quiesced

    def unquiesce(self) -> None:
        """Wake up: resume ticking (a follower's election timer restarts from zero).

        The driver calls this on a quiesced follower when the node hosting its leader
        is unreachable or silent (the node-level liveness signal), so the group elects a
        new leader as usual; a follower also asks its leader to wake (a wasted message
        if that node is really gone). No-op when not quiesced.
        """
        self.raft.unquiesce(wake_leader=True)

    def report_unreachable(self, node_id: int) -> None:
        """The transport failed to deliver to ``node_id``: stop pipelining to it."""
        self.raft.step(Message(MT.UNREACHABLE, frm=node_id))

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        """Sending a snapshot to ``node_id`` finished (``ok``) or failed."""
        self.raft.step(Message(MT.SNAP_STATUS, frm=node_id, reject=not ok))

    # -- outputs --------------------------------------------------------------------------

    def has_ready(self) -> bool:
        if self._outstanding is not None:
            return False
        r = self.raft
        r.flush_appends()
        log = r.log
        if r.msgs or log.unstable or log.unstable_snapshot is not None or r.read_states:
            return True
        if log.has_next_committed(self._applying):
            return True
        if r.term != self._prev_hs.term or r.vote != self._prev_hs.vote:
            return True
        if log.committed != self._prev_hs.commit:
            return True
        return r.lead != self._prev_ss.lead or r.role != self._prev_ss.role

    def ready(self) -> Ready:
        """Collect everything to persist, send, and apply. Call ``advance`` afterwards."""
        if self._outstanding is not None:
            raise AssertionError("ready() called again before advance()")
        r = self.raft
        r.flush_appends()
        log = r.log

        hs = None
        if (
            r.term != self._prev_hs.term
            or r.vote != self._prev_hs.vote
            or log.committed != self._prev_hs.commit
        ):
            hs = r.hard_state()
        ss = None
        if r.lead != self._prev_ss.lead or r.role != self._prev_ss.role:
            ss = SoftState(r.lead, r.role)
            self._prev_ss = ss

        msgs = r.msgs
        r.msgs = []
        snap = log.unstable_snapshot
        if snap is not None or (
            hs is not None and (hs.term != self._prev_hs.term or hs.vote != self._prev_hs.vote)
        ):
            # a new term/vote or a snapshot: nothing leaves before it is durable
            now: list[Message] = []
            later = msgs
        else:
            now = []
            later = []
            for m in msgs:
                (later if m.type in _AFTER_PERSIST else now).append(m)
        if hs is not None:
            self._prev_hs = hs

        committed = (
            log.next_committed(self._applying) if log.has_next_committed(self._applying) else []
        )
        if committed:
            self._applying = committed[-1].index
        read_states = r.read_states
        r.read_states = []
        rd = Ready(
            entries=list(log.unstable),
            hard_state=hs,
            snapshot=snap,
            messages=now,
            persisted_messages=later,
            committed_entries=committed,
            read_states=read_states,
            soft_state=ss,
        )
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver persisted, sent and applied ``rd``."""
        if rd is not self._outstanding:
            raise AssertionError("advance() with a Ready that is not the outstanding one")
        self._outstanding = None
        r = self.raft
        log = r.log
        if rd.snapshot is not None:
            idx = rd.snapshot.meta.index
            log.stable_snap_to(idx)
            log.applied_to(idx)
            if self._applying < idx:
                self._applying = idx
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
            r.on_persisted(last.index, last.term)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)

    # -- introspection ----------------------------------------------------------------------

    @property
    def id(self) -> int:
        return self.raft.id

    def status(self) -> Status:
        r = self.raft
        progress: dict[int, ProgressStatus] = {}
        if r.role == Role.LEADER:
            for nid, pr in sorted(r.prs.items()):
                progress[nid] = ProgressStatus(
                    match=pr.match,
                    next=pr.next,
                    state=pr.state,
                    is_learner=pr.is_learner,
                    recent_active=pr.recent_active,
                    inflight=pr.inflights.count(),
                    pending_snapshot=pr.pending_snapshot,
                )
        return Status(
            id=r.id,
            role=r.role,
            term=r.term,
            vote=r.vote,
            lead=r.lead,
            commit=r.log.committed,
            applied=r.log.applied,
            last_index=r.log.last_index(),
            conf=r.conf_state(),
            lead_transferee=r.lead_transferee,
            progress=progress,
        )
