"""The node's write-ahead log: one append-only record stream for every Raft group on a node.

One :class:`WAL` per node process holds the durable Raft state of all its groups: log
entries, hard states and compaction points, each record tagged with its group id. The
in-memory view lives elsewhere (:mod:`tidekv.node.logstore` keeps it and replays this log
into it on open); this module only frames, buffers, syncs, rotates, checkpoints and
recovers records.

Files in the directory::

    0000000001.wal    segment 1; only the newest segment is ever appended to
    LOCK              flock(2)-ed while a WAL has the directory open

Segment header (24 bytes, little-endian)::

    magic b"TKVWAL1\\n" | segment id u64 | flags u32 | crc32 u32 (of the 20 bytes before)
    flags: 0x1 checkpoint (the segment starts with the whole live state; see below)

Then records, back to back (little-endian; ``crc`` is zlib crc32 of every byte after it)::

    +---------+---------+---------+-----------+-----------------+
    | crc u32 | len u32 | kind u8 | group u64 | payload (len B) |
    +---------+---------+---------+-----------+-----------------+   header = 17 bytes

    kind  name            payload                           replay
    1     ENTRIES         msgpack [Entry, ...] (array_like) the group's entries >= the
                                                            first one are replaced by these
    2     HARD_STATE      term u64 | vote u64 | commit u64  the group's hard state
    3     COMPACT         msgpack SnapshotMeta              the log up to meta.index is
                                                            covered by the state machine;
                                                            entries <= index are dropped
    4     RESET           msgpack SnapshotMeta              the group's log becomes empty,
                                                            starting after meta.index
                                                            (an installed snapshot)
    5     CHECKPOINT_END  empty (group 0)                   ends a checkpoint

**Group commit.** ``append_*`` encode a record into an in-memory buffer: no system call.
:meth:`WAL.sync` takes the buffer, writes it with one ``pwrite`` and calls
``fdatasync`` once: everything appended before ``sync`` was called is durable when it
returns. Appends go on (from another thread) while a sync writes and waits: they land in
a fresh buffer for the next sync. ``lock`` guards the buffer; a second lock serializes
syncs, so buffers reach the file in append order.

**Rotation and space reclamation.** At the first sync after the active segment reached
``max_segment_size`` (default 64 MiB), the segment is closed and a new one begins; so a
segment overshoots by at most what was appended between two syncs, and every segment but
the newest was fdatasync-ed whole before the next one was created. When the live state
is at most half of the bytes on disk, the new segment is a *checkpoint*: it starts with
the live state of every group (RESET at its compaction point, its retained entries as
ENTRIES records, its HARD_STATE), then CHECKPOINT_END; once that is fdatasync-ed, every
older segment is deleted. The live state comes from :meth:`WALState.images`, taken under
``lock`` at the same cut as the buffer, so the checkpoint is exactly the state after the
records before it. Disk use stays within about twice the live state plus one segment; a
checkpoint writes at most half of what it deletes, so rewriting at most doubles the
bytes written; its encoding runs in the syncing thread. :meth:`WAL.checkpoint` forces
one. A group whose log is never compacted keeps its entries alive: that is the caller's
job (compact once the state machine holds them).

**Recovery** (:meth:`WAL.recover`): list the segments in id order. A newest segment whose
header is short or damaged was being created at the crash (its header is made durable
before any record is written to it): it is deleted, unless records with valid checksums
follow the header, which makes it damage (CorruptionError). The newest segment
with the checkpoint flag is the base; if its checkpoint has no CHECKPOINT_END it was
being written at the crash: when it is the newest segment it is deleted and the previous
base is used, anywhere else that is corruption. Segments before the base are deleted
(the end of an interrupted cleanup). Then every segment from the base on is scanned and
replayed in order: a short record, a length past the end of the file or a checksum
mismatch in the newest segment is a torn tail, cut there (the file is truncated and
fdatasync-ed, the count kept in ``stats()["bytes_cut"]``) and never served; the same in
any older segment, a record of an unknown kind, an undecodable payload or a record that
does not fit the group's state raise :class:`~tidekv.errors.CorruptionError`. Like
etcd's WAL this cannot tell a torn tail from damage to the last synced records of the
newest segment: both are cut.

**Errors.** An ``OSError`` while writing, syncing or rotating leaves the log in an
unknown state (after a failed ``fdatasync`` the kernel may have dropped the dirty
pages): the WAL refuses every later call with :class:`~tidekv.errors.StorageError`; the
node must restart and recover from disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import threading
import zlib
from collections.abc import Callable
from typing import NamedTuple, Protocol

import msgspec

from tidekv.errors import CorruptionError, InvalidInput, StorageError, StoreClosed
from tidekv.fileio import fsync_dir, pwrite_all
from tidekv.raft.types import Entry, HardState, SnapshotMeta

log = logging.getLogger(__name__)

DEFAULT_MAX_SEGMENT_SIZE = 64 << 20
"""Close the active segment at the first sync after it reaches this many bytes."""

ENTRIES = 1
HARD_STATE = 2
COMPACT = 3
RESET = 4
CHECKPOINT_END = 5
_KINDS = frozenset({ENTRIES, HARD_STATE, COMPACT, RESET, CHECKPOINT_END})

RECORD_HEADER = struct.Struct("<IIBQ")
"""crc u32 | len u32 | kind u8 | group u64"""
HEADER_SIZE = RECORD_HEADER.size  # 17
_BODY = struct.Struct("<IBQ")  # the record header without its crc
_CRC = struct.Struct("<I")
_HS = struct.Struct("<QQQ")
_RECORD_PACK = RECORD_HEADER.pack
_BODY_PACK = _BODY.pack
_CRC32 = zlib.crc32
MAX_PAYLOAD = 0xFFFFFFFF
MAX_GROUP_ID = (1 << 64) - 1

SEGMENT_MAGIC = b"TKVWAL1\n"
SEGMENT_HEADER = struct.Struct("<8sQII")
"""magic | segment id u64 | flags u32 | crc u32"""
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size  # 24
FLAG_CHECKPOINT = 0x1

_SUFFIX = ".wal"
_LOCKFILE = "LOCK"
_WRITE_CHUNK = 1 << 20
"""A checkpoint is written to the file in pieces of about this size."""
_CHECKPOINT_RECORD_BYTES = 1 << 20
"""A checkpoint's ENTRIES record holds about this many payload bytes."""
_ENTRY_OVERHEAD = 16
_GROUP_OVERHEAD = 96

