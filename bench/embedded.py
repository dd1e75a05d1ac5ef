"""Embedded store vs. the raw engine underneath it, side by side in one run.

For each engine: N random 16-byte keys with 100-byte values.
- put:  raw ``engine.put(k, v)`` vs ``store.put(k, v)`` (a versioned write: key record,
        version record, value and change-log entry in one atomic batch), no fsync;
- put (sync): the same with fsync on every write (fewer operations);
- get:  raw ``engine.get(k)`` vs ``store.get(k)``;
- history: ``store.history(k)`` on keys with 5 versions each (no raw equivalent).
Ratios are store/raw. Not a test: the machine is shared and noisy; compare within a run.

    python bench/embedded.py                       # 200,000 keys, all engines
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
import tempfile
import time
from collections.abc import Callable
from typing import Any

import tidekv
from tidekv.storage import open_engine


def rate(n: int, fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def bench_engine(name: str, n: int, n_sync: int, profile: str | None) -> dict[str, Any]:
    rng = random.Random(42)
    keys = [rng.randbytes(8).hex() for _ in range(n)]  # 16 ASCII chars
    kb = [k.encode() for k in keys]
    value = rng.randbytes(100)
    order = list(range(n))
    rng.shuffle(order)
    tmp = tempfile.mkdtemp(prefix=f"tide-bench-{name}-")
    out: dict[str, Any] = {"engine": name, "n": n}
    try:
        raw = open_engine(name, None if name == "memory" else os.path.join(tmp, "raw"))

        def raw_put() -> None:
            for k in kb:
                raw.put(k, value)

        def raw_get() -> None:
            for i in order:
                raw.get(kb[i])

        def raw_put_sync() -> None:
            for k in kb[:n_sync]:
                raw.put(b"s" + k, value, sync=True)

        out["raw_put"] = rate(n, raw_put)
        out["raw_get"] = rate(n, raw_get)
        out["raw_put_sync"] = rate(n_sync, raw_put_sync)
        raw.close()

        store = tidekv.open(os.path.join(tmp, "store"), name, sync=False)

        def store_put() -> None:
            for k in keys:
                store.put(k, value)

        def store_get() -> None:
            for i in order:
                store.get(keys[i])

        prof = cProfile.Profile() if profile else None
        if prof and profile == "put":
            prof.enable()
        out["store_put"] = rate(n, store_put)
        if prof and profile == "put":
            prof.disable()
        if prof and profile == "get":
            prof.enable()
        out["store_get"] = rate(n, store_get)
        if prof and profile == "get":
            prof.disable()

        hist_keys = keys[: max(1, n // 20)]
        for _ in range(4):
            for k in hist_keys:
                store.put(k, value)
        out["store_history"] = rate(
            len(hist_keys), lambda: [store.history(k) for k in hist_keys] and None
        )
        store.close()

        synced = tidekv.open(os.path.join(tmp, "store-sync"), name, sync=True)
        out["store_put_sync"] = rate(
            n_sync, lambda: [synced.put("s" + k, value) for k in keys[:n_sync]] and None
        )
        synced.close()
        if prof:
            print(f"\n== profile of store {profile} on {name} ==")
            pstats.Stats(prof).sort_stats("cumulative").print_stats(18)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["put_ratio"] = out["store_put"] / out["raw_put"]
    out["get_ratio"] = out["store_get"] / out["raw_get"]
    out["put_sync_ratio"] = out["store_put_sync"] / out["raw_put_sync"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--n-sync", type=int, default=2_000)
    ap.add_argument("--engines", default="lsm,btree,hash,memory")
    ap.add_argument("--profile", choices=["put", "get"], default=None)
    ap.add_argument("--json", dest="json_out", default=None)
    args = ap.parse_args()
    rows = [bench_engine(e, args.n, args.n_sync, args.profile) for e in args.engines.split(",")]
    hdr = (
        "| engine | raw put/s | store put/s | ratio | raw get/s | store get/s | ratio "
        "| history/s | raw put+fsync/s | store put+fsync/s | ratio |"
    )
    print(hdr)
    print("|" + "---|" * 11)
    for r in rows:
        print(
            f"| {r['engine']} | {r['raw_put']:,.0f} | {r['store_put']:,.0f} | "
            f"{r['put_ratio']:.0%} | {r['raw_get']:,.0f} | {r['store_get']:,.0f} | "
            f"{r['get_ratio']:.0%} | {r['store_history']:,.0f} | {r['raw_put_sync']:,.0f} | "
            f"{r['store_put_sync']:,.0f} | {r['put_sync_ratio']:.0%} |"
        )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
