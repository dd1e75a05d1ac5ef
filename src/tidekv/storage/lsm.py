"""LSM-tree engine: RocksDB through ``rocksdict`` in raw-bytes mode.

Durability
    Every write goes to RocksDB's write-ahead log (WAL) with a plain ``write()`` before
    it is acknowledged, so a *process* crash (kill -9) loses nothing that returned.
    ``sync=True`` sets ``WriteOptions.sync``: the WAL is fsynced before the call returns,
    so the write survives a power loss. :meth:`LSMEngine.sync` fsyncs the WAL
    (``flush_wal(sync=True)``), making every earlier write durable. An unsynced write
    may be lost by a power loss or OS crash; the WAL is replayed with the
    *point-in-time* recovery mode, which stops at the first damaged record, so what
    survives is a prefix of the acknowledged writes, and a write batch (one WAL record)
    is all or nothing.

Options (keyword arguments of :class:`LSMEngine`, all optional)
    ``block_cache_mb`` (64)
        LRU cache for uncompressed data, index and filter blocks. One cache per size in a
        process: every engine opened with the same ``block_cache_mb`` shares it, so a
        node hosting 64 shards (64 RocksDB instances) holds 64 MB of blocks, not 4 GB.
    ``write_buffer_mb`` (64)
        Memtable size; larger batches more writes per flush, costs memory.
    ``write_buffer_total_mb`` (0: no limit)
        A memory limit on the memtables of every engine of the process opened with the
        same value (one RocksDB ``WriteBufferManager`` per value, no write stall): past
        it, the memtable being written to is flushed early. For many small instances.
    ``max_open_files`` (-1: no limit)
        Table files RocksDB keeps open (its table cache); ``-1`` opens every file at once
        and keeps it open. A bound keeps the file descriptors of many instances in check.
    ``bloom_bits`` (10)
        Bits per key of the full (not block-based) bloom filter in each table file,
        about 1% false positives: a ``get`` of an absent key rarely reads a data block.
        ``0`` disables the filter.
    ``compression`` ("lz4")
        ``"lz4"``, ``"zstd"``, ``"snappy"`` or ``"none"``. LZ4 costs little CPU for a
        useful size reduction on text-like values. When the RocksDB build lacks the
        codec the engine falls back to no compression (see :attr:`compression`).
    ``background_jobs`` (2)
        Flush and compaction threads (this project's machines have few cores).
    ``memtable_bloom`` (0.02)
        Size of a whole-key bloom filter in each memtable, as a fraction of
        ``write_buffer_mb``, so the get of an absent key does not search the memtable;
        ``0`` disables it.

Scans use one RocksDB iterator (an implicit snapshot) per call: forward scans ``seek``
to ``start`` and stop at ``end`` through ``iterate_upper_bound``; reverse scans start
at the last key below ``end`` and stop at ``start``. Pairs are produced lazily, so a
``limit`` or an early ``break`` reads only what is used. A scan sees the data as of
the moment it started (writes made while it runs are not seen).

Keyspaces are RocksDB column families (the default keyspace is RocksDB's ``default``
family); every family uses the engine's options and shares its block cache, and
:meth:`LSMEngine.write_batch_multi` is one RocksDB ``WriteBatch`` across families, so it
is one WAL record: all or nothing.

Thread safety: RocksDB is safe for concurrent use; the engine adds a lock only around
opening/closing and the bookkeeping of live iterators (closing drops them so the
database files are released and the engine can be reopened in the same process).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, cast

from rocksdict import (
    BlockBasedOptions,
    Cache,
    Checkpoint,
    DbClosedError,
    DBCompressionType,
    DBRecoveryMode,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteBufferManager,
    WriteOptions,
)

from tidekv.errors import CorruptionError, InvalidInput, StorageError, StoreClosed
from tidekv.storage.base import (
    DEFAULT_KEYSPACE,
    Engine,
    EngineSnapshot,
    Keyspace,
    KsOp,
    Op,
    Triple,
)

_DEFAULTS: dict[str, Any] = {
    "block_cache_mb": 64,
    "write_buffer_mb": 64,
    "bloom_bits": 10,
    "compression": "lz4",
    "background_jobs": 2,
    "memtable_bloom": 0.02,
    "write_buffer_total_mb": 0,
    "max_open_files": -1,
}

_Pairs = Iterator[tuple[bytes, bytes]]

_COMPRESSION = {
    "lz4": DBCompressionType.lz4,
    "zstd": DBCompressionType.zstd,
    "snappy": DBCompressionType.snappy,
    "none": DBCompressionType.none,
}


_shared_lock = threading.Lock()
_caches: dict[int, Cache] = {}
_write_buffers: dict[int, WriteBufferManager] = {}


def _shared_cache(mb: int) -> Cache:
    """The process's block cache of ``mb`` MB (one per size, shared by its engines)."""
    with _shared_lock:
        cache = _caches.get(mb)
        if cache is None:
            cache = _caches[mb] = Cache(mb << 20)
        return cache