_entries_enc = msgspec.msgpack.Encoder()
_entries_dec = msgspec.msgpack.Decoder(list[Entry])
_meta_enc = msgspec.msgpack.Encoder()
_meta_dec = msgspec.msgpack.Decoder(SnapshotMeta)


Apply = Callable[[], None]
"""A caller's change of its in-memory state for the record just buffered."""


class GroupImage(NamedTuple):
    """The live state of one group, as a checkpoint writes it."""

    group: int
    point: SnapshotMeta
    """The compaction point: the log before ``point.index + 1`` is in the state machine."""
    entries: list[Entry]
    """The retained entries, from ``point.index + 1`` (a copy: safe to read unlocked)."""
    hard_state: HardState


class WALState(Protocol):
    """What the WAL replays records into on open and takes checkpoints from.

    The ``replay_*`` methods raise :class:`~tidekv.errors.CorruptionError` when a
    record does not fit the state (the WAL adds where the record is).
    """

    def replay_entries(self, group: int, entries: list[Entry]) -> None: ...

    def replay_hard_state(self, group: int, hs: HardState) -> None: ...

    def replay_compact(self, group: int, meta: SnapshotMeta) -> None: ...

    def replay_reset(self, group: int, meta: SnapshotMeta) -> None: ...

    def images(self) -> list[GroupImage]:
        """Every group's live state; called with :attr:`WAL.lock` held."""
        ...


