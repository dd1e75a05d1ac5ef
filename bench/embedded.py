"""Embedded store vs. the raw engine underneath it, side by side in one run.

For each engine: N random 16-byte keys with 100-byte values, in interleaved rounds
(each round: a fresh raw engine and a fresh store, then raw put, store put, raw get,
store get, so a load spike hits both sides of a ratio alike).
- put:  raw ``engine.put(k, v)`` vs ``store.put(k, v)`` (a versioned write of a new key:
        key record and change-log entry in one atomic batch), no fsync;
- batch: the raw engine writing the same records a store put writes (same sizes, same
        key shapes) as one ``write_batch`` per change: the engine's own cost of the
        layout, the floor under a versioned put;
- get:  raw ``engine.get(k)`` vs ``store.get(k).value``;
- history: ``store.history(k)`` on keys with 5 versions each (no raw equivalent);
- put (sync): 2,000 writes with fsync on every write.
Ratios are store/raw: wall-clock rates, and (``cpu`` lines) the main thread's CPU time
per operation, which a busy machine disturbs less. Not a test: compare within a run.

    python bench/embedded.py                       # 200,000 keys, all engines
    python bench/embedded.py --n 200000 --n-sync 2000 --engines lsm --rounds 3
    python bench/embedded.py --n 50000 --engines lsm --profile put
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import shutil
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from typing import Any

import tidekv
from tidekv.storage import Engine, open_engine


def timed(n: int, fn: Callable[[], None]) -> tuple[float, float]:
    """(operations per second of wall time, main-thread CPU microseconds per op)."""
    c0, t0 = time.thread_time(), time.perf_counter()
    fn()
    t1, c1 = time.perf_counter(), time.thread_time()
    return n / (t1 - t0), (c1 - c0) / n * 1e6


def change_records(name: str, tmp: str, key: str, value: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, value) records one store put of a fresh key writes."""
    s = tidekv.open(os.path.join(tmp, "sample"), "memory", sync=False)

    def records() -> dict[bytes, bytes]:
        # format 3: the key records in their own keyspace, shown here as K<key>
        out = dict(s.engine.keyspace("default").scan())
        out.update((b"K" + k, v) for k, v in s.engine.keyspace("keys").scan())
        return out

    before = records()
    s.put(key, value)
    recs = [(k, v) for k, v in records().items() if before.get(k) != v]
    s.close()
    return recs


def one_round(
    name: str, n: int, tmp: str, rnd: int, profile: str | None, keys: list[str], value: bytes
) -> dict[str, float]:
    rng = random.Random(rnd)
    kb = [k.encode() for k in keys]
    order = list(range(n))
    rng.shuffle(order)
    path = None if name == "memory" else os.path.join(tmp, f"raw{rnd}")
    raw = open_engine(name, path)
    store = tidekv.open(os.path.join(tmp, f"store{rnd}"), name, sync=False)
    out: dict[str, float] = {}

    def raw_put() -> None:
        for k in kb:
            raw.put(k, value)

    def store_put() -> None:
        for k in keys:
            store.put(k, value)

    def raw_get() -> None:
        for i in order:
            raw.get(kb[i])

    def store_get() -> None:
        for i in order:
            store.get(keys[i]).value  # noqa: B018  (the value is what a get serves)

    prof = cProfile.Profile() if profile and rnd == 0 else None

    def measure(what: str, fn: Callable[[], None]) -> None:
        if prof and profile == what.removeprefix("store_"):
            prof.enable()
        out[what], out[what + "_cpu"] = timed(n, fn)
        if prof:
            prof.disable()

    measure("raw_put", raw_put)
    measure("store_put", store_put)
    measure("raw_get", raw_get)
    measure("store_get", store_get)
    raw.close()
    store.close()
    out.update(batch_floor(name, n, tmp, rnd, keys, value))
    if prof:
        print(f"\n== profile of store {profile} on {name} (round 1) ==")
        pstats.Stats(prof).sort_stats("tottime").print_stats(22)
    return out


def batch_floor(
    name: str, n: int, tmp: str, rnd: int, keys: list[str], value: bytes
) -> dict[str, float]:
    """The raw engine writing a put's records (same sizes and key shapes) per change."""
    recs = change_records(name, tmp, keys[0], value)
    rng = random.Random(1000 + rnd)
    rev = struct.Struct(">Q")
    per_key: list[list[bytes]] = []
    for i, k in enumerate(keys):
        ks = []
        for rk, _rv in recs:
            tag = rk[:1]
            if tag == b"K":
                ks.append(b"K" + k.encode())
            elif tag == b"C":
                ks.append(b"C" + rev.pack(i + 1))
            else:  # V / D: keyed by a random version id
                ks.append(tag + rng.randbytes(20).hex().encode())
        per_key.append(ks)
    vals = [rv for _rk, rv in recs]
    path = None if name == "memory" else os.path.join(tmp, f"batch{rnd}")
    eng: Engine = open_engine(name, path)

    def run() -> None:
        for ks in per_key:
            eng.write_batch(list(zip(ks, vals, strict=True)))

    rate, cpu = timed(n, run)
    eng.close()
    return {"raw_batch": rate, "raw_batch_cpu": cpu, "batch_ops": len(recs)}


