"""The conformance suite every storage engine must pass.

Each test runs once per name in :data:`tidekv.storage.ENGINES` (see ``conftest.py``).
The last part checks each engine against a plain ``dict`` on random operation
sequences (hypothesis), the "dumb version" the clever engines must agree with.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidekv.errors import InvalidKey, StoreClosed
from tidekv.storage import ENGINES, Engine, Op, open_engine, prefix_end

from .conftest import DURABLE, Opened

# --------------------------------------------------------------------------- helpers


def fill(engine: Engine, keys: list[bytes]) -> dict[bytes, bytes]:
    model = {k: b"v:" + k for k in keys}
    engine.write_batch(model.items())
    return model


def expected_scan(
    model: dict[bytes, bytes],
    start: bytes = b"",
    end: bytes | None = None,
    *,
    reverse: bool = False,
    limit: int | None = None,
) -> list[tuple[bytes, bytes]]:
    keys = sorted(k for k in model if k >= start and (end is None or k < end))
    if reverse:
        keys.reverse()
    if limit is not None:
        keys = keys[:limit]
    return [(k, model[k]) for k in keys]


class Boom(Exception):
    pass


def ops_then_raise(ops: list[Op]) -> Iterator[Op]:
    yield from ops
    raise Boom("the batch source failed half way")


# --------------------------------------------------------------------------- basics


def test_registry_names_match_classes(engine_name: str) -> None:
    module, _, cls = ENGINES[engine_name].partition(":")
    engine_cls = getattr(__import__(module, fromlist=[cls]), cls)
    assert engine_cls.name == engine_name


def test_get_missing_is_none(engine: Engine) -> None:
    assert engine.get(b"nope") is None
    assert list(engine.scan()) == []


def test_put_get_overwrite_delete(engine: Engine) -> None:
    engine.put(b"k", b"one")
    assert engine.get(b"k") == b"one"
    engine.put(b"k", b"two")
    assert engine.get(b"k") == b"two"
    engine.delete(b"k")
    assert engine.get(b"k") is None
    engine.delete(b"k")  # deleting an absent key is not an error
    engine.delete(b"never-there")
    assert list(engine.scan()) == []


def test_empty_value_is_not_absent(engine: Engine) -> None:
    engine.put(b"e", b"")
    assert engine.get(b"e") == b""
    assert list(engine.scan()) == [(b"e", b"")]
    engine.write_batch([(b"f", b"")])
    assert engine.multi_get([b"e", b"f", b"g"]) == [b"", b"", None]


def test_binary_keys_and_values(engine: Engine) -> None:
    keys = [
        b"\x00",
        b"\x00\x00",
        b"\x00\xff",
        b"\x01",
        b"a\x00b",
        b"\xff",
        b"\xff\x00",
        b"\xff\xff",
    ]
    values = {k: bytes(range(256)) + k for k in keys}
    for k in reversed(keys):
        engine.put(k, values[k])
    for k in keys:
        assert engine.get(k) == values[k]
    assert [k for k, _ in engine.scan()] == sorted(keys)
    assert [k for k, _ in engine.scan()] == keys  # memcmp order, written to be sorted


def test_long_key_and_large_value(engine: Engine) -> None:
    key = bytes(range(200)) * 2  # 400 bytes: within every engine's limit
    value = random.Random(7).randbytes(1 << 20)
    engine.put(key, value, sync=True)
    assert engine.get(key) == value


def test_empty_key_round_trips_or_is_refused(engine: Engine) -> None:
    """The empty key is not portable: an engine either stores it or raises InvalidKey."""
    try:
        engine.put(b"", b"empty")
    except InvalidKey:
        assert engine.get(b"") is None
        return
    assert engine.get(b"") == b"empty"
    assert next(iter(engine.scan())) == (b"", b"empty")


def test_multi_get_keeps_order_and_duplicates(engine: Engine) -> None:
    fill(engine, [b"a", b"b", b"c"])
    assert engine.multi_get([b"c", b"x", b"a", b"c"]) == [b"v:c", None, b"v:a", b"v:c"]
    assert engine.multi_get([]) == []


def test_sync_flags_and_sync(engine: Engine) -> None:
    engine.put(b"a", b"1", sync=True)
    engine.write_batch([(b"b", b"2"), (b"a", None)], sync=True)
    engine.delete(b"b", sync=True)
    engine.put(b"c", b"3")
    engine.sync()
    assert list(engine.scan()) == [(b"c", b"3")]


# --------------------------------------------------------------------------- scans

SCAN_KEYS = [b"a", b"ab", b"abc", b"b", b"ba", b"c", b"d\x00", b"d\xff", b"e"]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (b"", None),
        (b"b", None),
        (b"", b"c"),
        (b"ab", b"d\xff"),  # both bounds are present keys: start included, end excluded
        (b"aa", b"bb"),  # bounds that are not keys
        (b"\x00", b"\xff"),
        (b"e", None),  # last key only
        (b"e\x00", None),  # past the last key
        (b"", b"a"),  # before the first key
        (b"c", b"c"),  # empty range
        (b"d", b"b"),  # start after end: empty
    ],
)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("limit", [None, 0, 1, 3, 100])
def test_scan_bounds_reverse_limit(
    engine: Engine, start: bytes, end: bytes | None, reverse: bool, limit: int | None
) -> None:
    model = fill(engine, SCAN_KEYS)
    got = list(engine.scan(start, end, reverse=reverse, limit=limit))
    assert got == expected_scan(model, start, end, reverse=reverse, limit=limit)


def test_scan_defaults_cover_everything(engine: Engine) -> None:
    model = fill(engine, SCAN_KEYS)
    assert list(engine.scan()) == expected_scan(model)
    assert list(engine.scan(reverse=True)) == expected_scan(model, reverse=True)


def test_long_scans_cross_internal_chunks(engine: Engine) -> None:
    keys = [b"k%05d" % i for i in range(2600)]
    model = fill(engine, keys)
    assert list(engine.scan()) == expected_scan(model)
    assert list(engine.scan(reverse=True)) == expected_scan(model, reverse=True)
    for limit in (1023, 1024, 1025, 2048, 2599):
        assert list(engine.scan(limit=limit)) == expected_scan(model, limit=limit)
        assert list(engine.scan(reverse=True, limit=limit)) == expected_scan(
            model, reverse=True, limit=limit
        )
    got = list(engine.scan(b"k00100", b"k02500", reverse=True))
    assert got == expected_scan(model, b"k00100", b"k02500", reverse=True)


def test_scan_is_lazy_enough_to_break_early(engine: Engine) -> None:
    model = fill(engine, [b"k%04d" % i for i in range(1500)])
    it = engine.scan()
    first = [next(it) for _ in range(3)]
    assert first == expected_scan(model, limit=3)
    it_rev = engine.scan(reverse=True)
    assert next(it_rev) == (b"k1499", model[b"k1499"])


@pytest.mark.parametrize(
    "prefix",
    [b"a", b"ab", b"a\xff", b"\xff", b"\xff\xff", b"\x00", b"", b"zzz"],
)
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_prefix(engine: Engine, prefix: bytes, reverse: bool) -> None:
    keys = [
        b"\x00",
        b"\x00\x01",
        b"a",
        b"ab",
        b"abc",
        b"a\xfe",
        b"a\xff",
        b"a\xff\x00",
        b"a\xff\xff",
        b"b",
        b"\xfe\xff",
        b"\xff",
        b"\xff\x00",
        b"\xff\xff",
        b"\xff\xff\xff",
    ]
    model = fill(engine, keys)
    want = [(k, model[k]) for k in sorted(model) if k.startswith(prefix)]
    if reverse:
        want.reverse()
    assert list(engine.scan_prefix(prefix, reverse=reverse)) == want
    assert list(engine.scan_prefix(prefix, reverse=reverse, limit=2)) == want[:2]


def test_prefix_end() -> None:
    assert prefix_end(b"a") == b"b"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"a\xff\xff") == b"b"
    assert prefix_end(b"\xff\xff") is None
    assert prefix_end(b"") is None


# --------------------------------------------------------------------------- batches


def test_batch_later_op_on_same_key_wins(engine: Engine) -> None:
    engine.put(b"gone", b"old")
    engine.write_batch(
        [
            (b"k", b"1"),
            (b"k", b"2"),
            (b"d", b"x"),
            (b"d", None),
            (b"gone", None),
            (b"back", None),
            (b"back", b"again"),
        ]
    )
    assert list(engine.scan()) == [(b"back", b"again"), (b"k", b"2")]


def test_batch_with_delete_of_existing_keys(engine: Engine) -> None:
    fill(engine, [b"a", b"b", b"c"])
    engine.write_batch([(b"a", None), (b"c", None), (b"d", b"new")])
    assert list(engine.scan()) == [(b"b", b"v:b"), (b"d", b"new")]


def test_empty_batch_and_generator_batch(engine: Engine) -> None:
    engine.write_batch([])
    engine.write_batch((b"g%d" % i, b"%d" % i) for i in range(3))
    assert [k for k, _ in engine.scan()] == [b"g0", b"g1", b"g2"]


@pytest.mark.parametrize("sync", [False, True])
def test_batch_that_fails_while_building_writes_nothing(
    opened: Opened, engine: Engine, sync: bool
) -> None:
    engine.put(b"keep", b"old")
    ops: list[Op] = [(b"keep", b"new"), (b"x1", b"1"), (b"keep", None), (b"x2", b"2")]
    with pytest.raises(Boom):
        engine.write_batch(ops_then_raise(ops), sync=sync)
    assert list(engine.scan()) == [(b"keep", b"old")]
    engine.put(b"after", b"ok")  # still usable
    reopened = opened.reopen(engine)
    assert list(reopened.scan()) == [(b"after", b"ok"), (b"keep", b"old")]


# --------------------------------------------------------------------------- persistence


def test_reopen_keeps_everything(opened: Opened, engine: Engine) -> None:
    model = fill(engine, [b"a", b"b", b"c", b"\x00", b"\xff"])
    engine.put(b"s", b"synced", sync=True)
    model[b"s"] = b"synced"
    engine.delete(b"b")
    del model[b"b"]
    engine.write_batch([(b"a", b"A"), (b"c", None)])
    model[b"a"] = b"A"
    del model[b"c"]
    again = opened.reopen(engine)
    assert engine.closed
    assert list(again.scan()) == expected_scan(model)
    again.put(b"later", b"1")
    third = opened.reopen(again)
    assert third.get(b"later") == b"1"
    assert third.get(b"a") == b"A"


@pytest.mark.parametrize("name", DURABLE)
def test_fresh_open_after_close_sees_data(name: str, tmp_path: Path) -> None:
    opened = Opened(name, tmp_path)
    first = opened.open("p")
    model = fill(first, [b"k%03d" % i for i in range(300)])
    first.write_batch([(b"k000", None), (b"k001", b"changed")], sync=True)
    del model[b"k000"]
    model[b"k001"] = b"changed"
    first.close()
    second = opened.open("p")
    try:
        assert list(second.scan()) == expected_scan(model)
    finally:
        opened.close_all()


# --------------------------------------------------------------------------- close


def test_use_after_close_raises_store_closed(engine: Engine) -> None:
    engine.put(b"a", b"1")
    assert not engine.closed
    engine.close()
    assert engine.closed
    calls = [
        lambda: engine.get(b"a"),
        lambda: engine.multi_get([b"a"]),
        lambda: engine.put(b"a", b"2"),
        lambda: engine.delete(b"a"),
        lambda: engine.write_batch([(b"a", b"2")]),
        lambda: list(engine.scan()),
        lambda: engine.scan(),  # raises at the call, not only when iterated
        lambda: engine.scan_prefix(b"a"),
        lambda: engine.sync(),
    ]
    for call in calls:
        with pytest.raises(StoreClosed):
            call()
    engine.close()  # closing twice is harmless
    assert engine.closed


def test_context_manager_closes(opened: Opened) -> None:
    with opened.open("cm") as engine:
        engine.put(b"a", b"1")
    assert engine.closed


def test_iterator_outliving_close_ends_cleanly(opened: Opened, engine: Engine) -> None:
    """A scan left open across close() may finish or raise StoreClosed, nothing worse,
    and the path can be opened again at once."""
    model = fill(engine, [b"k%05d" % i for i in range(3000)])
    it = engine.scan()
    got = [next(it)]
    engine.close()
    with contextlib.suppress(StoreClosed):
        got.extend(it)
    assert got == expected_scan(model, limit=len(got))
    if opened.name != "memory":  # a new MemoryEngine starts empty by design
        again = opened.open()
        assert again.get(b"k00000") == model[b"k00000"]


# --------------------------------------------------------------------------- threads


def run_threads(*targets: object) -> list[BaseException]:
    """Run callables in threads started together; return what they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(targets))

    def wrap(fn: object) -> None:
        try:
            barrier.wait()
            fn()  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a thread hung"
    return errors


