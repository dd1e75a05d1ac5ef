"""The store's record layout (statemachine.py): a value is stored once, key records have
their own keyspace (format 3), format-1 and format-2 stores still read, and readers
without the write lock always find a version's value."""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import msgspec
import pytest

import tidekv
from tidekv.errors import CorruptionError
from tidekv.statemachine import (
    FORMAT_KEY,
    KEYS_KEYSPACE,
    D,
    K,
    V,
    WriteCommand,
    WriteResult,
    change_key,
    key_key,
    value_key,
    version_key,
)
from tidekv.storage import DEFAULT_KEYSPACE, open_engine
from tidekv.store import Store
from tidekv.versioning import HLCTimestamp, Version, make_version

from .conftest import FakeClock

_REV = struct.Struct(">Q")


def _vrec(store: Store, vid: str) -> list[object]:
    raw = store.engine.get(version_key(vid))
    assert raw is not None
    out = msgspec.msgpack.decode(raw)
    assert isinstance(out, list)
    return out


def test_a_value_is_stored_once_and_moves_when_superseded(store: Store) -> None:
    v1 = store.put("k", b"one")
    # while served, the value is inline in K only: not in V, no D record
    assert _vrec(store, v1.version)[-1] is None
    assert store.engine.get(value_key(v1.version)) is None
    v2 = store.put("k", b"two")
    # the change that stopped serving v1 moved its value to D, in the same batch
    assert store.engine.get(value_key(v1.version)) == b"one"
    assert _vrec(store, v2.version)[-1] is None
    assert store.get("k").value == b"two"
    assert store.get("k", version=v1.version).value == b"one"
    assert store.get("k", version=v2.version).value == b"two"
    # the digest (left out beside an inline value) is the value's, recomputed
    assert [vi.version.size for vi in store.history("k")] == [3, 3]
    for vi in store.history("k"):
        assert vi.version.recompute_id() == vi.version.id
    d = store.delete("k")
    assert store.engine.get(value_key(v2.version)) == b"two"
    assert store.engine.get(value_key(d.version)) is None  # a tombstone has no value
    assert store.verify() == {"keys": 1, "versions": 3, "revision": 3}


def _sibling(
    store: Store, base: WriteResult, value: bytes, later_ms: int, origin: str
) -> WriteResult:
    """A concurrent write on ``base`` (as replication applies one)."""
    cmd = WriteCommand(
        key=base.key,
        value=value,
        content_type="application/octet-stream",
        hlc=HLCTimestamp(base.hlc.wall + later_ms, 0),
        origin=origin,
        parents=(base.version,),
    )
    return store.sm.apply(cmd)


def test_a_sibling_that_is_not_served_keeps_its_value_in_v(store: Store) -> None:
    base = store.put("k", b"base")
    late = _sibling(store, base, b"late", 10_000, "site-b")
    early = _sibling(store, base, b"early", 5_000, "site-a")
    assert store.get("k").value == b"late"  # served: inline in K
    assert _vrec(store, late.version)[-1] is None
    assert _vrec(store, early.version)[-1] == b"early"  # lost: its value stays in V
    assert store.get("k", version=early.version).value == b"early"
    assert store.get("k", version=base.version).value == b"base"
    store.verify()


