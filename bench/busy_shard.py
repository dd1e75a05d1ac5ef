"""What the node loop's sweep over every replica costs at 64 shards a node: one busy shard
next to 63 idle ones, and every shard busy, with the loop visiting only the dirty replicas
(now) and every replica on every turn (before; ``TIDEKV_DRIVE_ALL=1``), side by side.

Every cell is a fresh cluster of 3 ``python -m tidekv serve --shards 64`` processes
(``bench/cluster.py``'s ``TideCluster``, fsync on), driven by bench/scaling.py's load
(``--clients`` keep-alive connections, each key sent to its shard's leader): ``--warmup``
s not counted, then ``--duration`` s of puts (then the same of gets with ``--ops put,get``).

* ``one``: every key of the load lives in ONE shard (``--keys`` keys chosen so), the
  other 63 shards idle (quiesced);
* ``all``: the keys spread over the 64 shards.

First, in-process (no cluster): the cost of one timer tick and of one sweep over every
replica, on one node hosting 1, 64 and 256 quiesced groups (``--no-cluster``: only that).

Per cell: ops/s, p50/p99, server CPU per op (all threads of the 3 nodes), node-loop turns
per op (``tidekv_node_loops``) and the machine's CPU used outside this run (``other%``).
The two modes of one scenario run back to back (``--rounds N`` repeats the pair, medians),
so noise from elsewhere hits both alike; ratios are dirty / sweep. Print ``uptime`` first
and last: numbers measured on a loaded machine are not final.

    .venv/bin/python bench/busy_shard.py                    # ~4-6 min
    .venv/bin/python bench/busy_shard.py --rounds 2 --duration 8 --scenarios one
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder is sys.path[0], where bench/http.py would shadow ``http``.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root

import argparse
import asyncio
import math
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import cluster as cb
from bench import scaling as sc

from tidekv.node.server import DRIVE_ALL_ENV
from tidekv.sharding.keys import shard_of

SHARDS = 64
MODES = (("sweep", "1"), ("dirty", "0"))  # (name, TIDEKV_DRIVE_ALL)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def one_shard_data(n: int, shards: int) -> list[tuple[str, bytes]]:
    """``n`` keys of bench/cluster.py's shape, all in the shard of the first one."""
    pool = cb.make_data(n * shards * 4)
    target = shard_of(pool[0][0], shards)
    picked = [kv for kv in pool if shard_of(kv[0], shards) == target][:n]
    if len(picked) < n:
        raise RuntimeError(f"only {len(picked)} keys in shard {target}")
    return picked


def loops(c: cb.TideCluster) -> float:
    names = {"tidekv_node_loops_total": "loops"}
    return sum(c.scrape(i, names).get("loops", 0.0) for i in range(c.nodes))


def run_cell(
    scenario: str, mode: str, root: Path, args: argparse.Namespace
) -> list[dict[str, Any]]:
    os.environ[DRIVE_ALL_ENV] = dict(MODES)[mode]
    c = cb.TideCluster(root / f"{scenario}-{mode}-{time.monotonic_ns()}", args.engine, SHARDS, 3)
    try:
        c.start()
        c.wait_ready(180.0)
        sc.shard_leaders(c, 180.0)
        cb.preload(c, 0)
        out = []
        for op in args.ops.split(","):
            l0 = loops(c)
            cell = sc.run_op(c, op, args)
            l1 = loops(c)
            ok = cell["ops_s"] * args.duration
            cell.update(
                scenario=scenario,
                mode=mode,
                loops_per_op=(l1 - l0) / ok if ok else math.nan,  # window + warm-up: rough
            )
            print(
                f"  {scenario:>3} {mode:>5} {op}: {cell['ops_s']:>7,.0f} ops/s  "
                f"p50 {cell['p50_ms']:6.2f} ms  p99 {cell['p99_ms']:7.2f} ms  "
                f"{cell['server_cpu_us_per_op']:>6,.0f} us/op  errors {cell['errors']}  "
                f"other {cell['other_cpu_pct']:.0f}%",
                flush=True,
            )
            out.append(cell)
        return out
    finally:
        c.stop()
        os.environ.pop(DRIVE_ALL_ENV, None)


