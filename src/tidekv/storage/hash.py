"""Hash engine: a Bitcask-style append-only log with an in-memory, ordered key directory.

Every write is appended to the *active segment*; an ordered map in RAM (the *key
directory*) says where the newest record of each live key sits, so a read is one
``pread``. Segments are never changed once sealed; :meth:`HashEngine.merge` rewrites the
live records into new segments and deletes the old files.

Files in the engine directory::

    0000000001.data   segment 1: records, appended (sealed once full or at close)
    0000000001.hint   hint file of segment 1, written when the segment is sealed
    MERGE             manifest of a merge that committed but has not finished cleaning up
    *.tmp             files being written (merge outputs, hints, the manifest); a crash
                      leaves them behind and the next open finishes or removes them
    LOCK              flock(2)-ed while an engine has the directory open

Data record (little-endian; ``crc`` is zlib crc32 of every byte after it)::

    +--------+--------+-------+---------+-----------+-----+-------+
    | crc u32| seq u64| flags | klen u32| vlen u32  | key | value |
    +--------+--------+--u8---+---------+-----------+-----+-------+
    header = 21 bytes;  flags: 0x01 tombstone (vlen = 0), 0x02 commit, 0x04 seal

``seq`` is a store-wide write sequence number; on open, the record with the highest seq
wins for each key, whatever file it is in (so merge outputs may carry any file id).
**Batches**: the records of one write (a put, a delete, or a whole ``write_batch``) are
written with one ``pwrite``; only the last carries the *commit* flag. Recovery accepts
records up to the last commit flag; records after it are an incomplete batch and are cut
together with any short or checksum-failing record. So a batch is all or nothing.
**Seal record**: a sealed segment ends with one header-only record (flags = seal,
seq = the segment id). It tells a complete file (damage in it is corruption) from the
file that was being appended at a crash (damage at its end is a torn tail).

Hint file: ``b"TKVHINT1"``, then one entry per record of the segment
(``seq u64 | flags u8 | offset u64 | size u32 | klen u32 | key``), then a trailer
``data_size u64 | count u64 | crc32 u32`` (crc over every byte before it). A hint is
used only when its crc matches and ``data_size`` equals the data file's size; otherwise
the data file is scanned (and a fresh hint written).

**Recovery** (on open): finish a committed merge (``MERGE`` present) or delete the
leftovers of an uncommitted one; load every segment from its hint, or by scanning it
when the hint is missing or invalid. A scanned segment without its seal record was being
appended at the crash: its torn tail (short record, bad checksum, incomplete batch) is
truncated, logged and counted in ``stats()["bytes_cut"]``, then it is sealed. A bad record
in a segment *with* a seal record is damage to acknowledged data, not a torn tail: open
raises :class:`~tidekv.errors.CorruptionError` rather than silently drop it. After open,
writes go to a fresh active segment.

**Durability**: ``sync=True`` fdatasyncs the active segment before returning; creating,
renaming or deleting a file is followed by an fsync of the directory; a segment is
sealed (seal record, fdatasync, then its hint) before the next one is created, so only
the active segment can have a torn tail.

**Merge** (crash-safe, run by hand or when ``merge_ratio`` is set): seal the active
segment; every segment is then an input. Copy each live record (in key order, so merged
segments are also sorted) into ``NNN.data.tmp`` plus ``NNN.hint.tmp``; fsync; write the
``MERGE`` manifest (tmp + rename): this is the commit point; rename the outputs; point the
key directory at them; delete the inputs; delete the manifest. Tombstones are dropped:
every older record of their key is in an input and goes away with it (a crash after the
commit point redoes the deletions before anything is loaded, so no deleted key can come
back). Writes continue during a merge: they go to a new active segment, which is not an
input; the key directory is moved only for keys that still point at the copied record.

**Reads and threads**: one write lock orders writes, rotation and merge bookkeeping;
``get`` takes no lock (a dict lookup and a ``pread``). Scans take the lock only to copy
the next chunk of keys. A segment's descriptor is closed when the last reader drops it.

**Memory** (the Bitcask trade-off: every live key lives in RAM): about ``len(key) + 185``
bytes per live key on 64-bit CPython: the key object (33 + len), a 3-tuple of ints
(64, plus ~28 for each int above 256), a dict slot and a sorted-list slot of
``SortedDict``. ``bench/hash_engine.py`` measures ~200 bytes per key for 15-byte keys
(tracemalloc). The active segment also buffers its hint (25 bytes + key per record
written to it). Values are never cached: the OS page cache does that.

Options: ``max_segment_size`` (bytes, default 64 MiB; a single larger write gets its own
segment), ``merge_ratio`` (``None`` = off, the default; else merge after a rotation once
``dead_bytes / total_bytes`` reaches it), ``merge_min_bytes`` (no automatic merge below
this many bytes on disk, default 1 MiB).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

from sortedcontainers import SortedDict

from tidekv.errors import (
    CorruptionError,
    InvalidInput,
    InvalidKey,
    InvalidValue,
    KeyTooLarge,
    StorageError,
    StoreClosed,
    ValueTooLarge,
)
from tidekv.fileio import fsync_dir, pwrite_all
from tidekv.storage import _hash_format as fmt
from tidekv.storage.base import Engine, Op

log = logging.getLogger(__name__)

DEFAULT_MAX_SEGMENT_SIZE = 64 << 20
DEFAULT_MERGE_MIN_BYTES = 1 << 20
_OPTIONS = frozenset({"max_segment_size", "merge_ratio", "merge_min_bytes"})

_DATA = ".data"
_HINT = ".hint"
_TMP = ".tmp"
_MANIFEST = "MERGE"
_LOCKFILE = "LOCK"
_SCAN_CHUNK = 256  # keys copied per lock hold while scanning
_READ_RETRIES = 64

Loc = tuple[int, int, int]
"""Where a live key's newest record is: ``(segment id, offset, record size)``."""


