"""Streamed snapshots (node/snapstream.py) without node processes: the chunk codec, the
staging sink across engine kinds, the directory swap and its crash recovery, and the
peer transport streaming a real engine view between two in-process transports.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tidekv.errors import CorruptionError
from tidekv.node.snapshot import SNAPSHOT_META_KEY, stored_snapshot_meta
from tidekv.node.snapstream import (
    ChunkSource,
    OutgoingSnapshots,
    SnapshotSink,
    decode_chunk,
    decode_header,
    encode_header,
    install_staged,
    ready_path,
    recover_engine_dir,
)
from tidekv.raft import ConfState, Message, MessageType, Snapshot, SnapshotMeta
from tidekv.storage import DEFAULT_KEYSPACE, Engine, open_engine

from .test_transport import DEADLINE, Node, Run, close_all, mesh, run  # noqa: F401

META = SnapshotMeta(index=9, term=3, conf=ConfState(voters=frozenset({1, 2, 3})))
SID = bytes(range(16))


def _open(name: str, path: Path | str | None) -> Engine:
    return open_engine(name, None if name == "memory" or path is None else str(path))


def _fill(engine: Engine) -> dict[str, dict[bytes, bytes]]:
    engine.write_batch([(b"d%05d" % i, b"v" * (i % 300)) for i in range(2000)])
    engine.keyspace("keys").put(b"k", b"x" * 50_000)
    engine.keyspace("empty")
    engine.put(SNAPSHOT_META_KEY, b"the sender's own marker: not sent")
    return _contents(engine)


def _contents(engine: Engine) -> dict[str, dict[bytes, bytes]]:
    return {
        n: {k: v for k, v in engine.keyspace(n).scan() if k != SNAPSHOT_META_KEY}
        for n in engine.keyspaces()
    }


def _stream(source: ChunkSource, sink: SnapshotSink) -> int:
    sink.open()
    n = 0
    while (payload := source.next_chunk()) is not None:
        chunk = decode_chunk(payload)
        assert chunk.seq == n
        n += 1
        if chunk.last:
            sink.finish(chunk)
        else:
            sink.write(chunk)
    return n


@pytest.mark.parametrize(
    ("src_kind", "dst_kind"),
    [("lsm", "btree"), ("btree", "hash"), ("hash", "lsm"), ("lsm", "lsm"), ("memory", "memory")],
)
def test_a_stream_rebuilds_every_keyspace_on_another_engine(
    src_kind: str, dst_kind: str, tmp_path: Path
) -> None:
    src = _open(src_kind, tmp_path / "src")
    want = _fill(src)
    dst_path = None if dst_kind == "memory" else str(tmp_path / "g" / "engine")
    old = _open(dst_kind, dst_path)
    old.put(b"stale", b"1")
    old.keyspace("leftover").put(b"y", b"2")
    old.close()

    ended: list[bool] = []
    sink = SnapshotSink(dst_kind, dst_path, META, SID, lambda _s, ok: ended.append(ok))
    source = ChunkSource(src.snapshot_iter(), chunk_bytes=16 * 1024)
    chunks = _stream(source, sink)
    source.close()
    assert chunks > 10 and ended == [True]
    install_staged(dst_kind, dst_path, SID)
    dst = sink.ready if dst_path is None else _open(dst_kind, dst_path)
    assert dst is not None
    assert _contents(dst) == want  # nothing stale, the empty keyspace too
    assert stored_snapshot_meta(dst) == META
    if dst_path is not None:
        assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["engine"]
    dst.close()
    src.close()


def test_a_damaged_chunk_is_refused() -> None:
    body = msgspec.msgpack.encode([["default", b"k", b"v"]])
    good = msgspec.msgpack.encode([0, zlib.crc32(body), body, 1, False, []])
    assert decode_chunk(good).count == 1
    bad = msgspec.msgpack.encode([0, zlib.crc32(body) ^ 1, body, 1, False, []])
    with pytest.raises(CorruptionError, match="checksum"):
        decode_chunk(bad)
    with pytest.raises(CorruptionError):
        decode_chunk(b"\xc1")


def test_a_short_stream_is_refused_and_leaves_the_old_engine(tmp_path: Path) -> None:
    src = _open("lsm", tmp_path / "src")
    _fill(src)
    path = str(tmp_path / "g" / "engine")
    old = _open("lsm", path)
    old.put(b"mine", b"1")
    old.close()
    ended: list[bool] = []
    sink = SnapshotSink("lsm", path, META, SID, lambda _s, ok: ended.append(ok))
    sink.open()
    source = ChunkSource(src.snapshot_iter(), chunk_bytes=16 * 1024)
    first = source.next_chunk()
    assert first is not None
    sink.write(decode_chunk(first))
    end = decode_chunk(first)
    end = msgspec.structs.replace(end, seq=1, last=True, body=b"", count=end.count + 1)
    with pytest.raises(CorruptionError, match="records"):
        sink.finish(end)
    sink.abort()
    source.close()
    assert ended == [False]
    with pytest.raises(CorruptionError):
        install_staged("lsm", path, SID)  # nothing staged: nothing changes
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["engine"]
    eng = _open("lsm", path)
    assert _contents(eng) == {DEFAULT_KEYSPACE: {b"mine": b"1"}}
    eng.close()
    src.close()


def _engine_with(path: str, key: bytes) -> None:
    e = _open("lsm", path)
    e.put(key, b"1", sync=True)
    e.close()


def _key_of(path: str) -> list[bytes]:
    e = _open("lsm", path)
    try:
        return [k for k, _ in e.scan()]
    finally:
        e.close()


def test_recovery_finishes_or_undoes_an_interrupted_swap(tmp_path: Path) -> None:
    path = str(tmp_path / "engine")
    # a crash mid-transfer: the partial staging directory goes, the old engine stays
    _engine_with(path, b"old")
    _engine_with(path + ".incoming", b"partial")
    recover_engine_dir(path)
    assert _key_of(path) == [b"old"] and not Path(path + ".incoming").exists()
    # staged but never adopted by the core: dropped
    _engine_with(ready_path(path, SID), b"new")
    recover_engine_dir(path)
    assert _key_of(path) == [b"old"] and not Path(ready_path(path, SID)).exists()
    # a crash between the two renames of the swap: rolled forward
    _engine_with(ready_path(path, SID), b"new")
    Path(path).rename(path + ".old")
    recover_engine_dir(path)
    assert _key_of(path) == [b"new"] and not Path(path + ".old").exists()
    # the new one in place, the old one not yet deleted
    _engine_with(path + ".old", b"old")
    recover_engine_dir(path)
    assert _key_of(path) == [b"new"] and not Path(path + ".old").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine"]
    # an install deletes the staged snapshots the core declined before it
    other = bytes(16)
    _engine_with(ready_path(path, other), b"declined")
    _engine_with(ready_path(path, SID), b"newer")
    install_staged("lsm", path, SID)
    assert _key_of(path) == [b"newer"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine"]


def test_the_header_is_small_and_tells_formats_apart() -> None:
    assert decode_header(encode_header(SID)) == SID
    assert decode_header(msgspec.msgpack.encode([2, []])) is None
    assert decode_header(b"") is None
    assert len(encode_header(SID)) < 32


def _snap_message(sid: bytes) -> Message:
    return Message(
        MessageType.SNAP, to=2, frm=1, term=3, snapshot=Snapshot(meta=META, data=encode_header(sid))
    )


def test_transport_streams_a_view_then_delivers_the_message(run: Run, tmp_path: Path) -> None:  # noqa: F811
    src = _open("lsm", tmp_path / "src")
    want = _fill(src)
    registry = OutgoingSnapshots()
    path = str(tmp_path / "g" / "engine")
    sinks: list[SnapshotSink] = []

    def factory(sender: int, group: int, m: Message) -> SnapshotSink | None:
        if sinks:  # one at a time: a second stream is refused
            return None
        sinks.append(SnapshotSink("lsm", path, m.snapshot.meta, SID, lambda _s, _ok: None))  # type: ignore[union-attr]
        return sinks[-1]

    opts: dict[str, Any] = {"snapshots": registry, "snapshot_chunk_bytes": 8192}

    async def test() -> None:
        a, b = await mesh(2, snapshot_sink=factory, **opts)
        sid = registry.register(src)
        msg = _snap_message(sid)
        a.t.send(7, [msg])
        await a.until(lambda: bool(a.snap_status))
        await b.until(lambda: bool(b.received))
        assert a.snap_status == [(7, 2, True)]
        assert b.received == [(1, 7, msg)]  # the Raft message, once the data is staged
        assert Path(ready_path(path, SID)).is_dir()
        assert len(registry) == 0  # the view was released
        # a second stream while the first is still the group's: refused, reported failed
        a.t.send(7, [_snap_message(registry.register(src))])
        await a.until(lambda: len(a.snap_status) == 2)
        assert a.snap_status[1] == (7, 2, False)
        # a view id the registry does not have: fails at once
        a.t.send(7, [_snap_message(b"\x01" * 16)])
        await a.until(lambda: len(a.snap_status) == 3)
        assert a.snap_status[2] == (7, 2, False)
        await close_all([a, b])
        assert len(registry) == 0

    run(test)
    install_staged("lsm", path, SID)
    dst = _open("lsm", path)
    assert _contents(dst) == want
    dst.close()
    src.close()


def test_a_replica_refuses_a_stale_or_second_stream(tmp_path: Path) -> None:
    from .test_tombstones import close, open_replica

    log, rep = open_replica(tmp_path, 1, bootstrap=True)  # applied: index 1
    try:

        def msg(index: int, term: int = 1) -> Message:
            meta = SnapshotMeta(index=index, term=term, conf=META.conf)
            return Message(
                MessageType.SNAP,
                to=1,
                frm=2,
                term=term,
                snapshot=Snapshot(meta=meta, data=encode_header(SID)),
            )

        assert rep.snapshot_sink(msg(1)) is None  # not past what is applied: stale
        whole = Message(
            MessageType.SNAP, to=1, frm=2, term=1, snapshot=Snapshot(META, b"\x92\x02\x90")
        )
        assert rep.snapshot_sink(whole) is None  # not a stream
        first = rep.snapshot_sink(msg(5))
        assert first is not None
        assert rep.snapshot_sink(msg(6)) is None  # one at a time per group
        first.open()
        first.abort()
        again = rep.snapshot_sink(msg(6))  # the failed one no longer blocks
        assert again is not None
        again.abort()
    finally:
        close(log, rep)
