"""The node WAL and GroupStorage: conformance with MemoryStorage, reopen, rotation,
checkpoints, torn tails, corruption, threads.

The reference for every answer is :class:`~tidekv.raft.storage.MemoryStorage` fed the
same operations (``wal_crash_writer.apply_model``); a GroupStorage must answer exactly as
it does, before and after a reopen, where a reopen after a simulated crash keeps exactly
the operations made before the last ``sync``.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidekv.errors import CorruptionError, InvalidInput, StorageError, StoreClosed
from tidekv.node import wal as walmod
from tidekv.node.logstore import NodeLog
from tidekv.raft import (
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    LogUnavailable,
    MemoryStorage,
    RawNode,
    Snapshot,
    SnapshotMeta,
)

from .wal_crash_writer import Op, answers, apply_group, apply_model, clone, payload

CONF = ConfState(voters=frozenset({1, 2, 3}))


class Crash(BaseException):
    """Raised by a test hook inside the WAL: the process 'dies' there."""


class Harness:
    """A NodeLog beside one MemoryStorage per group, fed the same ops.

    ``synced`` is a copy of every model as of the last sync: what a crash keeps.
    """

    def __init__(self, path: Path, **options: int) -> None:
        self.path = path
        self.options = options
        self.log = NodeLog(path, **options)
        self.models: dict[int, MemoryStorage] = {}
        self.synced: dict[int, MemoryStorage] = {}

    def model(self, g: int) -> MemoryStorage:
        return self.models.setdefault(g, MemoryStorage())

    def do(self, op: Op) -> str | None:
        """Apply ``op`` to both; they must agree on whether it raises (and what)."""
        if op.kind in ("sync", "checkpoint"):
            if op.kind == "checkpoint":
                self.log.checkpoint()
            self.sync()
            return None
        got = want = None
        try:
            apply_model(self.model(op.group), op)
        except LogUnavailable as exc:
            want = type(exc).__name__
        try:
            apply_group(self.log.group(op.group), op)
        except LogUnavailable as exc:
            got = type(exc).__name__
        assert got == want, f"{op}: GroupStorage {got}, MemoryStorage {want}"
        return got

    def sync(self) -> None:
        self.log.sync()
        self.synced = {g: clone(m) for g, m in self.models.items()}

    def reopen(self, crash: bool) -> None:
        if crash:
            self.log.wal._simulate_crash()
            self.models = {g: clone(m) for g, m in self.synced.items()}
        else:
            self.log.close()
            self.synced = {g: clone(m) for g, m in self.models.items()}
        self.log = NodeLog(self.path, **self.options)

    def check(self, all_ranges: bool = True) -> None:
        for g, m in self.models.items():
            got = answers(self.log.group(g), all_ranges=all_ranges)
            want = answers(m, all_ranges=all_ranges)
            assert got == want, f"group {g} differs"
        assert set(self.log.group_ids()) >= {g for g, m in self.models.items() if _nonempty(m)}


def _nonempty(m: MemoryStorage) -> bool:
    return m.last_index() > 0 or m.hard_state != HardState() or m.snapshot().meta.index > 0


def ents(first: int, n: int, term: int = 1, size: int = 20, group: int = 1) -> tuple[Entry, ...]:
    return tuple(
        Entry(term, i, EntryKind.NORMAL, payload(group, i, term, size))
        for i in range(first, first + n)
    )


def append(g: int, first: int, n: int, term: int = 1, size: int = 20) -> Op:
    return Op("append", g, entries=ents(first, n, term, size, g))


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.wal"))


# -- conformance, scenario by scenario -------------------------------------------------


def test_fresh_group_answers_like_memory_storage(tmp_path: Path) -> None:
    h = Harness(tmp_path / "wal")
    h.model(1)
    h.check()
    h.log.close()


def test_scenarios_match_memory_storage(tmp_path: Path) -> None:
    h = Harness(tmp_path / "wal")
    script = [
        append(1, 1, 10),
        Op("hs", 1, hs=HardState(1, 2, 5)),
        append(1, 6, 3, term=2),  # conflicting tail: 6..10 replaced by 6..8
        append(1, 12, 2),  # gap: LogUnavailable, nothing written
        append(1, 9, 4, term=2),
        Op("compact", 1, meta=SnapshotMeta(4, 1, CONF)),
        Op("compact", 1, meta=SnapshotMeta(3, 1, CONF)),  # not past the point: ignored
        Op("compact", 1, meta=SnapshotMeta(99, 1, CONF)),  # past the end: LogUnavailable
        append(1, 2, 3),  # all at or before the compaction point: ignored
        append(1, 3, 5, term=3),  # the part after the point replaces 5..
        Op("snapshot", 1, meta=SnapshotMeta(20, 4, CONF)),  # drops the whole log
        Op("snapshot", 1, meta=SnapshotMeta(15, 4, CONF)),  # older: ignored
        append(1, 21, 4, term=4),
        Op("compact", 1, meta=SnapshotMeta(24, 4, CONF)),  # the whole log
        append(1, 25, 1, term=4),
    ]
    errors = []
    for op in script:
        errors.append(h.do(op))
        h.check()
    assert errors.count("LogUnavailable") == 2
    h.reopen(crash=False)
    h.check()
    assert h.log.group(1).compaction_point == SnapshotMeta(24, 4, CONF)


def test_crash_keeps_exactly_what_was_synced(tmp_path: Path) -> None:
    h = Harness(tmp_path / "wal")
    h.do(append(1, 1, 5))
    h.do(Op("hs", 1, hs=HardState(1, 1, 3)))
    h.sync()
    h.do(append(1, 6, 5))
    h.do(Op("compact", 1, meta=SnapshotMeta(4, 1, CONF)))
    h.reopen(crash=True)
    h.check()
    assert h.log.group(1).last_index() == 5
    assert h.log.group(1).first_index() == 1


def test_snapshot_provider_and_data_not_stored(tmp_path: Path) -> None:
    log = NodeLog(tmp_path / "wal")
    g = log.group(3)
    g.apply_snapshot(Snapshot(SnapshotMeta(7, 2, CONF), b"state machine image"))
    assert g.snapshot() == Snapshot(SnapshotMeta(7, 2, CONF), b"")
    assert g.initial_state() == (HardState(), CONF)
    built = Snapshot(SnapshotMeta(9, 2, CONF), b"built on demand")
    g.set_snapshot_provider(lambda: built)
    assert g.snapshot() is built
    g.set_snapshot_provider(None)
    assert g.snapshot().meta.index == 7
    log.close()
    log = NodeLog(tmp_path / "wal")
    assert log.group(3).snapshot() == Snapshot(SnapshotMeta(7, 2, CONF), b"")
    log.close()


def test_errors_at_the_edges(tmp_path: Path) -> None:
    log = NodeLog(tmp_path / "wal")
    with pytest.raises(StorageError, match="open in another WAL"):
        NodeLog(tmp_path / "wal")
    with pytest.raises(InvalidInput):
        log.group(-1)
    with pytest.raises(InvalidInput):
        log.group(1 << 64)
    with pytest.raises(InvalidInput):
        NodeLog(tmp_path / "other", max_segment_size=10)
    g = log.group(1)
    log.close()
    log.close()  # idempotent
    assert log.closed
    with pytest.raises(StoreClosed):
        g.append(list(ents(1, 1)))
    with pytest.raises(StoreClosed):
        log.sync()
    with pytest.raises(StoreClosed):
        log.group(2)
    assert g.last_index() == 0  # the refused append changed nothing
    NodeLog(tmp_path / "wal").close()  # the directory lock was released


def test_failed_write_poisons_the_wal(tmp_path: Path) -> None:
    log = NodeLog(tmp_path / "wal")
    log.group(1).append(list(ents(1, 3)))
    seg = log.wal._segments[-1]
    os.close(seg.fd)
    seg.fd = os.open(os.devnull, os.O_RDONLY)  # writes now fail with EBADF
    with pytest.raises(StorageError, match="write failed"):
        log.sync()
    with pytest.raises(StorageError, match="failed earlier"):
        log.group(1).set_hard_state(HardState(1, 1, 1))
    with pytest.raises(StorageError, match="failed earlier"):
        log.sync()
    log.close()
    log = NodeLog(tmp_path / "wal")
    assert log.group(1).last_index() == 0
    log.close()


# -- property: random ops, syncs and reopens ---------------------------------------------

GROUPS = [1, 2, 9]

op_choice = st.one_of(
    st.tuples(
        st.just("append"),
        st.sampled_from(GROUPS),
        st.integers(-6, 2),  # start relative to last + 1 (< 0: conflicting tail; > 0: gap)
        st.integers(1, 6),
        st.integers(1, 4),  # term
        st.sampled_from([0, 3, 60, 300]),
    ),
    st.tuples(st.just("hs"), st.sampled_from(GROUPS), st.integers(0, 9), st.integers(0, 30)),
    st.tuples(st.just("compact"), st.sampled_from(GROUPS), st.integers(-1, 8)),
    st.tuples(st.just("snapshot"), st.sampled_from(GROUPS), st.integers(-3, 6)),
    st.tuples(st.just("sync")),
    st.tuples(st.just("checkpoint")),
    st.tuples(st.just("reopen"), st.booleans()),
)


def concrete(h: Harness, choice: tuple[Any, ...]) -> Op | None:
    """Turn a drawn choice into an op on the current state (None: a reopen)."""
    kind = choice[0]
    if kind in ("sync", "checkpoint", "reopen"):
        return None if kind == "reopen" else Op(kind)
    g = choice[1]
    m = h.model(g)
    if kind == "append":
        _, _, rel, n, term, size = choice
        return append(g, max(1, m.last_index() + 1 + rel), n, term, size)
    if kind == "hs":
        _, _, term, commit = choice
        return Op("hs", g, hs=HardState(term, 1, commit))
    if kind == "compact":
        idx = m.first_index() - 1 + choice[2]
        t = m.term(idx) if m.first_index() - 1 <= idx <= m.last_index() else 0
        return Op("compact", g, meta=SnapshotMeta(idx, t, CONF))
    idx = max(0, m.last_index() + choice[2])
    return Op("snapshot", g, meta=SnapshotMeta(idx, 5, CONF))


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    choices=st.lists(op_choice, min_size=1, max_size=60),
    segment=st.sampled_from([64, 256, 4096, walmod.DEFAULT_MAX_SEGMENT_SIZE]),
)
def test_random_ops_with_reopens_match_memory_storage(
    choices: list[tuple[Any, ...]], segment: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        h = Harness(Path(tmp) / "wal", max_segment_size=segment)
        try:
            for choice in choices:
                op = concrete(h, choice)
                if op is None:
                    h.reopen(crash=choice[1])
                    h.check()
                else:
                    h.do(op)
            h.check()
            h.reopen(crash=True)
            h.check()
        finally:
            h.log.close()


# -- many groups, rotation, checkpoints ---------------------------------------------------


def random_step(h: Harness, rng: random.Random, groups: list[int], compact: bool) -> None:
    for g in rng.sample(groups, rng.randint(1, len(groups))):
        m = h.model(g)
        last = m.last_index()
        start = last + 1
        term = max(1, m.term(last))
        if last - m.first_index() > 4 and rng.random() < 0.1:
            start = rng.randint(m.first_index(), last)
            term += 1
        h.do(append(g, start, rng.randint(1, 20), term, rng.choice([10, 150, 700])))
        h.do(Op("hs", g, hs=HardState(term, 1, h.model(g).last_index())))
        m = h.model(g)
        if compact and m.last_index() - m.first_index() > 30 and rng.random() < 0.3:
            idx = m.last_index() - 10
            h.do(Op("compact", g, meta=SnapshotMeta(idx, m.term(idx), CONF)))
    h.sync()


def test_many_groups_interleaved_in_one_wal(tmp_path: Path) -> None:
    rng = random.Random(7)
    groups = list(range(1, 65))
    h = Harness(tmp_path / "wal", max_segment_size=256 << 10)
    for _ in range(60):
        random_step(h, rng, groups, compact=True)
    h.check(all_ranges=False)
    assert h.log.group_ids() == groups
    h.reopen(crash=True)
    h.check(all_ranges=False)
    assert h.log.group_ids() == groups
    for _ in range(20):
        random_step(h, rng, groups, compact=True)
    h.reopen(crash=False)
    h.check(all_ranges=False)
    h.log.close()


def test_rotation_checkpoint_and_deletion(tmp_path: Path) -> None:
    rng = random.Random(11)
    size = 16 << 10
    h = Harness(tmp_path / "wal", max_segment_size=size)
    groups = [1, 2, 3, 4]
    # no compaction: everything stays live, so segments pile up and none is deleted
    for _ in range(40):
        random_step(h, rng, groups, compact=False)
    st0 = h.log.stats()
    assert st0["rotations"] >= 3
    assert st0["checkpoints"] == 0 and st0["segments_deleted"] == 0
    assert len(segments(h.path)) == st0["segments"] == st0["rotations"] + 1
    h.reopen(crash=True)
    h.check(all_ranges=False)
    # compaction makes most of it dead: the next rotation rewrites the live state
    for g in groups:
        m = h.model(g)
        idx = m.last_index() - 3
        h.do(Op("compact", g, meta=SnapshotMeta(idx, m.term(idx), CONF)))
    for _ in range(200):
        random_step(h, rng, groups, compact=True)
    st1 = h.log.stats()
    assert st1["checkpoints"] >= 2 and st1["segments_deleted"] >= st0["segments"]
    on_disk = segments(h.path)
    assert len(on_disk) == st1["segments"] <= 3
    assert sum(p.stat().st_size for p in on_disk) == st1["bytes"]
    h.check(all_ranges=False)
    h.reopen(crash=True)
    h.check(all_ranges=False)
    h.log.close()


def test_idle_group_does_not_pin_old_segments(tmp_path: Path) -> None:
    """A group written once and never again is carried forward by checkpoints."""
    h = Harness(tmp_path / "wal", max_segment_size=8 << 10)
    h.do(append(5, 1, 3))
    h.do(Op("hs", 5, hs=HardState(1, 5, 2)))
    h.sync()
    first_segment = segments(h.path)[0]
    rng = random.Random(3)
    for _ in range(150):
        random_step(h, rng, [1], compact=True)
    assert not first_segment.exists()
    h.reopen(crash=True)
    h.check(all_ranges=False)
    assert h.log.group(5).hard_state == HardState(1, 5, 2)
    h.log.close()


@pytest.mark.parametrize(
    "point",
    ["rotate:created", "checkpoint:partial", "checkpoint:synced", "checkpoint:deleting"],
)
def test_crash_inside_a_checkpoint(tmp_path: Path, point: str) -> None:
    """Kill the WAL at each step of a checkpoint: reopen serves the last synced state."""
    h = Harness(tmp_path / "wal", max_segment_size=4 << 10)
    rng = random.Random(5)
    hits: list[str] = []

    def hook(where: str) -> None:
        hits.append(where)
        if where == point and h.log.stats()["rotations"] >= 2:
            raise Crash(where)

    h.log.wal._crash_hook = hook
    with pytest.raises(Crash):
        for _ in range(500):
            # the big entries make the checkpoint span several write chunks
            random_step(h, rng, [1, 2, 3], compact=True)
            h.do(append(4, h.model(4).last_index() + 1, 1, size=300_000))
            m = h.model(4)
            h.do(Op("compact", 4, meta=SnapshotMeta(m.last_index() - 1, 1, CONF)))
    assert point in hits
    # the crashed sync had written and fdatasync-ed its buffer before it rotated: every
    # op made so far is on disk, though the sync never returned
    h.synced = {g: clone(m) for g, m in h.models.items()}
    h.reopen(crash=True)
    h.check(all_ranges=False)
    ids = h.log.wal.segment_ids()
    assert [int(p.name[:10]) for p in segments(h.path)] == ids
    for _ in range(10):
        random_step(h, rng, [1, 2, 3], compact=True)
    h.reopen(crash=False)
    h.check(all_ranges=False)
    h.log.close()


# -- torn tails and corruption --------------------------------------------------------------


def last_record_span(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    _kind, _group, start, end = walmod.scan_records(data, str(path)).records[-1]
    return start - walmod.HEADER_SIZE, end


Models = dict[int, MemoryStorage]


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, Models, Models]:
    """A closed WAL whose last record is an append of 3 entries: (its directory, the
    logs with that record, the logs without it)."""
    src = tmp_path / "src"
    h = Harness(src)
    for k in range(5):
        h.do(append(1, 1 + 3 * k, 3, size=8))
        h.do(Op("hs", 2, hs=HardState(k, 1, k)))
    h.sync()
    before = {g: clone(m) for g, m in h.models.items()}
    h.do(append(1, 16, 3, size=8))
    h.log.close()
    return src, h.models, before


def reopen_copy(src: Path, dst: Path, mutate: Callable[[Path], None]) -> NodeLog:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    mutate(segments(dst)[-1])
    return NodeLog(dst)


def test_torn_tail_at_every_byte_of_the_last_record(
    tmp_path: Path, written: tuple[Path, Models, Models]
) -> None:
    src, after, before = written
    seg = segments(src)[-1]
    start, end = last_record_span(seg)
    for cut in range(start, end + 1):

        def truncate(p: Path, cut: int = cut) -> None:
            os.truncate(p, cut)

        log = reopen_copy(src, tmp_path / "torn", truncate)
        try:
            whole = cut == end
            for g, m in (after if whole else before).items():
                assert answers(log.group(g)) == answers(m), f"cut at {cut}"
            assert log.stats()["bytes_cut"] == (0 if whole else cut - start)
            assert segments(tmp_path / "torn")[-1].stat().st_size == (end if whole else start)
            log.group(1).append(list(ents(log.group(1).last_index() + 1, 1)))
            log.sync()  # appends go on after the cut
        finally:
            log.close()
        log = NodeLog(tmp_path / "torn")
        assert log.stats()["bytes_cut"] == 0
        log.close()


@pytest.mark.parametrize("tail", ["garbage", "zeros", "flip"])
def test_garbage_tail_is_cut(
    tmp_path: Path, written: tuple[Path, Models, Models], tail: str
) -> None:
    src, after, before = written
    seg = segments(src)[-1]
    start, end = last_record_span(seg)

    def damage(p: Path) -> None:
        data = bytearray(p.read_bytes())
        if tail == "garbage":
            data += random.Random(1).randbytes(100)
        elif tail == "zeros":
            data += bytes(4096)  # a preallocated or half-written page
        else:
            data[end - 2] ^= 0x40  # the last record's payload
        p.write_bytes(bytes(data))

    log = reopen_copy(src, tmp_path / "t", damage)
    want = before if tail == "flip" else after
    for g, m in want.items():
        assert answers(log.group(g)) == answers(m)
    size = segments(tmp_path / "t")[-1].stat().st_size
    assert size == (start if tail == "flip" else end)
    log.close()


def two_segment_wal(path: Path) -> Harness:
    h = Harness(path, max_segment_size=1024)
    for k in range(40):
        h.do(append(1, 1 + 2 * k, 2, size=30))
        h.sync()
    h.log.close()
    assert len(segments(path)) >= 3
    assert h.log.stats()["checkpoints"] == 0
    return h


def flip(p: Path, offset: int) -> None:
    data = bytearray(p.read_bytes())
    data[offset] ^= 0x01
    p.write_bytes(bytes(data))


def test_corrupt_record_in_a_closed_segment_is_an_error(tmp_path: Path) -> None:
    two_segment_wal(tmp_path / "w")
    first = segments(tmp_path / "w")[0]
    _start, end = last_record_span(first)
    flip(first, walmod.SEGMENT_HEADER_SIZE + 3)  # the first record's length field
    with pytest.raises(CorruptionError, match="closed segment"):
        NodeLog(tmp_path / "w")
    flip(first, walmod.SEGMENT_HEADER_SIZE + 3)
    flip(first, end - 1)  # the last record of a closed segment: not a torn tail
    with pytest.raises(CorruptionError, match="closed segment"):
        NodeLog(tmp_path / "w")
    flip(first, end - 1)
    NodeLog(tmp_path / "w").close()  # repaired: opens


def test_damaged_segment_headers(tmp_path: Path) -> None:
    h = two_segment_wal(tmp_path / "w")
    segs = segments(tmp_path / "w")
    flip(segs[1], 9)  # a closed segment's header
    with pytest.raises(CorruptionError, match="segment header"):
        NodeLog(tmp_path / "w")
    flip(segs[1], 9)
    # the newest segment's header, with valid records after it: damage, not a torn create
    flip(segs[-1], 0)
    with pytest.raises(CorruptionError, match="segment header"):
        NodeLog(tmp_path / "w")
    # a newest segment cut inside its header was being created at a crash: it goes away
    os.truncate(segs[-1], walmod.SEGMENT_HEADER_SIZE - 1)
    log = NodeLog(tmp_path / "w")
    assert not segs[-1].exists()
    assert log.stats()["bytes_cut"] == walmod.SEGMENT_HEADER_SIZE - 1
    last = log.group(1).last_index()
    assert 0 < last < h.model(1).last_index()
    prefix = MemoryStorage()
    prefix.append(h.model(1).entries(1, last + 1))
    assert answers(log.group(1)) == answers(prefix)
    log.close()


def test_checkpoint_cut_short_before_the_newest_segment_is_corruption(tmp_path: Path) -> None:
    h = Harness(tmp_path / "w", max_segment_size=1024)
    h.do(append(1, 1, 3))
    h.do(Op("checkpoint"))
    for k in range(30):  # no compaction: everything stays live, no further checkpoint
        h.do(append(1, 4 + k, 1, size=60))
        h.sync()
    h.log.close()
    segs = segments(tmp_path / "w")
    flags = [walmod.read_segment_header(p.read_bytes(), int(p.name[:10])) or 0 for p in segs]
    ckpt = [p for p, f in zip(segs, flags, strict=True) if f & walmod.FLAG_CHECKPOINT]
    assert len(ckpt) == 1 and ckpt[0] != segs[-1]
    records = walmod.scan_records(ckpt[0].read_bytes(), "").records
    end = [start for kind, _, start, _ in records if kind == walmod.CHECKPOINT_END]
    os.truncate(ckpt[0], end[0] - walmod.HEADER_SIZE)
    with pytest.raises(CorruptionError, match="checkpoint without its end"):
        NodeLog(tmp_path / "w")


def test_a_record_that_does_not_fit_is_corruption(tmp_path: Path) -> None:
    log = NodeLog(tmp_path / "w")
    log.group(1).append(list(ents(1, 3)))
    log.wal.append_entries(1, list(ents(7, 1)))  # a gap, bypassing GroupStorage's checks
    log.close()
    with pytest.raises(CorruptionError, match="do not fit"):
        NodeLog(tmp_path / "w")


def test_unknown_record_kind_is_corruption(tmp_path: Path) -> None:
    log = NodeLog(tmp_path / "w")
    log.group(1).append(list(ents(1, 3)))
    log.close()
    seg = segments(tmp_path / "w")[-1]
    body = struct.pack("<IBQ", 0, 77, 1)
    with seg.open("ab") as f:
        f.write(struct.pack("<I", zlib.crc32(body)) + body)
    with pytest.raises(CorruptionError, match="unknown record kind"):
        NodeLog(tmp_path / "w")


def test_undecodable_payload_is_corruption(tmp_path: Path) -> None:
    log = NodeLog(tmp_path / "w")
    log.wal._put(walmod.ENTRIES, 1, msgspec.msgpack.encode(["not", "entries"]), None)
    log.close()
    with pytest.raises(CorruptionError, match="undecodable"):
        NodeLog(tmp_path / "w")


# -- threads: sync in a worker while another thread appends -----------------------------


def test_sync_covers_everything_appended_before_it_began(tmp_path: Path) -> None:
    log = NodeLog(tmp_path / "w", max_segment_size=4 << 10)
    groups = [1, 2, 3, 4]
    done = 0  # appends made so far (one entry each, round robin over the groups)
    stop = threading.Event()
    floor = [0]  # appends made before the latest completed sync began
    errors: list[BaseException] = []

    def syncer() -> None:
        try:
            while not stop.is_set():
                before = done
                log.sync()
                floor[0] = before
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=syncer)
    t.start()
    try:
        for k in range(3000):
            g = groups[k % 4]
            gs = log.group(g)
            i = k // 4 + 1
            gs.append([Entry(1, i, EntryKind.NORMAL, payload(g, i, 1, 40))])
            if i % 50 == 0:
                gs.compact(i - 10, CONF)  # checkpoints happen while appending
            done = k + 1
    finally:
        stop.set()
        t.join()
    assert not errors
    floor_at_crash = floor[0]
    log.wal._simulate_crash()
    log = NodeLog(tmp_path / "w")
    lasts = [log.group(g).last_index() for g in groups]
    survived = sum(lasts)
    assert survived >= floor_at_crash
    # what survived is a prefix of the append order
    assert lasts == [(survived - j + 3) // 4 for j in range(4)]
    for j, g in enumerate(groups):
        gs = log.group(g)
        got = gs.entries(gs.first_index(), gs.last_index() + 1)
        assert got == [Entry(1, e.index, EntryKind.NORMAL, payload(g, e.index, 1, 40)) for e in got]
        # nothing of a group survives when no sync completed before the crash
        assert [e.index for e in got][-1:] == ([lasts[j]] if lasts[j] else [])
    log.close()


def test_threaded_appends_and_checkpoints_lose_nothing(tmp_path: Path) -> None:
    """Checkpoints taken by a syncing thread see the log and the records at one cut."""
    h = Harness(tmp_path / "w", max_segment_size=2 << 10)
    stop = threading.Event()

    def syncer() -> None:
        while not stop.is_set():
            h.log.sync()

    t = threading.Thread(target=syncer)
    t.start()
    rng = random.Random(9)
    rounds = 0
    try:
        # at least 300 rounds, and on until the syncing thread took a checkpoint (on a
        # loaded machine it may not get to run for a while)
        while rounds < 300 or (h.log.stats()["checkpoints"] == 0 and rounds < 100_000):
            rounds += 1
            for g in (1, 2):
                m = h.model(g)
                h.do(append(g, m.last_index() + 1, rng.randint(1, 5), size=50))
                h.do(Op("hs", g, hs=HardState(1, 1, m.last_index())))
                if m.last_index() - m.first_index() > 20:
                    idx = m.last_index() - 5
                    h.do(Op("compact", g, meta=SnapshotMeta(idx, 1, CONF)))
    finally:
        stop.set()
        t.join()
    assert h.log.stats()["checkpoints"] > 0
    h.reopen(crash=False)
    h.check(all_ranges=False)
    h.log.close()


# -- with the Raft core ---------------------------------------------------------------------


def test_raw_node_restarts_from_group_storage(tmp_path: Path) -> None:
    """A one-node group: commit proposals through the WAL, restart, find them again."""
    conf = ConfState(voters=frozenset({1}))

    def start(log: NodeLog) -> RawNode:
        cfg = Config(id=1, rng=random.Random(1), election_tick=10, heartbeat_tick=1)
        return RawNode(cfg, log.group(1))

    def drive(node: RawNode, log: NodeLog, applied: list[bytes]) -> None:
        while node.has_ready():
            rd = node.ready()
            g = log.group(1)
            g.append(rd.entries)
            if rd.hard_state is not None:
                g.set_hard_state(rd.hard_state)
            log.sync()
            applied.extend(e.data for e in rd.committed_entries if e.kind == EntryKind.NORMAL)
            node.advance(rd)

    log = NodeLog(tmp_path / "w")
    log.group(1).apply_snapshot(Snapshot(SnapshotMeta(1, 1, conf)))
    log.sync()
    node = start(log)
    node.campaign()
    applied: list[bytes] = []
    drive(node, log, applied)
    for k in range(5):
        node.propose(b"cmd %d" % k)
        drive(node, log, applied)
    assert applied == [b"cmd %d" % k for k in range(5)]
    log.group(1).compact(log.group(1).last_index() - 2, conf)
    log.sync()
    log.wal._simulate_crash()

    log = NodeLog(tmp_path / "w")
    node = start(log)
    again: list[bytes] = []
    node.campaign()
    drive(node, log, again)
    assert again == [b"cmd 3", b"cmd 4"]  # re-delivered from the compaction point on
    node.propose(b"cmd 5")
    drive(node, log, again)
    assert again[-1] == b"cmd 5"
    log.close()