async def _micro(groups: int, calls: int) -> dict[str, float]:
    """In-process single node hosting ``groups`` groups, all quiesced: the cost of one
    timer tick (``Node._tick``) and of one sweep over every replica (what each loop turn
    did before: ``before_ready`` + ``has_ready`` per replica), in microseconds."""
    from tidekv.chaos.ports import free_base_port
    from tidekv.node.config import NodeConfig
    from tidekv.node.server import EXTRA_GROUPS_ENV, Node

    os.environ[EXTRA_GROUPS_ENV] = str(groups - 1)
    tmp = tempfile.mkdtemp(prefix="tide-bench-micro-")
    port = free_base_port(1)
    node = Node(
        NodeConfig(
            data_dir=tmp,
            address="127.0.0.1:1",
            raft_address=f"127.0.0.1:{port}",
            tick_ms=10,
            shards=1,  # the extra groups are an unsharded node's
        )
    )
    try:
        await node.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while node.groups_quiesced() < groups and loop.time() < deadline:
            await asyncio.sleep(0.05)
        node._schedule_tick = lambda: None  # type: ignore[method-assign]
        t0 = time.perf_counter()
        for _ in range(calls):
            node._tick()
        tick = (time.perf_counter() - t0) / calls
        reps = list(node.replicas.values())
        t0 = time.perf_counter()
        for _ in range(calls):
            for rep in reps:
                rep.before_ready()
                rep.raw.has_ready()
        sweep = (time.perf_counter() - t0) / calls
        return {"quiesced": node.groups_quiesced(), "tick_us": tick * 1e6, "sweep_us": sweep * 1e6}
    finally:
        await node.stop()
        os.environ.pop(EXTRA_GROUPS_ENV, None)
        shutil.rmtree(tmp, ignore_errors=True)


def micro(args: argparse.Namespace) -> None:
    for g in (1, 64, 256):
        m = asyncio.run(_micro(g, args.micro_calls))
        print(
            f"  {g:>3} groups ({m['quiesced']:.0f} quiesced): tick {m['tick_us']:6.1f} us, "
            f"sweep of every replica {m['sweep_us']:7.1f} us",
            flush=True,
        )


def med(cells: list[dict[str, Any]], f: str) -> float:
    vals = [c[f] for c in cells if c[f] is not None and not math.isnan(c[f])]
    return statistics.median(vals) if vals else math.nan


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per op")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per op")
    ap.add_argument("--clients", type=int, default=64, help="concurrent connections")
    ap.add_argument("--rounds", type=int, default=1, help="pairs of cells per scenario; medians")
    ap.add_argument("--ops", default="put", help="put, get or both")
    ap.add_argument("--keys", type=int, default=500, help="size of the key space")
    ap.add_argument("--scenarios", default="one,all", help="one (1 busy shard), all")
    ap.add_argument("--engine", default="lsm")
    ap.add_argument("--micro-calls", type=int, default=2000, help="ticks/sweeps timed (micro)")
    ap.add_argument("--no-cluster", action="store_true", help="only the in-process micro part")
    args = ap.parse_args()
    args.route = "leader"
    print(f"load before: {uptime()}")
    print("in-process, one node, every group quiesced:")
    micro(args)
    if args.no_cluster:
        return 0
    print(f"3 nodes, {SHARDS} shards, {args.clients} clients, {args.duration:g} s per op")
    root = Path(tempfile.mkdtemp(prefix="tide-bench-busy-"))
    cells: list[dict[str, Any]] = []
    try:
        for scenario in args.scenarios.split(","):
            if scenario == "one":
                cb.DATA[:] = one_shard_data(args.keys, SHARDS)
            else:
                cb.DATA[:] = cb.make_data(args.keys)
            for _ in range(args.rounds):
                for mode, _env in MODES:
                    cells.extend(run_cell(scenario, mode, root, args))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"load after: {uptime()}\n")
    print(
        "| scenario | op | sweep ops/s | dirty ops/s | ratio | sweep us/op | dirty us/op "
        "| ratio | loops/op sweep | loops/op dirty |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for scenario in args.scenarios.split(","):
        for op in args.ops.split(","):
            by = {
                m: [c for c in cells if (c["scenario"], c["mode"], c["op"]) == (scenario, m, op)]
                for m, _ in MODES
            }
            s_ops, d_ops = med(by["sweep"], "ops_s"), med(by["dirty"], "ops_s")
            s_us = med(by["sweep"], "server_cpu_us_per_op")
            d_us = med(by["dirty"], "server_cpu_us_per_op")
            print(
                f"| {scenario} | {op} | {s_ops:,.0f} | {d_ops:,.0f} | {d_ops / s_ops:.2f}x "
                f"| {s_us:,.0f} | {d_us:,.0f} | {d_us / s_us:.2f}x "
                f"| {med(by['sweep'], 'loops_per_op'):.2f} "
                f"| {med(by['dirty'], 'loops_per_op'):.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
