"""The embedded store's contract, on every engine."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from pathlib import Path

import pytest

import tidekv
from tidekv.errors import (
    InvalidInput,
    InvalidJSON,
    InvalidKey,
    InvalidVersionId,
    KeyNotFound,
    KeyTooLarge,
    PreconditionFailed,
    StoreClosed,
    ValueTooLarge,
    VersionNotFound,
)
from tidekv.statemachine import WriteCommand
from tidekv.store import Store
from tidekv.versioning import HLCTimestamp

from .conftest import FakeClock


def test_put_get_roundtrip_by_value_kind(store: Store) -> None:
    store.put("b", b"\x00\xffraw")
    store.put("t", "héllo")
    store.put("j", {"name": "Ada", "tags": [1, 2]})
    assert store.get("b").value == b"\x00\xffraw"
    assert store.get("b").content_type == "application/octet-stream"
    assert store.get("t").text() == "héllo"
    assert store.get("t").content_type.startswith("text/plain")
    assert store.get("j").json() == {"name": "Ada", "tags": [1, 2]}
    assert store.get("j").content_type == "application/json"


def test_every_write_is_a_new_version_with_the_previous_as_parent(store: Store) -> None:
    r1 = store.put("k", "one")
    r2 = store.put("k", "two")
    r3 = store.put("k", "three")
    assert r1.parents == ()
    assert r2.parents == (r1.version,)
    assert r3.parents == (r2.version,)
    assert len({r1.version, r2.version, r3.version}) == 3
    assert [r1.revision, r2.revision, r3.revision] == [1, 2, 3]
    hist = store.history("k")
    assert [vi.version.id for vi in hist] == [r3.version, r2.version, r1.version]
    assert [vi.revision for vi in hist] == [3, 2, 1]
    assert store.get("k").version == r3.version
    assert store.heads("k") == [r3.version]


def test_same_content_written_twice_gets_distinct_versions(store: Store) -> None:
    a = store.put("k", "same")
    b = store.put("k", "same")
    assert a.version != b.version
    assert a.hlc < b.hlc


def test_history_limit_and_before(store: Store) -> None:
    ids = [store.put("k", str(i)).version for i in range(5)]
    assert [v.version.id for v in store.history("k", limit=2)] == ids[::-1][:2]
    assert [v.version.id for v in store.history("k", before=ids[3])] == ids[2::-1]
    with pytest.raises(VersionNotFound):
        store.history("k", before="0" * 40)
    with pytest.raises(KeyNotFound):
        store.history("nope")


def test_delete_writes_a_tombstone_and_keeps_history(store: Store) -> None:
    w = store.put("k", "v")
    d = store.delete("k")
    assert d.deleted and d.parents == (w.version,)
    with pytest.raises(KeyNotFound):
        store.get("k")
    hist = store.history("k")
    assert [vi.version.deleted for vi in hist] == [True, False]
    # the old content is still there
    assert store.get("k", version=w.version).text() == "v"
    with pytest.raises(KeyNotFound):
        store.delete("k")  # nothing left to delete
    with pytest.raises(KeyNotFound):
        store.delete("never-written")
    again = store.put("k", "back")
    assert again.parents == (d.version,)
    assert store.get("k").text() == "back"


def test_get_given_version_and_unknown_versions(store: Store) -> None:
    a = store.put("a", "1")
    store.put("a", "2")
    b = store.put("b", "x")
    assert store.get("a", version=a.version).text() == "1"
    assert store.get_version("a", a.version).revision == 1
    with pytest.raises(VersionNotFound):
        store.get("a", version="f" * 40)
    with pytest.raises(VersionNotFound):
        store.get("a", version=b.version)  # belongs to another key
    with pytest.raises(InvalidVersionId):
        store.get("a", version="not-a-version")


def test_read_as_of_revision_and_time(store: Store, clock: FakeClock) -> None:
    t0 = clock.now
    store.put("k", "one")  # rev 1
    clock.advance(1000)
    store.put("other", "x")  # rev 2
    store.put("k", "two")  # rev 3
    clock.advance(1000)
    store.delete("k")  # rev 4
    assert store.get("k", as_of=1).text() == "one"
    assert store.get("k", as_of=2).text() == "one"
    assert store.get("k", as_of=3).text() == "two"
    with pytest.raises(KeyNotFound):
        store.get("k", as_of=4)
    with pytest.raises(KeyNotFound):
        store.get("k", as_of=0)
    at = dt.datetime.fromtimestamp((t0 + 500) / 1000, tz=dt.UTC)
    assert store.get("k", as_of=at).text() == "one"
    assert store.get("k", as_of=at.isoformat()).text() == "one"
    later = dt.datetime.fromtimestamp((t0 + 1500) / 1000, tz=dt.UTC)
    assert store.get("k", as_of=later.isoformat().replace("+00:00", "Z")).text() == "two"
    with pytest.raises(InvalidInput):
        store.get("k", as_of="yesterday-ish")


def test_rollback_is_a_new_version_on_top_of_the_heads(store: Store) -> None:
    first = store.put("doc", {"v": 1})
    second = store.put("doc", {"v": 2})
    rb = store.rollback("doc", first.version)
    assert rb.parents == (second.version,)
    assert rb.version not in (first.version, second.version)
    assert store.get("doc").json() == {"v": 1}
    assert store.get("doc").content_type == "application/json"
    assert len(store.history("doc")) == 3
    with pytest.raises(VersionNotFound):
        store.rollback("doc", "e" * 40)


def test_diff_json_text_and_bytes(store: Store) -> None:
    a = store.put("doc", {"name": "Ada", "langs": ["en"]})
    b = store.put("doc", {"name": "Ada L.", "langs": ["en", "fr"]})
    d = store.diff("doc", a.version, b.version)
    assert d.format == "json-patch"
    ops = {(op["op"], op["path"]) for op in d.changes}  # type: ignore[attr-defined]
    assert ("replace", "/name") in ops
    assert ("add", "/langs/1") in ops
    assert store.diff("doc", a.version).to_dict() == d.to_dict()  # default: to current
    t1 = store.put("txt", "a\nb\n")
    t2 = store.put("txt", "a\nc\n")
    assert store.diff("txt", t1.version, t2.version).format == "text"
    b1 = store.put("bin", b"\x00\x01")
    b2 = store.put("bin", b"\x00\x02\x03")
    bd = store.diff("bin", b1.version, b2.version)
    assert bd.format == "bytes"


def test_compare_and_set(store: Store) -> None:
    first = store.put("k", "v1", if_none_match=True)
    with pytest.raises(PreconditionFailed) as exc:
        store.put("k", "again", if_none_match=True)
    assert exc.value.details["heads"] == [first.version]
    second = store.put("k", "v2", if_match=first.version)
    with pytest.raises(PreconditionFailed):
        store.put("k", "stale", if_match=first.version)
    with pytest.raises(PreconditionFailed):
        store.delete("k", if_match=first.version)
    with pytest.raises(InvalidVersionId):
        store.put("k", "x", if_match="garbage")
    # nothing was written by the refused calls
    assert store.revision == 2
    assert store.get("k").version == second.version
    assert len(store.history("k")) == 2
    store.delete("k", if_match=second.version)
    store.put("k", "fresh", if_none_match=True)  # a deleted key counts as absent


def test_limits_and_bad_input_write_nothing(tmp_path: Path, clock: FakeClock) -> None:
    with tidekv.open(str(tmp_path), "lsm", clock=clock, max_key_bytes=8, max_value_bytes=16) as s:
        for bad in ["", 5, "\ud800"]:
            with pytest.raises(InvalidKey):
                s.put(bad, "x")  # type: ignore[arg-type]
        with pytest.raises(KeyTooLarge):
            s.put("k" * 9, "x")
        s.put("k" * 8, "x" * 16)
        with pytest.raises(ValueTooLarge):
            s.put("k", "x" * 17)
        with pytest.raises(InvalidJSON):
            s.put("k", b"{not json", content_type="application/json")
        with pytest.raises(InvalidInput):
            s.put("k", object())  # not JSON-encodable
        assert s.revision == 1
        assert [i.key for i in s.scan()] == ["k" * 8]
        assert s.verify()["versions"] == 1


def test_default_limits(store: Store) -> None:
    store.put("k" * 1024, b"v" * (1 << 20))
    with pytest.raises(KeyTooLarge):
        store.put("k" * 1025, b"v")
    with pytest.raises(ValueTooLarge):
        store.put("k", b"v" * ((1 << 20) + 1))
    assert isinstance(KeyTooLarge("x"), ValueTooLarge)  # both are 413 "too_large"


def test_scan_prefix_range_limit_skips_deleted(store: Store) -> None:
    for k in ["a", "b/1", "b/2", "b/3", "c", "b0"]:
        store.put(k, k)
    store.delete("b/2")
    assert [i.key for i in store.scan()] == ["a", "b/1", "b/3", "b0", "c"]
    assert [i.key for i in store.scan("b/")] == ["b/1", "b/3"]
    assert [i.key for i in store.scan(start="b/3", end="c")] == ["b/3", "b0"]
    assert [i.key for i in store.scan("b", start="b/2")] == ["b/3", "b0"]
    assert [i.key for i in store.scan(limit=2)] == ["a", "b/1"]
    assert [i.key for i in store.scan("b/", limit=1)] == ["b/1"]
    assert list(store.scan("zzz")) == []
    item = next(store.scan("c"))
    assert item.value == b"c" and item.revision == 5


def test_change_iterator(store: Store) -> None:
    store.put("a", "1")
    store.put("b", "2")
    store.delete("a")
    changes = list(store.changes())
    assert [(c.revision, c.key, c.type) for c in changes] == [
        (1, "a", "put"),
        (2, "b", "put"),
        (3, "a", "delete"),
    ]
    assert [c.revision for c in store.changes(since=2)] == [3]
    with pytest.raises(InvalidInput):
        list(store.changes(since=-1))


def test_change_iterator_follows_new_writes(store: Store) -> None:
    store.put("a", "1")
    seen: list[int] = []
    started = threading.Event()

    def reader() -> None:
        it = store.changes(since=1, follow=True, timeout=10)
        started.set()
        for c in it:
            seen.append(c.revision)
            if len(seen) == 3:
                return

    t = threading.Thread(target=reader)
    t.start()
    started.wait()
    for i in range(3):
        store.put("b", str(i))
    t.join(timeout=20)
    assert not t.is_alive()
    assert seen == [2, 3, 4]


def test_concurrent_writers_keep_a_linear_history(store: Store) -> None:
    n_threads, per = 4, 25

    def writer(i: int) -> None:
        for j in range(per):
            store.put("shared", f"{i}-{j}")
            store.put(f"own/{i}", str(j))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.revision == 2 * n_threads * per
    hist = store.history("shared")
    assert len(hist) == n_threads * per
    assert store.heads("shared") == [hist[0].version.id]
    for newer, older in itertools.pairwise(hist):
        assert newer.version.parents == (older.version.id,)
    assert store.verify()["versions"] == 2 * n_threads * per


def test_siblings_resolve_by_last_write_wins(store: Store) -> None:
    base = store.put("k", "base")
    # a concurrent write from another site, on the same parent, applied as replication does
    remote = store.sm.apply(
        WriteCommand(
            key="k",
            value=b"remote",
            content_type="application/octet-stream",
            hlc=HLCTimestamp(base.hlc.wall + 10_000, 0),
            origin="site-b",
            parents=(base.version,),
        )
    )
    local = store.sm.apply(
        WriteCommand(
            key="k",
            value=b"local",
            content_type="application/octet-stream",
            hlc=HLCTimestamp(base.hlc.wall + 5_000, 0),
            origin="site-a",
            parents=(base.version,),
        )
    )
    assert sorted(store.heads("k")) == sorted([remote.version, local.version])
    item = store.get("k")
    assert item.siblings == 2
    assert item.value == b"remote"  # the later HLC wins
    assert item.version == remote.version
    # a normal put supersedes every sibling: parents are all the heads
    merged = store.put("k", "merged")
    assert set(merged.parents) == {remote.version, local.version}
    assert store.heads("k") == [merged.version]
    assert store.get("k").siblings == 1
    store.verify()


def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    s = tidekv.open(str(tmp_path), "lsm")
    s.put("k", "v")
    s.close()
    with pytest.raises(StoreClosed):
        s.get("k")
    with pytest.raises(StoreClosed):
        s.put("k", "v")
    s.close()  # idempotent


def test_engine_is_recorded_and_checked(tmp_path: Path) -> None:
    with tidekv.open(str(tmp_path), "btree") as s:
        s.put("k", "v")
    with tidekv.open(str(tmp_path)) as s:  # no engine given: the recorded one
        assert s.engine.name == "btree"
        assert s.get("k").text() == "v"
    with pytest.raises(InvalidInput):
        tidekv.open(str(tmp_path), "lsm")
    with pytest.raises(InvalidInput):
        tidekv.open(str(tmp_path / "new"), "no-such-engine")
    assert not (tmp_path / "new").exists()


def test_reopen_keeps_everything_and_the_clock_stays_monotonic(
    durable_engine: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    with tidekv.open(str(tmp_path), durable_engine, clock=clock) as s:
        origin = s.origin
        w1 = s.put("k", {"n": 1})
        w2 = s.put("k", {"n": 2})
        s.put("gone", "x")
        s.delete("gone")
    clock.now -= 3_600_000  # the wall clock went back an hour while we were down
    with tidekv.open(str(tmp_path), clock=clock) as s:
        assert s.origin == origin
        assert s.revision == 4
        assert s.get("k").json() == {"n": 2}
        assert [v.version.id for v in s.history("k")] == [w2.version, w1.version]
        with pytest.raises(KeyNotFound):
            s.get("gone")
        w3 = s.put("k", {"n": 3})
        assert w3.revision == 5
        assert w3.hlc > w2.hlc
        assert w3.parents == (w2.version,)
        assert s.verify() == {"keys": 2, "versions": 5, "revision": 5}


def _remote_write(
    store: Store, key: str, value: bytes, wall: int, origin: str, parents: tuple[str, ...]
) -> str:
    return store.sm.apply(
        WriteCommand(
            key=key,
            value=value,
            content_type="application/octet-stream",
            hlc=HLCTimestamp(wall, 0),
            origin=origin,
            parents=parents,
        )
    ).version


def test_manual_policy_refuses_to_choose_between_siblings(tmp_path: Path) -> None:
    from tidekv.errors import Siblings

    with tidekv.open(str(tmp_path), "lsm", resolver="manual") as s:
        base = s.put("k", "base")
        a = _remote_write(s, "k", b"a", base.hlc.wall + 1, "site-a", (base.version,))
        b = _remote_write(s, "k", b"b", base.hlc.wall + 2, "site-b", (base.version,))
        with pytest.raises(Siblings) as exc:
            s.get("k")
        assert sorted(exc.value.details["siblings"]) == sorted([a, b])
        assert exc.value.http_status == 300
        # both siblings' contents stay readable, and a write on top resolves them
        assert {s.get("k", version=a).value, s.get("k", version=b).value} == {b"a", b"b"}
        resolved = s.put("k", "a+b")
        assert set(resolved.parents) == {a, b}
        assert s.get("k").text() == "a+b"
        s.verify()


def test_local_write_after_a_replicated_version_from_the_future_is_newer(
    store: Store, clock: FakeClock
) -> None:
    base = store.put("k", "base")
    ahead = clock.now + 60_000  # another site's clock runs a minute ahead
    remote = _remote_write(store, "k", b"remote", ahead, "site-b", (base.version,))
    local = store.put("k", "local")
    assert local.parents == (remote,)
    assert local.hlc > HLCTimestamp(ahead, 0)
    assert store.history("k")[0].version.id == local.version