def test_readers_never_see_a_torn_batch(engine: Engine) -> None:
    keys = [b"t%02d" % i for i in range(8)]
    done = threading.Event()
    observed: list[int] = []

    def writer() -> None:
        try:
            for i in range(1, 301):
                if i % 7 == 0:
                    engine.write_batch([(k, None) for k in keys])
                else:
                    engine.write_batch([(k, b"%06d" % i) for k in keys])
        finally:
            done.set()

    def reader() -> None:
        while True:
            finished = done.is_set()
            pairs = list(engine.scan_prefix(b"t"))
            values = {v for _, v in pairs}
            assert len(pairs) in (0, len(keys)), f"torn batch: {pairs}"
            assert len(values) <= 1, f"torn batch: {pairs}"
            observed.append(len(pairs))
            if finished:
                return

    errors = run_threads(writer, reader, reader)
    assert errors == []
    assert observed
    assert [v for _, v in engine.scan_prefix(b"t")] == [b"000300"] * len(keys)


def test_concurrent_writers_all_land(engine: Engine) -> None:
    def writer(tid: int) -> None:
        for i in range(150):
            key = b"w%d-%04d" % (tid, i)
            if i % 10 == 0:
                engine.write_batch([(key, b"%d" % i), (key + b"-b", b"b")])
            else:
                engine.put(key, b"%d" % i)
            if i % 3 == 0:
                engine.delete(key)

    errors = run_threads(*(lambda t=t: writer(t) for t in range(4)))
    assert errors == []
    want: dict[bytes, bytes] = {}
    for t in range(4):
        for i in range(150):
            key = b"w%d-%04d" % (t, i)
            if i % 10 == 0:
                want[key + b"-b"] = b"b"
            if i % 3 != 0:
                want[key] = b"%d" % i
    assert list(engine.scan()) == expected_scan(want)


