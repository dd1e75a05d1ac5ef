"""Benchmark of the hash engine (Bitcask-style), with the memory engine as reference.

    .venv/bin/python bench/hash_engine.py [--keys 200000] [--value-size 100] [--dir DIR]

Measures: put (no sync), write_batch of 100 puts, get (random order), full scan,
restart with hint files and without them (hints deleted: every data file is scanned),
and the RAM the key directory takes per key (tracemalloc, during a restart).
A benchmark, not a test: numbers depend on the machine; compare the ratios.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tidekv.storage.base import Engine
from tidekv.storage.hash import HashEngine
from tidekv.storage.memory import MemoryEngine


def timed(fn: Callable[[], object]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def workload(engine: Engine, keys: list[bytes], value: bytes) -> dict[str, float]:
    """Seconds per phase on a fresh engine."""
    out: dict[str, float] = {}
    half = len(keys) // 2

    def puts() -> None:
        for k in keys[:half]:
            engine.put(k, value)

    def batches() -> None:
        rest = keys[half:]
        for i in range(0, len(rest), 100):
            engine.write_batch([(k, value) for k in rest[i : i + 100]])

    shuffled = keys[:]
    random.Random(1).shuffle(shuffled)

    def gets() -> None:
        for k in shuffled:
            engine.get(k)

    def scan() -> None:
        n = sum(1 for _ in engine.scan())
        assert n == len(keys), n

    out["put"] = timed(puts) / half
    out["batch100"] = timed(batches) / ((len(keys) - half) / 100)
    out["get"] = timed(gets) / len(keys)
    out["scan"] = timed(scan) / len(keys)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=200_000)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--dir", default=None, help="where to put the store (default: a tmp dir)")
    args = ap.parse_args()
    keys = [b"user/%010d" % i for i in range(args.keys)]
    random.Random(0).shuffle(keys)
    value = os.urandom(args.value_size)
    root = Path(args.dir or tempfile.mkdtemp(prefix="bench-hash-"))
    path = str(root / "hash")
    shutil.rmtree(path, ignore_errors=True)

    mem = workload(MemoryEngine(None), keys, value)
    engine = HashEngine(path)
    hsh = workload(engine, keys, value)
    engine.close()

    def reopen() -> None:
        HashEngine(path).close()

    with_hints = timed(reopen)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    e = HashEngine(path)
    per_key = (tracemalloc.get_traced_memory()[0] - before) / args.keys
    tracemalloc.stop()
    st = e.stats()
    e.close()
    for p in Path(path).glob("*.hint"):
        p.unlink()
    t0 = time.perf_counter()
    e = HashEngine(path)
    without_hints = time.perf_counter() - t0
    assert e.stats()["data_scans"] == st["segments"]
    e.close()

    print(f"hash engine, {args.keys} keys of {len(keys[0])} bytes, values of {args.value_size}")
    print(f"{'op':<12}{'hash':>14}{'memory (ref)':>16}{'hash/memory':>14}")
    for op, unit in (("put", "op"), ("batch100", "batch"), ("get", "op"), ("scan", "key")):
        h, m = hsh[op], mem[op]
        print(f"{op:<12}{h * 1e6:>10.2f} us/{unit:<5}{m * 1e6:>8.2f} us/{unit:<5}{h / m:>10.1f}x")
    print(f"put rate          {1 / hsh['put']:>12,.0f} puts/s (no sync)")
    print(f"batch rate        {100 / hsh['batch100']:>12,.0f} puts/s in batches of 100")
    print(f"restart, hints    {with_hints:>12.3f} s  ({st['segments']} segments)")
    print(f"restart, no hints {without_hints:>12.3f} s  (every data file scanned)")
    print(f"key directory     {per_key:>12.0f} bytes/key (tracemalloc, keys {len(keys[0])} B)")
    print(f"on disk           {st['total_bytes']:>12,} bytes")
    if args.dir is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
