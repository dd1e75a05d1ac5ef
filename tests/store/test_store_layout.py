"""The store's record layout (statemachine.py): a version is stored once (whole in its
key record while served, in V from the change that stops K serving it: format 4), key
records have their own keyspace (format 3 on), format-1, 2 and 3 stores still read and
take writes in their own layout, and readers without the write lock always find a
version and its value."""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tidekv
from tidekv import statemachine
from tidekv.errors import CorruptionError, VersionNotFound
from tidekv.statemachine import (
    FORMAT_KEY,
    KEYS_KEYSPACE,
    D,
    K,
    StateMachine,
    V,
    WriteCommand,
    WriteResult,
    _py_new_key_records,
    change_key,
    key_key,
    value_key,
    verify,
    version_key,
)
from tidekv.storage import DEFAULT_KEYSPACE, Engine, open_engine
from tidekv.store import Store
from tidekv.versioning import HLCTimestamp, Version, id_tail, make_version

from .conftest import FakeClock

_REV = struct.Struct(">Q")


def _vrec(store: Store, vid: str) -> list[object]:
    raw = store.engine.get(version_key(vid))
    assert raw is not None
    out = msgspec.msgpack.decode(raw)
    assert isinstance(out, list)
    return out


def _no_vrec(store: Store, vid: str) -> bool:
    return store.engine.get(version_key(vid)) is None


def test_a_version_is_stored_once_and_moves_to_v_when_superseded(store: Store) -> None:
    v1 = store.put("k", b"one")
    # while served, the version is whole in K only: no V record, no D record
    assert _no_vrec(store, v1.version)
    assert store.engine.get(value_key(v1.version)) is None
    assert store.get("k", version=v1.version).value == b"one"
    assert [vi.version.id for vi in store.history("k")] == [v1.version]
    v2 = store.put("k", b"two")
    # the change that stopped serving v1 wrote its V record, with its value
    assert _vrec(store, v1.version)[-1] == b"one"
    assert store.engine.get(value_key(v1.version)) is None  # format 4 writes no D
    assert _no_vrec(store, v2.version)
    assert store.get("k").value == b"two"
    assert store.get("k", version=v1.version).value == b"one"
    assert store.get("k", version=v2.version).value == b"two"
    # the digest and size (left out beside a value) are the value's, recomputed
    assert [vi.version.size for vi in store.history("k")] == [3, 3]
    assert [vi.revision for vi in store.history("k")] == [2, 1]
    for vi in store.history("k"):
        assert vi.version.recompute_id() == vi.version.id
    d = store.delete("k")
    assert _vrec(store, v2.version)[-1] == b"two"
    assert _no_vrec(store, d.version)  # the served tombstone is in K
    assert [vi.version.id for vi in store.history("k")] == [d.version, v2.version, v1.version]
    assert store.history("k")[0].version.deleted
    back = store.rollback("k", v1.version)
    assert _vrec(store, d.version)[-2:] == [3, None]  # a tombstone's V: revision, no value
    assert store.get("k").value == b"one" and back.parents == (d.version,)
    assert store.diff("k", v2.version) == store.diff("k", v2.version, back.version)
    assert store.get("k", as_of=2).value == b"two"  # as of a revision: from V records
    assert store.verify() == {"keys": 1, "versions": 4, "revision": 4}


def test_versions_of_another_key_are_not_found(store: Store) -> None:
    a = store.put("a", b"1")
    b = store.put("b", b"1")
    store.put("b", b"2")  # b's first version now has a V record
    with pytest.raises(VersionNotFound):
        store.get("a", version=b.version)
    with pytest.raises(VersionNotFound):
        store.get("b", version=a.version)
    cmd = WriteCommand(
        key="a",
        value=b"x",
        content_type="application/octet-stream",
        hlc=HLCTimestamp(a.hlc.wall + 1, 0),
        origin="site-b",
        parents=(b.version,),
    )
    with pytest.raises(VersionNotFound):
        store.sm.apply(cmd)  # a parent must be a version of the same key


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


