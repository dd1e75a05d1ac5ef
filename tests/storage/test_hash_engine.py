"""Hash-engine tests beyond the shared conformance suite: segments, hints, torn tails,
bit flips, merge (and crashes inside it), a model-based property test, and a real
SIGKILL of a writing child process.

A "crash" here is :meth:`HashEngine._simulate_crash` (every file descriptor is dropped
without sealing, syncing or writing a hint: what a killed process leaves) plus, where
power loss matters, cutting the active segment at every byte length by hand.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidekv.errors import CorruptionError, InvalidInput, StorageError, StoreClosed
from tidekv.storage import _hash_format as fmt
from tidekv.storage.base import Engine
from tidekv.storage.hash import HashEngine

Model = dict[bytes, bytes]


class Crash(BaseException):
    """Raised by a crash hook; a BaseException so the engine's cleanup code skips it."""


def data_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.data"))


def hint_of(data: Path) -> Path:
    return data.with_suffix(".hint")


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in data_files(path))


def assert_state(engine: HashEngine, model: Model) -> None:
    assert list(engine.scan()) == sorted(model.items())
    assert list(engine.scan(reverse=True)) == sorted(model.items(), reverse=True)
    assert engine.stats()["live_keys"] == len(model)


def apply(engine: Engine, model: Model, ops: list[tuple[bytes, bytes | None]]) -> None:
    engine.write_batch(ops)
    for k, v in ops:
        if v is None:
            model.pop(k, None)
        else:
            model[k] = v


def crash_and_reopen(engine: HashEngine, **options: object) -> HashEngine:
    engine._simulate_crash()
    assert engine.path is not None
    return HashEngine(engine.path, **options)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "db"


def fill_with_history(path: Path, max_segment_size: int = 512) -> Model:
    """A closed store whose segments hold overwrites, deletes and re-puts.

    Includes the tombstone-resurrection trap: keys put in an early segment and deleted
    in a later one.
    """
    model: Model = {}
    with HashEngine(str(path), max_segment_size=max_segment_size) as e:
        assert isinstance(e, HashEngine)
        for i in range(60):
            apply(e, model, [(b"k%03d" % i, b"first-%d" % i)])
        for i in range(0, 60, 3):
            apply(e, model, [(b"k%03d" % i, b"second-%d" % i * 3)])
        for i in range(0, 60, 4):
            apply(e, model, [(b"k%03d" % i, None)])
        apply(e, model, [(b"k008", b"back-again")])  # deleted, then put again
        apply(e, model, [(b"b1", b"x"), (b"k001", None), (b"b2", b"y"), (b"b1", b"z")])
    return model


# ------------------------------------------------------------------- options, locking


def test_options_are_checked(db: Path) -> None:
    with pytest.raises(InvalidInput):
        HashEngine(str(db), no_such_option=1)
    with pytest.raises(InvalidInput):
        HashEngine(str(db), merge_ratio=1.5)
    with pytest.raises(InvalidInput):
        HashEngine(None)


def test_a_directory_is_opened_by_one_engine_at_a_time(db: Path) -> None:
    e = HashEngine(str(db))
    with pytest.raises(StorageError):
        HashEngine(str(db))
    e.close()
    HashEngine(str(db)).close()


# ---------------------------------------------------------------------------- segments


def test_rotation_spreads_writes_over_segments(db: Path) -> None:
    model: Model = {}
    e = HashEngine(str(db), max_segment_size=1000)
    for i in range(200):
        apply(e, model, [(b"key%04d" % i, b"v" * (i % 50))])
    big = b"B" * 5000  # larger than a segment: gets a segment of its own
    apply(e, model, [(b"big", big)])
    apply(e, model, [(b"after", b"1")])
    files = data_files(db)
    assert len(files) > 10
    sizes = sorted(p.stat().st_size for p in files)
    assert sizes[-1] == fmt.HEADER_SIZE + 3 + 5000 + fmt.HEADER_SIZE  # + its seal record
    assert all(s <= 1000 + fmt.HEADER_SIZE for s in sizes[:-1])
    assert all(hint_of(p).exists() for p in files[:-1])  # sealed => hinted
    assert not hint_of(files[-1]).exists()  # the active one
    assert_state(e, model)
    e.close()
    e = HashEngine(str(db), max_segment_size=1000)
    assert_state(e, model)
    assert e.stats()["segments"] == len(files)
    e.close()


