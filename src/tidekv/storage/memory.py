"""In-memory engine: a sorted map for tests and the deterministic simulator.

Not durable: a new ``MemoryEngine`` starts empty (reopen on the same object keeps data
only through :meth:`MemoryEngine.reopen`, which hands the map to the new instance).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tidekv.errors import StoreClosed
from tidekv.storage.base import Engine, Op


class MemoryEngine(Engine):
    name = "memory"

    def __init__(self, path: str | None = None, **options: Any) -> None:
        super().__init__(path, **options)
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []  # sorted
        self._lock = threading.RLock()
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise StoreClosed("engine is closed")

    def get(self, key: bytes) -> bytes | None:
        self._check()
        return self._data.get(key)

    def _put(self, key: bytes, value: bytes) -> None:
        if key not in self._data:
            bisect.insort(self._keys, key)
        self._data[key] = value

    def _del(self, key: bytes) -> None:
        if key in self._data:
            del self._data[key]
            i = bisect.bisect_left(self._keys, key)
            del self._keys[i]

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        with self._lock:
            self._check()
            self._put(bytes(key), bytes(value))

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        with self._lock:
            self._check()
            self._del(key)

    def write_batch(self, ops: Iterable[Op], *, sync: bool = False) -> None:
        ops = list(ops)
        with self._lock:
            self._check()
            for key, value in ops:
                if value is None:
                    self._del(key)
                else:
                    self._put(bytes(key), bytes(value))

    def scan(
        self,
        start: bytes = b"",
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check()
        with self._lock:
            lo = bisect.bisect_left(self._keys, start)
            hi = len(self._keys) if end is None else bisect.bisect_left(self._keys, end)
            keys = self._keys[lo:hi]
            if reverse:
                keys.reverse()
            if limit is not None:
                keys = keys[:limit]
            pairs = [(k, self._data[k]) for k in keys]
        return iter(pairs)

    def _raw_snapshot(self) -> tuple[Iterator[tuple[bytes, bytes]], Callable[[], None]]:
        """A copy of the key list and the map (references to the same bytes objects)."""
        with self._lock:
            self._check()
            keys = list(self._keys)
            data = dict(self._data)
        return ((k, data[k]) for k in keys), keys.clear

    def sync(self) -> None:
        self._check()

    def close(self) -> None:
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def reopen(self) -> Engine:
        """A new engine holding the same data (what survives a clean restart)."""
        self._closed = True
        new = MemoryEngine(self.path, **self.options)
        new._data = self._data
        new._keys = self._keys
        return new