def test_a_sibling_that_is_not_served_has_its_value_in_v(store: Store) -> None:
    base = store.put("k", b"base")
    late = _sibling(store, base, b"late", 10_000, "site-b")
    early = _sibling(store, base, b"early", 5_000, "site-a")
    assert store.get("k").value == b"late"  # served: whole in K
    assert store.get("k").siblings == 2
    assert _no_vrec(store, late.version)
    assert _vrec(store, early.version)[-1] == b"early"  # lost: in V at once
    assert _vrec(store, base.version)[-1] == b"base"  # superseded by late
    assert store.get("k", version=early.version).value == b"early"
    assert store.get("k", version=base.version).value == b"base"
    assert store.get("k", version=late.version).value == b"late"
    assert {vi.version.id for vi in store.history("k")} == {
        base.version,
        late.version,
        early.version,
    }
    assert store.verify() == {"keys": 1, "versions": 3, "revision": 3}
    # a child of the losing sibling that is older than the served one: late stays served
    child = _sibling(store, early, b"child", 1_000, "site-a")
    assert store.get("k").value == b"late"
    assert set(store.heads("k")) == {late.version, child.version}
    assert _vrec(store, child.version)[-1] == b"child"
    # resolving both: the served version changes, late gets its V record
    merged = store.put("k", b"merged")
    assert merged.parents == tuple(sorted([late.version, child.version]))
    assert _vrec(store, late.version)[-1] == b"late"
    assert store.verify() == {"keys": 1, "versions": 5, "revision": 5}


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
    """A fresh key is two records (K, C); replacing its value adds the V record of the
    version K stops serving."""

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
        V: 0,
        D: 0,
        b"C": 1,
    }
    store.put("x", b"2")
    again = tags()
    assert {t: again.get(t, 0) - after.get(t, 0) for t in (K, V, D, b"C")} == {
        K: 0,
        V: 1,
        D: 0,
        b"C": 1,
    }


def test_a_new_store_keeps_key_records_in_their_own_keyspace(
    engine_name: str, tmp_path: Path
) -> None:
    with tidekv.open(str(tmp_path), engine_name) as s:
        v = s.put("k", b"v")
        assert s.engine.get(FORMAT_KEY) == b"4"
        assert s.sm.format == 4
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


def _format3_store(path: Path, engine_name: str) -> tuple[Engine, list[WriteResult]]:
    """A store in the format-3 layout (a V record for every version, the value of a
    superseded one in D), written by today's state machine on an engine whose
    ``M format`` says 3, as the code before format 4 wrote it."""
    eng = open_engine(engine_name, None if engine_name == "memory" else str(path))
    eng.put(FORMAT_KEY, b"3", sync=True)
    eng.put(b"Morigin", b"old-site", sync=True)
    sm = StateMachine(eng)
    assert sm.format == 3 and sm.kprefix == b""
    t = 1_763_800_000_000
    out = []
    for i, (key, value) in enumerate([("a", b"a1"), ("b", b"b1"), ("a", b"a2")]):
        cmd = WriteCommand(
            key=key,
            value=value,
            content_type="application/octet-stream",
            hlc=HLCTimestamp(t + i, 0),
            origin="old-site",
        )
        out.append(sm.apply(cmd))
    a1 = out[0]
    for r in out:
        assert eng.get(version_key(r.version)) is not None  # format 3: V for every version
    assert eng.get(value_key(a1.version)) == b"a1"  # and D for a superseded value
    return eng, out


def test_a_format_3_store_opens_reads_and_takes_new_writes_in_its_layout(
    durable_engine: str, tmp_path: Path, clock: FakeClock
) -> None:
    eng, (a1, b1, a2) = _format3_store(tmp_path / "data", durable_engine)
    eng.close()
    (tmp_path / "tidekv.json").write_text(f'{{"engine": "{durable_engine}", "format": 1}}')
    with tidekv.open(str(tmp_path), clock=clock) as s:
        assert s.sm.format == 3
        assert s.origin == "old-site" and s.revision == 3
        assert s.get("a").value == b"a2" and s.get("b").value == b"b1"
        assert s.get("a", version=a1.version).value == b"a1"
        assert s.get("a", version=a2.version).value == b"a2"
        assert [vi.version.id for vi in s.history("a")] == [a2.version, a1.version]
        assert [(c.key, c.version) for c in s.changes()] == [
            ("a", a1.version),
            ("b", b1.version),
            ("a", a2.version),
        ]
        assert s.verify() == {"keys": 2, "versions": 3, "revision": 3}
        new = s.put("b", b"b2")
        assert new.parents == (b1.version,)
        # still the format-3 layout: a V record for the served version, D for b1's value
        assert s.engine.get(version_key(new.version)) is not None
        assert s.engine.get(value_key(b1.version)) == b"b1"
        assert s.engine.get(FORMAT_KEY) == b"3"
        assert s.get("b", version=b1.version).value == b"b1"
        assert s.verify() == {"keys": 2, "versions": 4, "revision": 4}
    with tidekv.open(str(tmp_path), clock=clock) as s:
        assert s.sm.format == 3
        assert s.get("b").value == b"b2"
        assert [vi.version.id for vi in s.history("b")] == [new.version, b1.version]


