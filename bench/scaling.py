"""Throughput of a sharded tidekv cluster as shards and nodes grow: 1, 4, 16 and 64
shards on 3 nodes, and 3 vs 5 nodes at a fixed shard count (16), on this machine.

Every cell is a real cluster of ``python -m tidekv serve --shards S`` processes started
fresh (``bench/cluster.py``'s ``TideCluster``, same flags, fsync on), preloaded with
``--keys`` keys (16 B) of 100 B values, then driven by ``bench/cluster.py``'s load generator
(one uvloop process, N keep-alive connections, one request in flight on each): ``--warmup``
s not counted, then ``--duration`` s of puts, then the same of linearizable gets. The load
is routed the way ``tidekv.Client(route=True)`` routes: before each op the shard map is read
from ``GET /v1/cluster`` and every key goes to the node that leads its shard, the
connections split over the nodes in proportion to the keys they lead (``--route one``
sends everything to node 1 instead, which forwards).

Per cell: ops/s (2xx answers inside the window), p50/p99 latency, errors, CPU of all the
node processes per op (/proc/PID/task/*/schedstat), the machine's CPU used by processes
outside this run (``other%``, 200 = both cores), WAL fsyncs per op summed over the nodes
(their /metrics), and the ratio of ops/s to the 1-shard 3-node cell of the same run.
Writes a JSON (``--json``) and a PNG (``--png``, matplotlib: throughput vs shards on 3
nodes, and 3 vs 5 nodes).

    .venv/bin/python bench/scaling.py                         # 5 cells, ~3-5 min
    .venv/bin/python bench/scaling.py --rounds 3 --duration 10 --clients 64

Not a test: the machine is shared and noisy, compare within one run; ``--rounds N`` runs
every cell N times (a fresh cluster each time) and reports medians.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder is sys.path[0], where bench/http.py would shadow ``http``.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root

import argparse
import contextlib
import json
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench import cluster as cb

from tidekv.sharding.keys import shard_of

CONFIGS = [(3, 1), (3, 4), (3, 16), (3, 64), (5, 16)]  # (nodes, shards)


def shard_leaders(c: cb.TideCluster, timeout: float = 90.0) -> dict[int, int]:
    """Shard -> index of the node that leads it, once every shard has a leader."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError, TypeError):
            info = c.http.get(c.url(0) + "/v1/cluster").json()
            last = info["shards"]
            leaders = {int(s["id"]): s["leader"] for s in last}
            if len(leaders) == c.shards and all(v is not None for v in leaders.values()):
                return {s: int(n) - 1 for s, n in leaders.items()}
        time.sleep(0.2)
    raise RuntimeError(f"not every shard has a leader after {timeout:.0f} s: {last}")


def routes(
    c: cb.TideCluster, reqs: list[tuple[str, bytes]], mode: str
) -> list[tuple[int, list[bytes]]]:
    """(port, its requests) per node: keys sent to their shard's leader (or all to node 1)."""
    if mode == "one":
        return [(c.ports[0], [r for _, r in reqs])]
    leaders = shard_leaders(c)
    per: dict[int, list[bytes]] = {}
    for key, req in reqs:
        per.setdefault(leaders[shard_of(key, c.shards)], []).append(req)
    return [(c.ports[i], r) for i, r in sorted(per.items())]


def fsyncs(c: cb.TideCluster) -> float:
    return sum(c.counters(i).get("fsyncs", 0.0) for i in range(c.nodes))


