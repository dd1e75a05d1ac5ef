"""B+tree engine: LMDB through ``lmdb`` (py-lmdb).

Durability (option ``durability``)
    LMDB never overwrites a page the last two committed trees use and switches trees
    by writing one of two meta pages, so a commit is atomic. What a crash can do depends
    on when pages reach the disk:

    ``"nometasync"`` (the default) -- LMDB ``sync=True, metasync=False``
        Each commit fdatasyncs its data pages; its meta page is written but flushed only
        by the next commit's fdatasync (or :meth:`BTreeEngine.sync`). A power loss can
        therefore undo the *last* unsynced commit, never more, and never corrupts the
        file (LMDB docs: "maintains database integrity, but a system crash may undo the
        last committed transaction"). ``put/delete/write_batch(..., sync=True)`` commit
        and then call ``mdb_env_sync(force=1)`` before returning, which flushes that meta
        page: the write is durable on return. What survives a crash is always a prefix
        of the acknowledged writes (each batch one unit). A process crash (kill -9)
        loses nothing that returned: committed pages are in the OS page cache.
    ``"sync"`` -- LMDB's own default, ``sync=True, metasync=True``
        Every commit flushes data and meta before returning, so even ``sync=False``
        writes are durable on return. Same cost as ``sync=True`` in the default mode.

    Deliberately not offered: ``MDB_NOSYNC`` / ``MDB_MAPASYNC`` / ``MDB_WRITEMAP``.
    Without the fdatasync between commits LMDB may reuse pages that the last *durable*
    meta page still points to, so a power loss can corrupt the database, not only lose
    the tail (see the LMDB ``MDB_NOSYNC`` documentation). The price of safety is one
    fdatasync per commit even for unsynced writes: batch small writes.

Other options (keyword arguments of :class:`BTreeEngine`)
    ``map_size`` (16 GiB)
        Size of the memory map, i.e. the largest the database may grow before the engine
        grows it. Address space only: without ``MDB_WRITEMAP`` the file holds only the
        pages written (it is sparse). When a write fails with ``MDB_MAP_FULL`` the engine
        aborts that transaction, doubles the map (waiting for in-flight reads, which are
        short, see below) and retries it; the larger size is kept in the file.
    ``max_readers`` (126)
        Concurrent read transactions (one per reading thread at a time).
    ``scan_chunk`` (1024)
        Scans read this many pairs per read transaction.

Keys are 1 byte or longer: LMDB rejects the empty key (raises
:class:`~tidekv.errors.InvalidKey`). LMDB itself caps keys at ``max_key_size`` (511)
bytes, so a *long* key (511 bytes or more) is stored under its first 495 bytes followed
by a 16-byte BLAKE2b hash of the whole key (exactly 511 bytes), and its value is stored
as ``u32 key length + key + value``; an LMDB key of exactly 511 bytes is always such an
entry. The mapping keeps the byte order of keys except among keys that share their first
495 bytes; those are adjacent in LMDB's order, so scans collect each such run and sort
it by the real key. A hash collision would need two keys with the same 495-byte prefix
and the same 128-bit BLAKE2b digest; reads compare the stored key, so even then a read
never returns another key's value.

Scans are lazy: each step opens a short read transaction, positions a cursor and reads
at most ``scan_chunk`` pairs (fewer with ``limit`` or when ``end`` is reached), then
closes it and resumes after the last key it returned. No read transaction stays open
while the caller holds the iterator, so an abandoned or slow scan never blocks map
growth, never pins old pages, and never uses up reader slots. A scan of at most
``scan_chunk`` pairs sees one consistent snapshot; a longer scan may see writes that
commit between chunks (keys stay strictly ordered, without repeats).

Thread safety: one writer at a time (a lock in front of LMDB's own writer mutex); reads
run concurrently with each other and with the writer. Map growth and close wait until
no read transaction of this process is active, as LMDB requires.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice, takewhile
from typing import Any

import lmdb

from tidekv.errors import (
    CorruptionError,
    InvalidInput,
    InvalidKey,
    StorageError,
    StoreClosed,
)
from tidekv.storage.base import Engine, Op, prefix_end

_DEFAULTS: dict[str, Any] = {
    "map_size": 16 << 30,
    "durability": "nometasync",
    "max_readers": 126,
    "scan_chunk": 1024,
}
_DURABILITY = {
    "nometasync": {"sync": True, "metasync": False},
    "sync": {"sync": True, "metasync": True},
}


_HASH_LEN = 16  # bytes of BLAKE2b at the end of a long key's LMDB key
_LEN = struct.Struct(">I")


def _storage_error(exc: Exception, what: str) -> StorageError:
    if isinstance(exc, (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError)):
        return CorruptionError(f"lmdb {what}: {exc}", engine="btree")
    return StorageError(f"lmdb {what}: {exc}", engine="btree")


class BTreeEngine(Engine):
    """LMDB (B+tree) engine. ``path`` is the environment directory."""

    name = "btree"

    def __init__(self, path: str | None, **options: Any) -> None:
        super().__init__(path, **options)
        if path is None:
            raise InvalidInput("the btree engine needs a directory path", engine="btree")
        unknown = set(options) - set(_DEFAULTS)
        if unknown:
            raise InvalidInput(
                f"unknown btree engine options: {', '.join(sorted(unknown))}", engine="btree"
            )
        opts = {**_DEFAULTS, **options}
        if opts["durability"] not in _DURABILITY:
            raise InvalidInput(
                f"unknown durability {opts['durability']!r}; "
                f"choose one of {', '.join(sorted(_DURABILITY))}",
                engine="btree",
            )
        self._scan_chunk = max(1, int(opts["scan_chunk"]))
        self._explicit_sync = opts["durability"] == "nometasync"
        os.makedirs(path, exist_ok=True)
        try:
            self._env = lmdb.open(
                path,
                map_size=int(opts["map_size"]),
                subdir=True,
                lock=True,
                writemap=False,
                map_async=False,
                readahead=False,  # random reads: do not drag neighbouring pages in
                max_readers=int(opts["max_readers"]),
                max_dbs=0,
                max_spare_txns=4,
                **_DURABILITY[opts["durability"]],
            )
        except lmdb.Error as exc:
            raise _storage_error(exc, "open") from exc
        self._max_key = self._env.max_key_size()
        self._group_prefix = self._max_key - _HASH_LEN
        self._write_lock = threading.Lock()
        # gate: readers count in/out; grow/close wait for zero and hold new ones back
        self._gate_lock = threading.Lock()
        self._gate = threading.Condition(self._gate_lock)
        self._readers = 0
        self._exclusive = False
        self._closed = False
        self._views: set[Callable[[], None]] = set()  # releases of open snapshot views

    # -- the gate ------------------------------------------------------------------

    def _begin_read(self) -> lmdb.Transaction[bytes]:
        with self._gate_lock:
            if self._exclusive or self._closed:
                self._wait_gate()
            self._readers += 1
        try:
            return self._env.begin(write=False, buffers=False)
        except BaseException:
            self._end_read(None)
            raise

    def _wait_gate(self) -> None:
        """Slow path of a reader (gate lock held): wait out grow/close, refuse if closed."""
        while self._exclusive:
            self._gate.wait()
        if self._closed:
            raise StoreClosed("engine is closed", engine="btree")

    def _end_read(self, txn: lmdb.Transaction[bytes] | None) -> None:
        try:
            if txn is not None:
                txn.abort()
        finally:
            with self._gate_lock:
                self._readers -= 1
                if self._exclusive and not self._readers:
                    self._gate.notify_all()

    def _exclusive_begin(self) -> None:
        with self._gate:
            while self._exclusive:
                self._gate.wait()
            self._exclusive = True
            while self._readers:
                self._gate.wait()

    def _exclusive_end(self) -> None:
        with self._gate:
            self._exclusive = False
            self._gate.notify_all()

    def _check(self) -> None:
        if self._closed:
            raise StoreClosed("engine is closed", engine="btree")

    def _check_key(self, key: bytes) -> None:
        if not key:
            raise InvalidKey("the btree engine does not store the empty key", engine="btree")

    def _lmdb_key(self, key: bytes) -> bytes:
        """The LMDB key of ``key`` (itself unless it is long; see the module docstring)."""
        if len(key) < self._max_key:
            return key
        return key[: self._group_prefix] + hashlib.blake2b(key, digest_size=_HASH_LEN).digest()

    def _lmdb_op(self, key: bytes, value: bytes | None) -> Op:
        if len(key) < self._max_key:
            return key, value
        return self._lmdb_key(key), None if value is None else _LEN.pack(len(key)) + key + value

    @staticmethod
    def _unwrap(raw: bytes) -> tuple[bytes, bytes]:
        """The real key and value of a long-key entry."""
        n = _LEN.unpack_from(raw)[0]
        return raw[4 : 4 + n], raw[4 + n :]

    def _get_long(self, key: bytes) -> bytes | None:
        txn = self._begin_read()
        try:
            raw = txn.get(self._lmdb_key(key))
        except lmdb.Error as exc:
            raise _storage_error(exc, "get") from exc
        finally:
            self._end_read(txn)
        if raw is None:
            return None
        stored, value = self._unwrap(raw)
        return value if stored == key else None

    # -- reads ---------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        if not key:
            self._check()
            return None  # such a key can never have been stored
        if len(key) >= self._max_key:
            return self._get_long(key)
        # _begin_read/_end_read inlined: this is the hottest path
        gate_lock = self._gate_lock
        with gate_lock:
            if self._exclusive or self._closed:
                self._wait_gate()
            self._readers += 1
        try:
            txn = self._env.begin()
            try:
                return txn.get(key)
            finally:
                txn.abort()
        except lmdb.Error as exc:
            raise _storage_error(exc, "get") from exc
        finally:
            with gate_lock:
                self._readers -= 1
                if self._exclusive and not self._readers:
                    self._gate.notify_all()

    def multi_get(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """All values read in one read transaction (one consistent snapshot)."""
        txn = self._begin_read()
        try:
            get = txn.get
            mk = self._max_key
            out: list[bytes | None] = []
            for k in keys:
                if not k:
                    out.append(None)
                elif len(k) < mk:
                    out.append(get(k))
                else:
                    raw = get(self._lmdb_key(k))
                    if raw is not None:
                        stored, value = self._unwrap(raw)
                        raw = value if stored == k else None
                    out.append(raw)
            return out
        except lmdb.Error as exc:
            raise _storage_error(exc, "multi_get") from exc
        finally:
            self._end_read(txn)

    def scan(
        self,
        start: bytes = b"",
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check()
        if (end is not None and start >= end) or (limit is not None and limit <= 0):
            return iter(())
        gp = self._group_prefix
        lstart = start if len(start) < gp else start[:gp]
        lend = end if end is None or len(end) < gp else prefix_end(end[:gp])
        pairs = self._real_pairs(self._scan(lstart, lend, reverse, None), reverse)
        if len(start) >= gp:
            pairs = (kv for kv in pairs if kv[0] >= start)
        if end is not None and len(end) >= gp:
            pairs = (kv for kv in pairs if kv[0] < end)
        return pairs if limit is None else islice(pairs, limit)

    def _real_pairs(
        self, raw: Iterator[tuple[bytes, bytes]], reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        """Real keys and values in real key order from LMDB pairs in LMDB order."""
        gp, mk = self._group_prefix, self._max_key
        group: list[tuple[bytes, bytes]] = []
        group_prefix = b""
        for k, v in raw:
            if len(k) < gp:
                if group:
                    group.sort(reverse=reverse)
                    yield from group
                    group = []
                yield k, v
                continue
            if group and k[:gp] != group_prefix:
                group.sort(reverse=reverse)
                yield from group
                group = []
            group_prefix = k[:gp]
            group.append(self._unwrap(v) if len(k) >= mk else (k, v))
        if group:
            group.sort(reverse=reverse)
            yield from group

    def _scan(
        self, start: bytes, end: bytes | None, reverse: bool, limit: int | None
    ) -> Iterator[tuple[bytes, bytes]]:
        remaining = limit
        while True:
            n = self._scan_chunk if remaining is None else min(self._scan_chunk, remaining)
            chunk = self._read_chunk(start, end, reverse, n)
            yield from chunk
            if len(chunk) < n:
                return
            if remaining is not None:
                remaining -= n
                if remaining == 0:
                    return
            last = chunk[-1][0]
            if reverse:
                end = last  # continue strictly below the last key
            else:
                start = last + b"\x00"  # the smallest key after the last one

    def _read_chunk(
        self, start: bytes, end: bytes | None, reverse: bool, n: int
    ) -> list[tuple[bytes, bytes]]:
        txn = self._begin_read()
        try:
            cur = txn.cursor()
            if reverse:
                # set_range lands on the first key >= end; the one before is < end
                found = cur.last() if end is None or not cur.set_range(end) else cur.prev()
                if not found:
                    return []
                pairs: Iterator[tuple[bytes, bytes]] = cur.iterprev()
                if start:
                    pairs = takewhile((start,).__le__, pairs)  # key >= start
            else:
                if not cur.set_range(start):
                    return []
                pairs = cur.iternext()
                if end is not None:
                    pairs = takewhile((end,).__gt__, pairs)  # key < end
            return list(islice(pairs, n))
        except lmdb.Error as exc:
            raise _storage_error(exc, "scan") from exc
        finally:
            self._end_read(txn)

    def _raw_snapshot(self) -> tuple[Iterator[tuple[bytes, bytes]], Callable[[], None]]:
        """One LMDB read transaction held until release (MVCC: a consistent view that
        pins the pages it sees). A map growth or close releases every open view first
        (LMDB cannot resize under a live transaction): its reader then gets
        ``StoreClosed`` instead of the write waiting for it."""
        self._check()
        txn = self._begin_read()
        lock = threading.Lock()  # the txn is used by one thread, or aborted, at a time
        released = False

        def raw() -> Iterator[tuple[bytes, bytes]]:
            it: Iterator[tuple[bytes, bytes]] | None = None
            while True:
                with lock:
                    if released:
                        raise StoreClosed(
                            "snapshot view released (the map grew or the engine closed)",
                            engine="btree",
                        )
                    try:
                        if it is None:
                            cur = txn.cursor()
                            if not cur.first():
                                return
                            it = cur.iternext()
                        chunk = list(islice(it, self._scan_chunk))
                    except lmdb.Error as exc:
                        raise _storage_error(exc, "snapshot scan") from exc
                if not chunk:
                    return
                yield from chunk

        def release() -> None:
            nonlocal released
            with lock:
                if released:
                    return
                released = True
                self._views.discard(release)
            self._end_read(txn)

        self._views.add(release)
        return self._real_pairs(raw(), False), release

    def _release_views(self) -> None:
        for release in list(self._views):
            release()

    # -- writes --------------------------------------------------------------------

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        self._check_key(key)
        self._write([(key, value)], sync)

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        if not key:
            self._check()
            if sync:
                self.sync()
            return  # never stored, nothing to delete
        self._write([(key, None)], sync)

    def write_batch(self, ops: Iterable[Op], *, sync: bool = False) -> None:
        self._check()
        batch = list(ops)  # an error while building the batch writes nothing
        for key, value in batch:
            if value is not None:
                self._check_key(key)
        self._write(batch, sync)

    def _write(self, ops: list[Op], sync: bool) -> None:
        with self._write_lock:
            self._check()
            while True:
                try:
                    with self._env.begin(write=True) as txn:  # commits, or aborts on error
                        for key, value in ops:
                            if not key:
                                continue  # only deletes get here: nothing to delete
                            key, value = self._lmdb_op(key, value)
                            if value is None:
                                txn.delete(key)
                            else:
                                txn.put(key, value)
                    break
                except lmdb.MapFullError:
                    self._grow()
                except lmdb.Error as exc:
                    raise _storage_error(exc, "write") from exc
            if sync and self._explicit_sync:
                self._flush()

    def _grow(self) -> None:
        """Double the map; the caller holds the write lock and no write transaction."""
        self._release_views()
        self._exclusive_begin()
        try:
            size = int(self._env.info()["map_size"])
            self._env.set_mapsize(size * 2)
        except lmdb.Error as exc:
            raise _storage_error(exc, "grow map") from exc
        finally:
            self._exclusive_end()

    def _flush(self) -> None:
        try:
            self._env.sync(True)
        except lmdb.Error as exc:
            raise _storage_error(exc, "sync") from exc

    def sync(self) -> None:
        with self._write_lock:
            self._check()
            self._flush()

    # -- lifecycle -----------------------------------------------------------------

    @property
    def map_size(self) -> int:
        """The current size of the memory map in bytes."""
        self._check()
        return int(self._env.info()["map_size"])

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._release_views()
            self._exclusive_begin()
            try:
                self._closed = True
                self._env.sync(True)
                self._env.close()
            finally:
                self._exclusive_end()

    @property
    def closed(self) -> bool:
        return self._closed
