"""How close CPython + rocksdict can get to 40% of a raw put: a hand-inlined versioned put.

One function does all a store put of a new key must do (key check, a lock, an HLC time
stamp, the precondition get of the key record, sha256 of the value, the version id,
the key record and change entry encoded, one 2-record ``WriteBatch``, a result object)
with no layering at all, beside the raw ``engine.put`` and the real ``store.put`` in
the same process. Main-thread CPU per op; ratios are raw/other. Not a test.

    python bench/put_floor.py --n 150000 --rounds 3
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import struct
import tempfile
import threading
import time
from collections.abc import Callable

import msgspec
from rocksdict import WriteBatch

import tidekv
from tidekv.storage.lsm import LSMEngine
from tidekv.versioning import trusted_version_id

_enc = msgspec.msgpack.Encoder().encode
_CHANGE = struct.Struct(">B20s?QH")
_REV = struct.Struct(">Q")


class _Result(msgspec.Struct, gc=False):
    key: str
    version: str
    revision: int
    wall: int
    logical: int


def inlined(engine: LSMEngine, keys: list[str], value: bytes) -> None:
    ks, dflt = engine.keyspace("keys"), engine.keyspace("default")
    get, kh, dh = ks.get, ks.handle, dflt.handle
    db, wo = engine._db, engine._wo_nosync
    lock = threading.Lock()
    rev, wall, logical, origin = 0, 0, 0, "abcdef0123456789"
    sha, fromhex = hashlib.sha256, bytes.fromhex
    for key in keys:
        kb = key.encode()
        if not kb or len(kb) > 1024:
            raise ValueError(key)
        with lock:
            now = time.time_ns() // 1_000_000
            if now > wall:
                wall, logical = now, 0
            else:
                logical += 1
            if get(kb) is not None:
                raise AssertionError("the keys are new")
            vid = trusted_version_id(
                key, (), sha(value).digest(), wall, logical, origin, False,
                "application/octet-stream", "",
            )  # fmt: skip
            rev += 1
            batch = WriteBatch(raw_mode=True)
            record = ((), vid, rev, 0, False, value, wall, logical, (), origin, "")
            batch.put(kb, _enc(record), kh)
            change = _CHANGE.pack(2, fromhex(vid), False, wall, logical) + kb
            batch.put(b"C" + _REV.pack(rev), change, dh)
            db.write(batch, wo)
            _Result(key, vid, rev, wall, logical)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=150_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    keys = [f"{i:016x}"[::-1] for i in range(args.n)]  # 16 chars, spread over the keyspace
    value = bytes(range(100))
    tmp = tempfile.mkdtemp(prefix="tide-floor-")
    cpu: dict[str, list[float]] = {"raw": [], "inlined": [], "store": []}

    def timed(name: str, fn: Callable[[], None]) -> None:
        c0 = time.thread_time()
        fn()
        cpu[name].append((time.thread_time() - c0) / args.n * 1e6)

    try:
        for rnd in range(args.rounds):
            raw = LSMEngine(f"{tmp}/raw{rnd}")
            timed("raw", lambda e=raw: [e.put(k.encode(), value) for k in keys] and None)
            raw.close()
            eng = LSMEngine(f"{tmp}/inl{rnd}")
            timed("inlined", lambda e=eng: inlined(e, keys, value))
            eng.close()
            store = tidekv.open(f"{tmp}/store{rnd}", "lsm", sync=False)
            timed("store", lambda s=store: [s.put(k, value) for k in keys] and None)
            store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raw_us = statistics.median(cpu["raw"])
    print(f"main-thread CPU µs per put, medians of {args.rounds} rounds, n={args.n:,}")
    for name, xs in cpu.items():
        us = statistics.median(xs)
        print(f"  {name:8s} {us:6.2f} µs   raw/{name} = {raw_us / us:.0%}")


if __name__ == "__main__":
    main()