# -- encoding ----------------------------------------------------------------------------


def put_record(out: bytearray, kind: int, group: int, payload: bytes) -> int:
    """Append one framed record to ``out``; return its size."""
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise InvalidInput(f"a WAL record holds at most {MAX_PAYLOAD} bytes, not {n}")
    crc = zlib.crc32(payload, zlib.crc32(_BODY.pack(n, kind, group)))
    out += RECORD_HEADER.pack(crc, n, kind, group)
    out += payload
    return HEADER_SIZE + n


def segment_header(seg_id: int, flags: int) -> bytes:
    head = SEGMENT_MAGIC + struct.pack("<QI", seg_id, flags)
    return head + _CRC.pack(zlib.crc32(head))


def read_segment_header(data: bytes, seg_id: int) -> int | None:
    """The flags of a valid header for segment ``seg_id`` at the start of ``data``."""
    if len(data) < SEGMENT_HEADER_SIZE:
        return None
    magic, sid, flags, crc = SEGMENT_HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC or sid != seg_id or crc != zlib.crc32(data[:20]):
        return None
    return int(flags)


class Scan(NamedTuple):
    """What a scan of one segment found."""

    records: list[tuple[int, int, int, int]]
    """``(kind, group, payload start, payload end)`` of every whole record, in order."""
    end: int
    """Offset just past the last whole record."""
    problem: str | None
    """Why the scan stopped before the end of the data (None: it did not)."""


def scan_records(data: bytes, where: str) -> Scan:
    """Frame and checksum-verify the records of one segment (``data`` = the whole file).

    Stops at the first short or checksum-failing record. A record with a valid checksum
    but an unknown kind was written by something else: :class:`CorruptionError`.
    """
    view = memoryview(data)
    size = len(data)
    off = SEGMENT_HEADER_SIZE
    records: list[tuple[int, int, int, int]] = []
    problem = None
    unpack = RECORD_HEADER.unpack_from
    crc32 = zlib.crc32
    while off < size:
        if off + HEADER_SIZE > size:
            problem = f"short record header at offset {off}"
            break
        crc, n, kind, group = unpack(data, off)
        end = off + HEADER_SIZE + n
        if end > size:
            problem = f"record at offset {off} runs past the end of the file"
            break
        if crc32(view[off + 4 : end]) != crc:
            problem = f"checksum mismatch at offset {off}"
            break
        if kind not in _KINDS:
            raise CorruptionError(f"{where}: unknown record kind {kind} at offset {off}")
        records.append((kind, group, off + HEADER_SIZE, end))
        off = end
    return Scan(records, off, problem)


def _encode_image(out: bytearray, img: GroupImage) -> None:
    g = img.group
    put_record(out, RESET, g, _meta_enc.encode(img.point))
    ents = img.entries
    start = size = 0
    for i, e in enumerate(ents):
        size += len(e.data) + _ENTRY_OVERHEAD
        if size >= _CHECKPOINT_RECORD_BYTES:
            put_record(out, ENTRIES, g, _entries_enc.encode(ents[start : i + 1]))
            start, size = i + 1, 0
    if start < len(ents):
        put_record(out, ENTRIES, g, _entries_enc.encode(ents[start:]))
    hs = img.hard_state
    put_record(out, HARD_STATE, g, _HS.pack(hs.term, hs.vote, hs.commit))


def live_bytes(images: list[GroupImage]) -> int:
    """About how many bytes a checkpoint of ``images`` takes."""
    total = 0
    for img in images:
        total += _GROUP_OVERHEAD + _ENTRY_OVERHEAD * len(img.entries)
        total += sum(len(e.data) for e in img.entries)
    return total


# -- files -------------------------------------------------------------------------------


