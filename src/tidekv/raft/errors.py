"""Errors raised by the Raft core, placed in tidekv's one error tree::

    TideError
    ├── InvalidInput
    │   ├── InvalidConfig            invalid_raft_config  a Config that cannot work
    │   └── InvalidMessage           invalid_raft_message a local message type from outside
    ├── Unavailable
    │   └── ProposalDropped          proposal_dropped     no leader, transfer, pending change
    └── StorageError
        ├── CompactedError           log_compacted        index is before the first entry
        ├── LogUnavailable           log_unavailable      index is after the last entry
        └── SnapshotTemporarilyUnavailable  snapshot_unavailable  retry later

The core raises ``ProposalDropped`` to a local caller; a proposal forwarded over the
network that gets dropped is dropped silently (the client times out and retries).
``CompactedError`` / ``LogUnavailable`` / ``SnapshotTemporarilyUnavailable`` are raised by
:class:`~tidekv.raft.storage.Storage` implementations and handled inside the core.
"""

from __future__ import annotations

from tidekv.errors import InvalidInput, StorageError, Unavailable


class InvalidConfig(InvalidInput):
    code = "invalid_raft_config"


class InvalidMessage(InvalidInput):
    code = "invalid_raft_message"


class ProposalDropped(Unavailable):
    code = "proposal_dropped"


class CompactedError(StorageError):
    code = "log_compacted"


class LogUnavailable(StorageError):
    code = "log_unavailable"


class SnapshotTemporarilyUnavailable(StorageError):
    code = "snapshot_unavailable"


__all__ = [
    "CompactedError",
    "InvalidConfig",
    "InvalidMessage",
    "LogUnavailable",
    "ProposalDropped",
    "SnapshotTemporarilyUnavailable",
]