def run_op(c: cb.TideCluster, op: str, args: argparse.Namespace) -> dict[str, Any]:
    if op == "put":
        reqs = [(k, c.put_request(k, v)) for k, v in cb.DATA]
    else:
        reqs = [(k, c.get_request(k)) for k, _ in cb.DATA]
    plan = routes(c, reqs, args.route)
    sampler = cb.Sampler({f"n{i + 1}": pid for i, pid in enumerate(c.pids)})
    f0 = fsyncs(c)
    load: cb.Load = cb.run_loop(
        cb.drive(0, [], args.clients, args.warmup, args.duration, sampler=sampler, routes=plan)
    )
    f1 = fsyncs(c)
    lat = sorted(load.lat)
    cpu = sampler.shares()
    nodes = [cpu.get(f"n{i + 1}", 0.0) for i in range(c.nodes)]
    ops = load.ok / args.duration
    return {
        "op": op,
        "ops_s": ops,
        "p50_ms": cb.percentile(lat, 0.50),
        "p99_ms": cb.percentile(lat, 0.99),
        "errors": load.errors,
        "statuses": dict(load.statuses),
        "keys_by_node": {str(c.ports.index(p) + 1): len(r) for p, r in plan},
        "node_cpu_pct": nodes,
        "server_cpu_us_per_op": 1e4 * sum(nodes) / ops if ops else math.nan,
        "loadgen_cpu_pct": cpu.get("loadgen"),
        "other_cpu_pct": cpu.get("other"),
        "fsyncs_per_op": (f1 - f0) / load.total if load.total else math.nan,
    }


Cell = dict[str, Any]


def run_config(nodes: int, shards: int, root: Path, args: argparse.Namespace) -> list[Cell]:
    c = cb.TideCluster(
        root / f"n{nodes}-s{shards}-{time.monotonic_ns()}", args.engine, shards, nodes
    )
    try:
        c.start()
        t0 = time.monotonic()
        c.wait_ready(120.0)
        shard_leaders(c)
        cb.preload(c, 0)
        ready_s = time.monotonic() - t0
        out = []
        for op in args.ops.split(","):
            cell = {"nodes": nodes, "shards": shards, "ready_s": ready_s, **run_op(c, op, args)}
            print(
                f"  {nodes} nodes {shards:>2} shards {op}: {cell['ops_s']:>8,.0f} ops/s  "
                f"p50 {cell['p50_ms']:6.2f} ms  p99 {cell['p99_ms']:7.2f} ms  "
                f"errors {cell['errors']}  {cell['server_cpu_us_per_op']:,.0f} us/op  "
                f"other {cell['other_cpu_pct']:.0f}%",
                flush=True,
            )
            out.append(cell)
        return out
    finally:
        c.stop()