def bench_engine(
    name: str, n: int, n_sync: int, rounds: int, profile: str | None
) -> dict[str, Any]:
    rng = random.Random(42)
    keys = [rng.randbytes(8).hex() for _ in range(n)]  # 16 ASCII chars
    value = rng.randbytes(100)
    tmp = tempfile.mkdtemp(prefix=f"tide-bench-{name}-")
    out: dict[str, Any] = {"engine": name, "n": n, "rounds": []}
    try:
        for rnd in range(rounds):
            r = one_round(name, n, tmp, rnd, profile, keys, value)
            for what in ("put", "get"):
                r[f"{what}_ratio"] = r[f"store_{what}"] / r[f"raw_{what}"]
                r[f"{what}_cpu_ratio"] = r[f"raw_{what}_cpu"] / r[f"store_{what}_cpu"]
            r["batch_ratio"] = r["raw_batch"] / r["raw_put"]
            r["put_vs_batch"] = r["store_put"] / r["raw_batch"]
            out["rounds"].append(r)
            for sub in ("raw", "store", "batch", "sample"):
                shutil.rmtree(os.path.join(tmp, f"{sub}{rnd}"), ignore_errors=True)
        for k in out["rounds"][0]:
            out[k] = statistics.median(r[k] for r in out["rounds"])

        hist = tidekv.open(os.path.join(tmp, "hist"), name, sync=False)
        hist_keys = keys[: max(1, n // 20)]
        for _ in range(5):
            for k in hist_keys:
                hist.put(k, value)
        out["store_history"], _ = timed(
            len(hist_keys), lambda: [hist.history(k) for k in hist_keys] and None
        )
        hist.close()

        raw = open_engine(name, None if name == "memory" else os.path.join(tmp, "rawsync"))
        out["raw_put_sync"], _ = timed(
            n_sync,
            lambda: [raw.put(b"s" + k.encode(), value, sync=True) for k in keys[:n_sync]] and None,
        )
        raw.close()
        synced = tidekv.open(os.path.join(tmp, "store-sync"), name, sync=True)
        out["store_put_sync"], _ = timed(
            n_sync, lambda: [synced.put("s" + k, value) for k in keys[:n_sync]] and None
        )
        synced.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["put_sync_ratio"] = out["store_put_sync"] / out["raw_put_sync"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--n-sync", type=int, default=2_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--engines", default="lsm,btree,hash,memory")
    ap.add_argument("--profile", choices=["put", "get"], default=None)
    ap.add_argument("--json", dest="json_out", default=None)
    args = ap.parse_args()
    rows = [
        bench_engine(e, args.n, args.n_sync, args.rounds, args.profile)
        for e in args.engines.split(",")
    ]
    print(f"\nmedians of {args.rounds} rounds, n={args.n:,}; load {os.getloadavg()[0]:.1f}")
    print(
        "| engine | raw put/s | store put/s | ratio | raw batch of a put's records/s "
        "| raw get/s | store get/s | ratio | history/s | raw put+fsync/s "
        "| store put+fsync/s | ratio |"
    )
    print("|" + "---|" * 12)
    for r in rows:
        print(
            f"| {r['engine']} | {r['raw_put']:,.0f} | {r['store_put']:,.0f} | "
            f"{r['put_ratio']:.0%} | {r['raw_batch']:,.0f} ({r['batch_ratio']:.0%} of raw put) | "
            f"{r['raw_get']:,.0f} | {r['store_get']:,.0f} | {r['get_ratio']:.0%} | "
            f"{r['store_history']:,.0f} | {r['raw_put_sync']:,.0f} | "
            f"{r['store_put_sync']:,.0f} | {r['put_sync_ratio']:.0%} |"
        )
    print("\nmain-thread CPU time per operation (µs), medians; ratio = raw/store")
    print("| engine | raw put | store put | ratio | raw batch | raw get | store get | ratio |")
    print("|" + "---|" * 8)
    for r in rows:
        print(
            f"| {r['engine']} | {r['raw_put_cpu']:.2f} | {r['store_put_cpu']:.2f} | "
            f"{r['put_cpu_ratio']:.0%} | {r['raw_batch_cpu']:.2f} | {r['raw_get_cpu']:.2f} | "
            f"{r['store_get_cpu']:.2f} | {r['get_cpu_ratio']:.0%} |"
        )
    print("\nper round (wall-clock ratios store/raw): put, get")
    for r in rows:
        per = ", ".join(f"{x['put_ratio']:.0%}/{x['get_ratio']:.0%}" for x in r["rounds"])
        print(f"  {r['engine']}: {per}")
    if args.json_out:
        os.makedirs(os.path.dirname(args.json_out) or ".", exist_ok=True)
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
