"""Raft snapshots of a replica's state machine: the whole engine, as one blob.

A snapshot is built on demand when a follower is too far behind for the log (the
leader's :class:`~tidekv.node.logstore.GroupStorage` calls the replica's provider), and
installed by a follower by replacing its engine's contents in ONE atomic batch that
also records the snapshot's (index, term, membership) under ``M snapshot``, so a crash
between the engine install and the log's record of it is repaired on restart.

Format: msgpack ``[format, [[key, value], ...]]``. Everything is in memory at once:
fine for the data sizes of this stage; a chunked stream is future work (noted in
docs/architecture.md).
"""

from __future__ import annotations

import msgspec

from tidekv.errors import CorruptionError
from tidekv.raft import ConfState, SnapshotMeta
from tidekv.statemachine import meta_key
from tidekv.storage import Engine, Op

FORMAT = 1
SNAPSHOT_META_KEY = meta_key("snapshot")

_enc = msgspec.msgpack.Encoder()
_meta_dec = msgspec.msgpack.Decoder(SnapshotMeta)


def dump_engine(engine: Engine) -> bytes:
    """Every key of the engine except the snapshot marker itself."""
    pairs = [[k, v] for k, v in engine.scan(b"", None) if k != SNAPSHOT_META_KEY]
    return _enc.encode([FORMAT, pairs])


def restore_engine(engine: Engine, data: bytes, meta: SnapshotMeta) -> None:
    """Replace the engine's contents with the snapshot's, atomically and durably."""
    try:
        fmt, pairs = msgspec.msgpack.decode(data)
    except (msgspec.DecodeError, ValueError, TypeError) as exc:
        raise CorruptionError(f"unreadable snapshot: {exc}") from exc
    if fmt != FORMAT:
        raise CorruptionError(f"snapshot format {fmt} is not {FORMAT}")
    new = {bytes(k): bytes(v) for k, v in pairs}
    ops: list[Op] = [(k, None) for k, _v in engine.scan(b"", None) if k not in new]
    ops.extend(new.items())
    ops.append((SNAPSHOT_META_KEY, _enc.encode(meta)))
    engine.write_batch(ops, sync=True)


def stored_snapshot_meta(engine: Engine) -> SnapshotMeta | None:
    raw = engine.get(SNAPSHOT_META_KEY)
    return None if raw is None else _meta_dec.decode(raw)


def snapshot_meta_op(index: int, term: int, conf: ConfState) -> Op:
    return (SNAPSHOT_META_KEY, _enc.encode(SnapshotMeta(index=index, term=term, conf=conf)))