def _format1_store(engine_path: Path) -> tuple[list[Version], dict[str, bytes]]:
    """Write the records of a format-1 store (the layout before 2026-12) by hand."""
    eng = open_engine("lsm", str(engine_path))
    t = 1_763_800_000_000
    a1 = make_version("a", [], b"a-one", HLCTimestamp(t, 0), "old-site")
    a2 = make_version("a", [a1.id], b"a-two", HLCTimestamp(t + 1, 0), "old-site")
    b1 = make_version(
        "b", [], b'{"x":1}', HLCTimestamp(t + 2, 0), "old-site", content_type="application/json"
    )
    values = {a1.id: b"a-one", a2.id: b"a-two", b1.id: b'{"x":1}'}
    ops: list[tuple[bytes, bytes | None]] = [(b"Morigin", b"old-site")]
    for rev, v in enumerate([a1, a2, b1], start=1):
        ops.append((version_key(v.id), _REV.pack(rev) + v.encode()))
        ops.append((value_key(v.id), values[v.id]))
        clock = [v.hlc.wall, v.hlc.logical]
        ops.append((change_key(rev), msgspec.msgpack.encode([v.id, v.key, False, *clock])))
    for rev, v in [(2, a2), (3, b1)]:
        rec = [[v.id], v.id, rev, v.content_type, False, values[v.id], v.hlc.wall, 0]
        ops.append((key_key(v.key), msgspec.msgpack.encode(rec)))
    eng.write_batch(ops, sync=True)
    eng.close()
    return [a1, a2, b1], values


def test_a_format_1_store_opens_reads_and_takes_new_writes(
    tmp_path: Path, clock: FakeClock
) -> None:
    (a1, a2, b1), values = _format1_store(tmp_path / "data")
    (tmp_path / "tidekv.json").write_text('{"engine": "lsm", "format": 1}')
    with tidekv.open(str(tmp_path), clock=clock) as s:
        assert s.origin == "old-site"
        assert s.revision == 3
        assert s.get("a").value == b"a-two"
        assert s.get("a").version == a2.id
        assert s.get("b").json() == {"x": 1}
        assert s.get("a", version=a1.id).value == b"a-one"
        assert [vi.version for vi in s.history("a")] == [a2, a1]
        assert [(c.revision, c.key, c.version) for c in s.changes()] == [
            (1, "a", a1.id),
            (2, "a", a2.id),
            (3, "b", b1.id),
        ]
        assert s.verify() == {"keys": 2, "versions": 3, "revision": 3}
        new = s.put("a", b"a-three")  # format 2 on top of format 1
        assert new.parents == (a2.id,)
        assert new.revision == 4
        assert s.get("a", version=a2.id).value == values[a2.id]
        assert [vi.version.id for vi in s.history("a")] == [new.version, a2.id, a1.id]
        assert [c.version for c in s.changes(3)] == [new.version]
        assert s.verify() == {"keys": 2, "versions": 4, "revision": 4}
    with tidekv.open(str(tmp_path), clock=clock) as s:
        assert s.revision == 4 and s.get("a").value == b"a-three"
        assert s.sm.clock == new.hlc


def test_readers_without_the_lock_always_find_the_value(engine_name: str, tmp_path: Path) -> None:
    """A reader that sees version X as current must be able to read X's value, even
    while writers move it from K to D (the reader looks in K before D), also on engines
    that apply a batch op by op (the batch writes K last)."""
    s = tidekv.open(str(tmp_path), engine_name, sync=False)
    s.put("k", b"0")
    stop = threading.Event()
    errors: list[BaseException] = []
    checked = [0]

    def reader() -> None:
        try:
            while not stop.is_set():
                item = s.get("k")
                again = s.get("k", version=item.version)
                assert again.value == item.value, (item, again)
                checked[0] += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(1, 1500):
            s.put("k", str(i).encode())
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert checked[0] > 0
    assert s.verify()["versions"] == 1500
    s.close()


def test_engine_records_of_one_change(store: Store) -> None:
    """A fresh key is three records (K, V, C); replacing its value adds one D."""

    def tags() -> dict[bytes, int]:
        out: dict[bytes, int] = {}
        for k, _v in store.engine.keyspace(DEFAULT_KEYSPACE).scan():
            out[k[:1]] = out.get(k[:1], 0) + 1
        assert K not in out  # format 3: key records live in their own keyspace only
        out[K] = sum(1 for _ in store.engine.keyspace(KEYS_KEYSPACE).scan())
        return out

    before = tags()
    store.put("x", b"1")
    after = tags()
    assert {t: after.get(t, 0) - before.get(t, 0) for t in (K, V, D, b"C")} == {
        K: 1,
        V: 1,
        D: 0,
        b"C": 1,
    }
    store.put("x", b"2")
    again = tags()
    assert {t: again.get(t, 0) - after.get(t, 0) for t in (K, V, D, b"C")} == {
        K: 0,
        V: 1,
        D: 1,
        b"C": 1,
    }