def _shared_write_buffer(mb: int) -> WriteBufferManager:
    """The process's memtable limit of ``mb`` MB (one per size, shared by its engines)."""
    with _shared_lock:
        wbm = _write_buffers.get(mb)
        if wbm is None:
            wbm = _write_buffers[mb] = WriteBufferManager(mb << 20, False)
        return wbm


def _storage_error(exc: Exception, what: str) -> StorageError:
    """Convert a RocksDB error into the tidekv error tree."""
    message = str(exc)
    if "Corruption" in message:
        return CorruptionError(f"rocksdb {what}: {message}", engine="lsm")
    return StorageError(f"rocksdb {what}: {message}", engine="lsm")


class _LiveIter:
    """Holds one RocksDB iterator; :meth:`LSMEngine.close` empties it to release the DB.

    It also keeps the iterator's ``ReadOptions`` alive: the RocksDB iterator points into
    the bound stored there (dropping it early makes ``iterate_upper_bound`` garbage).
    """

    __slots__ = ("it", "read_opt")

    def __init__(self, it: _Pairs, read_opt: ReadOptions) -> None:
        self.it: _Pairs | None = it
        self.read_opt: ReadOptions | None = read_opt

    def release(self) -> None:
        self.it = None  # the iterator first: it refers to read_opt
        self.read_opt = None


_RELEASED = object()  # the handle of a family whose engine closed
_VIEW_SUFFIX = ".view-"  # <path>.view-<id>: the checkpoint behind a snapshot_iter