def test_restart_loads_hints_and_reads_no_data_file(db: Path) -> None:
    model = fill_with_history(db)
    e = HashEngine(str(db))
    st_ = e.stats()
    assert st_["hint_loads"] == st_["segments"] > 3
    assert st_["data_scans"] == 0 and st_["scanned_bytes"] == 0
    assert_state(e, model)
    e.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "delete", "stale"])
def test_bad_hint_falls_back_to_scanning_the_data_file(db: Path, damage: str) -> None:
    model = fill_with_history(db)
    victim = hint_of(data_files(db)[1])
    raw = bytearray(victim.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x10
        victim.write_bytes(raw)
    elif damage == "truncate":
        victim.write_bytes(raw[:-7])
    elif damage == "garbage":
        victim.write_bytes(b"not a hint file at all")
    elif damage == "delete":
        victim.unlink()
    else:  # the data file lost the last byte of its seal record: the hint is stale
        data = victim.with_suffix(".data")
        data.write_bytes(data.read_bytes()[:-1])
    e = HashEngine(str(db))
    st_ = e.stats()
    assert st_["data_scans"] == 1
    assert st_["hint_loads"] == st_["segments"] - 1
    assert st_["bytes_cut"] == (fmt.HEADER_SIZE - 1 if damage == "stale" else 0)
    assert_state(e, model)
    e.close()
    e = HashEngine(str(db))  # the scan wrote a good hint again
    assert e.stats()["data_scans"] == 0
    assert_state(e, model)
    e.close()


# -------------------------------------------------------------------------- torn tails


def build_tail(db: Path) -> tuple[list[int], list[Model], Path]:
    """A store with sealed data and an active segment of several write groups, left as
    a crash leaves it. Returns the group boundaries (file sizes), the state after each
    group and the active segment's path."""
    model: Model = {}
    with HashEngine(str(db)) as e:
        apply(e, model, [(b"old-%d" % i, b"o" * i) for i in range(5)])
    e = HashEngine(str(db))
    bounds, states = [0], [dict(model)]
    groups: list[list[tuple[bytes, bytes | None]]] = [
        [(b"a", b"1")],
        [(b"b", b"22"), (b"old-1", None), (b"c", b"333")],
        [(b"old-2", None)],
        [(b"a", b"4444"), (b"d", b"")],
        [(b"e", b"5" * 40)],
    ]
    for ops in groups:
        apply(e, model, ops)
        bounds.append(data_files(db)[-1].stat().st_size)
        states.append(dict(model))
    e._simulate_crash()
    active = data_files(db)[-1]
    assert not hint_of(active).exists()
    return bounds, states, active


def test_torn_tail_at_every_byte_is_cut_to_the_last_whole_group(db: Path, tmp_path: Path) -> None:
    bounds, states, active = build_tail(db)
    full = active.read_bytes()
    assert len(full) == bounds[-1]
    for length in range(len(full) + 1):
        trial = tmp_path / f"trial{length}"
        shutil.copytree(db, trial)
        (trial / active.name).write_bytes(full[:length])
        done = max(i for i, b in enumerate(bounds) if b <= length)
        e = HashEngine(str(trial))
        assert_state(e, states[done])
        assert e.stats()["bytes_cut"] == length - bounds[done]
        e.close()
        cut = trial / active.name
        if bounds[done] == 0:
            assert not cut.exists()
        else:  # cut, then sealed
            assert cut.stat().st_size == bounds[done] + fmt.HEADER_SIZE
        shutil.rmtree(trial)


@pytest.mark.parametrize("seed", range(3))
def test_unwritten_pages_in_the_tail_are_cut(db: Path, tmp_path: Path, seed: int) -> None:
    """Power loss can keep the file length but lose the bytes (zeros) or leave junk:
    every group wholly before the first damaged byte survives, nothing after it."""
    bounds, states, active = build_tail(db)
    full = active.read_bytes()
    rng = random.Random(seed)
    for trial_no in range(40):
        at = rng.randrange(len(full))
        n = rng.randrange(1, 30)
        fill = bytes(n) if rng.random() < 0.5 else rng.randbytes(n)
        broken = (full[:at] + fill + full[at + n :])[: len(full)]
        diff = [i for i in range(len(full)) if broken[i] != full[i]]
        first = diff[0] if diff else len(full)
        done = max(i for i, b in enumerate(bounds) if b <= first)
        trial = tmp_path / f"t{trial_no}"
        shutil.copytree(db, trial)
        (trial / active.name).write_bytes(broken)
        e = HashEngine(str(trial))
        assert_state(e, states[done])
        assert e.stats()["bytes_cut"] == len(full) - bounds[done]
        e.close()
        shutil.rmtree(trial)


def test_appended_garbage_after_a_clean_crash_is_cut(db: Path) -> None:
    _, states, active = build_tail(db)
    with open(active, "ab") as f:
        f.write(b"\x07" * 100)
    e = HashEngine(str(db))
    assert_state(e, states[-1])
    assert e.stats()["bytes_cut"] == 100
    e.close()


# --------------------------------------------------------------------------- bit flips


def test_bit_flip_in_an_old_record_is_corruption_not_a_wrong_value(db: Path) -> None:
    model = fill_with_history(db)
    e = HashEngine(str(db))
    key = b"k005"
    seg_id, off, size = e._keydir[key]
    path = db / f"{seg_id:010d}.data"
    fd = os.open(path, os.O_RDWR)
    try:
        for pos in range(off, off + size):
            for bit in (0x01, 0x80):
                (orig,) = os.pread(fd, 1, pos)
                os.pwrite(fd, bytes([orig ^ bit]), pos)
                with pytest.raises(CorruptionError):
                    e.get(key)
                with pytest.raises(CorruptionError):
                    list(e.scan(b"k005", b"k006"))
                os.pwrite(fd, bytes([orig]), pos)
                assert e.get(b"k007") == model[b"k007"]
    finally:
        os.close(fd)
    assert e.get(key) == model[key]
    e.close()


def test_damage_in_a_sealed_segment_without_hint_refuses_to_open(db: Path) -> None:
    fill_with_history(db)
    first = data_files(db)[0]
    for p in data_files(db):
        hint_of(p).unlink()
    raw = bytearray(first.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    first.write_bytes(raw)
    with pytest.raises(CorruptionError):
        HashEngine(str(db))
    with pytest.raises(CorruptionError):  # not StorageError("in use"): the lock was let go
        HashEngine(str(db))


# ------------------------------------------------------------------------------- merge


def test_merge_reclaims_space_and_keeps_deletes_deleted(db: Path) -> None:
    model = fill_with_history(db)
    before = disk_bytes(db)
    e = HashEngine(str(db), max_segment_size=512)
    live = e.stats()["live_bytes"]
    assert e.stats()["dead_bytes"] > 10 * fmt.HEADER_SIZE * e.stats()["segments"]
    res = e.merge()
    assert res["bytes_before"] == before
    assert disk_bytes(db) == res["bytes_after"] == live + fmt.HEADER_SIZE * res["outputs"]
    assert e.stats()["dead_bytes"] == fmt.HEADER_SIZE * res["outputs"]  # seal records
    assert_state(e, model)
    assert all(e.get(b"k%03d" % i) is None for i in range(0, 60, 4) if i != 8)
    e.close()
    assert not list(db.glob("*.tmp")) and not (db / "MERGE").exists()
    e = HashEngine(str(db), max_segment_size=512)
    assert_state(e, model)
    # merged segments hold only live records, so a second merge changes nothing
    assert e.merge()["bytes_after"] == disk_bytes(db)
    e.close()
    e = HashEngine(str(db))
    assert_state(e, model)
    e.close()


def test_merge_of_everything_deleted_leaves_no_segments(db: Path) -> None:
    with HashEngine(str(db), max_segment_size=100) as e:
        for i in range(20):
            e.put(b"%d" % i, b"v")
        for i in range(20):
            e.delete(b"%d" % i)
        assert isinstance(e, HashEngine)
        e.merge()
        assert data_files(db) == []
    e = HashEngine(str(db))
    assert list(e.scan()) == []
    e.close()


def test_writes_during_a_merge_win_over_the_copies(db: Path) -> None:
    """A write made while a merge runs lands in an active segment whose id is *lower*
    than the merge outputs that hold the stale copy: the seq decides, not the file id."""
    model = fill_with_history(db)
    e = HashEngine(str(db), max_segment_size=512)

    def during(point: str) -> None:
        if point == "merge:sealed":  # creates the new active segment before any output
            apply(e, model, [(b"early", b"e")])
        if point == "merge:outputs_written":  # after k003 and k006 were copied
            apply(e, model, [(b"k003", b"during"), (b"k006", None), (b"new", b"n")])

    e._crash_hook = during
    e.merge()
    e._crash_hook = None
    assert_state(e, model)
    e.close()
    e = HashEngine(str(db), max_segment_size=512)
    assert_state(e, model)
    e.merge()  # the stale copy of k006 and its tombstone go together
    e.close()
    e = HashEngine(str(db))
    assert_state(e, model)
    e.close()


MERGE_POINTS = [
    "merge:outputs_written",
    "merge:committed",
    "merge:renamed",
    "merge:installed",
    "merge:deleting",
    "merge:deleted",
]


@pytest.mark.parametrize("point", MERGE_POINTS)
def test_crash_inside_merge_loses_nothing(db: Path, point: str) -> None:
    model = fill_with_history(db)
    e = HashEngine(str(db), max_segment_size=512)
    inputs = {p.name for p in data_files(db)}

    def crash(at: str) -> None:
        if at == point:
            raise Crash(at)

    e._crash_hook = crash
    with pytest.raises(Crash):
        e.merge()
    e = crash_and_reopen(e, max_segment_size=512)
    assert_state(e, model)
    names = set(os.listdir(db))
    assert not any(n.endswith(".tmp") for n in names) and "MERGE" not in names
    committed = point != "merge:outputs_written"
    assert (inputs & names == set()) == committed  # finished, or rolled back
    apply(e, model, [(b"k000", b"after-crash")])
    e.merge()
    e.close()
    e = HashEngine(str(db))
    assert_state(e, model)
    e.close()


def test_crash_while_sealing_a_segment(db: Path) -> None:
    model: Model = {}
    e = HashEngine(str(db), max_segment_size=200)

    def crash(at: str) -> None:
        if at == "seal:synced":
            raise Crash(at)

    for i in range(5):
        apply(e, model, [(b"k%d" % i, b"v" * 30)])
    e._crash_hook = crash
    with pytest.raises(Crash):
        for i in range(5, 50):
            apply(e, model, [(b"k%d" % i, b"v" * 30)])
    # the write that triggered the rotation raised before it reached the model
    e = crash_and_reopen(e)
    assert_state(e, model)
    assert e.stats()["data_scans"] == 1
    e.close()


def test_automatic_merge_keeps_the_store_small(db: Path) -> None:
    e = HashEngine(str(db), max_segment_size=2000, merge_ratio=0.5, merge_min_bytes=0)
    for round_ in range(40):
        for i in range(20):
            e.put(b"k%02d" % i, b"%03d" % round_ * 10)
    st_ = e.stats()
    assert st_["merges"] > 0
    assert st_["total_bytes"] < 4 * st_["live_bytes"] + 2000
    assert all(e.get(b"k%02d" % i) == b"039" * 10 for i in range(20))
    e.close()


def test_reads_and_writes_during_merges(db: Path) -> None:
    e = HashEngine(str(db), max_segment_size=4096)
    keys = [b"r%04d" % i for i in range(300)]
    for k in keys:
        e.put(k, k * 3)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                for k in keys[::7]:
                    assert e.get(k) == k * 3
                assert [k for k, _ in e.scan(b"r0100", b"r0200")] == keys[100:200]
        except BaseException as exc:
            errors.append(exc)

    def churn() -> None:  # writes to other keys, so the merges have dead bytes to drop
        try:
            for i in range(3000):
                e.put(b"w%d" % (i % 50), b"x" * 40)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)] + [threading.Thread(target=churn)]
    for t in threads:
        t.start()
    for _ in range(10):
        e.merge()
    threads[-1].join()
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    e.close()