def _commands(t: int) -> list[WriteCommand]:
    def cmd(key: str, value: bytes | None, ms: int, **kw: object) -> WriteCommand:
        return WriteCommand(
            key=key,
            value=value,
            content_type="application/octet-stream",
            hlc=HLCTimestamp(t + ms, 0),
            origin=str(kw.pop("origin", "site-a")),
            **kw,  # type: ignore[arg-type]
        )

    return [
        cmd("a", b"1", 1),
        cmd("a", b"2", 2),
        cmd("b", b"1", 3),
        cmd("a", b"3", 4, if_none_match=True),  # fails: a exists
        cmd("b", None, 5, require_exists=True),
        cmd("b", None, 6, require_exists=True),  # fails: nothing to delete
        cmd("c", b"1", 7, if_none_match=True),
    ]


def test_every_format_applies_a_command_alike(tmp_path: Path) -> None:
    """A Raft group may hold replicas of format 3 and 4 (a node that replays the log
    into a new engine): the same commands give the same results, errors and state."""
    old, _ = _format3_store(tmp_path / "x", "memory")
    new = open_engine("memory", None)
    new.put(b"Morigin", b"old-site", sync=True)
    new.put(FORMAT_KEY, b"4", sync=True)
    sms = [StateMachine(old), StateMachine(new)]
    assert [sm.format for sm in sms] == [3, 4]
    # bring the new one to the same state with the same commands as _format3_store
    t = 1_763_800_000_000
    for i, (key, value) in enumerate([("a", b"a1"), ("b", b"b1"), ("a", b"a2")]):
        sms[1].apply(
            WriteCommand(
                key=key,
                value=value,
                content_type="application/octet-stream",
                hlc=HLCTimestamp(t + i, 0),
                origin="old-site",
            )
        )
    cmds = _commands(t + 10)
    a_head = sms[0].key_record("a")
    b_head = sms[0].key_record("b")
    assert a_head is not None and b_head is not None
    base = a_head.version
    for origin, ms in (("site-b", 50), ("site-c", 40)):  # siblings on a, then a bad parent
        cmds.append(
            WriteCommand(
                key="a",
                value=origin.encode(),
                content_type="application/octet-stream",
                hlc=HLCTimestamp(t + ms, 0),
                origin=origin,
                parents=(base,),
            )
        )
    cmds.append(
        WriteCommand(
            key="a",
            value=b"x",
            content_type="application/octet-stream",
            hlc=HLCTimestamp(t + 60, 0),
            origin="site-b",
            parents=(b_head.version,),  # a version of another key
        )
    )
    for index, c in enumerate(cmds, start=1):
        outcomes = [sm.apply_entry(c, index) for sm in sms]
        assert outcomes[0] == outcomes[1] or (
            type(outcomes[0]) is type(outcomes[1]) and str(outcomes[0]) == str(outcomes[1])
        ), (c, outcomes)
    assert list(sms[0].changes()) == list(sms[1].changes())
    for key in ("a", "b", "c"):
        recs = [sm.key_record(key) for sm in sms]
        assert recs[0] is not None and recs[1] is not None
        assert (recs[0].heads, recs[0].version, recs[0].value) == (
            recs[1].heads,
            recs[1].version,
            recs[1].value,
        )
    assert verify(sms[0]) == verify(sms[1])
    # format 4 wrote fewer records for the same state
    assert sum(1 for _ in old.scan_prefix(V)) > sum(1 for _ in new.scan_prefix(V))