class LSMKeyspace(Keyspace):
    """A column family: reads go to its ``Rdict`` view, writes carry its handle."""

    __slots__ = ("cf", "handle")

    def __init__(self, engine: LSMEngine, name: str, cf: Rdict, handle: Any) -> None:
        super().__init__(engine, name)
        self.cf: Rdict | None = cf
        self.handle: Any = handle

    def raw_key(self, key: bytes) -> bytes:
        raise TypeError("a column family has no raw keys in the default keyspace")

    def release(self) -> None:
        # not None: that would name the default family in a batch
        cf, self.cf, self.handle = self.cf, None, _RELEASED
        if cf is not None:
            cf.close()

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self.cf.get(key)  # type: ignore[union-attr]
        except Exception as exc:
            raise self.engine._fail(exc, "get") from exc  # type: ignore[attr-defined]
        return value

    def multi_get(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        try:
            return cast(list[bytes | None], self.cf.get(list(keys)))  # type: ignore[union-attr]
        except Exception as exc:
            raise self.engine._fail(exc, "multi_get") from exc  # type: ignore[attr-defined]

    def scan(
        self,
        start: bytes = b"",
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        engine = cast(LSMEngine, self.engine)
        engine._check()
        if self.cf is None:
            raise StoreClosed("engine is closed", engine="lsm")
        return engine._scan_db(self.cf, start, end, reverse, limit)


class LSMEngine(Engine):
    """RocksDB (LSM-tree) engine. ``path`` is the database directory."""

    name = "lsm"
    native_keyspaces = True

    def __init__(self, path: str | None, **options: Any) -> None:
        super().__init__(path, **options)
        if path is None:
            raise InvalidInput("the lsm engine needs a directory path", engine="lsm")
        unknown = set(options) - set(_DEFAULTS)
        if unknown:
            raise InvalidInput(
                f"unknown lsm engine options: {', '.join(sorted(unknown))}", engine="lsm"
            )
        opts = {**_DEFAULTS, **options}
        if opts["compression"] not in _COMPRESSION:
            raise InvalidInput(
                f"unknown compression {opts['compression']!r}; "
                f"choose one of {', '.join(sorted(_COMPRESSION))}",
                engine="lsm",
            )
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(glob.escape(path) + _VIEW_SUFFIX + "*"):
            shutil.rmtree(stale, ignore_errors=True)  # views of a process that died
        self._lock = threading.Lock()
        self._live: dict[int, _LiveIter] = {}
        self._closed = False
        #: the compression actually in use (falls back to "none" if not compiled in)
        self.compression: str = opts["compression"]
        try:
            self._db = self._open_db(path, self._options(opts, self.compression))
        except Exception as exc:  # rocksdict raises plain Exception for RocksDB status
            if self.compression != "none" and "ompression" in str(exc):
                self.compression = "none"
                try:
                    self._db = self._open_db(path, self._options(opts, "none"))
                except Exception as exc2:
                    raise _storage_error(exc2, "open") from exc2
            else:
                raise _storage_error(exc, "open") from exc
        self._wo_sync = WriteOptions()
        self._wo_sync.sync = True
        self._wo_nosync = WriteOptions()
        self._wo_nosync.sync = False

    def _open_db(self, path: str, options: Options) -> Rdict:
        """Open the database with every column family it has."""
        self._cf_options = options
        families: list[str] = []
        if os.path.exists(os.path.join(path, "CURRENT")):
            families = [n for n in Rdict.list_cf(path, options) if n != DEFAULT_KEYSPACE]
        if not families:
            return Rdict(path, options)
        return Rdict(path, options, column_families={n: options for n in families})

    def _open_keyspace(self, name: str) -> Keyspace:
        with self._lock:
            self._check()
            try:
                if name in Rdict.list_cf(self._db_path(), self._cf_options):
                    cf = self._db.get_column_family(name)
                else:
                    cf = self._db.create_column_family(name, self._cf_options)
                handle = self._db.get_column_family_handle(name)
            except Exception as exc:
                raise self._fail(exc, "create_column_family") from exc
        return LSMKeyspace(self, name, cf, handle)

    def _db_path(self) -> str:
        assert self.path is not None
        return self.path

    def keyspaces(self) -> list[str]:
        self._check()
        try:
            names = Rdict.list_cf(self._db_path(), self._cf_options)
        except Exception as exc:
            raise self._fail(exc, "list_cf") from exc
        return [DEFAULT_KEYSPACE, *sorted(n for n in names if n != DEFAULT_KEYSPACE)]

    def write_batch_multi(self, ops: Iterable[KsOp], *, sync: bool = False) -> None:
        """One ``WriteBatch`` across column families (the store's write hot path: one
        Python call per operation)."""
        self._check()
        batch = WriteBatch(raw_mode=True)
        put, delete = batch.put, batch.delete
        try:
            for ks, key, value in ops:  # an error here leaves the database untouched
                if value is None:
                    delete(key, ks.handle)
                else:
                    put(key, value, ks.handle)
        except TypeError:
            if self._closed:  # a released family's handle is not a ColumnFamily
                raise StoreClosed("engine is closed", engine="lsm") from None
            raise
        try:
            self._db.write(batch, self._wo_sync if sync else self._wo_nosync)
        except Exception as exc:
            raise self._fail(exc, "write_batch") from exc

    def batch_writer(self) -> Callable[[Sequence[KsOp], bool], None]:
        """:meth:`write_batch_multi` with what it needs bound once: the store's write
        hot path (a closed engine is found by RocksDB, not checked before)."""
        db, wb = self._db, WriteBatch
        options = (self._wo_nosync, self._wo_sync)
        fail = self._fail

        def write(ops: Sequence[KsOp], sync: bool) -> None:
            batch = wb(raw_mode=True)
            put = batch.put
            try:
                for ks, key, value in ops:
                    if value is None:
                        batch.delete(key, ks.handle)
                    else:
                        put(key, value, ks.handle)
                db.write(batch, options[sync])
            except TypeError:
                if self._closed:  # a released family's handle is not a ColumnFamily
                    raise StoreClosed("engine is closed", engine="lsm") from None
                raise
            except Exception as exc:
                raise fail(exc, "write_batch") from exc

        return write

    def pair_writer(
        self, first: Keyspace, second: Keyspace
    ) -> Callable[[bytes, bytes, bytes, bytes, bool], None]:
        """One ``WriteBatch`` of two puts with no list of ops to walk (the store's put
        of a new key). The families' handles are read per call, never kept: a kept
        handle would hold the database open after :meth:`close`."""
        db, wb = self._db, WriteBatch
        options = (self._wo_nosync, self._wo_sync)
        fail = self._fail
        a, b = cast(LSMKeyspace, first), cast(LSMKeyspace, second)

        def pair(k1: bytes, v1: bytes, k2: bytes, v2: bytes, sync: bool) -> None:
            batch = wb(True)  # raw mode (positional: cheaper than the keyword)
            try:
                batch.put(k1, v1, a.handle)
                batch.put(k2, v2, b.handle)
                db.write(batch, options[sync])
            except TypeError:
                if self._closed:  # a released family's handle is not a ColumnFamily
                    raise StoreClosed("engine is closed", engine="lsm") from None
                raise
            except Exception as exc:
                raise fail(exc, "write_batch") from exc

        return pair

    @staticmethod
    def _options(opts: dict[str, Any], compression: str) -> Options:
        o = Options(raw_mode=True)
        o.create_if_missing(True)
        o.set_wal_recovery_mode(DBRecoveryMode.point_in_time())
        o.set_max_background_jobs(int(opts["background_jobs"]))
        o.set_write_buffer_size(int(opts["write_buffer_mb"]) << 20)
        o.set_compression_type(_COMPRESSION[compression]())
        o.set_keep_log_file_num(3)
        o.set_max_open_files(int(opts["max_open_files"]))
        if opts["write_buffer_total_mb"]:
            o.set_write_buffer_manager(_shared_write_buffer(int(opts["write_buffer_total_mb"])))
        if opts["memtable_bloom"]:
            # a whole-key bloom filter in each memtable: the get of an absent key (the
            # store reads a key record before every write) skips the skiplist search
            o.set_memtable_prefix_bloom_ratio(float(opts["memtable_bloom"]))
            o.set_memtable_whole_key_filtering(True)
        table = BlockBasedOptions()
        table.set_block_cache(_shared_cache(int(opts["block_cache_mb"])))
        if opts["bloom_bits"]:
            table.set_bloom_filter(int(opts["bloom_bits"]), False)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        o.set_block_based_table_factory(table)
        return o

    # -- helpers -------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise StoreClosed("engine is closed", engine="lsm")

    def _fail(self, exc: Exception, what: str) -> Exception:
        if isinstance(exc, DbClosedError) or self._closed:
            return StoreClosed("engine is closed", engine="lsm")
        return _storage_error(exc, what)

    # -- reads ---------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        self._check()
        try:
            value: bytes | None = self._db.get(key)
        except Exception as exc:
            raise self._fail(exc, "get") from exc
        return value

    def multi_get(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """All values through RocksDB's native MultiGet (one consistent view)."""
        self._check()
        if not keys:
            return []
        try:
            values = cast(list[bytes | None], self._db.get(list(keys)))
        except Exception as exc:
            raise self._fail(exc, "multi_get") from exc
        return values

    def scan(
        self,
        start: bytes = b"",
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check()
        return self._scan_db(self._db, start, end, reverse, limit)

    def _scan_db(
        self, db: Rdict, start: bytes, end: bytes | None, reverse: bool, limit: int | None
    ) -> Iterator[tuple[bytes, bytes]]:
        if (end is not None and start >= end) or (limit is not None and limit <= 0):
            return iter(())
        read_opt = ReadOptions()
        if end is not None:
            read_opt.set_iterate_upper_bound(end)
        # NB: rocksdict 0.3.x's set_iterate_lower_bound sets the *upper* bound, so
        # the lower bound is enforced here instead (seek forward, stop going back).
        try:
            it: Iterator[tuple[bytes, bytes]]
            if reverse:
                it = cast(_Pairs, db.items(backwards=True, read_opt=read_opt))
                if start:
                    it = itertools.takewhile((start,).__le__, it)
            else:
                it = cast(_Pairs, db.items(from_key=start, read_opt=read_opt))
        except Exception as exc:
            raise self._fail(exc, "scan") from exc
        if limit is not None:
            it = itertools.islice(it, limit)
        live = _LiveIter(it, read_opt)
        with self._lock:
            self._check()
            self._live[id(live)] = live
        return self._drain(live)

    def _next(self, live: _LiveIter) -> tuple[bytes, bytes] | None:
        it = live.it
        if it is None:
            raise StoreClosed("engine closed during a scan", engine="lsm")
        try:
            return next(it, None)
        except Exception as exc:
            raise self._fail(exc, "scan") from exc

    def _drain(self, live: _LiveIter) -> Iterator[tuple[bytes, bytes]]:
        # The RocksDB iterator is reached only through ``live`` (never a local of this
        # suspended frame), so close() can drop it and release the database.
        try:
            while (pair := self._next(live)) is not None:
                yield pair
        finally:
            live.release()
            with self._lock:
                self._live.pop(id(live), None)

    def snapshot_iter(self) -> EngineSnapshot:
        """A RocksDB checkpoint (hard links to the immutable table files plus a copy of
        the live WAL: every column family at one sequence number) in ``<path>.view-<id>``,
        opened as an engine of its own and scanned lazily; released by deleting it.

        (``Rdict.snapshot()`` would need no files, but its iterators in rocksdict 0.3.29
        ignore the snapshot and read the latest data.)
        """
        self._check()
        where = self._db_path() + _VIEW_SUFFIX + uuid.uuid4().hex
        try:
            Checkpoint(self._db).create_checkpoint(where)
        except Exception as exc:
            shutil.rmtree(where, ignore_errors=True)
            raise self._fail(exc, "checkpoint") from exc
        try:
            view = LSMEngine(where, block_cache_mb=1, write_buffer_mb=1, background_jobs=1)
        except BaseException:
            shutil.rmtree(where, ignore_errors=True)
            raise
        names = view.keyspaces()

        def triples() -> Iterator[Triple]:
            for name in names:
                for k, v in view.keyspace(name).scan():
                    yield name, k, v

        def release() -> None:
            try:
                view.close()
            finally:
                shutil.rmtree(where, ignore_errors=True)

        return EngineSnapshot(names, triples(), release)

    # -- writes --------------------------------------------------------------------

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        self._check()
        try:
            self._db.put(key, value, self._wo_sync if sync else self._wo_nosync)
        except Exception as exc:
            raise self._fail(exc, "put") from exc

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        self._check()
        try:
            self._db.delete(key, self._wo_sync if sync else self._wo_nosync)
        except Exception as exc:
            raise self._fail(exc, "delete") from exc

    def write_batch(self, ops: Iterable[Op], *, sync: bool = False) -> None:
        self._check()
        batch = WriteBatch(raw_mode=True)
        for key, value in ops:  # an error here leaves the database untouched
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self._check()
        try:
            self._db.write(batch, self._wo_sync if sync else self._wo_nosync)
        except Exception as exc:
            raise self._fail(exc, "write_batch") from exc

    def sync(self) -> None:
        self._check()
        try:
            self._db.flush_wal(True)
        except Exception as exc:
            raise self._fail(exc, "sync") from exc

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for live in self._live.values():
                live.release()  # drop the iterators: they keep the DB (and its lock) alive
            self._live.clear()
            for ks in self._keyspaces.values():
                if isinstance(ks, LSMKeyspace):
                    ks.release()  # the family handles keep the DB (and its lock) alive too
        try:
            self._db.flush_wal(True)
        except Exception as exc:
            if not isinstance(exc, DbClosedError):
                raise _storage_error(exc, "close") from exc
        finally:
            self._db.close()

    @property
    def closed(self) -> bool:
        return self._closed