def test_scan_while_writing(engine: Engine) -> None:
    order = [b"s%05d" % i for i in range(1200)]
    random.Random(11).shuffle(order)
    done = threading.Event()

    def writer() -> None:
        try:
            for n, key in enumerate(order):
                if n % 50 == 0:
                    engine.write_batch([(key, b"v" + key), (b"s-junk", b"j")])
                    engine.delete(b"s-junk")
                else:
                    engine.put(key, b"v" + key)
        finally:
            done.set()

    def scanner(reverse: bool) -> None:
        while True:
            finished = done.is_set()
            keys = []
            for key, value in engine.scan(b"s0", b"s1", reverse=reverse):
                assert value == b"v" + key
                keys.append(key)
            assert keys == sorted(keys, reverse=reverse)
            assert len(set(keys)) == len(keys)
            if finished:
                assert len(keys) == len(order)
                return

    errors = run_threads(writer, lambda: scanner(False), lambda: scanner(True))
    assert errors == []


# --------------------------------------------------------------------------- model check


@dataclass(frozen=True)
class Put:
    key: bytes
    value: bytes
    sync: bool


@dataclass(frozen=True)
class Delete:
    key: bytes
    sync: bool


@dataclass(frozen=True)
class Batch:
    ops: list[Op]
    sync: bool


