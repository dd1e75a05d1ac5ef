"""What 64 shards per node cost next to 1: start-up, memory, file descriptors, disk, idle
CPU and the first writes of a new cluster, per engine, side by side.

Each cell starts a fresh cluster of ``--nodes`` ``python -m tidekv serve`` processes on
loopback with ``--shards S`` given explicitly (on a 3-node cluster every node hosts all S
shards, plus the metadata group: S + 1 engines per node), and measures:

* ``up s``: spawn -> every node answers ``/health`` (the process has opened its groups);
* ``ready s``: spawn -> every shard has a leader in ``/v1/cluster`` and every node's
  ``/ready`` says so (what ``tide dev-cluster`` waits for before printing the endpoints);
* ``cpu s``: CPU seconds the nodes used until ready, summed (less sensitive to the load
  of a shared machine than the wall times);
* ``1st put ms``: the first ``PUT`` through node 1 right after ready, then ``puts p50``
  and ``max`` over 64 more keys (one per shard at 64 shards), each through node 1;
* ``rss MB``, ``fds``, ``thr``: per node (mean), 2 s after the writes;
* ``idle cpu%``: the nodes' CPU over ``--idle`` seconds with no load (% of one core, sum);
* ``disk KB``: the data directories' disk usage (``du``), per node;
* ``restart s``: stop every node (SIGTERM), start them on the same data -> ready again.

The ratio rows divide the 64-shard cell by the 1-shard cell of the same engine. The
machine load (``uptime``) is printed first and last: a loaded machine inflates the wall
times (not the memory, descriptors or disk).

    .venv/bin/python bench/shard_cost.py                           # lsm, btree, hash; 1 vs 64
    .venv/bin/python bench/shard_cost.py --engines lsm --shards 1,16,64 --nodes 1
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
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench import cluster as cl

HOST = "127.0.0.1"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


class Nodes:
    """``n`` tide serve processes of one cluster; data under ``root``."""

    def __init__(self, root: Path, n: int, engine: str, shards: int) -> None:
        self.root, self.n, self.engine, self.shards = root, n, engine, shards
        ports = cl.free_ports(2 * n)
        self.http_ports, self.raft_ports = ports[:n], ports[n:]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.http = httpx.Client(timeout=5.0, trust_env=False)

    def url(self, i: int) -> str:
        return f"http://{HOST}:{self.http_ports[i]}"

    def start(self) -> None:
        n = self.n
        peers = ",".join(
            f"{i + 1}={HOST}:{self.http_ports[i]}/{HOST}:{self.raft_ports[i]}" for i in range(n)
        )
        self.procs = []
        for i in range(n):
            cmd = [
                sys.executable, "-m", "tidekv", "serve",
                "--id", str(i + 1),
                "--data-dir", str(self.root / f"n{i + 1}"),
                "--address", f"{HOST}:{self.http_ports[i]}",
                "--raft-address", f"{HOST}:{self.raft_ports[i]}",
                "--peers", peers,
                "--engine", self.engine,
                "--shards", str(self.shards),
            ]  # fmt: skip
            self.procs.append(cl.spawn(cmd, self.root / f"n{i + 1}.log"))

    def _check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                logs = "\n".join(
                    f"--- {f.name}\n{f.read_text(errors='replace')[-2000:]}"
                    for f in sorted(self.root.glob("*.log"))
                )
                raise RuntimeError(f"a node exited ({p.returncode})\n{logs}")

    def wait_up(self, deadline: float) -> None:
        up: set[int] = set()
        while len(up) < self.n:
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("the nodes did not answer /health in time")
            for i in range(self.n):
                with contextlib.suppress(httpx.HTTPError):
                    if i not in up and self.http.get(self.url(i) + "/health").status_code == 200:
                        up.add(i)
            time.sleep(0.02)

    def ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            view = self.http.get(self.url(0) + "/v1/cluster").json()
            if not all(isinstance(sh.get("leader"), int) for sh in view["shards"]):
                return False
            return all(
                self.http.get(self.url(i) + "/ready").status_code == 200 for i in range(self.n)
            )
        return False

    def wait_ready(self, deadline: float) -> None:
        while not self.ready():
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster was not ready in time")
            time.sleep(0.02)

    def cpu(self) -> float:
        return sum(cl.proc_cpu(p.pid)[0] for p in self.procs)

    def stop(self) -> None:
        cl.stop_procs(self.procs, 15.0)


def per_node(pids: list[int]) -> dict[str, float]:
    rss, fds, thr = [], [], []
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        rss.append(int(status["VmRSS"].split()[0]) / 1024)
        thr.append(int(status["Threads"]))
        fds.append(len(os.listdir(f"/proc/{pid}/fd")))
    return {
        "rss": statistics.fmean(rss),
        "fds": statistics.fmean(fds),
        "thr": statistics.fmean(thr),
    }


def disk_kb(paths: list[Path]) -> float:
    out = subprocess.run(["du", "-sk", *map(str, paths)], capture_output=True, text=True).stdout
    return statistics.fmean(int(line.split()[0]) for line in out.splitlines())


def put_ms(http: httpx.Client, url: str, key: str) -> float:
    t = time.perf_counter()
    r = http.put(f"{url}/v1/kv/{key}", content=b"v", headers={"content-type": "text/plain"})
    dt = (time.perf_counter() - t) * 1000
    if r.status_code >= 300:
        raise RuntimeError(f"PUT {key}: {r.status_code} {r.text[:200]}")
    return dt


def run_cell(root: Path, engine: str, shards: int, nodes: int, idle: float) -> dict[str, Any]:
    c = Nodes(root, nodes, engine, shards)
    res: dict[str, Any] = {"engine": engine, "shards": shards}
    try:
        t0 = time.monotonic()
        c.start()
        c.wait_up(t0 + 180)
        res["up"] = time.monotonic() - t0
        c.wait_ready(t0 + 180)
        res["ready"] = time.monotonic() - t0
        res["cpu"] = c.cpu()
        res["first"] = put_ms(c.http, c.url(0), "first")
        lat = [put_ms(c.http, c.url(0), f"k{i}") for i in range(64)]
        res["p50"], res["max"] = statistics.median(lat), max(lat)
        time.sleep(2.0)
        res.update(per_node([p.pid for p in c.procs]))
        before, t = c.cpu(), time.monotonic()
        time.sleep(idle)
        res["idle"] = 100 * (c.cpu() - before) / (time.monotonic() - t)
        c.stop()
        res["disk"] = disk_kb([root / f"n{i + 1}" for i in range(nodes)])
        t0 = time.monotonic()
        c.start()
        c.wait_ready(t0 + 180)
        res["restart"] = time.monotonic() - t0
    finally:
        c.stop()
        c.http.close()
    return res


COLS = [
    ("up", "up s", "{:.2f}"),
    ("ready", "ready s", "{:.2f}"),
    ("cpu", "cpu s", "{:.2f}"),
    ("first", "1st put ms", "{:.0f}"),
    ("p50", "puts p50 ms", "{:.1f}"),
    ("max", "max ms", "{:.0f}"),
    ("rss", "rss MB", "{:.0f}"),
    ("fds", "fds", "{:.0f}"),
    ("thr", "thr", "{:.0f}"),
    ("idle", "idle cpu%", "{:.1f}"),
    ("disk", "disk KB", "{:.0f}"),
    ("restart", "restart s", "{:.2f}"),
]


def table(rows: list[dict[str, Any]], base: int) -> str:
    head = "| engine | shards | " + " | ".join(h for _, h, _ in COLS) + " |"
    lines = [head, "|" + "---|" * (len(COLS) + 2)]
    for r in rows:
        cells = [fmt.format(r[k]) for k, _, fmt in COLS]
        lines.append(f"| {r['engine']} | {r['shards']} | " + " | ".join(cells) + " |")
        ref = next((b for b in rows if b["engine"] == r["engine"] and b["shards"] == base), None)
        if ref is not None and ref is not r:
            ratios = [f"x{r[k] / ref[k]:.1f}" if ref[k] else "-" for k, _, _ in COLS]
            lines.append(
                f"| {r['engine']} | ratio {r['shards']}/{base} | " + " | ".join(ratios) + " |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default="lsm,btree,hash")
    ap.add_argument("--shards", default="1,64", help="shard counts; the first is the reference")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of the idle CPU window")
    args = ap.parse_args()
    engines = args.engines.split(",")
    counts = [int(s) for s in args.shards.split(",")]
    print(f"load before: {uptime()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tidekv-shard-cost-") as tmp:
        for engine in engines:
            for shards in counts:
                root = Path(tmp) / f"{engine}-{shards}"
                root.mkdir()
                r = run_cell(root, engine, shards, args.nodes, args.idle)
                print(
                    f"  {engine} shards={shards}: "
                    + ", ".join(f"{h} {fmt.format(r[k])}" for k, h, fmt in COLS),
                    flush=True,
                )
                rows.append(r)
    print(f"\n{args.nodes} node(s) on loopback, one fresh cluster per cell\n")
    print(table(rows, counts[0]))
    print(f"\nload after: {uptime()}")


if __name__ == "__main__":
    main()
