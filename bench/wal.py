"""The node WAL beside a raw reference: appends of 100-byte entries, one sync per batch.

For each batch size (1, 16, 128 entries), in one run and one directory:

    wal     NodeLog: group.append(batch) + group.set_hard_state(hs), then log.sync()
    raw     os.write of the same number of bytes the WAL wrote per sync, then
            os.fdatasync, on a plain file (the floor: one write + one fdatasync)
    cpu     the WAL's append + set_hard_state alone, never synced (the Python cost of
            the hot path: encode, checksum, buffer, in-memory log), beside
    mem     MemoryStorage.append + set_hard_state (what the in-memory log alone costs)

plus ``64 groups``: 64 groups each append a batch of 16 and set their hard state, then
ONE sync covers them all (group commit across the groups of a node).

Reported: entries/s and syncs/s, and the WAL's ratio to raw. Not a test: the machine is
shared and noisy; compare rows of one run, never across runs.

    python bench/wal.py                  # 400 syncs per row
    python bench/wal.py --syncs 1000 --json bench/out/wal.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

from tidekv.node.logstore import NodeLog
from tidekv.raft import ConfState, Entry, HardState, MemoryStorage

ENTRY_BYTES = 100
BATCHES = [1, 16, 128]


def batch_of(first: int, n: int, payload: bytes) -> list[Entry]:
    return [Entry(1, i, data=payload) for i in range(first, first + n)]


def run_wal(root: str, batch: int, syncs: int, groups: int = 1) -> dict[str, float]:
    """Entries and syncs per second through NodeLog, plus bytes written per sync."""
    path = os.path.join(root, f"wal-{batch}-{groups}")
    log = NodeLog(path)
    payload = os.urandom(ENTRY_BYTES)
    gs = [log.group(g) for g in range(1, groups + 1)]
    # the batches are built up front: the Raft core hands the driver ready entries
    work = [batch_of(1 + k * batch, batch, payload) for k in range(syncs)]
    t0 = time.perf_counter()
    for k, ents in enumerate(work):
        last = ents[-1].index
        for g in gs:
            g.append(ents)
            g.set_hard_state(HardState(1, 1, last))
        log.sync()
        if k % 64 == 63:  # what a node does once its engine holds the entries
            for g in gs:
                g.compact(last - batch, ConfState(voters=frozenset({1})))
    elapsed = time.perf_counter() - t0
    written = log.stats()["bytes_written"]
    log.close()
    shutil.rmtree(path)
    return {
        "entries_s": syncs * batch * groups / elapsed,
        "syncs_s": syncs / elapsed,
        "bytes_per_sync": written / syncs,
    }


def run_cpu(root: str, batch: int, syncs: int) -> float:
    """Entries per second of append + set_hard_state alone (the buffer is dropped where
    a sync would write it, so it stays as small as in real use)."""
    path = os.path.join(root, f"cpu-{batch}")
    log = NodeLog(path)
    g = log.group(1)
    wal = log.wal
    payload = os.urandom(ENTRY_BYTES)
    work = [batch_of(1 + k * batch, batch, payload) for k in range(syncs)]
    t0 = time.perf_counter()
    for ents in work:
        g.append(ents)
        g.set_hard_state(HardState(1, 1, ents[-1].index))
        wal._buf = bytearray()
    elapsed = time.perf_counter() - t0
    log.wal._simulate_crash()  # drop the buffer: this row measures no I/O
    shutil.rmtree(path)
    return syncs * batch / elapsed


def run_mem(batch: int, syncs: int) -> float:
    """Entries per second of MemoryStorage append + set_hard_state (the in-memory part)."""
    m = MemoryStorage()
    payload = os.urandom(ENTRY_BYTES)
    work = [batch_of(1 + k * batch, batch, payload) for k in range(syncs)]
    t0 = time.perf_counter()
    for ents in work:
        m.append(ents)
        m.set_hard_state(HardState(1, 1, ents[-1].index))
    return syncs * batch / (time.perf_counter() - t0)


def run_raw(root: str, nbytes: int, syncs: int) -> float:
    """Syncs per second of os.write(nbytes) + os.fdatasync on a plain file."""
    path = os.path.join(root, "raw")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    data = os.urandom(nbytes)
    t0 = time.perf_counter()
    for _ in range(syncs):
        os.write(fd, data)
        os.fdatasync(fd)
    elapsed = time.perf_counter() - t0
    os.close(fd)
    os.unlink(path)
    return syncs / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--syncs", type=int, default=400, help="syncs per row")
    ap.add_argument("--repeat", type=int, default=3, help="runs per row (medians kept)")
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="tidekv-bench-wal-", dir=args.dir)
    rows: list[dict[str, object]] = []
    try:
        cases = [(b, 1) for b in BATCHES] + [(16, 64)]
        for batch, groups in cases:
            n = args.syncs if groups == 1 else max(args.syncs // 4, 50)
            run_wal(root, batch, max(n // 10, 5), groups)  # warm-up
            # alternate the two, several times, and keep the medians: the disk is shared
            wals, raws = [], []
            for _ in range(args.repeat):
                wals.append(run_wal(root, batch, n, groups))
                raws.append(run_raw(root, round(wals[-1]["bytes_per_sync"]), n))
            wal = sorted(wals, key=lambda w: w["syncs_s"])[len(wals) // 2]
            raw_s = statistics.median(raws)
            cpu = mem = None
            if groups == 1:
                cpu = statistics.median(run_cpu(root, batch, n * 10) for _ in range(args.repeat))
                mem = statistics.median(run_mem(batch, n * 10) for _ in range(args.repeat))
            rows.append(
                {
                    "case": f"batch {batch}" if groups == 1 else f"{groups} groups x {batch}",
                    "bytes_per_sync": round(wal["bytes_per_sync"]),
                    "wal_entries_s": wal["entries_s"],
                    "wal_syncs_s": wal["syncs_s"],
                    "raw_entries_s": raw_s * batch * groups,
                    "raw_syncs_s": raw_s,
                    "ratio": wal["syncs_s"] / raw_s,
                    "cpu_entries_s": cpu,
                    "mem_entries_s": mem,
                }
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        "| case | bytes/sync | wal entries/s | wal syncs/s | raw entries/s | raw syncs/s "
        "| wal/raw | cpu entries/s | mem entries/s | cpu/mem |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cpu, mem = r["cpu_entries_s"], r["mem_entries_s"]
        tail = "| | | |"
        if isinstance(cpu, float) and isinstance(mem, float):
            tail = f"| {cpu:,.0f} | {mem:,.0f} | {cpu / mem:.0%} |"
        print(
            f"| {r['case']} | {r['bytes_per_sync']:,} | {r['wal_entries_s']:,.0f} "
            f"| {r['wal_syncs_s']:,.0f} | {r['raw_entries_s']:,.0f} | {r['raw_syncs_s']:,.0f} "
            f"| {r['ratio']:.0%} {tail}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
