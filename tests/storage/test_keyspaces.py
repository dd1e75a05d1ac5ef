"""Keyspaces: the part of the conformance suite for named keyspaces.

Each test runs once per registered engine (see ``conftest.py``): keyspaces are
independent ordered maps, ONE batch spans several of them all or nothing, and both the
keyspaces and their data survive a reopen.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tidekv.errors import InvalidInput, StoreClosed
from tidekv.storage import DEFAULT_KEYSPACE, Engine, KsOp, open_engine

from .conftest import DURABLE, Opened
from .test_conformance import Boom, expected_scan


def test_same_key_in_several_keyspaces_is_independent(engine: Engine) -> None:
    keys, versions = engine.keyspace("keys"), engine.keyspace("versions")
    engine.put(b"k", b"default")
    keys.put(b"k", b"in keys")
    versions.put(b"k", b"in versions")
    assert engine.get(b"k") == b"default"
    assert keys.get(b"k") == b"in keys"
    assert versions.get(b"k") == b"in versions"
    keys.delete(b"k")
    assert keys.get(b"k") is None
    assert engine.get(b"k") == b"default"
    assert versions.get(b"k") == b"in versions"
    assert versions.multi_get([b"k", b"x", b"k"]) == [b"in versions", None, b"in versions"]
    # the default keyspace, seen as a keyspace, holds only its own key
    assert list(engine.keyspace(DEFAULT_KEYSPACE).scan()) == [(b"k", b"default")]
    assert list(versions.scan()) == [(b"k", b"in versions")]
    assert list(keys.scan()) == []


def test_keyspace_objects_are_reused_and_listed(engine: Engine) -> None:
    assert engine.keyspaces() == [DEFAULT_KEYSPACE]
    a = engine.keyspace("changes")
    assert engine.keyspace("changes") is a
    engine.keyspace("keys")
    assert engine.keyspaces() == [DEFAULT_KEYSPACE, "changes", "keys"]
    assert engine.keyspace(DEFAULT_KEYSPACE).get(b"nothing") is None


@pytest.mark.parametrize("bad", ["", "Keys", "1st", "a-b", "a" * 33, "ké"])
def test_invalid_keyspace_names_are_refused(engine: Engine, bad: str) -> None:
    with pytest.raises(InvalidInput, match="keyspace name"):
        engine.keyspace(bad)
    assert engine.keyspaces() == [DEFAULT_KEYSPACE]


def _random_models(seed: int) -> dict[str, dict[bytes, bytes]]:
    rnd = random.Random(seed)
    alphabet = [b"\x00", b"\x01", b"a", b"b", b"\x7f", b"\xfe", b"\xff"]
    models: dict[str, dict[bytes, bytes]] = {}
    for name in ("a", "b", "c"):
        model: dict[bytes, bytes] = {}
        for _ in range(60):
            k = b"".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 4)))
            model[k] = name.encode() + b":" + k
        models[name] = model
    return models


def test_ordered_scans_per_keyspace(engine: Engine) -> None:
    models = _random_models(7)
    ops: list[KsOp] = [
        (engine.keyspace(name), k, v) for name, model in models.items() for k, v in model.items()
    ]
    random.Random(8).shuffle(ops)
    engine.write_batch_multi(ops)
    engine.put(b"b", b"default")  # a default-keyspace key among them
    bounds: list[tuple[bytes, bytes | None]] = [
        (b"", None),
        (b"a", b"b"),
        (b"\x00\x01", b"\xff"),
        (b"\xff", None),
        (b"b", b"a"),
    ]
    for name, model in models.items():
        ks = engine.keyspace(name)
        for start, end in bounds:
            for reverse in (False, True):
                for limit in (None, 1, 7):
                    got = list(ks.scan(start, end, reverse=reverse, limit=limit))
                    want = expected_scan(model, start, end, reverse=reverse, limit=limit)
                    assert got == want, (name, start, end, reverse, limit)
        pre = {k: v for k, v in model.items() if k.startswith(b"\xff")}
        assert list(ks.scan_prefix(b"\xff")) == expected_scan(pre)
    assert list(engine.keyspace(DEFAULT_KEYSPACE).scan()) == [(b"b", b"default")]


def test_cross_keyspace_batch_applies_every_op(engine: Engine) -> None:
    keys, changes = engine.keyspace("keys"), engine.keyspace("changes")
    engine.put(b"old", b"1")
    changes.put(b"gone", b"x")
    engine.write_batch_multi(
        [
            (keys, b"k", b"first"),
            (changes, b"\x00\x01", b"c1"),
            (engine.keyspace(DEFAULT_KEYSPACE), b"old", None),
            (changes, b"gone", None),
            (keys, b"k", b"second"),  # a later op on the same key wins
        ],
        sync=True,
    )
    assert keys.get(b"k") == b"second"
    assert list(changes.scan()) == [(b"\x00\x01", b"c1")]
    assert engine.get(b"old") is None


def test_cross_keyspace_batch_that_fails_while_building_writes_nothing(engine: Engine) -> None:
    keys, changes = engine.keyspace("keys"), engine.keyspace("changes")
    keys.put(b"k", b"before")

    def ops() -> Iterator[KsOp]:
        yield keys, b"k", b"after"
        yield changes, b"c", b"1"
        yield engine.keyspace(DEFAULT_KEYSPACE), b"d", b"1"
        raise Boom("the batch source failed half way")

    with pytest.raises(Boom):
        engine.write_batch_multi(ops())
    assert keys.get(b"k") == b"before"
    assert list(changes.scan()) == []
    assert engine.get(b"d") is None


def test_keyspaces_survive_a_reopen(opened: Opened, engine: Engine) -> None:
    models = _random_models(11)
    for name, model in models.items():
        engine.write_batch_multi([(engine.keyspace(name), k, v) for k, v in model.items()])
    engine.keyspace("empty")
    engine.put(b"d", b"default")
    engine = opened.reopen(engine)
    assert engine.keyspaces() == [DEFAULT_KEYSPACE, "a", "b", "c", "empty"]
    for name, model in models.items():
        assert list(engine.keyspace(name).scan()) == expected_scan(model)
    assert list(engine.keyspace("empty").scan()) == []
    assert list(engine.keyspace(DEFAULT_KEYSPACE).scan()) == [(b"d", b"default")]
    # and it can be reopened again (nothing of the first instance holds the files)
    engine.keyspace("a").put(b"new", b"1", sync=True)
    engine = opened.reopen(engine)
    assert engine.keyspace("a").get(b"new") == b"1"


@pytest.mark.parametrize("name", DURABLE)
def test_a_fresh_open_sees_the_keyspaces(name: str, tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    with open_engine(name, path) as e:
        e.write_batch_multi([(e.keyspace("keys"), b"k", b"v"), (e.keyspace("meta"), b"m", b"1")])
    with open_engine(name, path) as e:
        assert e.keyspaces() == [DEFAULT_KEYSPACE, "keys", "meta"]
        assert e.keyspace("keys").get(b"k") == b"v"
        assert e.keyspace("meta").get(b"m") == b"1"
        assert e.get(b"k") is None


def test_keyspace_use_after_close_raises_store_closed(engine: Engine) -> None:
    keys = engine.keyspace("keys")
    keys.put(b"k", b"v")
    engine.close()
    with pytest.raises(StoreClosed):
        keys.get(b"k")
    with pytest.raises(StoreClosed):
        keys.put(b"k", b"w")
    with pytest.raises(StoreClosed):
        list(keys.scan())
    with pytest.raises(StoreClosed):
        engine.keyspace("other")


def test_threads_opening_one_keyspace_get_one_object(opened: Opened, engine: Engine) -> None:
    got: list[object] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_it() -> None:
        try:
            start.wait()
            got.append(engine.keyspace("shared"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(got) == 4 and all(ks is got[0] for ks in got)
    engine.keyspace("shared").put(b"k", b"v", sync=True)
    engine = opened.reopen(engine)  # every handle was released: the reopen works
    assert engine.keyspace("shared").get(b"k") == b"v"
