"""Streamed, chunked Raft snapshots between real node processes (node/snapstream.py).

A 3-node cluster (lsm, log compacted every 20 entries); one follower is stopped while
tens of MB of incompressible values are written, so the leader no longer has the log it
missed and must send a snapshot. Without streaming the leader holds the whole engine in
memory (twice: the dump and its frame) while it sends; streamed, its peak RSS grows by a
bounded amount (chunks of 1 MiB, a two-chunk socket buffer, the checkpoint's 8 MB
block cache), measured through /proc/PID/status VmHWM after resetting it.

The SIGKILL test kills the receiver in the middle of a transfer (the receiver sleeps per
chunk through a test hook so the kill lands mid-stream without racing the clock): its
engine directory must still be the old engine (only the keys it had), the partial
staging directory is deleted on restart, and it catches up by a new snapshot.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tidekv.errors import KeyNotFound
from tidekv.storage import open_engine
from tidekv.store import Store

from .proc_cluster import DEADLINE, ProcCluster, running

VALUE = 512 * 1024
N_KEYS = 80  # 40 MiB of values
SEED = 5


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProcCluster]:
    # unsharded: every key in one group (groups/0), whose log the writes compact
    with running(tmp_path, 3, extra_args=("--compact-every", "20"), shards=1) as c:
        yield c


def _values(n: int) -> dict[str, bytes]:
    rng = random.Random(SEED)
    return {f"big/{i:04}": rng.randbytes(VALUE) for i in range(n)}


def _write(c: ProcCluster, leader: int, values: dict[str, bytes]) -> None:
    for key, value in values.items():
        r = c.put(leader, key, value)
        assert r.status_code in (200, 201), r.text


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _wait_reads_back(c: ProcCluster, node: int, values: dict[str, bytes]) -> None:
    deadline = time.monotonic() + 3 * DEADLINE
    last = list(values)[-1]
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            r = c.get(node, last, consistency="stale")
            if r.status_code == 200 and r.content == values[last]:
                break
        assert c.alive(node), c.logs()
        time.sleep(0.2)
    else:
        raise AssertionError(f"node {node} did not catch up\n{c.logs()}")
    for key, value in values.items():  # every key, from the follower itself
        r = c.get(node, key, consistency="stale")
        assert r.status_code == 200 and r.content == value, key


def _engine_dir(c: ProcCluster, node: int) -> Path:
    return c.data_dir(node) / "groups" / "0" / "engine"


def test_a_stopped_follower_catches_up_by_a_streamed_snapshot_in_bounded_memory(
    cluster: ProcCluster,
) -> None:
    c = cluster
    leader = c.leader()
    follower = next(i for i in (1, 2, 3) if i != leader)
    c.stop(follower)
    values = _values(N_KEYS)
    _write(c, leader, values)
    engine_mb = sum(len(v) for v in values.values()) / 2**20

    pid = c.procs[leader].pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kb(pid, "VmRSS")
    c.start(follower)
    _wait_reads_back(c, follower, values)
    growth_mb = (_status_kb(pid, "VmHWM") - before) / 1024

    log = (c.root / f"n{follower}.log").read_text()
    assert "installing snapshot" in log
    assert growth_mb < 16, f"leader RSS grew {growth_mb:.1f} MB sending {engine_mb:.0f} MB"
    assert engine_mb >= 40
    leftovers = [p.name for p in _engine_dir(c, follower).parent.iterdir()]
    assert leftovers == ["engine"], leftovers


def test_a_receiver_killed_mid_transfer_keeps_its_old_engine_and_catches_up(
    cluster: ProcCluster,
) -> None:
    c = cluster
    leader = c.leader()
    follower = next(i for i in (1, 2, 3) if i != leader)
    before = {"small/a": b"1", "small/b": b"2"}
    _write(c, leader, before)
    _wait_reads_back(c, follower, before)
    c.stop(follower)
    values = _values(N_KEYS // 2)
    _write(c, leader, values)

    c.env[follower] = {"TIDEKV_TEST_SNAPSHOT_CHUNK_PAUSE": "0.2"}
    c.start(follower)
    engine = _engine_dir(c, follower)
    incoming = engine.with_name("engine.incoming")
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:  # wait for a few chunks to be staged
        if incoming.is_dir() and sum(f.stat().st_size for f in incoming.iterdir()) > 4 << 20:
            break
        time.sleep(0.02)
    else:
        raise AssertionError(f"no snapshot transfer seen\n{c.logs()}")
    c.kill(follower)
    assert incoming.is_dir()  # killed mid-transfer, staging half written

    old = Store(open_engine("lsm", str(engine)), sync=False)
    try:  # the engine is the old one, whole: its keys, none of the new ones
        assert {k: old.get(k).value for k in before} == before
        for k in values:
            with pytest.raises(KeyNotFound):
                old.get(k)
    finally:
        old.close()

    c.start(follower)
    _wait_reads_back(c, follower, {**before, **values})
    leftovers = sorted(p.name for p in engine.parent.iterdir())
    assert leftovers == ["engine"], leftovers
