"""``Engine.snapshot_iter``: a consistent point-in-time view of every keyspace.

Runs once per registered engine (see ``conftest.py``). The view must show exactly the
records of the moment it was made, in every keyspace, however the engine is written
afterwards (overwrites, deletes, new keys, new keyspaces, a merge/compaction), must be
readable lazily and from another thread, and must release what it holds on close (the
engine closes and reopens afterwards).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tidekv.errors import StoreClosed
from tidekv.storage import DEFAULT_KEYSPACE, Engine, open_engine

from .conftest import Opened


def _fill(engine: Engine) -> dict[str, dict[bytes, bytes]]:
    ks = engine.keyspace("keys")
    engine.keyspace("empty")
    engine.write_batch([(b"d%04d" % i, b"v%d" % i) for i in range(3000)])
    ks.put(b"k1", b"one")
    ks.put(b"k2", b"x" * 100_000)
    return {name: dict(engine.keyspace(name).scan()) for name in engine.keyspaces()}


def _view(
    engine: Engine, in_thread: bool = False
) -> tuple[list[str], dict[str, dict[bytes, bytes]]]:
    snap = engine.snapshot_iter()
    got: dict[str, dict[bytes, bytes]] = {n: {} for n in snap.keyspaces}

    def read() -> None:
        for name, k, v in snap:
            assert k not in got[name], "a record came twice"
            got[name][k] = v

    try:
        if in_thread:
            t = threading.Thread(target=read)
            t.start()
            t.join()
        else:
            read()
    finally:
        snap.close()
    return snap.keyspaces, got


def test_the_view_is_the_moment_it_was_made(engine: Engine) -> None:
    want = _fill(engine)
    snap = engine.snapshot_iter()
    it = iter(snap)
    first = next(it)  # started before the writes below, finished after them
    engine.write_batch([(b"d%04d" % i, b"new") for i in range(0, 3000, 2)])
    engine.write_batch([(b"d%04d" % i, None) for i in range(1, 3000, 4)])
    engine.put(b"zz-new", b"1")
    engine.keyspace("keys").delete(b"k1")
    engine.keyspace("later").put(b"l", b"1")
    engine.compact()
    got: dict[str, dict[bytes, bytes]] = {n: {} for n in snap.keyspaces}
    for name, k, v in [first, *it]:
        got[name][k] = v
    snap.close()
    assert snap.keyspaces == [DEFAULT_KEYSPACE, "empty", "keys"]
    assert got == want
    assert engine.get(b"d0000") == b"new"  # the engine itself moved on


def test_the_view_reads_from_another_thread_and_releases(engine: Engine, opened: Opened) -> None:
    want = _fill(engine)
    names, got = _view(engine, in_thread=True)
    assert names == list(want) and got == want
    snap = engine.snapshot_iter()
    snap.close()
    snap.close()  # twice is fine
    assert list(snap) == []
    new = opened.reopen(engine)  # nothing left holding the engine
    assert _view(new)[1] == want


def test_an_empty_engine_has_an_empty_view(engine: Engine) -> None:
    names, got = _view(engine)
    assert names == [DEFAULT_KEYSPACE] and got == {DEFAULT_KEYSPACE: {}}


def test_btree_map_growth_releases_an_open_view_instead_of_waiting(tmp_path: Path) -> None:
    engine = open_engine("btree", str(tmp_path / "db"), map_size=1 << 20)
    try:
        engine.put(b"a", b"1")
        snap = engine.snapshot_iter()
        it = iter(snap)
        assert next(it) == (DEFAULT_KEYSPACE, b"a", b"1")
        before = engine.map_size  # type: ignore[attr-defined]
        engine.write_batch([(b"k%05d" % i, b"x" * 1000) for i in range(3000)])  # grows
        assert engine.map_size > before  # type: ignore[attr-defined]
        with pytest.raises(StoreClosed):
            list(it)
        snap.close()
        _names, got = _view(engine)  # a new view after the growth sees everything
        assert len(got[DEFAULT_KEYSPACE]) == 3001
    finally:
        engine.close()


def test_closing_the_engine_releases_open_views(opened: Opened) -> None:
    engine = opened.open()
    engine.put(b"a", b"1")
    snap = engine.snapshot_iter()
    engine.close()  # must not wait for the view
    snap.close()
