"""Raft snapshots of a replica's engine carry every keyspace (node/snapshot.py).

Real engines: a store is written on one engine, dumped, and restored onto another engine
that holds other data; the restored engine must then hold exactly the source's records in
every keyspace (nothing stale left behind) and open as the same store.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from tidekv.errors import CorruptionError
from tidekv.node.snapshot import (
    SNAPSHOT_META_KEY,
    dump_engine,
    restore_engine,
    stored_snapshot_meta,
)
from tidekv.raft import ConfState, SnapshotMeta
from tidekv.statemachine import KEYS_KEYSPACE
from tidekv.storage import DEFAULT_KEYSPACE, Engine, open_engine
from tidekv.store import Store

ENGINES = ["lsm", "btree", "hash", "memory"]
META = SnapshotMeta(index=7, term=2, conf=ConfState(voters=frozenset({1, 2, 3})))


def _open(name: str, path: Path) -> Engine:
    return open_engine(name, None if name == "memory" else str(path))


def _contents(engine: Engine) -> dict[str, dict[bytes, bytes]]:
    return {
        name: {k: v for k, v in engine.keyspace(name).scan() if k != SNAPSHOT_META_KEY}
        for name in engine.keyspaces()
    }


@pytest.mark.parametrize("name", ENGINES)
def test_a_snapshot_carries_every_keyspace_and_replaces_the_target(
    name: str, tmp_path: Path
) -> None:
    src = _open(name, tmp_path / "src")
    store = Store(src, origin="site-a", sync=False)
    for i in range(20):
        store.put(f"k{i:02}", f"v{i}".encode())
    store.delete("k03")
    src.keyspace("extra").put(b"x", b"1")
    data = dump_engine(src)
    want = _contents(src)
    assert want[KEYS_KEYSPACE] and want["extra"] == {b"x": b"1"}

    dst = _open(name, tmp_path / "dst")
    Store(dst, origin="site-b", sync=False).put("stale", b"old")
    dst.keyspace("leftover").put(b"y", b"2")
    restore_engine(dst, data, META)

    got = _contents(dst)
    assert got.pop("leftover") == {}  # emptied: the snapshot has no such keyspace
    assert got == want
    assert stored_snapshot_meta(dst) == META
    restored = Store(dst, sync=False)
    assert restored.origin == "site-a"
    assert restored.get("k05").value == b"v5"
    assert [i.key for i in restored.scan()] == [f"k{i:02}" for i in range(20) if i != 3]
    assert restored.verify() == store.verify()
    src.close()
    dst.close()


def test_a_format_1_snapshot_still_installs(tmp_path: Path) -> None:
    dst = _open("lsm", tmp_path / "dst")
    dst.keyspace(KEYS_KEYSPACE).put(b"stale", b"1")
    dst.put(b"Mold", b"1")
    data = msgspec.msgpack.encode([1, [[b"Morigin", b"site-a"], [b"Kk", b"rec"]]])
    restore_engine(dst, data, META)
    assert _contents(dst) == {
        DEFAULT_KEYSPACE: {b"Morigin": b"site-a", b"Kk": b"rec"},
        KEYS_KEYSPACE: {},
    }
    dst.close()


@pytest.mark.parametrize(
    "blob",
    [b"\xc1", msgspec.msgpack.encode([3, []]), msgspec.msgpack.encode([2, [["Bad-Name", []]]])],
)
def test_a_bad_snapshot_is_refused_and_changes_nothing(blob: bytes, tmp_path: Path) -> None:
    dst = _open("lsm", tmp_path / "dst")
    dst.put(b"a", b"1")
    with pytest.raises(CorruptionError):
        restore_engine(dst, blob, META)
    assert _contents(dst) == {DEFAULT_KEYSPACE: {b"a": b"1"}}
    dst.close()