def summarize(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians over rounds per (nodes, shards, op), with ops/s relative to 3 nodes, 1 shard."""
    keys = sorted({(c["nodes"], c["shards"], c["op"]) for c in cells})
    out = []
    for n, s, op in keys:
        cs = [c for c in cells if (c["nodes"], c["shards"], c["op"]) == (n, s, op)]

        def med(f: str, cs: list[dict[str, Any]] = cs) -> float:
            vals = [c[f] for c in cs if c[f] is not None and not math.isnan(c[f])]
            return statistics.median(vals) if vals else math.nan

        row = {"nodes": n, "shards": s, "op": op, "rounds": len(cs)}
        for f in ("ops_s", "p50_ms", "p99_ms", "server_cpu_us_per_op", "fsyncs_per_op"):
            row[f] = med(f)
        row["other_cpu_pct"] = med("other_cpu_pct")
        row["errors"] = sum(c["errors"] for c in cs)
        out.append(row)
    for row in out:
        base = next(
            (r for r in out if (r["nodes"], r["shards"], r["op"]) == (3, 1, row["op"])), None
        )
        row["ratio_vs_3n_1s"] = row["ops_s"] / base["ops_s"] if base and base["ops_s"] else math.nan
    return out


def print_table(summary: list[dict[str, Any]]) -> None:
    print(
        f"\n{'op':<4} {'nodes':>5} {'shards':>6} {'ops/s':>8} {'x 3n/1s':>7} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'us/op':>6} {'fsync/op':>8} {'other%':>6} {'errors':>6}"
    )
    for r in sorted(summary, key=lambda r: (r["op"] != "put", r["nodes"], r["shards"])):
        print(
            f"{r['op']:<4} {r['nodes']:>5} {r['shards']:>6} {r['ops_s']:>8,.0f} "
            f"{r['ratio_vs_3n_1s']:>7.2f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
            f"{r['server_cpu_us_per_op']:>6,.0f} {r['fsyncs_per_op']:>8.3f} "
            f"{r['other_cpu_pct']:>6.0f} {r['errors']:>6}"
        )


def plot(summary: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    ops = [o for o in ("put", "get") if any(r["op"] == o for r in summary)]
    for op in ops:
        rows = sorted(
            (r for r in summary if r["op"] == op and r["nodes"] == 3), key=lambda r: r["shards"]
        )
        a.plot([r["shards"] for r in rows], [r["ops_s"] for r in rows], "o-", label=op)
    a.set_xscale("log", base=2)
    a.set_xticks([1, 4, 16, 64], ["1", "4", "16", "64"])
    a.set_xlabel("shards (3 nodes)")
    a.set_ylabel("ops/s")
    a.set_ylim(bottom=0)
    a.legend()
    a.grid(alpha=0.3)
    a.set_title("throughput vs shards")
    width = 0.35
    for j, op in enumerate(ops):
        rows = [r for r in summary if r["op"] == op and r["shards"] == 16]
        rows.sort(key=lambda r: r["nodes"])
        xs = [k + (j - 0.5) * width for k in range(len(rows))]
        b.bar(xs, [r["ops_s"] for r in rows], width, label=op)
        b.set_xticks(range(len(rows)), [f"{r['nodes']} nodes" for r in rows])
    b.set_title("16 shards: 3 vs 5 nodes")
    b.set_ylabel("ops/s")
    b.legend()
    b.grid(alpha=0.3, axis="y")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per op")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per op")
    ap.add_argument("--clients", type=int, default=64, help="concurrent connections")
    ap.add_argument("--rounds", type=int, default=1, help="fresh clusters per cell; medians")
    ap.add_argument("--ops", default="put,get", help="put, get or both")
    ap.add_argument("--keys", type=int, default=1000, help="size of the key space")
    ap.add_argument(
        "--configs",
        default=",".join(f"{n}x{s}" for n, s in CONFIGS),
        help="NODESxSHARDS cells, comma-separated",
    )
    ap.add_argument(
        "--route",
        choices=["leader", "one"],
        default="leader",
        help="keys to their shard leader (as tidekv.Client) or all to node 1",
    )
    ap.add_argument("--engine", default="lsm", help="tidekv engine")
    ap.add_argument("--json", default=str(cb.OUT_DIR / "scaling.json"))
    ap.add_argument("--png", default=str(cb.OUT_DIR / "scaling.png"))
    ap.add_argument("--data-root", default=None, help="where the temporary data dirs go")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    configs = [tuple(int(x) for x in c.split("x")) for c in args.configs.split(",") if c]
    cb.DATA[:] = cb.make_data(args.keys)
    root = Path(tempfile.mkdtemp(prefix="tide-bench-scaling-", dir=args.data_root))
    env = cb.environment(str(root), None)
    print(
        f"{env['date']}  {env['cpus']} CPUs, load average {env['loadavg'][0]:.2f}, machine "
        f"{env['machine_busy_pct_before']:.0f}% busy before start; data on {env['data_fs']}; "
        f"tidekv {env['tidekv_commit']}; {args.clients} clients, {args.warmup:g} s warm-up + "
        f"{args.duration:g} s per op, {args.rounds} round(s), route {args.route}"
    )
    cells: list[dict[str, Any]] = []
    try:
        for rnd in range(args.rounds):
            for n, s in configs:
                for cell in run_config(n, s, root, args):
                    cells.append({**cell, "round": rnd})
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary = summarize(cells)
    print_table(summary)
    report = {
        "meta": {**env, "args": vars(args), "loadavg_after": os.getloadavg()},
        "cells": cells,
        "summary": summary,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(cb._json_safe(report), f, indent=1, default=str)
    la = env["loadavg"][0]
    plot(
        summary,
        Path(args.png),
        f"tidekv {env['tidekv_commit']}, {env['cpus']} CPUs, "
        f"load avg {la:.1f} at start, {args.clients} clients, route {args.route}, "
        f"median of {args.rounds} round(s)",
    )
    print(f"\n{args.json}\n{args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
