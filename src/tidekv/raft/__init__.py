"""tidekv.raft: a pure Raft core (no I/O, no clock, no global randomness).

The network and the disk are the caller's job: feed :meth:`RawNode.step` with received
messages and :meth:`RawNode.tick` with time, then handle each :class:`Ready` (persist,
send, apply) and call :meth:`RawNode.advance`. See :mod:`tidekv.raft.rawnode` for the
loop and :mod:`tidekv.raft.raft` for the algorithm and the membership-change choice.

Modules: ``types`` (entries, messages, wire encoding), ``quorum`` (majority math),
``progress`` (per-follower replication state), ``log`` (stable + unstable log),
``storage`` (the read-only Storage protocol and MemoryStorage), ``read_only`` (batched
ReadIndex), ``raft`` (the state machine), ``rawnode`` (the driver API), ``config``.
"""

from __future__ import annotations

from tidekv.raft.config import Config, ReadOnlyOption
from tidekv.raft.errors import (
    CompactedError,
    InvalidConfig,
    InvalidMessage,
    LogUnavailable,
    ProposalDropped,
    SnapshotTemporarilyUnavailable,
)
from tidekv.raft.progress import ProgressState, ProgressStatus
from tidekv.raft.quorum import VoteResult
from tidekv.raft.raft import Role
from tidekv.raft.rawnode import RawNode, Ready, SoftState, Status
from tidekv.raft.storage import MemoryStorage, Storage
from tidekv.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    ReadState,
    Snapshot,
    SnapshotMeta,
    decode_conf_change,
    decode_message,
    encode_conf_change,
    encode_message,
)

__all__ = [
    "NONE",
    "CompactedError",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Config",
    "Entry",
    "EntryKind",
    "HardState",
    "InvalidConfig",
    "InvalidMessage",
    "LogUnavailable",
    "MemoryStorage",
    "Message",
    "MessageType",
    "ProgressState",
    "ProgressStatus",
    "ProposalDropped",
    "RawNode",
    "ReadOnlyOption",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SnapshotTemporarilyUnavailable",
    "SoftState",
    "Status",
    "Storage",
    "VoteResult",
    "decode_conf_change",
    "decode_message",
    "encode_conf_change",
    "encode_message",
]
