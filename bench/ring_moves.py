"""How many shard replicas move when a node joins, and how even the load is, by vnodes.

    python bench/ring_moves.py                         # 64 shards, RF 3, 5 -> 6 nodes
    python bench/ring_moves.py --trials 2000 --vnodes 16,64,128,256 --nodes 5

For each trial a random set of node ids (the ring is a pure function of the member
list, so the node ids are the "seed") builds a ring; one more node joins. Reported per
vnode count and shard layout:

* within25: the share of trials in which the replicas moved are within 25% of the
  ideal (shards * rf / (nodes + 1)) — the issue's test;
* moved p1/p50/p99: replicas moved, as a ratio to the ideal;
* load max/ideal p50/p99 and min/ideal p1: replicas per node after the join.

``even`` is the shipped layout (shard s of S at s * 2**64 // S); ``hashed`` puts shard s
at hash("shard:s"), for comparison.
"""

from __future__ import annotations

import argparse
import random
import time

from tidekv.sharding.ring import Ring, point_hash


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(p / 100 * len(s))))]


def _placement(ring: Ring, shards: int, rf: int, layout: str) -> list[frozenset[int]]:
    if layout == "hashed":
        return [frozenset(ring.walk(point_hash(f"shard:{s}"), rf)) for s in range(shards)]
    return [frozenset(ring.replicas(s, shards, rf)) for s in range(shards)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--shards", type=int, default=64)
    ap.add_argument("--rf", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=5, help="nodes before the join")
    ap.add_argument("--vnodes", default="8,16,32,64,128,256,512")
    ap.add_argument("--layouts", default="even,hashed")
    args = ap.parse_args()
    n, shards, rf = args.nodes, args.shards, args.rf
    ideal_moved = shards * rf / (n + 1)
    ideal_load = shards * rf / (n + 1)
    print(
        f"{args.trials} trials, {shards} shards, rf {rf}, {n} -> {n + 1} nodes; "
        f"ideal replicas moved {ideal_moved:.1f}"
    )
    print(
        f"{'layout':7} {'vnodes':>6} {'within25':>9} {'moved p1':>9} {'p50':>6} {'p99':>6} "
        f"{'load max p50':>13} {'p99':>6} {'min p1':>7} {'ms/ring':>8}"
    )
    for layout in args.layouts.split(","):
        for v in (int(x) for x in args.vnodes.split(",")):
            moved: list[float] = []
            lmax: list[float] = []
            lmin: list[float] = []
            ok = 0
            t0 = time.process_time()
            for t in range(args.trials):
                rng = random.Random(t)
                ids = rng.sample(range(1, 1_000_000), n + 1)
                before = _placement(Ring(dict.fromkeys(ids[:n], 1), v), shards, rf, layout)
                after_ring = Ring(dict.fromkeys(ids, 1), v)
                after = _placement(after_ring, shards, rf, layout)
                m = sum(len(b - a) for a, b in zip(before, after, strict=True))
                moved.append(m / ideal_moved)
                ok += abs(m - ideal_moved) <= 0.25 * ideal_moved
                load: dict[int, int] = dict.fromkeys(ids, 0)
                for reps in after:
                    for x in reps:
                        load[x] += 1
                lmax.append(max(load.values()) / ideal_load)
                lmin.append(min(load.values()) / ideal_load)
            ms = (time.process_time() - t0) * 1000 / (2 * args.trials)
            print(
                f"{layout:7} {v:6} {ok / args.trials:9.3f} {_pct(moved, 1):9.2f} "
                f"{_pct(moved, 50):6.2f} {_pct(moved, 99):6.2f} {_pct(lmax, 50):13.2f} "
                f"{_pct(lmax, 99):6.2f} {_pct(lmin, 1):7.2f} {ms:8.2f}"
            )


if __name__ == "__main__":
    main()