def _name(seg_id: int, suffix: str) -> str:
    return f"{seg_id:010d}{suffix}"


def _write_synced(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        pwrite_all(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _as_key(key: object) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, bytearray | memoryview):
        return bytes(key)
    raise InvalidKey(f"keys are bytes, not {type(key).__name__}")


def _check_size(key: bytes, value: bytes | None) -> tuple[bytes, bytes | None]:
    if fmt.HEADER_SIZE + len(key) + len(value or b"") > fmt.MAX_RECORD_SIZE:
        if len(key) > len(value or b""):
            raise KeyTooLarge("key too large for one record (4 GiB)", size=len(key))
        raise ValueTooLarge("value too large for one record (4 GiB)", size=len(value or b""))
    return key, value


def _as_value(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise InvalidValue(f"values are bytes, not {type(value).__name__}")


class _Segment:
    """One data file, open for reading (and appending while it is the active one)."""

    __slots__ = ("fd", "id", "path", "size")

    def __init__(self, seg_id: int, path: str, fd: int, size: int) -> None:
        self.id = seg_id
        self.path = path
        self.fd = fd
        self.size = size

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:  # the last reader of a merged-away segment closes it
        with contextlib.suppress(Exception):
            self.close()


class _Output:
    """A merge output being written under a temporary name."""

    def __init__(self, seg_id: int, dirpath: str) -> None:
        self.id = seg_id
        self.data_tmp = os.path.join(dirpath, _name(seg_id, _DATA + _TMP))
        self.hint_tmp = os.path.join(dirpath, _name(seg_id, _HINT + _TMP))
        self.fd = os.open(
            self.data_tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644
        )
        self.size = 0
        self.hint = fmt.HintBuilder()


class HashEngine(Engine):
    """Bitcask-style engine; see the module docstring for formats and guarantees."""

    name = "hash"

    def __init__(self, path: str | None, **options: Any) -> None:
        super().__init__(path, **options)
        if path is None:
            raise InvalidInput("the hash engine needs a directory path")
        unknown = set(options) - _OPTIONS
        if unknown:
            raise InvalidInput(f"unknown hash engine option(s): {', '.join(sorted(unknown))}")
        self._max_segment = int(options.get("max_segment_size", DEFAULT_MAX_SEGMENT_SIZE))
        ratio = options.get("merge_ratio")
        self._merge_ratio = None if ratio is None else float(ratio)
        self._merge_min = int(options.get("merge_min_bytes", DEFAULT_MERGE_MIN_BYTES))
        if self._max_segment <= 0 or (
            self._merge_ratio is not None and not 0 < self._merge_ratio <= 1
        ):
            raise InvalidInput("max_segment_size must be > 0 and merge_ratio in (0, 1]")
        self._dir = os.fspath(path)
        self._lock = threading.RLock()  # the write lock
        self._merge_lock = threading.Lock()  # one merge at a time; close waits for it
        self._closed = False
        self._keydir: Any = SortedDict()  # bytes -> Loc
        self._segments: dict[int, _Segment] = {}
        self._active: _Segment | None = None
        self._active_hint = fmt.HintBuilder()
        self._next_id = 1
        self._next_seq = 1
        self._total_bytes = 0
        self._live_bytes = 0
        self._counters = {
            "bytes_cut": 0,
            "hint_loads": 0,
            "data_scans": 0,
            "scanned_bytes": 0,
            "merges": 0,
        }
        #: tests set this to raise at named points (a simulated crash)
        self._crash_hook: Callable[[str], None] | None = None
        self._lock_fd = -1
        self._open()

    # -- open and recovery ---------------------------------------------------------------

    def _path(self, name: str) -> str:
        return os.path.join(self._dir, name)

    def _open(self) -> None:
        os.makedirs(self._dir, exist_ok=True)
        fd = os.open(self._path(_LOCKFILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageError(f"{self._dir} is open in another engine", path=self._dir) from None
        self._lock_fd = fd
        try:
            self._recover()
        except BaseException:
            self._drop_files()
            self._closed = True
            raise

    def _recover(self) -> None:
        floor = self._finish_merge()
        names = os.listdir(self._dir)
        for n in names:
            if n.endswith(_TMP):
                _unlink(self._path(n))
        ids = sorted(int(n[:-5]) for n in names if n.endswith(_DATA) and n[:-5].isdigit())
        for n in names:
            if n.endswith(_HINT) and n[:-5].isdigit() and int(n[:-5]) not in ids:
                _unlink(self._path(n))
        loaded: list[tuple[_Segment, list[fmt.Entry] | None]] = []
        for seg_id in ids:
            path = self._path(_name(seg_id, _DATA))
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            seg = _Segment(seg_id, path, fd, os.fstat(fd).st_size)
            self._segments[seg_id] = seg  # so a failed open closes it
            loaded.append((seg, self._read_hint(seg)))
        newest: dict[bytes, tuple[int, int, int, int, int]] = {}  # key -> seq,id,off,size,flags
        max_seq = 0
        for seg, hinted in loaded:
            entries = hinted if hinted is not None else self._scan_segment(seg)
            if seg.size == 0:
                del self._segments[seg.id]
                seg.close()
                _unlink(seg.path)
                _unlink(self._path(_name(seg.id, _HINT)))
                fsync_dir(self._dir)
                continue
            seg_id = seg.id
            for seq, flags, off, size, key in entries:
                cur = newest.get(key)
                if cur is None or seq > cur[0]:
                    newest[key] = (seq, seg_id, off, size, flags)
            max_seq = max(max_seq, max((e[0] for e in entries), default=0))
            self._total_bytes += seg.size
        live = {k: (v[1], v[2], v[3]) for k, v in newest.items() if not v[4] & fmt.FLAG_TOMBSTONE}
        self._live_bytes = sum(loc[2] for loc in live.values())
        self._keydir = SortedDict(live)
        self._next_seq = max_seq + 1
        self._next_id = max([floor, *ids]) + 1

    def _read_hint(self, seg: _Segment) -> list[fmt.Entry] | None:
        try:
            with open(self._path(_name(seg.id, _HINT)), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        entries = fmt.decode_hint(data, seg.size)
        if entries is None:
            log.warning("hint file of segment %d is invalid; scanning the data file", seg.id)
        else:
            self._counters["hint_loads"] += 1
        return entries

    def _scan_segment(self, seg: _Segment) -> list[fmt.Entry]:
        """Scan a data file without a valid hint; cut a torn tail; seal it; write its hint.

        A file that ends with its seal record was complete: a bad record in it is damage
        to acknowledged data, so :class:`CorruptionError`. A file without one was being
        appended at the crash: everything after its last whole write group is cut.
        """
        sealed = fmt.ends_with_seal(seg.fd, seg.size, seg.id)
        res = fmt.scan_data(seg.fd, seg.size)
        self._counters["data_scans"] += 1
        self._counters["scanned_bytes"] += res.bytes_read
        if res.problem is not None and sealed:
            raise CorruptionError(f"{seg.path}: {res.problem} in a sealed segment", path=seg.path)
        if not res.sealed:
            if res.problem is not None:
                cut = seg.size - res.end
                log.warning("%s: %s; cutting a torn tail of %d bytes", seg.path, res.problem, cut)
                self._counters["bytes_cut"] += cut
            seg.size = res.end
            if seg.size == 0:
                return []  # the caller deletes the empty file
            fd = os.open(seg.path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.ftruncate(fd, seg.size)
                pwrite_all(fd, fmt.seal_record(seg.id), seg.size)
                os.fsync(fd)
            finally:
                os.close(fd)
            seg.size += fmt.HEADER_SIZE
        hint = fmt.HintBuilder()
        for e in res.entries:
            hint.add(*e)
        self._write_hint(seg.id, hint.finish(seg.size))
        return res.entries

    def _write_hint(self, seg_id: int, data: bytes) -> None:
        name = _name(seg_id, _HINT)
        _write_synced(self._path(name + _TMP), data)
        os.replace(self._path(name + _TMP), self._path(name))
        fsync_dir(self._dir)

    def _finish_merge(self) -> int:
        """Complete a merge whose manifest was written; return the highest id it names."""
        mpath = self._path(_MANIFEST)
        try:
            with open(mpath, "rb") as f:
                inputs, outputs = fmt.decode_manifest(f.read())
        except FileNotFoundError:
            return 0
        for out in outputs:
            for suffix in (_DATA, _HINT):
                tmp = self._path(_name(out, suffix + _TMP))
                if os.path.exists(tmp):
                    os.replace(tmp, self._path(_name(out, suffix)))
        fsync_dir(self._dir)
        for seg_id in sorted(inputs):
            _unlink(self._path(_name(seg_id, _DATA)))
            _unlink(self._path(_name(seg_id, _HINT)))
        fsync_dir(self._dir)
        os.unlink(mpath)
        fsync_dir(self._dir)
        log.info("finished an interrupted merge of %d segments", len(inputs))
        return max([0, *inputs, *outputs])

    # -- helpers -------------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise StoreClosed("engine is closed")

    def _hook(self, point: str) -> None:
        if self._crash_hook is not None:
            self._crash_hook(point)

    def _drop_files(self) -> None:
        for seg in self._segments.values():
            seg.close()
        self._segments.clear()
        self._active = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _simulate_crash(self) -> None:
        """Tests: let go of every file without writing anything, as a crash would."""
        self._closed = True
        self._drop_files()

    def _read(self, seg: _Segment, loc: Loc, key: bytes) -> fmt.Record:
        _, off, size = loc
        try:
            buf = os.pread(seg.fd, size, off)
        except OSError as exc:
            self._check()
            raise StorageError(f"read failed in {seg.path}: {exc}", path=seg.path) from exc
        where = f"{seg.path}@{off}"
        if len(buf) != size:
            raise CorruptionError(f"record at {where} is cut short", path=seg.path)
        rec = fmt.decode_record(buf, where)
        if rec.key != key or rec.flags & fmt.FLAG_TOMBSTONE:
            raise CorruptionError(f"record at {where} is not the value of its key", path=seg.path)
        return rec

    def _lookup(self, key: bytes) -> tuple[_Segment, Loc] | None:
        for _ in range(_READ_RETRIES):
            loc: Loc | None = self._keydir.get(key)
            if loc is None:
                return None
            seg = self._segments.get(loc[0])
            if seg is not None:
                return seg, loc
            self._check()  # a merge moved the key between the two lookups: look again
        raise StorageError(f"key directory points at a missing segment for {key!r}")

    # -- writes --------------------------------------------------------------------------

    def _writable(self, nbytes: int) -> tuple[_Segment, bool]:
        seg = self._active
        rotated = False
        if seg is not None and seg.size > 0 and seg.size + nbytes > self._max_segment:
            self._seal_active()
            seg, rotated = None, True
        if seg is None:
            seg_id = self._next_id
            self._next_id += 1
            path = self._path(_name(seg_id, _DATA))
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            fsync_dir(self._dir)
            seg = _Segment(seg_id, path, fd, 0)
            self._segments[seg_id] = seg
            self._active = seg
        return seg, rotated

    def _seal_active(self) -> None:
        """Make the active segment immutable: fdatasync it and write its hint."""
        seg = self._active
        if seg is None:
            return
        self._active = None
        hint, self._active_hint = self._active_hint, fmt.HintBuilder()
        if seg.size == 0:
            del self._segments[seg.id]
            seg.close()
            _unlink(seg.path)
            fsync_dir(self._dir)
            return
        seal = fmt.seal_record(seg.id)
        pwrite_all(seg.fd, seal, seg.size)
        seg.size += len(seal)
        self._total_bytes += len(seal)
        os.fdatasync(seg.fd)
        self._hook("seal:synced")
        self._write_hint(seg.id, hint.finish(seg.size))

    def _write(self, ops: list[tuple[bytes, bytes | None]], sync: bool) -> None:
        with self._lock:
            self._check()
            if len(ops) == 1 and ops[0][1] is None and ops[0][0] not in self._keydir:
                ops = []  # deleting an absent key changes nothing
            if not ops:
                if sync and self._active is not None:
                    os.fdatasync(self._active.fd)
                return
            seq = self._next_seq
            parts: list[bytes] = []
            flag_list: list[int] = []
            for i, (key, value) in enumerate(ops):
                flags = fmt.FLAG_COMMIT if i == len(ops) - 1 else 0
                if value is None:
                    flags |= fmt.FLAG_TOMBSTONE
                parts.append(fmt.encode_record(seq + i, flags, key, value or b""))
                flag_list.append(flags)
            buf = b"".join(parts)
            seg, rotated = self._writable(len(buf))
            base = seg.size
            try:
                pwrite_all(seg.fd, buf, base)
                if sync:
                    os.fdatasync(seg.fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(seg.fd, base)  # never leave half a batch before later ones
                raise StorageError(f"write to {seg.path} failed: {exc}", path=seg.path) from exc
            self._next_seq += len(ops)
            seg.size += len(buf)
            self._total_bytes += len(buf)
            keydir, off = self._keydir, base
            for i, ((key, value), rec) in enumerate(zip(ops, parts, strict=True)):
                self._active_hint.add(seq + i, flag_list[i], off, len(rec), key)
                old = keydir.get(key)
                if old is not None:
                    self._live_bytes -= old[2]
                if value is None:
                    if old is not None:
                        del keydir[key]
                else:
                    keydir[key] = (seg.id, off, len(rec))
                    self._live_bytes += len(rec)
                off += len(rec)
        if rotated:
            self._maybe_merge()

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        self._write([_check_size(_as_key(key), _as_value(value))], sync)

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        self._write([(_as_key(key), None)], sync)

    def write_batch(self, ops: Iterable[Op], *, sync: bool = False) -> None:
        checked: list[tuple[bytes, bytes | None]] = []
        for op in ops:
            try:
                key, value = op
            except (TypeError, ValueError):
                raise InvalidInput(
                    f"a batch operation is a (key, value) pair, not {op!r}"
                ) from None
            checked.append(_check_size(_as_key(key), None if value is None else _as_value(value)))
        self._write(checked, sync)

    def sync(self) -> None:
        with self._lock:
            self._check()
            if self._active is not None:
                os.fdatasync(self._active.fd)

    # -- reads ---------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        self._check()
        key = _as_key(key)
        found = self._lookup(key)
        if found is None:
            return None
        return self._read(found[0], found[1], key).value

    def scan(
        self,
        start: bytes = b"",
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs in key order, read lazily in chunks.

        Not a snapshot: a key written after the scan started may show its new value if
        the scan has not passed it yet (every pair returned was current at some instant).
        """
        self._check()
        return self._scan(_as_key(start), None if end is None else _as_key(end), reverse, limit)

    def _scan(
        self, start: bytes, end: bytes | None, reverse: bool, limit: int | None
    ) -> Iterator[tuple[bytes, bytes]]:
        left = -1 if limit is None else limit
        cursor: bytes | None = None
        while left != 0:
            n = _SCAN_CHUNK if left < 0 else min(left, _SCAN_CHUNK)
            with self._lock:
                self._check()
                if not reverse:
                    lo, incl = (start, True) if cursor is None else (cursor, False)
                    keys = self._keydir.irange(lo, end, inclusive=(incl, False))
                else:
                    hi = end if cursor is None else cursor
                    keys = self._keydir.irange(start, hi, inclusive=(True, False), reverse=True)
                chunk: list[tuple[bytes, Loc]] = [(k, self._keydir[k]) for k in islice(keys, n)]
            if not chunk:
                return
            cursor = chunk[-1][0]
            for key, loc in chunk:
                seg = self._segments.get(loc[0])
                if seg is not None:
                    value: bytes | None = self._read(seg, loc, key).value
                else:  # merged away since the chunk was copied
                    value = self.get(key)
                if value is not None:
                    yield key, value
                    left -= 1
                    if left == 0:
                        return

    def _raw_snapshot(self) -> tuple[Iterator[tuple[bytes, bytes]], Callable[[], None]]:
        """A copy of the key directory and of the segment table: the copied segment
        objects keep their files open, so a merge that deletes them meanwhile does not
        take the view's records away (the records themselves are immutable)."""
        with self._lock:
            self._check()
            entries: list[tuple[bytes, Loc]] = list(self._keydir.items())
            segments = dict(self._segments)

        def pairs() -> Iterator[tuple[bytes, bytes]]:
            for key, loc in entries:
                self._check()
                yield key, self._read(segments[loc[0]], loc, key).value

        def release() -> None:
            entries.clear()
            segments.clear()

        return pairs(), release

    # -- merge ---------------------------------------------------------------------------

    def _maybe_merge(self) -> None:
        ratio = self._merge_ratio
        total = self._total_bytes
        if ratio is None or total < self._merge_min or total == 0:
            return
        if (total - self._live_bytes) / total >= ratio and self._merge_lock.acquire(blocking=False):
            try:  # skipped when a merge is already running (maybe in this very thread)
                self._merge_locked()
            finally:
                self._merge_lock.release()

    def _live_records(self, inputs: set[int]) -> Iterator[tuple[bytes, Loc]]:
        cursor: bytes | None = None
        while True:
            with self._lock:
                self._check()
                if cursor is None:
                    keys = iter(self._keydir)
                else:
                    keys = self._keydir.irange(cursor, None, inclusive=(False, False))
                chunk = [(k, self._keydir[k]) for k in islice(keys, 1024)]
            if not chunk:
                return
            cursor = chunk[-1][0]
            for key, loc in chunk:
                if loc[0] in inputs:
                    yield key, loc

    def compact(self) -> None:
        """The Engine-interface name for :meth:`merge`."""
        self.merge()

    def merge(self) -> dict[str, int]:
        """Rewrite the live records of every sealed segment and delete the old files.

        Seals the active segment first, so everything written before the call is merged.
        Returns ``{"inputs", "outputs", "bytes_before", "bytes_after"}``.
        """
        with self._merge_lock:
            return self._merge_locked()

    def _merge_locked(self) -> dict[str, int]:
        with self._lock:
            self._check()
            self._seal_active()
            inputs = dict(self._segments)
        self._hook("merge:sealed")
        if not inputs:
            return {"inputs": 0, "outputs": 0, "bytes_before": 0, "bytes_after": 0}
        outputs, moves = self._write_outputs(inputs)
        manifest = fmt.encode_manifest(sorted(inputs), [o.id for o in outputs])
        _write_synced(self._path(_MANIFEST + _TMP), manifest)
        os.replace(self._path(_MANIFEST + _TMP), self._path(_MANIFEST))
        fsync_dir(self._dir)
        self._hook("merge:committed")  # from here on, recovery finishes the merge
        return self._install_merge(inputs, outputs, moves)

    def _write_outputs(
        self, inputs: dict[int, _Segment]
    ) -> tuple[list[_Output], list[tuple[bytes, Loc, Loc]]]:
        """Copy the live records of ``inputs`` into synced temporary files."""
        outputs: list[_Output] = []
        moves: list[tuple[bytes, Loc, Loc]] = []  # key, where it was, where it will be
        try:
            for key, loc in self._live_records(set(inputs)):
                rec = self._read(inputs[loc[0]], loc, key)
                data = fmt.encode_record(rec.seq, fmt.FLAG_COMMIT, key, rec.value)
                out = outputs[-1] if outputs else None
                if out is None or (out.size and out.size + len(data) > self._max_segment):
                    with self._lock:
                        out = _Output(self._next_id, self._dir)
                        self._next_id += 1
                    outputs.append(out)
                pwrite_all(out.fd, data, out.size)
                out.hint.add(rec.seq, fmt.FLAG_COMMIT, out.size, len(data), key)
                moves.append((key, loc, (out.id, out.size, len(data))))
                out.size += len(data)
            for out in outputs:
                pwrite_all(out.fd, fmt.seal_record(out.id), out.size)
                out.size += fmt.HEADER_SIZE
                os.fdatasync(out.fd)
                _write_synced(out.hint_tmp, out.hint.finish(out.size))
            fsync_dir(self._dir)
            self._hook("merge:outputs_written")
        except Exception:  # not a simulated crash (BaseException): clean up
            for out in outputs:
                _unlink(out.data_tmp)
                _unlink(out.hint_tmp)
            raise
        finally:
            for out in outputs:
                with contextlib.suppress(OSError):
                    os.close(out.fd)
        return outputs, moves

    def _install_merge(
        self,
        inputs: dict[int, _Segment],
        outputs: list[_Output],
        moves: list[tuple[bytes, Loc, Loc]],
    ) -> dict[str, int]:
        new: list[_Segment] = []
        for out in outputs:
            final = self._path(_name(out.id, _DATA))
            os.replace(out.data_tmp, final)
            os.replace(out.hint_tmp, self._path(_name(out.id, _HINT)))
            new.append(
                _Segment(out.id, final, os.open(final, os.O_RDONLY | os.O_CLOEXEC), out.size)
            )
        fsync_dir(self._dir)
        self._hook("merge:renamed")
        before = sum(s.size for s in inputs.values())
        after = sum(s.size for s in new)
        with self._lock:
            for seg in new:
                self._segments[seg.id] = seg
            keydir = self._keydir
            for key, old, loc in moves:
                if keydir.get(key) == old:
                    keydir[key] = loc  # same record size, so live bytes do not change
            for seg_id in inputs:
                del self._segments[seg_id]  # readers holding the segment keep its fd
            self._total_bytes += after - before
            self._counters["merges"] += 1
        self._hook("merge:installed")
        for n, seg_id in enumerate(sorted(inputs)):
            _unlink(self._path(_name(seg_id, _DATA)))
            _unlink(self._path(_name(seg_id, _HINT)))
            if n == 0:
                self._hook("merge:deleting")
        fsync_dir(self._dir)
        self._hook("merge:deleted")
        os.unlink(self._path(_MANIFEST))
        fsync_dir(self._dir)
        return {
            "inputs": len(inputs),
            "outputs": len(new),
            "bytes_before": before,
            "bytes_after": after,
        }

    # -- state ---------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters: live keys, segments, bytes (total, live, dead), recovery and merges."""
        with self._lock:
            return {
                "live_keys": len(self._keydir),
                "segments": len(self._segments),
                "total_bytes": self._total_bytes,
                "live_bytes": self._live_bytes,
                "dead_bytes": self._total_bytes - self._live_bytes,
                **self._counters,
            }

    def close(self) -> None:
        with self._merge_lock, self._lock:
            if self._closed:
                return
            try:
                self._seal_active()
            finally:
                self._closed = True
                self._drop_files()
                self._keydir = SortedDict()

    @property
    def closed(self) -> bool:
        return self._closed
