"""Leader balancing on ring placements: the spread before and after, transfers needed.

    python bench/leader_balance.py --trials 500

For n = 3..10 nodes, 64 shards, rf 3: a random member list, every shard led by a random
replica (as after elections), then :func:`balance_leaders`. Reports the share of trials
meeting most <= 1.5 * fewest before and after, the worst (most, fewest) after, and the
transfers per trial.
"""

from __future__ import annotations

import argparse
import random

from tidekv.sharding import Ring, balance_leaders, spread


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=500)
    ap.add_argument("--shards", type=int, default=64)
    args = ap.parse_args()
    print(f"{args.trials} trials per row, {args.shards} shards, rf 3, random initial leaders")
    print(
        f"{'nodes':>5} {'ok before':>10} {'ok after':>9} {'worst after':>12} {'transfers p50':>14}"
    )
    for n in range(3, 11):
        before_ok = after_ok = 0
        worst = (0, 10**9)
        moves: list[int] = []
        for t in range(args.trials):
            rng = random.Random(t)
            ids = rng.sample(range(1, 1_000_000), n)
            reps = Ring(dict.fromkeys(ids, 1)).place(args.shards, 3).as_map()
            leaders: dict[int, int | None] = {s: rng.choice(r) for s, r in reps.items()}
            most, fewest = spread(leaders, ids)
            before_ok += most <= 1.5 * fewest
            ts = balance_leaders(leaders, reps)
            moves.append(len(ts))
            for m in ts:
                leaders[m.shard] = m.to
            most, fewest = spread(leaders, ids)
            after_ok += most <= 1.5 * fewest
            if most - fewest > worst[0] - worst[1]:
                worst = (most, fewest)
        moves.sort()
        print(
            f"{n:5} {before_ok / args.trials:10.3f} {after_ok / args.trials:9.3f} "
            f"{worst!s:>12} {moves[len(moves) // 2]:14}"
        )


if __name__ == "__main__":
    main()