@dataclass(frozen=True)
class Scan:
    start: bytes
    end: bytes | None
    reverse: bool
    limit: int | None


@dataclass(frozen=True)
class Prefix:
    prefix: bytes
    reverse: bool
    limit: int | None


@dataclass(frozen=True)
class Get:
    keys: list[bytes]


@dataclass(frozen=True)
class Reopen:
    pass


ModelOp = Put | Delete | Batch | Scan | Prefix | Get | Reopen

# few distinct bytes, edge values included, so keys collide and bounds hit keys often
KEY_BYTES = st.sampled_from([0x00, 0x01, 0x61, 0x62, 0xFE, 0xFF])
KEYS = st.lists(KEY_BYTES, min_size=1, max_size=3).map(bytes)
ANY_BYTES = st.lists(KEY_BYTES, max_size=3).map(bytes)
VALUES = st.binary(max_size=8)
LIMIT = st.none() | st.integers(min_value=0, max_value=5)

MODEL_OPS: st.SearchStrategy[ModelOp] = st.one_of(
    st.builds(Put, KEYS, VALUES, st.booleans()),
    st.builds(Delete, KEYS, st.booleans()),
    st.builds(Batch, st.lists(st.tuples(KEYS, st.none() | VALUES), max_size=6), st.booleans()),
    st.builds(Scan, ANY_BYTES, st.none() | ANY_BYTES, st.booleans(), LIMIT),
    st.builds(Prefix, ANY_BYTES, st.booleans(), LIMIT),
    st.builds(Get, st.lists(KEYS, max_size=4)),
    st.just(Reopen()),
)