def test_change_feed_readers_without_the_lock_find_every_version(
    engine_name: str, tmp_path: Path
) -> None:
    """A reader that follows the change log finds each change's version and value while
    writers move them from K to V (the version a change names may be served by K, in V,
    or move between the two reads)."""
    s = tidekv.open(str(tmp_path), engine_name, sync=False)
    stop = threading.Event()
    errors: list[BaseException] = []
    seen = [0]

    def reader() -> None:
        since = 0
        try:
            while not stop.is_set() or since < s.revision:
                for ch in s.sm.changes(since):
                    got = s.sm.find(ch.key, ch.version)
                    assert got is not None, ch
                    assert got[0] == ch.revision and got[2] is not None, (ch, got)
                    since = ch.revision
                    seen[0] += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(1500):
            s.put(f"k{i % 3}", str(i).encode())
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert seen[0] == 2 * 1500
    assert s.verify()["versions"] == 1500
    s.close()


def test_the_put_of_a_value_writes_what_the_general_path_writes(
    engine_name: str, tmp_path: Path
) -> None:
    """StateMachine.put_value (the embedded put: its own path for a new key in format 4)
    leaves the same records and results as StateMachine.write (through _plan)."""

    def machine(name: str) -> tuple[Engine, StateMachine]:
        path = None if engine_name == "memory" else str(tmp_path / name)
        engine = open_engine(engine_name, path)
        return engine, StateMachine(engine, sync=False)

    (fast_engine, fast), (slow_engine, slow) = machine("fast"), machine("slow")
    texts = "text/plain; charset=utf-8"
    writes = [  # (key, value, content type, author)
        ("k", b"one", "application/octet-stream", ""),
        ("k", b"two", "application/octet-stream", ""),  # replaces: the _plan path
        ("ключ", b"", texts, "ada"),  # an empty value, another content type and author
        ("doc", b'{"a":1}', "application/json", ""),
        ("x" * 300, bytes(range(256)) * 5, "application/x-custom", "bob"),
        ("k2", b"v", "application/octet-stream", "ada"),
    ]
    for i, (key, value, ctype, author) in enumerate(writes):
        hlc = HLCTimestamp(1_763_800_000_000 + i // 2, i)
        got = fast.put_value(key, key.encode(), value, ctype, hlc, "site", author)
        want = slow.write(key, value, ctype, hlc, "site", author)
        assert got == want
    assert (fast.revision, fast.clock) == (slow.revision, slow.clock)
    for name in (DEFAULT_KEYSPACE, KEYS_KEYSPACE):
        assert list(fast_engine.keyspace(name).scan()) == list(slow_engine.keyspace(name).scan())
    assert verify(fast) == verify(slow)
    fast_engine.close()
    slow_engine.close()


@settings(max_examples=300, deadline=None)
@given(
    key=st.binary(min_size=1, max_size=300),
    value=st.binary(max_size=70_000) | st.binary(max_size=40),
    ints=st.tuples(*[st.integers(0, 2**63)] * 4),
    logicals=st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    ct=st.integers(0, 2**40) | st.text(max_size=300),
    origin=st.text(max_size=300),
    author=st.text(max_size=70_000) | st.text(max_size=10),
)
def test_the_c_records_of_a_new_key_are_the_python_ones(
    key: bytes,
    value: bytes,
    ints: tuple[int, int, int, int],
    logicals: tuple[int, int],
    ct: int | str,
    origin: str,
    author: str,
) -> None:
    """Every msgpack length form (fix, 8, 16, 32 bits) of ints, strings and binaries."""
    try:
        from tidekv import _putrec
    except ImportError:
        import shutil
        import sysconfig

        headers = Path(sysconfig.get_paths()["include"], "Python.h").exists()
        if shutil.which("cc") and headers:
            raise AssertionError("a C compiler is here but the extension was not built") from None
        pytest.skip("no C compiler: the pure Python records are used")
    wall, revision, clock_wall, _ = ints
    tail = id_tail(origin, False, "t", author)
    args = (key, value, wall, logicals[0], tail, revision, ct, origin, author, clock_wall)
    want = _py_new_key_records(*args, logicals[1])
    assert _putrec.new_key_records(*args, logicals[1]) == want
    assert statemachine._new_key_records is _putrec.new_key_records
