"""Pluggable storage engines behind one interface (:class:`tidekv.storage.base.Engine`).

==========  ==========================================  ===============================
name        what                                        module
==========  ==========================================  ===============================
``lsm``     LSM-tree: RocksDB through ``rocksdict``     :mod:`tidekv.storage.lsm`
``btree``   B+tree: LMDB through ``lmdb``               :mod:`tidekv.storage.btree`
``hash``    Bitcask-style log + in-memory key directory :mod:`tidekv.storage.hash`
``memory``  a sorted in-memory map (tests, simulation)  :mod:`tidekv.storage.memory`
==========  ==========================================  ===============================
"""

from __future__ import annotations

import importlib
from typing import Any

from tidekv.errors import InvalidInput
from tidekv.storage.base import (
    DEFAULT_KEYSPACE,
    Engine,
    EngineSnapshot,
    Keyspace,
    KsOp,
    Op,
    prefix_end,
)

#: engine name -> "module:class"
ENGINES: dict[str, str] = {
    "lsm": "tidekv.storage.lsm:LSMEngine",
    "btree": "tidekv.storage.btree:BTreeEngine",
    "hash": "tidekv.storage.hash:HashEngine",
    "memory": "tidekv.storage.memory:MemoryEngine",
}


def engine_class(name: str) -> type[Engine]:
    """The engine class registered under ``name``."""
    try:
        target = ENGINES[name]
    except KeyError:
        raise InvalidInput(
            f"unknown storage engine {name!r}; choose one of {', '.join(sorted(ENGINES))}",
            engine=name,
        ) from None
    module_name, _, cls_name = target.partition(":")
    cls: type[Engine] = getattr(importlib.import_module(module_name), cls_name)
    return cls


def open_engine(name: str, path: str | None, **options: Any) -> Engine:
    """Open (creating when needed) the engine ``name`` at directory ``path``.

    ``path`` may be ``None`` only for the ``memory`` engine.
    """
    return engine_class(name)(path, **options)


__all__ = [
    "DEFAULT_KEYSPACE",
    "ENGINES",
    "Engine",
    "EngineSnapshot",
    "Keyspace",
    "KsOp",
    "Op",
    "engine_class",
    "open_engine",
    "prefix_end",
]
