"""Raft snapshots of a replica's state machine: the whole engine, as one blob.

A snapshot is built on demand when a follower is too far behind for the log (the
leader's :class:`~tidekv.node.logstore.GroupStorage` calls the replica's provider), and
installed by a follower by replacing its engine's contents in ONE atomic batch that
also records the snapshot's (index, term, membership) under ``M snapshot``, so a crash
between the engine install and the log's record of it is repaired on restart.

Format 2: msgpack ``[2, [[keyspace, [[key, value], ...]], ...]]``, every keyspace of
the engine (the default one first); a restore also empties the keyspaces the snapshot
does not have. Format 1 (``[1, [[key, value], ...]]``, the default keyspace only) is
still installed. Everything is in memory at once, so nodes no longer SEND these formats:
they stream format 3 (:mod:`tidekv.node.snapstream`); these are installed when an older
node sends them.
"""

from __future__ import annotations

import msgspec

from tidekv.errors import CorruptionError, InvalidInput
from tidekv.raft import ConfState, SnapshotMeta
from tidekv.statemachine import meta_key
from tidekv.storage import DEFAULT_KEYSPACE, Engine, KsOp, Op
from tidekv.storage.base import check_keyspace_name

FORMAT = 2
SNAPSHOT_META_KEY = meta_key("snapshot")

_enc = msgspec.msgpack.Encoder()
_meta_dec = msgspec.msgpack.Decoder(SnapshotMeta)


def dump_engine(engine: Engine) -> bytes:
    """Every key of every keyspace of the engine except the snapshot marker itself."""
    spaces = []
    for name in engine.keyspaces():
        pairs = engine.keyspace(name).scan()
        if name == DEFAULT_KEYSPACE:
            spaces.append([name, [[k, v] for k, v in pairs if k != SNAPSHOT_META_KEY]])
        else:
            spaces.append([name, [[k, v] for k, v in pairs]])
    return _enc.encode([FORMAT, spaces])


def restore_engine(engine: Engine, data: bytes, meta: SnapshotMeta) -> None:
    """Replace the engine's contents with the snapshot's, atomically and durably."""
    try:
        fmt, pairs = msgspec.msgpack.decode(data)
    except (msgspec.DecodeError, ValueError, TypeError) as exc:
        raise CorruptionError(f"unreadable snapshot: {exc}") from exc
    if fmt == 1:
        spaces = [[DEFAULT_KEYSPACE, pairs]]
    elif fmt == FORMAT:
        spaces = pairs
    else:
        raise CorruptionError(f"snapshot format {fmt} is neither 1 nor {FORMAT}")
    try:
        wanted = {str(name): {bytes(k): bytes(v) for k, v in kv} for name, kv in spaces}
    except (TypeError, ValueError) as exc:
        raise CorruptionError(f"unreadable snapshot: {exc}") from exc
    for name in wanted:
        if name != DEFAULT_KEYSPACE:
            try:
                check_keyspace_name(name)
            except InvalidInput as exc:
                raise CorruptionError(f"snapshot with a bad keyspace: {exc}") from exc
    ops: list[KsOp] = []
    for name in sorted(set(engine.keyspaces()) | set(wanted)):
        ks = engine.keyspace(name)  # checks the name; creates a missing keyspace
        new = wanted.get(name, {})
        ops.extend((ks, k, None) for k, _v in ks.scan() if k not in new)
        ops.extend((ks, k, v) for k, v in new.items())
    ops.append((engine.keyspace(DEFAULT_KEYSPACE), SNAPSHOT_META_KEY, _enc.encode(meta)))
    engine.write_batch_multi(ops, sync=True)


def stored_snapshot_meta(engine: Engine) -> SnapshotMeta | None:
    raw = engine.get(SNAPSHOT_META_KEY)
    return None if raw is None else _meta_dec.decode(raw)


def snapshot_meta_op(index: int, term: int, conf: ConfState) -> Op:
    return (SNAPSHOT_META_KEY, _enc.encode(SnapshotMeta(index=index, term=term, conf=conf)))