def test_use_after_close(db: Path) -> None:
    e = HashEngine(str(db))
    e.put(b"a", b"1")
    e.close()
    for call in (lambda: e.get(b"a"), e.merge, lambda: e.put(b"a", b"2"), e.sync):
        with pytest.raises(StoreClosed):
            call()


# ----------------------------------------------------------------- property: dict model

keys_st = st.sampled_from([b"", b"a", b"ab", b"b", b"k1", b"k2", b"k3", b"\xff", b"\x00z"])
value_st = st.binary(max_size=40)
op_st = st.one_of(
    st.tuples(st.just("put"), keys_st, value_st),
    st.tuples(st.just("delete"), keys_st, st.none()),
    st.tuples(
        st.just("batch"),
        st.lists(st.tuples(keys_st, st.one_of(st.none(), value_st)), max_size=5),
        st.none(),
    ),
    st.tuples(st.sampled_from(["reopen", "crash", "merge", "check"]), st.none(), st.none()),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_st, max_size=40))
def test_engine_matches_a_dict_through_reopen_crash_and_merge(
    ops: list[tuple[str, object, object]],
) -> None:
    opts = {"max_segment_size": 120}
    with tempfile.TemporaryDirectory() as tmp:
        e = HashEngine(tmp, **opts)
        model: Model = {}
        for kind, a, b in ops:
            if kind == "put":
                assert isinstance(a, bytes) and isinstance(b, bytes)
                e.put(a, b)
                model[a] = b
            elif kind == "delete":
                assert isinstance(a, bytes)
                e.delete(a)
                model.pop(a, None)
            elif kind == "batch":
                assert isinstance(a, list)
                apply(e, model, a)
            elif kind == "reopen":
                e.close()
                e = HashEngine(tmp, **opts)
            elif kind == "crash":
                e = crash_and_reopen(e, **opts)
            elif kind == "merge":
                e.merge()
                assert e.stats()["dead_bytes"] == fmt.HEADER_SIZE * e.stats()["segments"]
            else:
                assert_state(e, model)
        assert_state(e, model)
        assert e.stats()["live_bytes"] <= e.stats()["total_bytes"]
        e.close()
        e = HashEngine(tmp, **opts)
        assert_state(e, model)
        e.close()


