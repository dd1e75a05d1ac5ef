"""The values the Raft core consumes and produces: entries, states, messages.

Every record is frozen and slotted. They are ``msgspec.Struct`` classes rather than
``dataclasses`` for two measured reasons: a frozen slotted dataclass with four fields
costs ~2 us to build (its ``__init__`` goes through ``object.__setattr__``) against
~0.2 us for a frozen Struct, and one entry is built per proposal on the hot path; and a
Struct encodes to msgpack with no conversion layer, so :func:`encode_message` /
:func:`decode_message` are one call each. Use ``msgspec.structs.replace`` where you
would use ``dataclasses.replace``.

Node ids are positive ints; ``NONE`` (0) means "no node" (no leader, no vote).
"""

from __future__ import annotations

import enum

import msgspec

NONE = 0
"""The node id meaning "nobody": no leader known, no vote cast."""


class EntryKind(enum.IntEnum):
    """What an :class:`Entry` carries."""

    NORMAL = 0
    """Application data, handed back in ``Ready.committed_entries``."""
    CONF_CHANGE = 1
    """An encoded :class:`ConfChange` (see :func:`encode_conf_change`)."""
    NOOP = 2
    """The empty entry a new leader appends at the start of its term (§5.4.2, §8)."""


class Entry(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One log entry: position (``index``), the leader term that created it, a payload."""

    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


class HardState(msgspec.Struct, frozen=True, gc=False):
    """What a node must persist before it answers (Figure 2 "persistent state").

    ``commit`` is persisted too (as in etcd) so a restarted node does not re-apply from 0.
    """

    term: int = 0
    vote: int = NONE
    commit: int = 0


class ConfState(msgspec.Struct, frozen=True):
    """The membership: voters (count for quorum and elections) and learners (do not).

    tidekv changes membership one server at a time (see :mod:`tidekv.raft.raft`), so there
    is no outgoing (joint) voter set. Sets are frozensets; a node is never in both.
    """

    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()


class ConfChangeType(enum.IntEnum):
    """One single-server membership step."""

    ADD_VOTER = 0
    """Add a voter, or promote a learner to voter."""
    ADD_LEARNER = 1
    """Add a learner (a voter may not be demoted directly: remove it first)."""
    REMOVE_NODE = 2
    """Remove a voter or a learner."""


class ConfChange(msgspec.Struct, frozen=True):
    """A single-server membership change, proposed with ``RawNode.propose_conf_change``."""

    type: ConfChangeType
    node_id: int
    context: bytes = b""


class SnapshotMeta(msgspec.Struct, frozen=True):
    """The log position a snapshot replaces (everything up to ``index``) and its membership."""

    index: int = 0
    term: int = 0
    conf: ConfState = ConfState()


class Snapshot(msgspec.Struct, frozen=True):
    """A state-machine image covering the log up to ``meta.index``; ``data`` is opaque."""

    meta: SnapshotMeta = SnapshotMeta()
    data: bytes = b""

    @property
    def is_empty(self) -> bool:
        return self.meta.index == 0


EMPTY_SNAPSHOT = Snapshot()


class MessageType(enum.IntEnum):
    """Every message the core sends or accepts. Local ones never cross the network."""

    # local: fed back through step() by the core or by the driver
    HUP = 0
    """Local: start an election (pre-vote first if enabled)."""
    BEAT = 1
    """Local: a leader sends heartbeats."""
    CHECK_QUORUM = 2
    """Local: a leader checks it heard from a quorum in the last election timeout."""
    UNREACHABLE = 3
    """Local (driver -> leader): the transport could not reach ``frm``."""
    SNAP_STATUS = 4
    """Local (driver -> leader): snapshot to ``frm`` finished; ``reject`` = it failed."""
    # network
    PROPOSE = 5
    """Entries forwarded by a follower to its leader."""
    APP = 6
    """AppendEntries: entries after (``log_term``, ``index``) and the leader's commit."""
    APP_RESP = 7
    """Answer to APP/SNAP: ``index`` = last matching index, or ``reject`` with a hint."""
    VOTE = 8
    """RequestVote for ``term`` with the candidate's last (``log_term``, ``index``)."""
    VOTE_RESP = 9
    PRE_VOTE = 10
    """Would you vote for me at ``term`` (not yet adopted by the sender)?"""
    PRE_VOTE_RESP = 11
    SNAP = 12
    """InstallSnapshot: the whole ``snapshot`` in one message."""
    HEARTBEAT = 13
    """Leader liveness + commit (``commit``); ``context`` carries a read-index round."""
    HEARTBEAT_RESP = 14
    TRANSFER_LEADER = 15
    """Ask the leader to hand leadership to ``frm`` (local or forwarded)."""
    TIMEOUT_NOW = 16
    """Leader -> transfer target: campaign now, ignoring the election timeout."""
    READ_INDEX = 17
    """Ask the leader for a read index for request ``context`` (local or forwarded)."""
    READ_INDEX_RESP = 18
    """Leader -> follower: request ``context`` may be served at ``index``."""


LOCAL_MESSAGES = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.CHECK_QUORUM,
        MessageType.UNREACHABLE,
        MessageType.SNAP_STATUS,
    }
)


class Message(msgspec.Struct, frozen=True, gc=False):
    """One Raft message. Fields that a type does not use keep their defaults.

    ``reject_hint`` / ``hint_term``: on a rejected APP, the follower's guess of the
    conflict (the last index whose term is <= ``hint_term``), used by the leader to skip a
    whole term at once (§5.3 "optimization", etcd's findConflictByTerm).
    """

    type: MessageType
    to: int = NONE
    frm: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: list[Entry] = []
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    hint_term: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""


class ReadState(msgspec.Struct, frozen=True, gc=False):
    """A read request (``request_ctx``) that may be served once applied >= ``index``."""

    request_ctx: bytes
    index: int


_message_encoder = msgspec.msgpack.Encoder()
_message_decoder = msgspec.msgpack.Decoder(Message)
_cc_encoder = msgspec.msgpack.Encoder()
_cc_decoder = msgspec.msgpack.Decoder(ConfChange)


def encode_message(m: Message) -> bytes:
    """The msgpack wire form of ``m`` (any type, entries and snapshot included)."""
    return _message_encoder.encode(m)


def decode_message(b: bytes) -> Message:
    """Inverse of :func:`encode_message`; raises ``msgspec.ValidationError`` on bad input."""
    return _message_decoder.decode(b)


def encode_conf_change(cc: ConfChange) -> bytes:
    """The payload of a CONF_CHANGE entry."""
    return _cc_encoder.encode(cc)


def decode_conf_change(b: bytes) -> ConfChange:
    """Inverse of :func:`encode_conf_change`."""
    return _cc_decoder.decode(b)