def test_a_new_store_keeps_key_records_in_their_own_keyspace(
    engine_name: str, tmp_path: Path
) -> None:
    with tidekv.open(str(tmp_path), engine_name) as s:
        v = s.put("k", b"v")
        assert s.engine.get(FORMAT_KEY) == b"3"
        keys = s.engine.keyspace(KEYS_KEYSPACE)
        assert [k for k, _v in keys.scan()] == [b"k"]
        assert s.engine.get(key_key("k")) is None
        assert s.sm.key_record("k") is not None
        assert s.sm.key_record("k").version == v.version  # type: ignore[union-attr]
        assert KEYS_KEYSPACE in s.engine.keyspaces()


def _format2_store(path: Path, engine_name: str) -> list[WriteResult]:
    """A store in the format-2 layout: K records in the default keyspace, no M format
    (written with today's state machine forced to format 2, as the code before format 3
    wrote it: the records of formats 2 and 3 differ only in where K lives)."""
    from tidekv.statemachine import StateMachine

    eng = open_engine(engine_name, None if engine_name == "memory" else str(path))
    eng.put(b"Morigin", b"old-site", sync=True)  # data before the state machine opens
    sm = StateMachine(eng)
    assert sm.format == 2 and sm.kprefix == K
    out = []
    t = 1_763_800_000_000
    for i, (key, value) in enumerate([("a", b"a1"), ("b", b"b1"), ("a", b"a2")]):
        cmd = WriteCommand(
            key=key,
            value=value,
            content_type="application/octet-stream",
            hlc=HLCTimestamp(t + i, 0),
            origin="old-site",
        )
        out.append(sm.apply(cmd))
    assert eng.get(FORMAT_KEY) is None
    assert eng.get(key_key("a")) is not None
    eng.close()
    return out


def test_a_format_2_store_opens_reads_and_takes_new_writes(
    durable_engine: str, tmp_path: Path, clock: FakeClock
) -> None:
    a1, b1, a2 = _format2_store(tmp_path / "data", durable_engine)
    (tmp_path / "tidekv.json").write_text(f'{{"engine": "{durable_engine}", "format": 1}}')
    with tidekv.open(str(tmp_path), clock=clock) as s:
        assert s.sm.format == 2
        assert s.origin == "old-site" and s.revision == 3
        assert s.get("a").value == b"a2" and s.get("b").value == b"b1"
        assert s.get("a", version=a1.version).value == b"a1"
        assert [i.key for i in s.scan()] == ["a", "b"]
        assert [i.key for i in s.scan("b")] == ["b"]
        new = s.put("b", b"b2")
        assert new.parents == (b1.version,)
        assert s.verify() == {"keys": 2, "versions": 4, "revision": 4}
        # still format 2: nothing went to the keys keyspace, no format record
        assert s.engine.get(FORMAT_KEY) is None
        assert s.engine.get(key_key("b")) is not None
    with tidekv.open(str(tmp_path), clock=clock) as s:
        assert s.get("b").value == b"b2"
        assert [vi.version.id for vi in s.history("a")] == [a2.version, a1.version]


def test_an_unknown_store_format_is_refused(tmp_path: Path) -> None:
    with tidekv.open(str(tmp_path), "lsm") as s:
        s.put("k", b"v")
        s.engine.put(FORMAT_KEY, b"9", sync=True)
    with pytest.raises(CorruptionError, match="unknown store format"):
        tidekv.open(str(tmp_path))
