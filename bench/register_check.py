"""Replay a chaos run's check: the version-order checker beside the WGL search.

Reads ``history.jsonl`` (the operations, unknown writes already settled) and
``versions.json`` (each key's recovered version history) from a run's output directory
and checks every key with both, in one process, reporting CPU seconds per key, the
ratio, and the verdicts. The WGL search is bounded by ``--max-steps`` (as in the
harness); undecided is reported as such. Not a test: compare rows of one run.

    python bench/register_check.py /tmp/tide-chaos-91-xxxx
    python bench/register_check.py OUT --max-steps 500000 --json bench/out/register_check.json

``--synthetic`` instead checks generated histories (a sequential register execution,
each operation widened to a random interval around its instant, about ``overlap``
operations concurrent with each): the shape that makes the search explode.

    python bench/register_check.py --synthetic
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from tidekv.chaos.history import ClientOp, to_check_operations
from tidekv.chaos.verify import check_registers
from tidekv.check.linearizability import Operation, RegisterModel, check_history, check_operations
from tidekv.check.versioned import ChainVersion, VOp, check_versioned

SYNTHETIC = [(2_000, 10, 0.5), (2_000, 40, 0.5), (2_000, 40, 0.1), (10_000, 40, 0.1)]


def synthetic(
    seed: int, n: int, overlap: int, read_share: float
) -> tuple[list[VOp], list[Operation], list[ChainVersion]]:
    rng = random.Random(seed)
    cur: int | None = None
    order: list[int] = []
    vops: list[VOp] = []
    wops: list[Operation] = []
    for i in range(n):
        t = 10 * i
        a, b = t - rng.randrange(5 * overlap + 1), t + rng.randrange(5 * overlap + 1)
        if rng.random() < read_share:
            vops.append(VOp("read", a, b, True, version=cur))
            wops.append(Operation(0, "read", "x", None, cur, a, b, True))
        else:
            cur = i + 1
            order.append(cur)
            vops.append(VOp("write", a, b, True, version=cur))
            wops.append(Operation(0, "write", "x", cur, None, a, b, True))
    chain = [ChainVersion(v, (order[j - 1],) if j else ()) for j, v in enumerate(order)]
    return vops, wops, chain


def run_synthetic(max_steps: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for n, overlap, read_share in SYNTHETIC:
        vops, wops, chain = synthetic(1, n, overlap, read_share)
        t = time.process_time()
        mine = check_versioned(vops, chain)
        t_mine = time.process_time() - t
        t = time.process_time()
        wgl = check_operations(wops, RegisterModel(), max_steps=max_steps)
        t_wgl = time.process_time() - t
        rows.append(
            {
                "operations": n,
                "overlap": overlap,
                "read_share": read_share,
                "versioned_s": round(t_mine, 4),
                "versioned": "linearizable" if mine.ok else "not linearizable",
                "wgl_s": round(t_wgl, 3),
                "wgl": wgl.verdict.value,
                "wgl_steps": wgl.steps,
            }
        )
        print(
            f"{n} ops, ~{overlap} concurrent, {read_share:.0%} reads: version order "
            f"{t_mine:.3f} s CPU ({rows[-1]['versioned']}); WGL {t_wgl:.1f} s CPU, "
            f"{wgl.steps} steps ({wgl.verdict.value})"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, nargs="?", help="a chaos run's output directory")
    ap.add_argument("--synthetic", action="store_true", help="generated histories instead")
    ap.add_argument("--max-steps", type=int, default=2_000_000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.synthetic:
        rows_s = run_synthetic(args.max_steps)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows_s, indent=2))
        return
    if args.out is None:
        ap.error("give a chaos run's output directory, or --synthetic")
    ops = [ClientOp(**json.loads(line)) for line in (args.out / "history.jsonl").open()]
    histories = json.loads((args.out / "versions.json").read_text())
    rows = []
    for key in sorted(histories):
        kops = [op for op in ops if op.key == key]
        t = time.process_time()
        mine = check_registers(kops, {key: histories[key]})[key]
        t_mine = time.process_time() - t
        t = time.process_time()
        wgl = check_history(to_check_operations(kops), max_steps=args.max_steps)
        t_wgl = time.process_time() - t
        row = {
            "key": key,
            "operations": len(kops),
            "versions": len(histories[key]),
            "versioned_s": round(t_mine, 4),
            "versioned": "linearizable" if mine.ok else "not linearizable",
            "wgl_s": round(t_wgl, 3),
            "wgl": wgl.verdict.value,
            "wgl_steps": wgl.states_explored,
            "ratio": round(t_wgl / t_mine, 1) if t_mine else None,
        }
        rows.append(row)
        print(
            f"{key}: {len(kops)} ops, {row['versions']} versions; version order "
            f"{t_mine:.3f} s CPU ({row['versioned']}); WGL {t_wgl:.1f} s CPU, "
            f"{row['wgl_steps']} steps ({row['wgl']}); WGL/version-order {row['ratio']}x"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
