"""Streamed Raft snapshots (format 3): metadata in the Raft message, data in chunks.

Sender. When the Raft core needs a snapshot for a lagging follower, the replica takes a
point-in-time view of its engine (:meth:`tidekv.storage.Engine.snapshot_iter`: a
RocksDB checkpoint, an LMDB read transaction, ...), registers it in :data:`OUTGOING`
under a random 16-byte id and hands the core a :class:`~tidekv.raft.Snapshot` whose
``data`` is only the header ``msgpack [3, id]``. The peer transport
(:mod:`tidekv.node.transport`) opens a connection of its own for it, writes the Raft
message as an ordinary frame, then the chunks that :class:`ChunkSource` reads from the
view, one at a time, waiting for the socket to drain between them: the sender holds at
most one chunk plus a bounded socket buffer, whatever the engine's size.

Wire, after the message frame (each one length-prefixed like every frame)::

    chunk = msgpack [seq, crc32(body), body, count, last, keyspaces]
    body  = msgpack [[keyspace, key, value], ...]      (about CHUNK_BYTES of records)

``seq`` counts from 0; the last chunk has ``last = true``, an empty body, ``count`` = the
number of records in the whole stream and ``keyspaces`` = every keyspace of the view
(empty ones included). The receiver answers one byte on the same connection once the
snapshot is staged durably (:data:`ACK_OK`), then closes; anything else is a failure.

Receiver. :class:`SnapshotSink` writes the chunks into a fresh engine of the node's kind
in ``<engine>.incoming``; on the last chunk it checks the record count, records the
snapshot's (index, term, membership) under ``M snapshot``, syncs, closes and renames the
directory to ``<engine>.ready-<id>`` (fsync of the parent). Only then is the Raft message
stepped into the follower's core, which decides to install it; the install
(:func:`install_staged`) closes the group's engine and swaps the directories: rename
``engine`` -> ``engine.old``, ``engine.ready-<id>`` -> ``engine``, fsync, delete
``engine.old``, reopen. :func:`recover_engine_dir` runs before a group's engine is
opened: a crash during the swap is rolled forward (the core had accepted the snapshot;
the log is repaired from ``M snapshot``), a crash before it leaves the old engine, and
partial or unadopted staging directories are deleted. So a group's engine is always the
old one or the new one, never a mix.

Formats 1 and 2 (the whole engine in ``data``, from older nodes) are still installed
(:mod:`tidekv.node.snapshot`); this node never sends them. An older node cannot receive
format 3: upgrade every node before relying on snapshots.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import threading
import time
import zlib
from collections.abc import Callable, Iterator

import msgspec

from tidekv.errors import CorruptionError, InvalidInput
from tidekv.fileio import fsync_dir
from tidekv.node.snapshot import SNAPSHOT_META_KEY, snapshot_meta_op
from tidekv.raft import SnapshotMeta
from tidekv.storage import DEFAULT_KEYSPACE, Engine, EngineSnapshot, open_engine
from tidekv.storage.base import check_keyspace_name

FORMAT = 3
CHUNK_BYTES = 1 << 20
"""Records per chunk: about this many bytes of keys and values."""
ACK_OK = b"\x00"
SOURCE_TTL = 120.0
"""A registered view that no transport claimed within this many seconds is released."""

_TEST_PAUSE = float(os.environ.get("TIDEKV_TEST_SNAPSHOT_CHUNK_PAUSE", "0") or 0)
"""Tests only: seconds a receiver sleeps (in its worker thread) per chunk, so a test can
kill it mid-transfer without racing the clock."""

INCOMING = ".incoming"
READY = ".ready-"
OLD = ".old"

_enc = msgspec.msgpack.Encoder()


class Chunk(msgspec.Struct, array_like=True, gc=False):
    seq: int
    crc: int
    body: bytes
    count: int
    last: bool = False
    keyspaces: list[str] = []


_chunk_dec = msgspec.msgpack.Decoder(Chunk)
_body_dec = msgspec.msgpack.Decoder(list[tuple[str, bytes, bytes]])
_header_dec = msgspec.msgpack.Decoder(tuple[int, bytes])


def encode_header(snap_id: bytes) -> bytes:
    return _enc.encode((FORMAT, snap_id))


def decode_header(data: bytes) -> bytes | None:
    """The stream id when ``data`` is a format-3 header; None for formats 1 and 2."""
    if not data or len(data) > 64:
        return None
    try:
        fmt, snap_id = _header_dec.decode(data)
    except msgspec.DecodeError:
        return None
    return snap_id if fmt == FORMAT else None


def decode_chunk(payload: bytes | bytearray | memoryview) -> Chunk:
    """A chunk frame's payload -> :class:`Chunk`; CorruptionError if unreadable/damaged."""
    try:
        chunk = _chunk_dec.decode(payload)
    except msgspec.DecodeError as exc:
        raise CorruptionError(f"unreadable snapshot chunk: {exc}") from exc
    if zlib.crc32(chunk.body) != chunk.crc:
        raise CorruptionError(f"snapshot chunk {chunk.seq}: checksum mismatch")
    return chunk


