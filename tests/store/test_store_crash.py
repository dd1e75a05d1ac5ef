"""SIGKILL a process in the middle of writes: the store reopens consistent and every
acknowledged write is there (with its whole history)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import tidekv

WRITER = textwrap.dedent(
    """
    import sys, tidekv
    path, engine = sys.argv[1], sys.argv[2]
    s = tidekv.open(path, engine)
    start = s.revision
    i = 0
    while True:
        key = f"k{i % 50}"
        if i % 7 == 6:
            try:
                r = s.delete(key)
            except tidekv.KeyNotFound:
                i += 1
                continue
        else:
            r = s.put(key, {"i": i, "pad": "x" * (i % 300)})
        # acknowledged: the call returned, so the write is durable
        print(r.revision, key, r.version, "del" if r.deleted else i, flush=True)
        i += 1
    """
)


def run_and_kill(path: Path, engine: str, rng: random.Random) -> list[list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), engine],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    acked: list[list[str]] = []
    want = rng.randint(20, 400)
    deadline = time.monotonic() + 60
    while len(acked) < want and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(line.split())
    os.kill(proc.pid, signal.SIGKILL)
    # lines printed before the kill are acknowledged too
    rest = proc.stdout.read()
    proc.wait()
    acked += [ln.split() for ln in rest.splitlines() if len(ln.split()) == 4]
    assert acked, "the writer never acknowledged a write"
    return acked


@pytest.mark.parametrize("engine", ["lsm", "btree", "hash"])
def test_sigkill_during_writes_loses_no_acknowledged_write(engine: str, tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    latest: dict[str, tuple[str, str]] = {}
    all_versions: set[str] = set()
    for _round in range(3):
        acked = run_and_kill(tmp_path, engine, rng)
        for _rev, key, version, what in acked:
            latest[key] = (version, what)
            all_versions.add(version)
        with tidekv.open(str(tmp_path)) as s:
            report = s.verify()
            assert report["revision"] >= int(acked[-1][0])
            for key, (version, what) in latest.items():
                heads = s.heads(key)
                hist = {v.version.id for v in s.history(key)}
                # the last acknowledged version is in the history; anything newer was
                # written after it by the same single writer (unacknowledged, durable)
                assert version in hist, (seed, key)
                if what == "del" and heads == [version]:
                    with pytest.raises(tidekv.KeyNotFound):
                        s.get(key)
                elif heads == [version]:
                    assert s.get(key).json()["i"] == int(what)
            present = {v.version.id for k in latest for v in s.history(k)}
            assert all_versions <= present, seed
