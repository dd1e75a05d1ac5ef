"""Replay a chaos run's check: the version-order checker beside the WGL search.

Reads ``history.jsonl`` (the operations, unknown writes already settled) and
``versions.json`` (each key's recovered version history) from a run's output directory
and checks every key with both, in one process, reporting CPU seconds per key, the
ratio, and the verdicts. The WGL search is bounded by ``--max-steps`` (as in the
harness); undecided is reported as such. Not a test: compare rows of one run.

    python bench/register_check.py /tmp/tide-chaos-91-xxxx
    python bench/register_check.py OUT --max-steps 500000 --json bench/out/register_check.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tidekv.chaos.history import ClientOp, to_check_operations
from tidekv.chaos.verify import check_registers
from tidekv.check.linearizability import check_history


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="a chaos run's output directory")
    ap.add_argument("--max-steps", type=int, default=2_000_000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
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
