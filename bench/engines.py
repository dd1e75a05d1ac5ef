"""Storage engines side by side: the same workloads on every engine in one run.

Keys are 16 random bytes, values 100 random bytes. For each engine (memory is the
reference), in a fresh directory and a fresh child process (so its peak RSS is its own):

    put            N single puts in random key order, no fsync
    batch100       the same N keys in write batches of 100, no fsync  (dataset for reads)
    put sync       N_SYNC single puts with sync=True
    batch100 sync  N_SYNC/10 batches of 100 with sync=True             (keys/s)
    get            N gets of present keys in random order
    multi_get100   the same N keys through multi_get, 100 at a time     (keys/s)
    scan fwd       one forward scan over all N keys                     (pairs/s)
    scan rev 1k    reverse scans of 1,000-key ranges at random places   (pairs/s)

Reported in operations (keys or pairs) per second, plus disk bytes after the load and
the child's peak RSS. Not a test: the machine is shared and noisy; compare engines
within one run, never across runs.

    python bench/engines.py                         # N=200,000, every engine
    python bench/engines.py --n 50000 --json out.json
    python bench/engines.py --engines lsm,btree --n-sync 500
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from tidekv.storage import ENGINES, Engine, open_engine

WORKLOADS = [
    "put",
    "batch100",
    "put sync",
    "batch100 sync",
    "get",
    "multi_get100",
    "scan fwd",
    "scan rev 1k",
]


def timed(count: int, fn: Callable[[], object]) -> float:
    """Operations per second of ``fn`` doing ``count`` operations."""
    t0 = time.perf_counter()
    fn()
    return count / (time.perf_counter() - t0)


def chunks(items: list[bytes], size: int) -> Iterator[list[bytes]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def dir_bytes(path: str | None) -> int:
    if path is None:
        return 0
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.stat(os.path.join(root, name))
            total += st.st_blocks * 512  # allocated, not apparent (LMDB files are sparse)
    return total


def bench_one(name: str, n: int, n_sync: int, seed: int, workdir: str) -> dict[str, Any]:
    rng = random.Random(seed)
    keys = [rng.randbytes(16) for _ in range(n)]
    value = rng.randbytes(100)
    sync_keys = [rng.randbytes(16) for _ in range(n_sync)]
    sync_batches = [[rng.randbytes(16) for _ in range(100)] for _ in range(max(1, n_sync // 10))]
    out: dict[str, Any] = {}

    def fresh(sub: str) -> Engine:
        return open_engine(name, None if name == "memory" else os.path.join(workdir, sub))

    engine = fresh("put")

    def puts() -> None:
        for k in keys:
            engine.put(k, value)

    out["put"] = timed(n, puts)
    engine.close()

    engine = fresh("data")

    def batches() -> None:
        for chunk in chunks(keys, 100):
            engine.write_batch([(k, value) for k in chunk])

    out["batch100"] = timed(n, batches)
    engine.sync()

    def sync_puts() -> None:
        for k in sync_keys:
            engine.put(k, value, sync=True)

    out["put sync"] = timed(n_sync, sync_puts)

    def sync_batch() -> None:
        for batch in sync_batches:
            engine.write_batch([(k, value) for k in batch], sync=True)

    out["batch100 sync"] = timed(100 * len(sync_batches), sync_batch)
    out["disk MB"] = dir_bytes(None if name == "memory" else os.path.join(workdir, "data")) / 1e6

    order = keys[:]
    rng.shuffle(order)

    def gets() -> None:
        get = engine.get
        for k in order:
            if get(k) is None:
                raise AssertionError("a loaded key is missing")

    out["get"] = timed(n, gets)

    def multi_gets() -> None:
        for chunk in chunks(order, 100):
            engine.multi_get(chunk)

    out["multi_get100"] = timed(n, multi_gets)

    total = n + len(sync_keys) + 100 * len(sync_batches)

    def scan_all() -> None:
        count = sum(1 for _ in engine.scan())
        if count != total:
            raise AssertionError(f"scan saw {count} pairs, expected {total}")

    out["scan fwd"] = timed(total, scan_all)

    ordered = sorted(keys)
    starts = [rng.randrange(0, max(1, len(ordered) - 1001)) for _ in range(200)]

    def scan_ranges() -> None:
        for i in starts:
            got = sum(1 for _ in engine.scan(ordered[i], ordered[i + 1000], reverse=True))
            if got < 1000:
                raise AssertionError("short range")

    out["scan rev 1k"] = timed(1000 * len(starts), scan_ranges)
    engine.close()
    out["peak RSS MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def available(name: str) -> bool:
    module = ENGINES[name].partition(":")[0]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError:
        return False
    return True


def run_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one engine's benchmark in a fresh interpreter (own peak RSS, own caches)."""
    cmd = [sys.executable, __file__, "--child", name, "--n", str(args.n)]
    cmd += ["--n-sync", str(args.n_sync), "--seed", str(args.seed), "--dir", args.dir]
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def fmt(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def table(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    rows = [*WORKLOADS, "disk MB", "peak RSS MB"]
    width = max(len(r) for r in rows) + 2
    head = "ops/s".ljust(width) + "".join(n.rjust(13) for n in names)
    lines = [head, "-" * len(head)]
    for row in rows:
        cells = "".join(fmt(results[n].get(row)).rjust(13) for n in names)
        lines.append(row.ljust(width) + cells)
    ref = "memory" if "memory" in results else None
    if ref:
        lines.append("")
        lines.append(f"ratio to {ref}".ljust(width) + "".join(n.rjust(13) for n in names))
        for row in WORKLOADS:
            base = results[ref].get(row)
            cells = "".join(
                (f"{results[n][row] / base:.3f}" if base and row in results[n] else "n/a").rjust(13)
                for n in names
            )
            lines.append(row.ljust(width) + cells)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="keys (default 200,000)")
    parser.add_argument("--n-sync", type=int, default=2_000, help="synced single puts")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated names")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--dir", default=None, help="work directory (default: a temp dir)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        workdir = tempfile.mkdtemp(prefix=f"bench-{args.child}-", dir=args.dir)
        try:
            result = bench_one(args.child, args.n, args.n_sync, args.seed, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(json.dumps(result))
        return

    if args.dir is None:
        args.dir = tempfile.gettempdir()
    results: dict[str, dict[str, Any]] = {}
    for name in args.engines.split(","):
        if not available(name):
            print(f"{name}: engine module not available yet, skipped", file=sys.stderr)
            continue
        print(f"{name}: running ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        results[name] = run_child(name, args)
        print(f"{name}: done in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    print(
        f"N={args.n:,} keys (16 B) x values (100 B); synced: {args.n_sync:,} puts, "
        f"{max(1, args.n_sync // 10) * 100:,} keys in batches of 100; seed {args.seed}"
    )
    print(table(results))
    if args.json:
        meta = {
            "n": args.n,
            "n_sync": args.n_sync,
            "seed": args.seed,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
