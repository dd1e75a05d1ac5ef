"""Would a keyspace of its own (a RocksDB column family) for the store's K records make
versioned gets as fast as raw gets? Not a test: a measurement behind BENCHMARKS.md.

The same records a store put writes (K ~163 B, V ~110 B, C 48 B; sizes of a 100-byte
value) for N keys, into one database holding all three, and into a database holding
only the K records; then random gets of the K records, main-thread CPU time per get,
beside raw gets of N 100-byte values.

    python bench/keyspace.py --n 200000
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import struct
import tempfile
import time
from collections.abc import Callable

from tidekv.storage import Engine, open_engine


def cpu_us(n: int, fn: Callable[[], object]) -> float:
    c = time.thread_time()
    fn()
    return (time.thread_time() - c) / n * 1e6


def gets(eng: Engine, keys: list[bytes], order: list[int], prefix: bytes) -> float:
    """Main-thread CPU microseconds per random get."""
    return cpu_us(len(order), lambda: [eng.get(prefix + keys[i]) for i in order])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    n = args.n
    rng = random.Random(1)
    keys = [rng.randbytes(8).hex().encode() for _ in range(n)]
    order = list(range(n))
    rng.shuffle(order)
    krec, vrec, crec, v100 = b"k" * 163, b"v" * 110, b"c" * 48, b"x" * 100
    rev = struct.Struct(">Q")
    for r in range(args.rounds):
        tmp = tempfile.mkdtemp(prefix="tide-keyspace-")
        raw = open_engine("lsm", os.path.join(tmp, "raw"))
        shared = open_engine("lsm", os.path.join(tmp, "shared"))
        konly = open_engine("lsm", os.path.join(tmp, "konly"))
        try:
            for i, k in enumerate(keys):
                raw.put(k, v100)
                vid = rng.randbytes(20).hex().encode()
                ops = [(b"K" + k, krec), (b"V" + vid, vrec), (b"C" + rev.pack(i), crec)]
                shared.write_batch(ops)
                konly.put(b"K" + k, krec)
            g_raw = gets(raw, keys, order, b"")
            g_shared = gets(shared, keys, order, b"K")
            g_k = gets(konly, keys, order, b"K")
        finally:
            for e in (raw, shared, konly):
                e.close()
            shutil.rmtree(tmp, ignore_errors=True)
        print(
            f"round {r + 1}: raw get {g_raw:.2f} us | K get, K/V/C in one keyspace "
            f"{g_shared:.2f} us | K get, K records alone {g_k:.2f} us"
        )


if __name__ == "__main__":
    main()