def apply_and_check(engine: Engine, model: dict[bytes, bytes], op: ModelOp) -> Engine:
    """Apply ``op`` to the engine and the model; check reads agree. Returns the engine."""
    match op:
        case Put(key, value, sync):
            engine.put(key, value, sync=sync)
            model[key] = value
        case Delete(key, sync):
            engine.delete(key, sync=sync)
            model.pop(key, None)
        case Batch(ops, sync):
            engine.write_batch(ops, sync=sync)
            for key, maybe in ops:
                if maybe is None:
                    model.pop(key, None)
                else:
                    model[key] = maybe
        case Scan(start, end, reverse, limit):
            got = list(engine.scan(start, end, reverse=reverse, limit=limit))
            assert got == expected_scan(model, start, end, reverse=reverse, limit=limit)
        case Prefix(prefix, reverse, limit):
            got = list(engine.scan_prefix(prefix, reverse=reverse, limit=limit))
            want = [(k, model[k]) for k in sorted(model, reverse=reverse) if k.startswith(prefix)]
            assert got == want[:limit]
        case Get(keys):
            assert engine.multi_get(keys) == [model.get(k) for k in keys]
            assert [engine.get(k) for k in keys] == [model.get(k) for k in keys]
        case Reopen():
            engine = engine.reopen()
    return engine


@settings(
    max_examples=60,
    deadline=None,
    # engine_name is an immutable str; each example opens its own engine and directory
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(MODEL_OPS, max_size=30))
def test_engine_agrees_with_a_dict(
    engine_name: str, tmp_path_factory: pytest.TempPathFactory, ops: list[ModelOp]
) -> None:
    path = None if engine_name == "memory" else str(tmp_path_factory.mktemp("model"))
    engine = open_engine(engine_name, path)
    model: dict[bytes, bytes] = {}
    try:
        for op in ops:
            engine = apply_and_check(engine, model, op)
        engine = engine.reopen()
        assert list(engine.scan()) == expected_scan(model)
    finally:
        engine.close()