# -- sender ---------------------------------------------------------------------------


class ChunkSource:
    """Reads a view as chunk payloads, one :meth:`next_chunk` call at a time (any thread)."""

    def __init__(self, view: EngineSnapshot, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.view = view
        self._it: Iterator[tuple[str, bytes, bytes]] = iter(view)
        self._chunk_bytes = chunk_bytes
        self._seq = 0
        self._done = False
        self.records = 0
        self.bytes = 0

    def next_chunk(self) -> bytes | None:
        """The next chunk's payload (msgpack), the last one included; then None."""
        if self._done:
            return None
        recs: list[tuple[str, bytes, bytes]] = []
        size = 0
        limit = self._chunk_bytes
        for ks, k, v in self._it:
            if k == SNAPSHOT_META_KEY and ks == DEFAULT_KEYSPACE:
                continue  # the receiver records the snapshot's own position
            recs.append((ks, k, v))
            size += len(k) + len(v) + 16
            if size >= limit:
                break
        seq = self._seq
        self._seq += 1
        if not recs:
            self._done = True
            chunk = Chunk(seq, zlib.crc32(b""), b"", self.records, True, self.view.keyspaces)
        else:
            body = _enc.encode(recs)
            self.records += len(recs)
            self.bytes += len(body)
            chunk = Chunk(seq, zlib.crc32(body), body, len(recs))
        return _enc.encode(chunk)

    def close(self) -> None:
        self.view.close()


class OutgoingSnapshots:
    """Views registered by replicas, claimed by the transport by id (thread-safe)."""

    def __init__(self, ttl: float = SOURCE_TTL) -> None:
        self._lock = threading.Lock()
        self._views: dict[bytes, tuple[float, Engine, EngineSnapshot]] = {}
        self._ttl = ttl

    def register(self, engine: Engine) -> bytes:
        """Take a view of ``engine`` now; its id (for :func:`encode_header`)."""
        self._sweep()
        view = engine.snapshot_iter()
        snap_id = secrets.token_bytes(16)
        with self._lock:
            self._views[snap_id] = (time.monotonic(), engine, view)
        return snap_id

    def take(self, snap_id: bytes, chunk_bytes: int = CHUNK_BYTES) -> ChunkSource | None:
        with self._lock:
            entry = self._views.pop(snap_id, None)
        return None if entry is None else ChunkSource(entry[2], chunk_bytes)

    def release(self, snap_id: bytes) -> None:
        with self._lock:
            entry = self._views.pop(snap_id, None)
        if entry is not None:
            entry[2].close()

    def release_engine(self, engine: Engine) -> None:
        """Release the unclaimed views of ``engine`` (before it closes)."""
        with self._lock:
            ids = [i for i, (_t, e, _v) in self._views.items() if e is engine]
        for i in ids:
            self.release(i)

    def _sweep(self) -> None:
        now = time.monotonic()
        with self._lock:
            old = [i for i, (t, _e, _v) in self._views.items() if now - t > self._ttl]
        for i in old:
            self.release(i)

    def __len__(self) -> int:
        return len(self._views)


OUTGOING = OutgoingSnapshots()
"""The process's registry (ids are random, so several nodes in one process share it)."""


# -- receiver -------------------------------------------------------------------------


class SnapshotSink:
    """Stages one incoming stream into ``<path>.incoming``; see the module docstring.

    :meth:`open`, :meth:`write`, :meth:`finish` and :meth:`abort` may run in a worker
    thread (one at a time); ``on_end(sink, ok)`` is called once, after finish or abort.
    """

    def __init__(
        self,
        engine_name: str,
        path: str | None,
        meta: SnapshotMeta,
        snap_id: bytes,
        on_end: Callable[[SnapshotSink, bool], None],
    ) -> None:
        self.engine_name = engine_name
        self.path = path
        self.meta = meta
        self.snap_id = snap_id
        self._on_end: Callable[[SnapshotSink, bool], None] | None = on_end
        self.engine: Engine | None = None
        self.records = 0
        self.ready: Engine | None = None
        """The staged engine itself when the group has no directory (memory engine)."""

    def open(self) -> None:
        path = self.path
        staging = None
        if path is not None:
            staging = path + INCOMING
            shutil.rmtree(staging, ignore_errors=True)
            # other ready directories stay: one may be about to be installed
        # a small memtable while staging (the options are not kept: the group reopens it
        # with its own); RocksDB's default would hold up to 128 MB of the stream in RAM
        opts = {"write_buffer_mb": 8} if self.engine_name == "lsm" else {}
        self.engine = open_engine(self.engine_name, staging, **opts)

    def write(self, chunk: Chunk) -> None:
        engine = self.engine
        assert engine is not None
        try:
            recs = _body_dec.decode(chunk.body)
        except msgspec.DecodeError as exc:
            raise CorruptionError(f"snapshot chunk {chunk.seq}: bad body: {exc}") from exc
        try:
            ops = [(engine.keyspace(ks), k, v) for ks, k, v in recs]
        except InvalidInput as exc:
            raise CorruptionError(f"snapshot with a bad keyspace: {exc}") from exc
        if len(ops) != chunk.count:
            raise CorruptionError(f"snapshot chunk {chunk.seq}: count mismatch")
        engine.write_batch_multi(ops)
        self.records += len(ops)
        if _TEST_PAUSE:
            time.sleep(_TEST_PAUSE)

    def finish(self, last: Chunk) -> None:
        """Verify the stream's end, make the staged engine durable and mark it ready."""
        engine = self.engine
        assert engine is not None
        if last.count != self.records:
            raise CorruptionError(
                f"snapshot stream ended after {self.records} records, the sender sent {last.count}"
            )
        for name in last.keyspaces:
            if name != DEFAULT_KEYSPACE:
                try:
                    check_keyspace_name(name)
                except InvalidInput as exc:
                    raise CorruptionError(f"snapshot with a bad keyspace: {exc}") from exc
                engine.keyspace(name)
        engine.write_batch([snapshot_meta_op(self.meta.index, self.meta.term, self.meta.conf)])
        engine.sync()
        if self.path is None:
            self.ready = engine
        else:
            engine.close()
            parent = os.path.dirname(self.path) or "."
            os.rename(self.path + INCOMING, ready_path(self.path, self.snap_id))
            fsync_dir(parent)
        self.engine = None
        self._end(True)

    def abort(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None and not engine.closed:
            engine.close()
        if self.path is not None:
            shutil.rmtree(self.path + INCOMING, ignore_errors=True)
        self._end(False)

    def _end(self, ok: bool) -> None:
        cb, self._on_end = self._on_end, None
        if cb is not None:
            cb(self, ok)


def ready_path(path: str, snap_id: bytes) -> str:
    return path + READY + snap_id.hex()


def is_staged(path: str | None, snap_id: bytes) -> bool:
    return path is None or os.path.isdir(ready_path(path, snap_id))


def install_staged(engine_name: str, path: str | None, snap_id: bytes) -> None:
    """Swap the staged engine of stream ``snap_id`` in at ``path`` (the group's engine
    is closed) and delete other staged ones (declined by the core); CorruptionError if
    it is not staged (nothing changes then)."""
    if path is None:
        return
    ready = ready_path(path, snap_id)
    if not os.path.isdir(ready):
        raise CorruptionError(f"snapshot {snap_id.hex()} is not staged in {ready}")
    parent = os.path.dirname(path) or "."
    old = path + OLD
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(path):
        os.rename(path, old)
    os.rename(ready, path)  # the switch: from here on a crash rolls forward
    fsync_dir(parent)
    shutil.rmtree(old, ignore_errors=True)
    for stale in glob.glob(glob.escape(path) + READY + "*"):
        shutil.rmtree(stale, ignore_errors=True)


def recover_engine_dir(path: str | None) -> None:
    """Before opening a group's engine: finish or undo a swap a crash interrupted and
    delete partial or unadopted staging directories (see the module docstring)."""
    if path is None:
        return
    readies = sorted(glob.glob(glob.escape(path) + READY + "*"))
    old = path + OLD
    changed = False
    if not os.path.exists(path):
        if readies:  # crashed between the two renames of install_staged: roll forward
            os.rename(readies.pop(), path)
            changed = True
        elif os.path.isdir(old):
            os.rename(old, path)
            changed = True
    for leftover in [*readies, old, path + INCOMING]:
        if os.path.exists(leftover):
            shutil.rmtree(leftover, ignore_errors=True)
            changed = True
    if changed:
        fsync_dir(os.path.dirname(path) or ".")
