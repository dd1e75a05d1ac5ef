"""Does the load follow the leaders? Per-node share of the writes a sharded cluster
serves, with leader balancing off and on, after the same skew.

Per mode (``off``: ``tide serve --no-balance-leaders``, ``on``: the default), a fresh
cluster of ``--nodes`` real ``python -m tidekv serve --shards S`` processes
(``bench/cluster.py``'s ``TideCluster``, fsync on):

1. wait until every shard has a leader (elections decide where: unbalanced by chance);
2. skew it the way a node restart or pause does: SIGSTOP the last node until the others
   lead every shard, then SIGCONT it. Raft never gives leadership back by itself;
3. wait: ``on`` until the balancer settles (the leader counts within 1.5x and unchanged
   for ``--settle`` s), ``off`` the same ``--settle`` s (nothing changes);
4. ``--duration`` s of puts routed the way ``tidekv.Client`` routes them: every key to
   the node that leads its shard (``bench/scaling.py``'s router: connections split over
   the nodes in proportion to the keys they lead).

Per node, from its own /metrics, the writes it served in the window: the write commands
it appended as a shard leader (``tidekv_writes_led_total``, the metadata group left
out) and the PUTs it answered with 200 (``tidekv_http_requests_total``). The ratio most /
fewest per node shows the spread (inf when a node served none).

    .venv/bin/python bench/leader_load.py                  # 4 nodes, 16 shards, ~3 min
    .venv/bin/python bench/leader_load.py --nodes 5 --shards 20 --duration 10

Not a test: the machine is shared (2 cores); the load average is printed with the table.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder is sys.path[0], where bench/http.py would shadow ``http``.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root

import argparse
import json
import re
import shutil
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import cluster as cb
from bench.scaling import routes, shard_leaders

META_SHARD = str(1 << 16)  # the metadata group's label (tidekv.node.meta.META_GROUP)
SAMPLE = re.compile(r"^(?P<name>\w+)\{(?P<labels>[^}]*)\} (?P<v>\S+)$", re.M)


def served(c: cb.TideCluster, i: int) -> tuple[float, float]:
    """(writes appended as a shard leader, PUTs answered 200) by node ``i`` so far."""
    text = c.http.get(c.url(i) + "/metrics").text
    led = puts = 0.0
    for m in SAMPLE.finditer(text):
        labels = m["labels"]
        if m["name"] == "tidekv_writes_led_total" and f'shard="{META_SHARD}"' not in labels:
            led += float(m["v"])
        elif (
            m["name"] == "tidekv_http_requests_total"
            and 'route="kv"' in labels
            and 'method="PUT"' in labels
            and 'status="200"' in labels
        ):
            puts += float(m["v"])
    return led, puts


def counts(c: cb.TideCluster) -> Counter[int]:
    """Shards led per node (0-based), as node 1 sees them."""
    return Counter(shard_leaders(c).values())


def spread_ok(n: Counter[int], nodes: int) -> bool:
    fewest = min(n[i] for i in range(nodes))
    return fewest > 0 and max(n[i] for i in range(nodes)) <= 1.5 * fewest


def run_mode(mode: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    extra = ("--no-balance-leaders",) if mode == "off" else ()
    c = cb.TideCluster(root / mode, args.engine, args.shards, args.nodes, extra=extra)
    try:
        c.start()
        c.wait_ready(120.0)
        initial = counts(c)
        victim = args.nodes - 1
        os.kill(c.pids[victim], signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 120
            while counts(c)[victim] > 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("the stopped node kept its leaders")
                time.sleep(0.3)
        finally:
            os.kill(c.pids[victim], signal.SIGCONT)
        skewed = counts(c)
        t0 = time.monotonic()
        last, since = counts(c), time.monotonic()
        while time.monotonic() - since < args.settle:
            time.sleep(0.5)
            now = counts(c)
            if now != last or (mode == "on" and not spread_ok(now, args.nodes)):
                last, since = now, time.monotonic()
            if time.monotonic() - t0 > 180:
                break
        settled_s = time.monotonic() - t0
        leaders = counts(c)
        before = [served(c, i) for i in range(args.nodes)]
        reqs = [(k, c.put_request(k, v)) for k, v in cb.DATA]
        load: cb.Load = cb.run_loop(
            cb.drive(
                0, [], args.clients, args.warmup, args.duration, routes=routes(c, reqs, "lead")
            )
        )
        after = [served(c, i) for i in range(args.nodes)]
        led = [after[i][0] - before[i][0] for i in range(args.nodes)]
        puts = [after[i][1] - before[i][1] for i in range(args.nodes)]
        transfers = sum(
            c.scrape(i, {"tidekv_leader_balance_transfers_total": "t"}).get("t", 0.0)
            for i in range(args.nodes)
        )
        hints = sum(
            c.scrape(i, {"tidekv_leader_balance_hints_total": "h"}).get("h", 0.0)
            for i in range(args.nodes)
        )
        return {
            "mode": mode,
            "initial_leaders": [initial[i] for i in range(args.nodes)],
            "skewed_leaders": [skewed[i] for i in range(args.nodes)],
            "leaders": [leaders[i] for i in range(args.nodes)],
            "settled_s": settled_s,
            "writes_led": led,
            "puts_answered": puts,
            "ops_s": load.ok / args.duration,
            "errors": load.errors,
            "transfers": transfers,
            "hints": hints,
        }
    finally:
        c.stop()


def ratio(xs: list[float]) -> float:
    return max(xs) / min(xs) if min(xs) > 0 else float("inf")


def print_mode(r: dict[str, Any]) -> None:
    total = sum(r["writes_led"]) or 1.0
    print(
        f"balancing {r['mode']}: leaders at start {r['initial_leaders']}, after the skew "
        f"{r['skewed_leaders']}, measured with {r['leaders']} (waited {r['settled_s']:.0f} s; "
        f"{r['transfers']:.0f} transfers asked, {r['hints']:.0f} hints taken)"
    )
    print("  node  leads  writes led  share   PUTs answered")
    for i, (lead, led, puts) in enumerate(
        zip(r["leaders"], r["writes_led"], r["puts_answered"], strict=True)
    ):
        print(f"  {i + 1:>4}  {lead:>5}  {led:>10,.0f}  {100 * led / total:4.0f}%  {puts:>13,.0f}")
    print(
        f"  most/fewest writes led per node: {ratio(r['writes_led']):.2f}   "
        f"{r['ops_s']:,.0f} puts/s, {r['errors']} errors"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--keys", type=int, default=2000)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--settle", type=float, default=10.0)
    ap.add_argument("--engine", default="lsm")
    ap.add_argument("--modes", default="off,on")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cb.DATA[:] = cb.make_data(args.keys)
    root = Path(tempfile.mkdtemp(prefix="tidekv-leader-load-"))
    results = []
    try:
        for mode in args.modes.split(","):
            r = run_mode(mode, root, args)
            print_mode(r)
            results.append(r)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f} (2 cores, shared)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
