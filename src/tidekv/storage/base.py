"""The storage engine interface: one small ABC that every engine implements.

Keys and values are ``bytes``. Keys are ordered by plain byte comparison (memcmp),
so prefix and range scans return keys in the same order on every engine.

A write batch is a sequence of ``(key, value)`` pairs where ``value is None`` means
delete. It is applied all or nothing: after a crash either every operation of the
batch is visible or none is. Within one batch, a later operation on the same key wins.

Durability: ``put``/``delete``/``write_batch`` take ``sync``; with ``sync=True`` the
call returns only once the change survives a power loss (fsync or equivalent).
``sync()`` makes every earlier write durable. Writes without sync may be lost by a
crash, but never torn: an engine reopens to a state that is a prefix of the writes
it acknowledged (a batch is one unit in that prefix).

Readers: a single ``get`` sees a value from before or after a concurrent batch, never a
torn value. ``scan`` and ``multi_get`` are NOT snapshots: while a batch is being
written, a scan may see some of its keys and not others (the embedded store never
relies on this: every cross-record invariant it keeps is per key record, and version
records are immutable).

Keyspaces: an engine holds several named, independent ordered maps. ``engine.keyspace(
name)`` opens (creating on first use, durably) the keyspace ``name`` and returns a
:class:`Keyspace` with its own ``get``/``multi_get``/``put``/``delete``/``scan``; the
plain engine methods work on the default keyspace (:data:`DEFAULT_KEYSPACE`).
:meth:`Engine.write_batch_multi` applies operations on several keyspaces in ONE atomic
batch, with the same guarantees as ``write_batch``. The ``lsm`` engine maps a keyspace
to a RocksDB column family (its own memtables, files and bloom filters). The other
engines store a named keyspace inside the default one, under keys that start with
:data:`RESERVED_PREFIX` (``0xff 0xff 0xfe``): on those engines default-keyspace keys
from that prefix up are reserved (``engine.keyspace(DEFAULT_KEYSPACE).scan`` stops
before them; the plain ``engine.scan`` does not).
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Self

from tidekv.errors import InvalidInput

Op = tuple[bytes, bytes | None]
"""One write-batch operation: ``(key, value)``, ``value is None`` deletes ``key``."""

KsOp = tuple["Keyspace", bytes, bytes | None]
"""One cross-keyspace batch operation: ``(keyspace, key, value)``."""

DEFAULT_KEYSPACE = "default"
"""The keyspace that the plain engine methods read and write."""

RESERVED_PREFIX = b"\xff\xff\xfe"
"""Where engines without native keyspaces keep the named ones (in the default keyspace)."""

_NAMES = RESERVED_PREFIX + b"\x00"  # + name -> b"1": the keyspaces created
_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")


def check_keyspace_name(name: str) -> str:
    """``name`` when it is a valid keyspace name (``[a-z][a-z0-9_]*``, at most 32)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidInput(
            f"invalid keyspace name {name!r}: use 1-32 of a-z, 0-9, _ (a letter first)"
        )
    return name


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key that starts with ``prefix``.

    ``None`` when no such key exists (the prefix is empty or all ``0xff``).
    """
    p = bytearray(prefix)
    while p:
        if p[-1] != 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return None


class Keyspace:
    """One named keyspace of an engine: an ordered map of its own.

    This base implementation stores the keyspace inside the engine's default keyspace
    under ``RESERVED_PREFIX + name + 0x00`` (engines with native keyspaces subclass it).
    """

    __slots__ = ("_n", "_prefix", "engine", "name")

    #: what an engine's batch needs to address the keyspace (``None``: the default one)
    handle: Any = None

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self._prefix = RESERVED_PREFIX + name.encode() + b"\x00"
        self._n = len(self._prefix)

    def raw_key(self, key: bytes) -> bytes:
        """The default-keyspace key that holds ``key`` of this keyspace."""
        return self._prefix + key

    def get(self, key: bytes) -> bytes | None:
        return self.engine.get(self._prefix + key)

    def getter(self) -> Callable[[bytes], bytes | None]:
        """:meth:`get` as a plain callable, for a hot path that looks it up once
        (engines may return a faster one with the same errors)."""
        return self.get

    def multi_get(self, keys: Sequence[bytes]) -> list[bytes | None]:
        p = self._prefix
        return self.engine.multi_get([p + k for k in keys])

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        self.engine.write_batch_multi([(self, key, value)], sync=sync)

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        self.engine.write_batch_multi([(self, key, None)], sync=sync)

    def scan(
        self,
        start: bytes = b"",
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs of this keyspace with ``start <= key < end`` (see :meth:`Engine.scan`)."""
        p, n = self._prefix, self._n
        hi = prefix_end(p) if end is None else p + end
        pairs = self.engine.scan(p + start, hi, reverse=reverse, limit=limit)
        return ((k[n:], v) for k, v in pairs)

    def scan_prefix(
        self, prefix: bytes, *, reverse: bool = False, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        return self.scan(prefix, prefix_end(prefix), reverse=reverse, limit=limit)


class DefaultKeyspace(Keyspace):
    """The default keyspace as a :class:`Keyspace` (its scans stop before the
    reserved prefix on engines without native keyspaces)."""

    __slots__ = ()

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, DEFAULT_KEYSPACE)

    def raw_key(self, key: bytes) -> bytes:
        return key

    def get(self, key: bytes) -> bytes | None:
        return self.engine.get(key)

    def multi_get(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return self.engine.multi_get(keys)

    def scan(
        self,
        start: bytes = b"",
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        if not self.engine.native_keyspaces and (end is None or end > RESERVED_PREFIX):
            end = RESERVED_PREFIX
        return self.engine.scan(start, end, reverse=reverse, limit=limit)


Triple = tuple[str, bytes, bytes]
"""One record of an :class:`EngineSnapshot`: ``(keyspace, key, value)``."""


class EngineSnapshot:
    """A consistent point-in-time view of every keyspace of an engine, read lazily.

    Iterating yields ``(keyspace, key, value)`` for every record of every keyspace as it
    was when :meth:`Engine.snapshot_iter` returned, keyspace by keyspace (key order
    within each); writes made to the engine afterwards are not seen. ``keyspaces`` is the
    keyspaces that existed then (``"default"`` first), empty ones included. Iterate it
    once; :meth:`close` releases what holds the view (a RocksDB checkpoint, an LMDB read
    transaction, ...) and is safe to call twice. May be iterated from another thread
    than the one that made it, one thread at a time.
    """

    __slots__ = ("_it", "_release", "keyspaces")

    def __init__(
        self, keyspaces: list[str], triples: Iterator[Triple], release: Callable[[], None]
    ) -> None:
        self.keyspaces = keyspaces
        self._it = triples
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[Triple]:
        return self._it

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            self._it = iter(())
            release()

    @property
    def closed(self) -> bool:
        return self._release is None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def logical_triples(pairs: Iterable[tuple[bytes, bytes]]) -> Iterator[Triple]:
    """Raw default-keyspace pairs of an engine without native keyspaces -> triples
    (a named keyspace's records are under ``RESERVED_PREFIX + name + 0x00``; the
    keyspace markers are skipped)."""
    n = len(RESERVED_PREFIX)
    for k, v in pairs:
        if not k.startswith(RESERVED_PREFIX):
            yield DEFAULT_KEYSPACE, k, v
            continue
        if k.startswith(_NAMES):
            continue
        name, sep, key = k[n:].partition(b"\x00")
        if sep:
            yield name.decode(), key, v


class Engine(ABC):
    """A durable ordered key-value map."""

    #: short name of the engine kind ("lsm", "btree", "hash", "memory")
    name: str = ""
    #: True when the engine keeps keyspaces apart itself (no reserved prefix)
    native_keyspaces: bool = False

    def __init__(self, path: str | None, **options: Any) -> None:
        self.path = path
        self.options = options
        self._keyspaces: dict[str, Keyspace] = {}
        self._keyspaces_lock = threading.Lock()  # one object (and creation) per name

    # -- keyspaces -----------------------------------------------------------------

    def keyspace(self, name: str) -> Keyspace:
        """The keyspace ``name``, created (durably) when it does not exist yet."""
        ks = self._keyspaces.get(name)
        if ks is None:
            with self._keyspaces_lock:
                ks = self._keyspaces.get(name)
                if ks is None:
                    if name == DEFAULT_KEYSPACE:
                        ks = DefaultKeyspace(self)
                    else:
                        ks = self._open_keyspace(check_keyspace_name(name))
                    self._keyspaces[name] = ks
        return ks

    def _open_keyspace(self, name: str) -> Keyspace:
        marker = _NAMES + name.encode()
        if self.get(marker) is None:
            self.put(marker, b"1", sync=True)
        return Keyspace(self, name)

    def keyspaces(self) -> list[str]:
        """The names of every keyspace that exists, the default one first."""
        names = [k[len(_NAMES) :].decode() for k, _v in self.scan_prefix(_NAMES)]
        return [DEFAULT_KEYSPACE, *sorted(names)]

    def batch_writer(self) -> Callable[[Sequence[KsOp], bool], None]:
        """``writer(ops, sync)``: :meth:`write_batch_multi` as a plain callable, for a
        hot path that looks it up once (engines may return a faster one)."""
        write = self.write_batch_multi
        return lambda ops, sync: write(ops, sync=sync)

    def pair_writer(
        self, first: Keyspace, second: Keyspace
    ) -> Callable[[bytes, bytes, bytes, bytes, bool], None]:
        """``writer(k1, v1, k2, v2, sync)``: one atomic batch of two puts, ``k1`` in
        ``first``, then ``k2`` in ``second`` (the store's put of a new key; engines may
        return a faster one)."""
        write = self.batch_writer()

        def pair(k1: bytes, v1: bytes, k2: bytes, v2: bytes, sync: bool) -> None:
            write(((first, k1, v1), (second, k2, v2)), sync)

        return pair

    def write_batch_multi(self, ops: Iterable[KsOp], *, sync: bool = False) -> None:
        """Apply operations on several keyspaces atomically (all or nothing)."""
        self.write_batch([(ks.raw_key(key), value) for ks, key, value in ops], sync=sync)

    @abstractmethod
    def get(self, key: bytes) -> bytes | None:
        """The value of ``key`` or ``None`` when absent."""

    def multi_get(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Values of several keys, in order (engines may override with a faster path)."""
        return [self.get(k) for k in keys]

    @abstractmethod
    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        """Set ``key`` to ``value``."""

    @abstractmethod
    def delete(self, key: bytes, *, sync: bool = False) -> None:
        """Remove ``key`` (no error when absent)."""

    @abstractmethod
    def write_batch(self, ops: Iterable[Op], *, sync: bool = False) -> None:
        """Apply every operation atomically (all or nothing)."""

    @abstractmethod
    def scan(
        self,
        start: bytes = b"",
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs with ``start <= key < end`` (``end=None``: no upper bound) in key order,
        or in reverse key order with ``reverse=True``; at most ``limit`` pairs."""

    def scan_prefix(
        self, prefix: bytes, *, reverse: bool = False, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs whose key starts with ``prefix``, in key order (or reverse)."""
        return self.scan(prefix, prefix_end(prefix), reverse=reverse, limit=limit)

    @abstractmethod
    def sync(self) -> None:
        """Make every write so far durable."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release the engine; further calls raise :class:`StoreClosed`."""

    @property
    @abstractmethod
    def closed(self) -> bool:
        """True once :meth:`close` ran."""

    def reopen(self) -> Engine:
        """Close this engine and open a new one on the same path with the same options."""
        from tidekv.storage import open_engine

        if not self.closed:
            self.close()
        return open_engine(self.name, self.path, **self.options)

    def snapshot_iter(self) -> EngineSnapshot:
        """A consistent point-in-time view of every keyspace (see :class:`EngineSnapshot`).

        Memory does not grow with the engine's size on ``lsm`` and ``btree``; ``hash``
        copies its key directory (already in RAM), ``memory`` its key list.
        """
        keyspaces = self.keyspaces()
        pairs, release = self._raw_snapshot()
        return EngineSnapshot(keyspaces, logical_triples(pairs), release)

    def _raw_snapshot(self) -> tuple[Iterator[tuple[bytes, bytes]], Callable[[], None]]:
        """Engines without native keyspaces: every raw default-keyspace pair as of now,
        lazily, and the function that releases the view."""
        raise NotImplementedError(f"the {self.name} engine has no point-in-time view")

    def stats(self) -> dict[str, int]:
        """Engine-specific counters (sizes, live keys, ...); empty when it has none."""
        return {}

    def compact(self) -> None:  # noqa: B027 - a no-op default, not abstract
        """Reclaim space held by overwritten and deleted records (no-op by default)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