def segment_name(seg_id: int) -> str:
    return f"{seg_id:010d}{_SUFFIX}"


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class _Segment:
    """One segment file. Only the active (newest) segment keeps a descriptor open."""

    __slots__ = ("fd", "id", "path", "size")

    def __init__(self, seg_id: int, path: str, size: int, fd: int = -1) -> None:
        self.id = seg_id
        self.path = path
        self.size = size
        """Bytes in the file (what was written, not what is buffered)."""
        self.fd = fd

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class WAL:
    """The node's write-ahead log; see the module docstring for the format and rules.

    Construct it (takes the directory lock), call :meth:`recover` once (replays every
    record into ``state``), then append and sync. ``append_*`` and :meth:`sync` may be
    called from different threads.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, max_segment_size: int = DEFAULT_MAX_SEGMENT_SIZE
    ) -> None:
        if max_segment_size <= SEGMENT_HEADER_SIZE:
            raise InvalidInput(f"max_segment_size must be > {SEGMENT_HEADER_SIZE} bytes")
        self.path = os.fspath(path)
        self.lock = threading.Lock()
        """Guards the buffer, the sizes and the segment list; held while a record's
        ``apply`` runs and while :meth:`WALState.images` is taken."""
        self._io = threading.Lock()  # one sync (file I/O) at a time
        self._max = max_segment_size
        self._buf = bytearray()
        self._segments: list[_Segment] = []  # oldest first; the last one is active
        self._size = 0  # bytes of the active segment, buffered ones included
        self._older = 0  # bytes of the segments before the active one
        self._state: WALState | None = None
        self._closed = False
        self._writable = False  # recovered, not closed, not failed: the append fast path
        self._want_checkpoint = False
        self._failed: str | None = None
        #: tests set this to raise at named points inside a sync (a simulated crash)
        self._crash_hook: Callable[[str], None] | None = None
        self._counters = {
            "syncs": 0,
            "fdatasyncs": 0,
            "bytes_written": 0,
            "rotations": 0,
            "checkpoints": 0,
            "segments_deleted": 0,
            "bytes_cut": 0,
        }
        os.makedirs(self.path, exist_ok=True)
        fd = os.open(self._file(_LOCKFILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageError(f"{self.path} is open in another WAL", path=self.path) from None
        self._lock_fd = fd

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    # -- recovery ------------------------------------------------------------------------

    def recover(self, state: WALState) -> None:
        """Replay every durable record into ``state``, cut a torn tail, open for appends.

        Called once, before any append; ``state`` is kept for checkpoints. On an error
        the WAL is closed.
        """
        with self._io, self.lock:
            if self._state is not None or self._closed:
                raise StorageError("recover() runs once, on an open WAL")
            try:
                self._recover(state)
            except BaseException:
                self._release()
                raise
            self._state = state
            self._writable = True

    def _list_ids(self) -> list[int]:
        names = os.listdir(self.path)
        return sorted(int(n[: -len(_SUFFIX)]) for n in names if _is_segment_name(n))

    def _drop_file(self, seg_id: int, why: str) -> None:
        path = self._file(segment_name(seg_id))
        size = os.path.getsize(path)
        log.warning("%s: %s; deleting it (%d bytes)", path, why, size)
        os.unlink(path)
        fsync_dir(self.path)
        self._counters["bytes_cut"] += size

    def _header(self, seg_id: int) -> int:
        """The flags of a closed segment's header; CorruptionError when it is damaged."""
        path = self._file(segment_name(seg_id))
        with open(path, "rb") as f:
            flags = read_segment_header(f.read(SEGMENT_HEADER_SIZE), seg_id)
        if flags is None:
            raise CorruptionError(f"{path}: damaged segment header", path=path)
        return flags

    def _drop_torn_newest(self, ids: list[int]) -> None:
        """Delete newest segments without a valid header: they were being created."""
        while ids:
            path = self._file(segment_name(ids[-1]))
            data = _read_file(path)
            if read_segment_header(data, ids[-1]) is not None:
                return
            if scan_records(data, path).records:
                # a header is durable before any record of its segment is written
                raise CorruptionError(f"{path}: damaged segment header", path=path)
            self._drop_file(ids.pop(), "no valid header in the newest segment (torn create)")

    def _find_base(self, ids: list[int]) -> dict[int, tuple[bytes, Scan]]:
        """Cut ``ids`` down to the segments to replay: from the newest complete checkpoint
        on (deleting the older files), or all of them when there is no checkpoint.

        Returns the base's contents and scan, so it is not read twice.
        """
        while True:
            self._drop_torn_newest(ids)
            base = next(
                (i for i in range(len(ids) - 1, -1, -1) if self._header(ids[i]) & FLAG_CHECKPOINT),
                None,
            )
            if base is None:
                return {}
            seg_id = ids[base]
            path = self._file(segment_name(seg_id))
            data = _read_file(path)
            scan = scan_records(data, path)
            if any(kind == CHECKPOINT_END for kind, _, _, _ in scan.records):
                break
            if base != len(ids) - 1:
                raise CorruptionError(f"{path}: checkpoint without its end ({scan.problem})")
            self._drop_file(ids.pop(), "checkpoint cut short (crash while writing it)")
        for old in ids[:base]:
            os.unlink(self._file(segment_name(old)))
            self._counters["segments_deleted"] += 1
        if base:
            log.info("deleted %d segments older than checkpoint %d", base, seg_id)
            fsync_dir(self.path)
        del ids[:base]
        return {seg_id: (data, scan)}

    def _recover(self, state: WALState) -> None:
        ids = self._list_ids()
        next_id = (ids[-1] + 1) if ids else 1
        cached = self._find_base(ids)
        for n, seg_id in enumerate(ids):
            path = self._file(segment_name(seg_id))
            hit = cached.pop(seg_id, None)
            data, scan = hit if hit is not None else self._read_and_scan(path)
            if scan.problem is not None and n < len(ids) - 1:
                raise CorruptionError(f"{path}: {scan.problem} in a closed segment", path=path)
            self._replay(state, data, scan, path)
            size = len(data)
            if scan.problem is not None:
                log.warning(
                    "%s: %s; cutting a torn tail of %d bytes", path, scan.problem, size - scan.end
                )
                self._counters["bytes_cut"] += size - scan.end
                size = scan.end
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.ftruncate(fd, size)
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
            self._segments.append(_Segment(seg_id, path, size))
        if self._segments:
            active = self._segments[-1]
            active.fd = os.open(active.path, os.O_RDWR | os.O_CLOEXEC)
        else:
            self._segments.append(self._create(next_id, segment_header(next_id, 0)))
        self._size = self._segments[-1].size
        self._older = sum(s.size for s in self._segments[:-1])

    @staticmethod
    def _read_and_scan(path: str) -> tuple[bytes, Scan]:
        data = _read_file(path)
        return data, scan_records(data, path)

    def _replay(self, state: WALState, data: bytes, scan: Scan, path: str) -> None:
        view = memoryview(data)
        for kind, group, start, end in scan.records:
            payload = view[start:end]
            try:
                if kind == ENTRIES:
                    state.replay_entries(group, _entries_dec.decode(payload))
                elif kind == HARD_STATE:
                    term, vote, commit = _HS.unpack(payload)
                    state.replay_hard_state(group, HardState(term, vote, commit))
                elif kind == COMPACT:
                    state.replay_compact(group, _meta_dec.decode(payload))
                elif kind == RESET:
                    state.replay_reset(group, _meta_dec.decode(payload))
            except (msgspec.DecodeError, struct.error) as exc:
                where = f"{path}@{start - HEADER_SIZE}"
                raise CorruptionError(f"{where}: undecodable record: {exc}", path=path) from exc
            except CorruptionError as exc:
                where = f"{path}@{start - HEADER_SIZE}"
                raise CorruptionError(f"{where}: group {group}: {exc.message}", path=path) from exc

    def _create(self, seg_id: int, head: bytes | bytearray) -> _Segment:
        """A new segment file holding ``head``, fdatasync-ed, its name made durable."""
        path = self._file(segment_name(seg_id))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            pwrite_all(fd, head, 0)
            os.fdatasync(fd)
            fsync_dir(self.path)
        except BaseException:
            os.close(fd)
            raise
        self._counters["fdatasyncs"] += 1
        return _Segment(seg_id, path, len(head), fd)

    # -- appending -----------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise StoreClosed("the WAL is closed")
        if self._failed is not None:
            raise StorageError(f"the WAL failed earlier ({self._failed}); restart the node")
        if self._state is None:
            raise StorageError("the WAL is not recovered yet")

    def check(self) -> None:
        """Raise what an append would raise now (closed, failed, not recovered)."""
        self._check()

    def _put(self, kind: int, group: int, payload: bytes, apply: Apply | None) -> None:
        # put_record, inlined: this is the hot path
        n = len(payload)
        if n > MAX_PAYLOAD:
            raise InvalidInput(f"a WAL record holds at most {MAX_PAYLOAD} bytes, not {n}")
        head = _RECORD_PACK(_CRC32(payload, _CRC32(_BODY_PACK(n, kind, group))), n, kind, group)
        with self.lock:
            if not self._writable:
                self._check()
            buf = self._buf
            buf += head
            buf += payload
            self._size += HEADER_SIZE + n
            if apply is not None:
                apply()

    # Each append_* buffers one record. ``apply`` runs right after, under ``lock``: the
    # caller's change of its in-memory state for that record, so that a checkpoint
    # (WALState.images, also under ``lock``) never sees one without the other. It must
    # not raise (check first) and must not take ``lock``.

    def append_entries(self, group: int, entries: list[Entry], apply: Apply | None = None) -> None:
        """Buffer an ENTRIES record: ``group``'s entries from ``entries[0].index`` on."""
        self._put(ENTRIES, group, _entries_enc.encode(entries), apply)

    def append_hard_state(self, group: int, hs: HardState, apply: Apply | None = None) -> None:
        self._put(HARD_STATE, group, _HS.pack(hs.term, hs.vote, hs.commit), apply)

    def append_compact(self, group: int, meta: SnapshotMeta, apply: Apply | None = None) -> None:
        """Buffer a COMPACT record: entries up to ``meta.index`` are no longer needed."""
        self._put(COMPACT, group, _meta_enc.encode(meta), apply)

    def append_reset(self, group: int, meta: SnapshotMeta, apply: Apply | None = None) -> None:
        """Buffer a RESET record: ``group``'s log restarts empty after ``meta.index``."""
        self._put(RESET, group, _meta_enc.encode(meta), apply)

    # -- syncing -------------------------------------------------------------------------

    def sync(self) -> None:
        """Make every record appended before this call durable (one ``fdatasync``)."""
        with self._io:
            with self.lock:
                self._check()
                forced = self._want_checkpoint
                rotate = forced or self._size >= self._max
                if not self._buf and not rotate:
                    return
                images = None
                if rotate:  # before the buffer is taken: if this raises, nothing is lost
                    assert self._state is not None
                    images = self._state.images()
                    if not forced and 2 * live_bytes(images) > self._older + self._size:
                        images = None
                buf, self._buf = self._buf, bytearray()
                if rotate:
                    self._want_checkpoint = False
                    self._older += self._size
                    self._size = SEGMENT_HEADER_SIZE
                self._counters["syncs"] += 1
            try:
                if buf:
                    seg = self._segments[-1]
                    pwrite_all(seg.fd, buf, seg.size)
                    seg.size += len(buf)
                    os.fdatasync(seg.fd)
                    self._counters["fdatasyncs"] += 1
                    self._counters["bytes_written"] += len(buf)
                if rotate:
                    self._rotate(images)
            except BaseException as exc:  # the files are in an unknown state now
                self._failed = f"{type(exc).__name__}: {exc}"
                self._writable = False
                if isinstance(exc, OSError):
                    raise StorageError(f"WAL write failed: {exc}", path=self.path) from exc
                raise

    def checkpoint(self) -> None:
        """Sync, then rewrite the live state into a new segment and delete the older ones.

        Normally automatic (at rotation, see the module docstring); this forces one now.
        """
        with self.lock:
            self._check()
            self._want_checkpoint = True
        self.sync()

    def _rotate(self, images: list[GroupImage] | None) -> None:
        """Start the next segment (a checkpoint when ``images`` is given)."""
        old = self._segments[-1]
        seg_id = old.id + 1
        flags = FLAG_CHECKPOINT if images is not None else 0
        seg = self._create(seg_id, segment_header(seg_id, flags))
        self._hook("rotate:created")
        if images is not None:
            out = bytearray()
            for img in images:
                _encode_image(out, img)
                if len(out) >= _WRITE_CHUNK:
                    self._write_to(seg, out)
                    out = bytearray()
            self._write_to(seg, out)
            self._hook("checkpoint:partial")
            end = bytearray()
            put_record(end, CHECKPOINT_END, 0, b"")
            self._write_to(seg, end)
            os.fdatasync(seg.fd)
            self._counters["fdatasyncs"] += 1
            self._hook("checkpoint:synced")
        self._counters["rotations"] += 1
        with self.lock:
            self._size += seg.size - SEGMENT_HEADER_SIZE  # the checkpoint, if any
            if images is None:
                self._segments.append(seg)
            else:
                dropped = self._segments
                self._segments = [seg]
                self._older = 0
        old.close()
        if images is not None:
            self._counters["checkpoints"] += 1
            for n, s in enumerate(dropped):
                os.unlink(s.path)
                if n == 0:
                    self._hook("checkpoint:deleting")
            fsync_dir(self.path)
            self._counters["segments_deleted"] += len(dropped)

    def _hook(self, point: str) -> None:
        if self._crash_hook is not None:
            self._crash_hook(point)

    def _write_to(self, seg: _Segment, data: bytearray) -> None:
        pwrite_all(seg.fd, data, seg.size)
        seg.size += len(data)
        self._counters["bytes_written"] += len(data)

    # -- state ---------------------------------------------------------------------------

    def segment_ids(self) -> list[int]:
        """Ids of the segment files, oldest first (the last one is being appended to)."""
        with self.lock:
            return [s.id for s in self._segments]

    def stats(self) -> dict[str, int]:
        """Counters: segments, bytes (on disk + buffered, buffered), syncs, rotations, ..."""
        with self.lock:
            return {
                "segments": len(self._segments),
                "bytes": self._older + self._size,
                "buffered": len(self._buf),
                **self._counters,
            }

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Sync what is buffered (unless the WAL failed) and let go of the files."""
        with self._io:
            with self.lock:
                if self._closed:
                    return
                buf, self._buf = self._buf, bytearray()
            try:
                if buf and self._failed is None and self._segments:
                    seg = self._segments[-1]
                    pwrite_all(seg.fd, buf, seg.size)
                    seg.size += len(buf)
                    os.fdatasync(seg.fd)
            except OSError as exc:
                raise StorageError(f"WAL write failed at close: {exc}", path=self.path) from exc
            finally:
                with self.lock:
                    self._release()

    def _release(self) -> None:
        self._closed = True
        self._writable = False
        for s in self._segments:
            with contextlib.suppress(OSError):
                s.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _simulate_crash(self) -> None:
        """Tests: drop the buffer and let go of the files, as a kill -9 would."""
        with self.lock:
            self._buf = bytearray()
            self._release()


def _is_segment_name(name: str) -> bool:
    return name.endswith(_SUFFIX) and name[: -len(_SUFFIX)].isdigit()
