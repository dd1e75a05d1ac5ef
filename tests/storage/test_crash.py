"""Crash safety of the durable engines: kill -9 a writer, reopen, check what survived.

A child process (``crash_writer.py``) writes single puts and batches, printing each
acknowledgement after the call returns; the parent SIGKILLs it once a seeded number of
acknowledgements has arrived (the child is then usually inside its next write), reopens
the engine and checks it. Rounds reuse one directory (each round has its own key
namespace), so every round also checks that recovering from the previous crash and
writing on top of it left the earlier data exactly as it was verified.

Synced writes: every acknowledged write is present with its value; every batch is all or
nothing; nothing that was never started is present.

Unsynced writes: what survives is a prefix of the write order (a batch one unit). A kill
-9 keeps the OS page cache, so this checks the engines' recovery logic, not power loss.

Replay a failure with ``TIDEKV_CRASH_SEED=<seed printed in the failure>``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tidekv.storage import open_engine

from .crash_writer import SIDE, batch_value, group_key, marker_key, plan, put_key, put_value

WRITER = Path(__file__).with_name("crash_writer.py")
BASE_SEED = int(os.environ.get("TIDEKV_CRASH_SEED", "20260511"))
BATCH = 16
MAX_ACKS_BEFORE_KILL = 150


@dataclass
class Round:
    seed: int
    ns: bytes
    last_acked: int  # every write with seq <= last_acked returned before the kill

    def __str__(self) -> str:
        return f"seed={self.seed} ns={self.ns.decode()} last_acked={self.last_acked}"


def crash_round(name: str, path: Path, seed: int, ns: str, sync: bool) -> Round:
    """Run the writer until ``kill_after`` acknowledgements (seeded), then SIGKILL it."""
    kill_after = random.Random(seed).randint(1, MAX_ACKS_BEFORE_KILL)
    print(f"crash round: engine={name} seed={seed} sync={sync} kill_after={kill_after}")
    errlog = path.parent / f"{path.name}-{ns}.stderr"
    with errlog.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(WRITER),
                name,
                str(path),
                str(seed),
                str(int(sync)),
                ns,
                str(BATCH),
            ],
            stdout=subprocess.PIPE,
            stderr=err,
        )
        assert proc.stdout is not None
        acked = 0
        while acked < kill_after:
            line = proc.stdout.readline()
            if not line:
                proc.wait()
                pytest.fail(
                    f"writer exited by itself ({proc.returncode}), seed={seed}: "
                    + errlog.read_text(errors="replace")
                )
            acked = int(line)
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()  # acknowledgements already in the pipe count too
        proc.wait()
        proc.stdout.close()
    for line in rest.split(b"\n"):
        if line:
            acked = int(line)
    assert proc.returncode == -signal.SIGKILL
    return Round(seed, ns.encode(), acked)


@dataclass
class Visible:
    puts: dict[int, bytes]  # seq -> value of the put keys present
    group: dict[bytes, bytes]  # the batch group keys present
    markers: list[bytes]


def visible(data: dict[bytes, bytes], ns: bytes) -> Visible:
    puts, group, markers = {}, {}, []
    for key, value in data.items():
        kind = key[len(ns) + 1 : len(ns) + 2]
        if kind == b"p":
            puts[int(key[len(ns) + 3 :])] = value
        elif kind == b"g":
            group[key] = value
        elif kind == b"m":
            markers.append(key)
    return Visible(puts, group, markers)


def batch_applied(v: Visible, ns: bytes, r: Round) -> int:
    """The seq of the batch the group keys show (0: none), checking it is not torn."""
    if not v.group:
        assert v.markers == [], f"marker without its batch: {v.markers} ({r})"
        return 0
    assert sorted(v.group) == [group_key(ns, j) for j in range(BATCH)], f"torn batch ({r})"
    values = set(v.group.values())
    assert len(values) == 1, f"torn batch: mixed values {sorted(values)} ({r})"
    x = int(values.pop())
    assert v.markers == [marker_key(ns, x)], f"markers {v.markers} vs batch {x} ({r})"
    return x


def check_synced(data: dict[bytes, bytes], r: Round) -> None:
    writes = plan(r.seed, r.last_acked + 1)
    v = visible(data, r.ns)
    for seq, value in v.puts.items():
        assert value == put_value(seq), f"put {seq} has a wrong value ({r})"
        assert seq <= r.last_acked + 1, f"put {seq} was never started ({r})"
    acked_puts = [w.seq for w in writes[: r.last_acked] if not w.is_batch]
    missing = [seq for seq in acked_puts if seq not in v.puts]
    assert missing == [], f"acknowledged puts lost: {missing[:10]} ({r})"
    x = batch_applied(v, r.ns, r)
    acked_batches = [w.seq for w in writes[: r.last_acked] if w.is_batch]
    if acked_batches:
        assert x >= acked_batches[-1], f"acknowledged batch {acked_batches[-1]} lost ({r})"
    if x:
        assert writes[x - 1].is_batch, f"group keys hold {x}, not a batch ({r})"


def check_prefix(data: dict[bytes, bytes], r: Round) -> None:
    """Unsynced: the survivors are exactly the writes with seq <= some cut."""
    v = visible(data, r.ns)
    x = batch_applied(v, r.ns, r)
    cut = max([x, *v.puts])
    assert cut <= r.last_acked + 1, f"write {cut} was never started ({r})"
    writes = plan(r.seed, cut)
    want_puts = {w.seq: put_value(w.seq) for w in writes if not w.is_batch}
    assert v.puts == want_puts, f"survivors are not a prefix (cut {cut}) ({r})"
    batches = [w.seq for w in writes if w.is_batch]
    assert x == (batches[-1] if batches else 0), f"batch {x} vs prefix cut {cut} ({r})"


def crash_rounds(name: str, tmp_path: Path, rounds: int, sync: bool, seed0: int) -> None:
    path = tmp_path / name
    before: dict[bytes, bytes] = {}
    for i in range(rounds):
        ns = f"r{i:03d}"
        r = crash_round(name, path, seed0 + i, ns, sync)
        engine = open_engine(name, str(path))  # must open cleanly after the kill
        try:
            data = dict(engine.keyspace("default").scan())
            side = dict(engine.keyspace(SIDE).scan())  # the other half of every batch
            assert not data.keys() & side.keys()
            data.update(side)
        finally:
            engine.close()
        mine = {k: v for k, v in data.items() if k.startswith(r.ns + b" ")}
        others = {k: v for k, v in data.items() if not k.startswith(r.ns + b" ")}
        assert others == before, f"earlier rounds' data changed ({r})"
        if sync:
            check_synced(mine, r)
        else:
            check_prefix(mine, r)
        before = data


def test_checks_catch_bad_states() -> None:
    """The checkers themselves fail on a lost write, a torn batch and a gap."""
    ns = b"r000"
    seed = 1
    writes = plan(seed, 40)
    puts = [w.seq for w in writes if not w.is_batch]
    batches = [w.seq for w in writes if w.is_batch]
    last = 30
    good = {put_key(ns, s): put_value(s) for s in puts if s <= last}
    b = max(s for s in batches if s <= last)
    good.update({group_key(ns, j): batch_value(b) for j in range(BATCH)})
    good[marker_key(ns, b)] = b"x"
    r = Round(seed, ns, last)
    check_synced(good, r)
    check_prefix(good, r)
    lost = dict(good)
    del lost[put_key(ns, puts[0])]
    with pytest.raises(AssertionError):
        check_synced(lost, r)
    with pytest.raises(AssertionError):
        check_prefix(lost, r)
    torn = dict(good)
    torn[group_key(ns, 3)] = batch_value(b - 1)
    with pytest.raises(AssertionError):
        check_synced(torn, r)


@pytest.mark.parametrize("sync", [True, False], ids=["synced", "unsynced"])
def test_kill9_during_writes(durable_engine_name: str, tmp_path: Path, sync: bool) -> None:
    crash_rounds(durable_engine_name, tmp_path, rounds=4, sync=sync, seed0=BASE_SEED)


@pytest.mark.slow
@pytest.mark.parametrize("sync", [True, False], ids=["synced", "unsynced"])
def test_kill9_during_writes_many_rounds(
    durable_engine_name: str, tmp_path: Path, sync: bool
) -> None:
    crash_rounds(durable_engine_name, tmp_path, rounds=25, sync=sync, seed0=BASE_SEED + 1000)