# --------------------------------------------------------------------------- engine-specific


def test_btree_grows_a_full_map(tmp_path: Path) -> None:
    from tidekv.storage.btree import BTreeEngine

    engine: Engine = BTreeEngine(str(tmp_path / "small"), map_size=256 * 1024)
    try:
        assert isinstance(engine, BTreeEngine)
        before = engine.map_size
        model = {b"k%06d" % i: b"x" * 200 for i in range(4000)}  # ~1 MB > map
        engine.write_batch(model.items(), sync=True)
        assert engine.map_size > before
        for i in range(0, 4000, 500):  # single puts keep growing it as well
            engine.put(b"p%06d" % i, b"y" * 5000)
        assert engine.get(b"k003999") == b"x" * 200
        assert len(list(engine.scan())) == 4000 + 8
        engine = engine.reopen()
        assert len(list(engine.scan())) == 4000 + 8
    finally:
        engine.close()


def test_btree_refuses_only_the_empty_key(tmp_path: Path) -> None:
    from tidekv.storage.btree import BTreeEngine

    engine = BTreeEngine(str(tmp_path / "keys"))
    try:
        with pytest.raises(InvalidKey):
            engine.put(b"", b"v")
        with pytest.raises(InvalidKey):
            engine.write_batch([(b"ok", b"1"), (b"", b"v")])
        assert engine.get(b"ok") is None  # the refused batch wrote nothing
    finally:
        engine.close()


def test_long_keys_keep_their_order(opened: Opened) -> None:
    """Keys past LMDB's 511-byte cap, sharing long prefixes around the 495/511-byte
    boundaries where btree maps them, behave like any other key on every engine."""
    rng = random.Random(7)
    base = b"p" * 494
    keys: set[bytes] = {b"a", b"q", base, base[:-1] + b"q"}
    for n in (494, 495, 496, 510, 511, 512, 600, 1025, 4096):
        for tail in (b"\x00", b"m", b"\xff"):
            keys.add((base + tail * n)[:n])
            keys.add((base + b"m" + tail * n)[:n] + b"z")
    keys |= {base + rng.randbytes(rng.randint(1, 700)) for _ in range(60)}
    ordered = sorted(keys)
    engine = opened.open()
    model = {k: b"v%d" % i for i, k in enumerate(ordered)}
    engine.write_batch(model.items())
    for k in ordered[::3]:
        engine.delete(k)
        del model[k]
    for k in ordered[1::7]:
        engine.put(k, b"again")
        model[k] = b"again"
    for round_ in range(2):
        want = sorted(model.items())
        assert list(engine.scan()) == want, round_
        assert list(engine.scan(reverse=True)) == want[::-1]
        for _ in range(30):
            lo, hi = sorted(rng.sample(ordered, 2))
            sub = [kv for kv in want if lo <= kv[0] < hi]
            assert list(engine.scan(lo, hi)) == sub
            assert list(engine.scan(lo, hi, reverse=True)) == sub[::-1]
            assert list(engine.scan(lo, hi, limit=3)) == sub[:3]
            p = lo[: rng.choice([1, 300, 494, 495, 496, 511, 512])]
            assert list(engine.scan_prefix(p)) == [kv for kv in want if kv[0].startswith(p)]
        for k in ordered:
            assert engine.get(k) == model.get(k)
        assert engine.multi_get(ordered) == [model.get(k) for k in ordered]
        if opened.name != "memory":
            engine = opened.reopen(engine)


@pytest.mark.parametrize("name", ["lsm", "btree"])
def test_unknown_options_are_refused(tmp_path: Path, name: str) -> None:
    from tidekv.errors import InvalidInput

    with pytest.raises(InvalidInput):
        open_engine(name, str(tmp_path / name), no_such_option=1)