# ------------------------------------------------------------------------ real SIGKILL

CHILD = r"""
import sys
from tidekv.storage.base import Engine
from tidekv.storage.hash import HashEngine
e = HashEngine(sys.argv[1], max_segment_size=8192, merge_ratio=0.6, merge_min_bytes=0)
start = int(sys.argv[2])
i = start
while True:
    if i % 4 == 0:
        e.write_batch([(b"b%07d-%d" % (i, j), b"%d" % i) for j in range(3)], sync=True)
    else:
        e.put(b"k%07d" % i, b"v%d" % i * 5, sync=True)
        e.put(b"hot%d" % (i % 10), b"%d" % i, sync=True)
    print(i, flush=True)
    i += 1
"""


def child_writes(path: str, start: int, acks: int) -> list[int]:
    """Run the writer until it acknowledged ``acks`` writes, SIGKILL it, return acks."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, path, str(start)],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    acked: list[int] = []
    for line in proc.stdout:
        acked.append(int(line))
        if len(acked) >= acks:
            break
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate()
    acked.extend(int(x) for x in rest.split())  # printed before the kill: acknowledged
    assert proc.returncode == -signal.SIGKILL
    return acked


def check_acked(e: HashEngine, acked: list[int]) -> None:
    for i in acked:
        if i % 4 == 0:
            assert [e.get(b"b%07d-%d" % (i, j)) for j in range(3)] == [b"%d" % i] * 3
        else:
            assert e.get(b"k%07d" % i) == b"v%d" % i * 5


def test_sigkill_of_a_writer_loses_no_acknowledged_write(db: Path) -> None:
    rng = random.Random(7)
    acked: list[int] = []
    start = 0
    for _ in range(3):
        acked += child_writes(str(db), start, rng.randrange(100, 400))
        e = HashEngine(str(db))
        check_acked(e, acked)
        nxt = acked[-1] + 1  # the write in flight at the kill: all or nothing
        batch = [e.get(b"b%07d-%d" % (nxt, j)) for j in range(3)]
        assert batch in ([None] * 3, [b"%d" % nxt] * 3)
        e.close()
        start = nxt + 1
    e = HashEngine(str(db))
    check_acked(e, acked)
    e.close()
