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
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Self

Op = tuple[bytes, bytes | None]
"""One write-batch operation: ``(key, value)``, ``value is None`` deletes ``key``."""


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


class Engine(ABC):
    """A durable ordered key-value map."""

    #: short name of the engine kind ("lsm", "btree", "hash", "memory")
    name: str = ""

    def __init__(self, path: str | None, **options: Any) -> None:
        self.path = path
        self.options = options

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

    def stats(self) -> dict[str, int]:
        """Engine-specific counters (sizes, live keys, ...); empty when it has none."""
        return {}

    def compact(self) -> None:  # noqa: B027 - a no-op default, not abstract
        """Reclaim space held by overwritten and deleted records (no-op by default)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
