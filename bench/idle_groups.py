"""What idle Raft groups cost: CPU of a 3-node cluster of real processes hosting G idle
groups, quiescence off (every replica ticks and heartbeats, as before) and on, side by side.

Each cell starts three ``python -m tidekv serve`` processes on loopback (engine lsm),
each opening G groups
with the same three members (the hidden ``TIDEKV_IDLE_GROUPS_FOR_BENCH`` option opens
groups 1..G-1 next to the data group), lets them elect leaders and settle (with
quiescence: until every replica on every node is quiesced, read from /metrics
``tidekv_groups_quiesced``), then measures for ``--duration`` seconds with no client load:

* ``cpu%``: CPU time of the three processes (all threads, /proc/PID/task/*/schedstat)
  in % of one core, summed over the three;
* ``msgs/s``: Raft messages (and liveness pings) sent by the three
  (``tidekv_transport_messages_sent``);
* ``quiesced``: replicas quiesced at the end of the window, of 3 x G.

Cells run in the order off, on for each G, so noise from elsewhere on the (shared) machine
hits both alike; the ratio column is off / on. The machine load (``uptime``) is printed
first and last: do not take numbers measured on a loaded machine as final.

    .venv/bin/python bench/idle_groups.py                     # G = 1, 16, 64, 256; 10 s cells
    .venv/bin/python bench/idle_groups.py --groups 1,64 --duration 5
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

# bench/http.py would shadow the standard library's http package (httpx needs it)
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]


def _load_cluster_bench() -> ModuleType:
    """bench/cluster.py's process helpers (spawn, stop, /proc CPU, the tidekv cluster)."""
    path = Path(__file__).resolve().parent / "cluster.py"
    spec = importlib.util.spec_from_file_location("tidekv_bench_cluster", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


cl = _load_cluster_bench()

GROUPS_ENV = "TIDEKV_IDLE_GROUPS_FOR_BENCH"
QUIESCE_ENV = "TIDEKV_QUIESCE"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run_cell(
    root: Path, groups: int, quiesce: bool, engine: str, duration: float
) -> dict[str, Any]:
    os.environ[GROUPS_ENV] = str(groups - 1)
    os.environ[QUIESCE_ENV] = "1" if quiesce else "0"
    c = cl.TideCluster(root, engine)
    try:
        c.start()
        c.wait_ready(120.0)
        names = {
            "tidekv_groups_quiesced": "quiesced",
            "tidekv_transport_messages_sent_total": "msgs",
            "tidekv_raft_is_leader": "leaders",
        }
        deadline = time.monotonic() + 60.0 + groups / 4
        settled = False
        while time.monotonic() < deadline:
            m = [c.scrape(i, names) for i in range(3)]
            leaders = sum(x.get("leaders", 0) for x in m)
            quiet = sum(x.get("quiesced", 0) for x in m)
            if leaders >= groups and (not quiesce or quiet >= 3 * groups):
                settled = True
                break
            time.sleep(0.5)
        time.sleep(2.0)
        before = [c.scrape(i, names) for i in range(3)]
        cpu0 = sum(cl.proc_cpu(p)[0] for p in c.pids)
        t0 = time.monotonic()
        time.sleep(duration)
        cpu1 = sum(cl.proc_cpu(p)[0] for p in c.pids)
        t1 = time.monotonic()
        after = [c.scrape(i, names) for i in range(3)]
        msgs = sum(a.get("msgs", 0) - b.get("msgs", 0) for a, b in zip(after, before, strict=True))
        return {
            "groups": groups,
            "quiesce": quiesce,
            "settled": settled,
            "cpu_pct": 100.0 * (cpu1 - cpu0) / (t1 - t0),
            "msgs_per_s": msgs / (t1 - t0),
            "quiesced": int(sum(a.get("quiesced", 0) for a in after)),
        }
    finally:
        c.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups", default="1,16,64,256", help="comma list of G")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds measured per cell")
    ap.add_argument(
        "--engine", default="lsm", help="(the memory engine cannot bootstrap a multi-node cluster)"
    )
    args = ap.parse_args()
    sizes = [int(x) for x in args.groups.split(",") if x.strip()]
    if not sizes or min(sizes) < 1:
        print("error: --groups needs positive integers", file=sys.stderr)
        return 2
    print(f"load before: {uptime()}")
    rows: list[tuple[dict[str, Any], dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="tidekv-idle-") as tmp:
        for g in sizes:
            cells = []
            for q in (False, True):
                root = Path(tmp) / f"g{g}-{'on' if q else 'off'}"
                cells.append(run_cell(root, g, q, args.engine, args.duration))
            rows.append((cells[0], cells[1]))
            off, on = cells
            print(
                f"G={g:4d}  off: {off['cpu_pct']:6.1f}% cpu {off['msgs_per_s']:8.0f} msgs/s  | "
                f"on: {on['cpu_pct']:6.1f}% cpu {on['msgs_per_s']:8.0f} msgs/s "
                f"quiesced {on['quiesced']}/{3 * g}{'' if on['settled'] else ' (not settled)'}",
                flush=True,
            )
    print(f"load after: {uptime()}")
    print()
    print("| G | CPU% off (3 nodes) | CPU% on | ratio off/on | msgs/s off | msgs/s on | quiesced |")
    print("|---|---|---|---|---|---|---|")
    for off, on in rows:
        ratio = off["cpu_pct"] / on["cpu_pct"] if on["cpu_pct"] > 0 else float("inf")
        print(
            f"| {off['groups']} | {off['cpu_pct']:.1f} | {on['cpu_pct']:.1f} | {ratio:.1f}x | "
            f"{off['msgs_per_s']:.0f} | {on['msgs_per_s']:.0f} | "
            f"{on['quiesced']}/{3 * on['groups']} |"
        )
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
