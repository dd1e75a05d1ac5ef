"""A 3-node tidekv cluster vs. a 3-member etcd cluster: put and linearizable-get throughput
and latency, same load generator, same machine, same run, fsync on for both.

Both clusters run as real processes on loopback, each member with its own data
directory under one temporary folder (removed at the end, also on Ctrl-C):

- tidekv: ``python -m tidekv serve`` x 3 (engine lsm, default tick); writes go through
  ``PUT /v1/kv/{key}`` (application/octet-stream), reads through ``GET /v1/kv/{key}``
  (default consistency: linearizable). The WAL fdatasyncs every commit batch (no knob).
- etcd: the Debian ``etcd-server`` binary (3.4, ``apt-get install -y etcd-server``) x 3 with
  ``--initial-cluster``, default fsync; its JSON gRPC gateway: ``POST /v3/kv/put`` and
  ``POST /v3/kv/range`` (base64 key and value; ``serializable`` unset, so linearizable).

Keys are 16 bytes (``bench-0000000042``), one of ``--keys`` (1,000 by default, all
written once before the first cell so every get finds its key); values are 100 random
bytes (base64 inside etcd's JSON, as its gateway requires). The load goes to the leader
(``--target follower`` sends it to a follower, which forwards). Each cell is ``--warmup``
seconds of load that is not counted, then ``--duration`` seconds: ops/s counts the 2xx
responses that arrive inside the window, p50/p99 are over their latencies (send to last
byte of the response). Cells run interleaved (tidekv, etcd, etcd, tidekv, ...) so that a
burst of noise from elsewhere on the machine hits both systems alike; both clusters stay
up for the whole run (the idle one's CPU is recorded as ``cpu.other_system``).

The load generator is one asyncio process (uvloop) with N keep-alive connections, one
request in flight on each, hand-rolled on ``asyncio.Protocol`` (prebuilt request bytes,
no per-request task or future). Its own ceiling is measured first against a trivial
uvloop server (skip with ``--no-ceiling``), and its CPU use is recorded in every cell:
``lg cpu%`` is the share of one core it used, ``srv us/op`` the CPU of the cluster's three
processes per operation, ``other%`` the machine's busy CPU (in cores x 100) that belongs
to none of this run's processes (other people's tests: this is a shared 2-core box).

``l.wait%`` is the time the leader's threads were ready to run but queued for a CPU
(/proc/PID/task/*/schedstat), in % of wall time: high means the box, not the leader's own
work, set the pace. ``fsync/op`` is the leader's WAL fsyncs per op (its /metrics).

``--profile`` runs two ``py-spy record`` (``pip install py-spy``; not a project dependency)
against the tidekv LEADER during an extra cell of puts at the largest client count, after
the table's cells (so the table is not perturbed), ``--profile-duration`` s (default 10):
one of on-CPU samples (top functions by own and by inclusive time, each thread's share,
samples grouped by module: HTTP server, HTTP app, Raft, WAL, transport, apply/engine...),
one with ``--idle`` (where each thread sits in wall time: e.g. how much of it the WAL
thread spends in write + fdatasync). py-spy counts a runnable thread as on-CPU, so shares
are scaled by the leader's CPU measured in /proc; C time is charged to its Python caller.

    .venv/bin/python bench/cluster.py                           # 5 s cells, 1/16/64 clients
    .venv/bin/python bench/cluster.py --rounds 3 --json bench/out/cluster.json --profile
    .venv/bin/python bench/cluster.py --only tidekv --clients 64 --duration 10
    .venv/bin/python bench/cluster.py --only etcd --etcd /usr/bin/etcd
    .venv/bin/python bench/cluster.py --only tidekv --shards 8   # a sharded tidekv
    .venv/bin/python bench/cluster.py --only tidekv --ops put --clients 64 --target follower \
        --profile --profile-node target        # what a write through a follower costs it

Not a test: the machine is shared and noisy. Compare the two systems within one run only;
``--rounds N`` repeats every cell N times and reports the median of each figure.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's folder is sys.path[0], where bench/http.py would shadow the
# standard library's ``http`` package (which httpx imports): drop it.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import argparse
import asyncio
import base64
import contextlib
import ctypes
import datetime
import gc
import json
import math
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httpx

KEY_BYTES = 16
VALUE_BYTES = 100
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
OUT_DIR = Path(__file__).resolve().parent / "out"
PYSPY_RATE = 200
DRAIN_S = 10.0
"""After a window closes, how long in-flight requests may take before they count as lost."""


# -- processes ------------------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports that were free a moment ago."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the harness dies without cleaning up (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PDEATHSIG


def spawn(cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C reaches the harness only; it stops them
            preexec_fn=_die_with_parent,
        )


def stop_procs(procs: list[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM them all at once, SIGKILL whatever is still there after ``grace`` s."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def proc_cpu(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of a process so far, summed
    over its threads (/proc/PID/task/*/schedstat); (0, 0) once it is gone."""
    cpu = wait = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0, 0.0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                on_cpu, queued, _ = f.read().split()
        except (OSError, ValueError):
            continue  # a thread that just ended
        cpu += int(on_cpu)
        wait += int(queued)
    return cpu / 1e9, wait / 1e9


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine (all cores) since boot."""
    with open("/proc/stat", "rb") as f:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / CLK_TCK


def fs_type(path: str) -> str:
    """The file system type of the mount that holds ``path`` (fsync costs depend on it)."""
    best, kind = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            mnt = parts[1]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                best, kind = mnt, f"{parts[2]} on {parts[0]}"
    return kind


# -- the clusters ---------------------------------------------------------------------------


class Cluster:
    """Three members of one system on loopback; member ``i`` (0-based) serves ``ports[i]``."""

    name = ""
    stop_grace = 15.0

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.http = httpx.Client(timeout=5.0, trust_env=False)
        self.leader = -1

    def url(self, i: int) -> str:
        return f"http://{HOST}:{self.ports[i]}"

    def start(self) -> None:
        raise NotImplementedError

    def find_leader(self) -> int | None:
        raise NotImplementedError

    def put_request(self, key: str, value: bytes) -> bytes:
        raise NotImplementedError

    def get_request(self, key: str) -> bytes:
        raise NotImplementedError

    def read_back(self, i: int, key: str) -> bytes | None:
        """The value of ``key`` read through member ``i`` (control path, for a sanity check)."""
        raise NotImplementedError

    def counters(self, i: int) -> dict[str, float]:
        """Monotonic counters of member ``i``: fsyncs, proposals, read rounds, when known."""
        raise NotImplementedError

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def wait_ready(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(
                        f"a {self.name} member exited ({p.returncode})\n{self.logs()}"
                    )
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError, TypeError):
                leader = self.find_leader()
                if leader is not None:
                    self.leader = leader
                    return leader
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: no leader within {timeout:.0f} s\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for log in sorted(self.root.glob("*.log")):
            parts.append(f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def scrape(self, i: int, names: dict[str, str]) -> dict[str, float]:
        """Sum the Prometheus samples of the metrics in ``names`` (metric -> our name)."""
        out = dict.fromkeys(names.values(), 0.0)
        try:
            text = self.http.get(self.url(i) + "/metrics").text
        except httpx.HTTPError:
            return {}
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            metric = line.split("{", 1)[0].split(" ", 1)[0]
            if metric in names:
                out[names[metric]] += float(line.rsplit(" ", 1)[1])
        return out

    def stop(self) -> None:
        stop_procs(self.procs, self.stop_grace)
        self.http.close()


class TideCluster(Cluster):
    name = "tidekv"

    def __init__(
        self, root: Path, engine: str, shards: int = 1, nodes: int = 3, extra: tuple[str, ...] = ()
    ) -> None:
        super().__init__(root)
        self.engine = engine
        self.shards = shards
        self.nodes = nodes
        self.extra = extra  # more ``tide serve`` flags

    def start(self) -> None:
        n = self.nodes
        ports = free_ports(2 * n)
        self.ports, raft = ports[:n], ports[n:]
        peers = ",".join(f"{i + 1}={HOST}:{self.ports[i]}/{HOST}:{raft[i]}" for i in range(n))
        for i in range(n):
            cmd = [
                sys.executable, "-m", "tidekv", "serve",
                "--id", str(i + 1),
                "--data-dir", str(self.root / f"n{i + 1}"),
                "--address", f"{HOST}:{self.ports[i]}",
                "--raft-address", f"{HOST}:{raft[i]}",
                "--peers", peers,
                "--engine", self.engine,
                "--shards", str(self.shards),
                *self.extra,
            ]  # fmt: skip
            self.procs.append(spawn(cmd, self.root / f"n{i + 1}.log"))

    def find_leader(self) -> int | None:
        for i in range(len(self.ports)):
            info = self.http.get(self.url(i) + "/v1/cluster").json()
            lead = info["shards"][0]["leader"]
            if (
                lead is not None
                and info.get("node_id") == lead
                and self.http.get(self.url(lead - 1) + "/ready").status_code == 200
            ):
                return int(lead) - 1
        return None

    def put_request(self, key: str, value: bytes) -> bytes:
        return tide_put(key, value)

    def get_request(self, key: str) -> bytes:
        return f"GET /v1/kv/{key} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()

    def read_back(self, i: int, key: str) -> bytes | None:
        r = self.http.get(self.url(i) + f"/v1/kv/{key}")
        return r.content if r.status_code == 200 else None

    def counters(self, i: int) -> dict[str, float]:
        return self.scrape(
            i,
            {
                "tidekv_wal_fsyncs_total": "fsyncs",
                "tidekv_proposals_total": "proposals",
                "tidekv_read_index_rounds_total": "read_rounds",
            },
        )


class EtcdCluster(Cluster):
    name = "etcd"
    stop_grace = 5.0  # a leader that is told to stop tries to hand over to stopping peers

    def __init__(self, root: Path, binary: str) -> None:
        super().__init__(root)
        self.binary = binary

    def start(self) -> None:
        ports = free_ports(6)
        self.ports, peer = ports[:3], ports[3:]
        initial = ",".join(f"m{i + 1}=http://{HOST}:{peer[i]}" for i in range(3))
        for i in range(3):
            client = f"http://{HOST}:{self.ports[i]}"
            cmd = [
                self.binary,
                "--name", f"m{i + 1}",
                "--data-dir", str(self.root / f"m{i + 1}"),
                "--listen-client-urls", client,
                "--advertise-client-urls", client,
                "--listen-peer-urls", f"http://{HOST}:{peer[i]}",
                "--initial-advertise-peer-urls", f"http://{HOST}:{peer[i]}",
                "--initial-cluster", initial,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", "tidekv-bench",
                "--logger", "zap",
                "--log-level", "warn",
            ]  # fmt: skip
            self.procs.append(spawn(cmd, self.root / f"m{i + 1}.log"))

    def find_leader(self) -> int | None:
        for i in range(3):
            if self.http.get(self.url(i) + "/health").json().get("health") != "true":
                return None
        for i in range(3):
            st = self.http.post(self.url(i) + "/v3/maintenance/status", json={}).json()
            if st.get("leader") and st["leader"] == st["header"]["member_id"]:
                return i
        return None

    @staticmethod
    def _post(path: str, body: dict[str, str]) -> bytes:
        data = json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        return head.encode() + data

    def put_request(self, key: str, value: bytes) -> bytes:
        return self._post("/v3/kv/put", {"key": _b64(key.encode()), "value": _b64(value)})

    def get_request(self, key: str) -> bytes:
        return self._post("/v3/kv/range", {"key": _b64(key.encode())})

    def read_back(self, i: int, key: str) -> bytes | None:
        r = self.http.post(self.url(i) + "/v3/kv/range", json={"key": _b64(key.encode())})
        kvs = r.json().get("kvs") if r.status_code == 200 else None
        return base64.b64decode(kvs[0]["value"]) if kvs else None

    def counters(self, i: int) -> dict[str, float]:
        return self.scrape(
            i,
            {
                "etcd_disk_wal_fsync_duration_seconds_count": "fsyncs",
                "etcd_server_proposals_committed_total": "proposals",
            },
        )


def tide_put(key: str, value: bytes) -> bytes:
    head = (
        f"PUT /v1/kv/{key} HTTP/1.1\r\nHost: {HOST}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(value)}\r\n\r\n"
    )
    return head.encode() + value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- the load generator ---------------------------------------------------------------------


def content_length(head: bytes) -> int | None:
    """The Content-Length of a lower-cased header block (starting at its first line)."""
    i = head.find(b"\r\ncontent-length:")
    if i < 0:
        return None
    j = head.find(b"\r\n", i + 17)
    return int(head[i + 17 : j if j >= 0 else len(head)])


def chunked_end(buf: bytes, pos: int) -> int:
    """Where a chunked body starting at ``pos`` ends, or -1 while it is incomplete."""
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return -1
        size = int(buf[pos:eol].split(b";", 1)[0], 16)
        if size == 0:
            end = buf.find(b"\r\n\r\n", eol)
            return -1 if end < 0 else end + 4
        pos = eol + 2 + size + 2
        if pos > len(buf):
            return -1


def response_end(buf: bytes) -> tuple[int, int]:
    """(end offset, status) of the first complete HTTP/1.1 response in ``buf``, or (-1, 0)."""
    h = buf.find(b"\r\n\r\n")
    if h < 0:
        return -1, 0
    status = int(buf[9:12])
    head = buf[:h].lower()
    n = content_length(head)
    if n is not None:
        end = h + 4 + n
        return (end, status) if len(buf) >= end else (-1, 0)
    if b"\r\ntransfer-encoding: chunked" in head:
        end = chunked_end(buf, h + 4)
        return (end, status) if end >= 0 else (-1, 0)
    if status in (204, 304) or status < 200:
        return h + 4, status
    raise RuntimeError(f"a response with no length: {buf[:h]!r}")


class Load:
    """The shared state of one cell: what to send, the window, what came back."""

    def __init__(self, requests: list[bytes], once: bool) -> None:
        self.requests = requests
        self.once = once  # send every request exactly once (preload), else loop until t1
        self.next = 0
        self.t0 = 0  # perf_counter_ns: the measured window
        self.t1 = 0
        self.lat: list[int] = []  # ns, successes inside the window
        self.ok = 0
        self.errors = 0
        self.statuses: Counter[int] = Counter()
        self.total = 0  # every response, window or not
        self.inflight = 0
        self.conns_lost = 0
        self.done: asyncio.Future[None] | None = None

    def finish_if_idle(self) -> None:
        if self.inflight == 0 and self.done is not None and not self.done.done():
            self.done.set_result(None)


class Conn(asyncio.Protocol):
    """One keep-alive connection with one request in flight; the next is sent from
    ``data_received`` as soon as a response is complete."""

    STRIDE = 7919  # walk the keys in a scattered order, each connection from its own start

    def __init__(self, load: Load, start: int, requests: list[bytes] | None = None) -> None:
        self.load = load
        self.requests = requests if requests is not None else load.requests  # with routes
        self.i = start
        self.buf = b""
        self.sent = 0
        self.waiting = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self) -> None:
        load = self.load
        if load.once:
            if load.next >= len(load.requests):
                return
            req = load.requests[load.next]
            load.next += 1
        else:
            req = self.requests[self.i % len(self.requests)]
            self.i += self.STRIDE
        load.inflight += 1
        self.waiting = True
        self.sent = time.perf_counter_ns()
        assert self.transport is not None
        self.transport.write(req)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while buf:
            end, status = response_end(buf)
            if end < 0:
                break
            buf = buf[end:]
            self.answered(status)
        self.buf = buf

    def answered(self, status: int) -> None:
        now = time.perf_counter_ns()
        load = self.load
        self.waiting = False
        load.inflight -= 1
        load.total += 1
        if load.t0 <= now <= load.t1:
            load.statuses[status] += 1
            if 200 <= status < 300:
                load.ok += 1
                load.lat.append(now - self.sent)
            else:
                load.errors += 1
        if now < load.t1:
            self.send()
        load.finish_if_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        load = self.load
        if self.waiting:
            self.waiting = False
            load.inflight -= 1
            load.errors += 1
            load.conns_lost += 1
        load.finish_if_idle()


def percentile(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not sorted_ns:
        return math.nan
    return sorted_ns[min(len(sorted_ns) - 1, max(0, math.ceil(q * len(sorted_ns)) - 1))] / 1e6


class Sampler:
    """CPU of the given processes, of this process (``loadgen``) and of the machine between
    two marks; and how long the processes' threads waited in the run queue for a CPU."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {**pids, "loadgen": os.getpid()}
        self.marks: list[tuple[float, float, dict[str, tuple[float, float]]]] = []

    def mark(self) -> None:
        procs = {name: proc_cpu(pid) for name, pid in self.pids.items()}
        self.marks.append((time.perf_counter(), machine_cpu(), procs))

    def _delta(self, field: int) -> dict[str, float]:
        (w0, _, p0), (w1, _, p1) = self.marks[:2]
        wall = max(w1 - w0, 1e-9)
        return {name: 100 * (p1[name][field] - p0[name][field]) / wall for name in self.pids}

    def shares(self) -> dict[str, float]:
        """CPU between the first two marks, in % of one core: per process, ``loadgen``,
        ``machine`` (all cores) and ``other`` (machine less everything listed here)."""
        if len(self.marks) < 2:
            return {}
        (w0, m0, _), (w1, m1, _) = self.marks[:2]
        out = self._delta(0)
        out["machine"] = 100 * (m1 - m0) / max(w1 - w0, 1e-9)
        out["other"] = max(0.0, out["machine"] - sum(out[n] for n in self.pids))
        return out

    def waits(self) -> dict[str, float]:
        """Run-queue wait between the first two marks, in % of wall time (summed over a
        process's threads): time it was ready to run but every core was taken."""
        return self._delta(1) if len(self.marks) >= 2 else {}


async def drive(
    port: int,
    requests: list[bytes],
    clients: int,
    warmup: float,
    duration: float,
    *,
    once: bool = False,
    on_window: Callable[[], None] | None = None,
    sampler: Sampler | None = None,
    routes: list[tuple[int, list[bytes]]] | None = None,
) -> Load:
    """Run ``clients`` connections against ``HOST:port``; see :class:`Load` for the result.
    ``on_window`` is called when the measured window opens. With ``routes`` (port, its
    requests), ``port`` and ``requests`` are ignored and the connections are split over the
    routes in proportion to their requests, each route getting at least one (a client that
    sends every key to the node that leads its shard)."""
    loop = asyncio.get_running_loop()
    load = Load(requests, once)
    load.done = loop.create_future()
    rng = random.Random(clients)
    plan = [(port, requests)] * clients
    if routes:
        total = sum(len(r) for _, r in routes)
        plan = [(p, r) for p, r in routes for _ in range(max(1, round(clients * len(r) / total)))]
    conns: list[Conn] = []
    for p, reqs in plan:
        _, proto = await loop.create_connection(
            lambda reqs=reqs: Conn(load, rng.randrange(len(reqs)), reqs), HOST, p
        )
        conns.append(proto)
    now = time.perf_counter_ns()
    if once:
        load.t0, load.t1 = now, 1 << 62
        timeout = 600.0
    else:
        load.t0 = now + int(warmup * 1e9)
        load.t1 = load.t0 + int(duration * 1e9)
        timeout = warmup + duration + DRAIN_S

        def window_opens() -> None:
            if sampler is not None:
                sampler.mark()
            if on_window is not None:
                on_window()

        loop.call_later(warmup, window_opens)
        if sampler is not None:
            loop.call_later(warmup + duration, sampler.mark)
    for c in conns:
        c.send()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(load.done), timeout)
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    await asyncio.sleep(0)
    return load


def run_loop(coro: Any) -> Any:
    """Run a coroutine on a fresh uvloop loop (plain asyncio if uvloop is missing), GC off."""
    gc.collect()
    gc.disable()
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(coro)
        return uvloop.run(coro)
    finally:
        gc.enable()


# -- the trivial server (the load generator's ceiling) --------------------------------------


class TrivialServer(asyncio.Protocol):
    """Answers every request with a fixed 155-byte JSON-sized body, nothing else."""

    RESPONSE = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 155\r\n\r\n"
        + b"x" * 155
    )

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        while True:
            h = buf.find(b"\r\n\r\n")
            if h < 0:
                break
            end = h + 4 + (content_length(buf[:h].lower()) or 0)
            if len(buf) < end:
                break
            buf = buf[end:]
            assert self.transport is not None
            self.transport.write(self.RESPONSE)
        self.buf = buf


def serve_trivial(port: int) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(TrivialServer, HOST, port)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        run_loop(main())


def measure_ceiling(clients: int, warmup: float, duration: float) -> dict[str, Any]:
    port = free_ports(1)[0]
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-trivial", str(port)],
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the trivial server did not start") from None
                time.sleep(0.05)
        reqs = [tide_put(k, v) for k, v in DATA]
        sampler = Sampler({"server": proc.pid})
        load = run_loop(drive(port, reqs, clients, warmup, duration, sampler=sampler))
    finally:
        stop_procs([proc], 5)
    cpu = sampler.shares()
    ops = load.ok / duration
    us_per_req = 1e4 * cpu.get("loadgen", math.nan) / ops if ops else math.nan
    return {
        "clients": clients,
        "ops_s": ops,
        "loadgen_cpu_pct": cpu.get("loadgen"),
        "server_cpu_pct": cpu.get("server"),
        "other_cpu_pct": cpu.get("other"),
        "loadgen_us_per_req": us_per_req,
        "loadgen_ceiling_ops_s": 1e6 / us_per_req if us_per_req else math.nan,
    }


# -- the benchmark --------------------------------------------------------------------------


def make_data(n: int) -> list[tuple[str, bytes]]:
    rng = random.Random(16)
    keys = [f"bench-{i:010d}" for i in range(n)]
    assert all(len(k) == KEY_BYTES for k in keys)
    return [(k, rng.randbytes(VALUE_BYTES)) for k in keys]


DATA: list[tuple[str, bytes]] = []


def preload(cluster: Cluster, target: int) -> None:
    reqs = [cluster.put_request(k, v) for k, v in DATA]
    load = run_loop(drive(cluster.ports[target], reqs, 32, 0, 0, once=True))
    if load.ok != len(reqs):
        raise RuntimeError(f"{cluster.name}: preload wrote {load.ok}/{len(reqs)} ({load.statuses})")
    for i in range(3):  # every member serves what was written, through the control path
        key, value = DATA[i * 7]
        got = cluster.read_back(i, key)
        if got != value:
            raise RuntimeError(f"{cluster.name}: member {i + 1} read {got!r} for {key}")


def run_cell(
    cluster: Cluster,
    others: list[Cluster],
    op: str,
    clients: int,
    args: argparse.Namespace,
    on_window: Callable[[], None] | None = None,
) -> dict[str, Any]:
    cluster.wait_ready(30.0)  # the leader may have moved since the last cell
    target = cluster.leader if args.target == "leader" else (cluster.leader + 1) % 3
    if op == "put":
        reqs = [cluster.put_request(k, v) for k, v in DATA]
    else:
        reqs = [cluster.get_request(k) for k, _ in DATA]
    pids = {f"m{i + 1}": pid for i, pid in enumerate(cluster.pids)}
    for o in others:
        pids.update({f"{o.name}:{i + 1}": pid for i, pid in enumerate(o.pids)})
    sampler = Sampler(pids)
    before = cluster.counters(cluster.leader)
    load: Load = run_loop(
        drive(
            cluster.ports[target],
            reqs,
            clients,
            args.warmup,
            args.duration,
            sampler=sampler,
            on_window=on_window,
        )
    )
    after = cluster.counters(cluster.leader)
    leader_before = cluster.leader
    with contextlib.suppress(httpx.HTTPError, KeyError, ValueError, TypeError):
        cluster.leader = cluster.find_leader() or cluster.leader
    lat = sorted(load.lat)
    cpu = sampler.shares()
    waits = sampler.waits()
    ops = load.ok / args.duration
    members = [cpu.get(f"m{i + 1}", 0.0) for i in range(3)]
    cell: dict[str, Any] = {
        "system": cluster.name,
        "op": op,
        "clients": clients,
        "target": f"{args.target} (member {target + 1})",
        "leader_changed": cluster.leader != leader_before,
        "ops_s": ops,
        "p50_ms": percentile(lat, 0.50),
        "p99_ms": percentile(lat, 0.99),
        "p999_ms": percentile(lat, 0.999),
        "max_ms": lat[-1] / 1e6 if lat else math.nan,
        "mean_ms": statistics.fmean(lat) / 1e6 if lat else math.nan,
        "ok": load.ok,
        "errors": load.errors,
        "connections_lost": load.conns_lost,
        "stuck_after_window": load.inflight,
        "statuses": dict(load.statuses),
        "cpu_pct": {
            "leader": members[cluster.leader],
            "members": members,
            "loadgen": cpu.get("loadgen"),
            "other_system": sum(v for k, v in cpu.items() if ":" in k),
            "machine": cpu.get("machine"),
            "other": cpu.get("other"),
        },
        "runqueue_wait_pct": {
            "leader": waits.get(f"m{cluster.leader + 1}", math.nan),
            "members": [waits.get(f"m{i + 1}", math.nan) for i in range(3)],
            "loadgen": waits.get("loadgen", math.nan),
        },
        "server_cpu_us_per_op": 1e4 * sum(members) / ops if ops else math.nan,
        "loadgen_cpu_us_per_op": 1e4 * cpu.get("loadgen", 0.0) / ops if ops else math.nan,
    }
    if before and after and load.total:
        # counters of the leader over the whole cell (warm-up included) per response
        cell["leader_per_op"] = {
            k: (after.get(k, 0.0) - before.get(k, 0.0)) / load.total for k in after
        }
    return cell


# -- the profile ----------------------------------------------------------------------------

CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("WAL (buffer, encode, fdatasync call)", ("tidekv/node/wal.py", "tidekv/node/logstore.py")),
    ("Raft core", ("tidekv/raft/",)),
    ("peer transport (encode/decode, sockets)", ("tidekv/node/transport.py",)),
    (
        "apply: state machine, versioning, engine",
        ("tidekv/statemachine.py", "tidekv/store.py", "tidekv/storage/", "tidekv/versioning/"),
    ),
    (
        "node loop / replica glue",
        (
            "tidekv/node/server.py",
            "tidekv/node/replica.py",
            "tidekv/node/command.py",
            "tidekv/node/snapshot.py",
        ),
    ),
    ("forwarding", ("tidekv/forward.py",)),
    ("node service (request -> proposal/read)", ("tidekv/node/service.py", "tidekv/service.py")),
    (
        "HTTP app (tidekv/http.py, asgi, wire)",
        ("tidekv/http.py", "tidekv/asgi.py", "tidekv/wire.py", "tidekv/errors.py"),
    ),
    ("HTTP server (uvicorn + httptools)", ("uvicorn/", "httptools/")),
    (
        "HTTP client to the leader (httpx, httpcore, anyio)",
        ("httpx/", "httpcore/", "anyio/", "h11/"),
    ),
    (
        "import machinery (imports on the request path)",
        ("<frozen importlib", "importlib/", "_distutils_hack/"),
    ),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("thread pool plumbing", ("concurrent/futures/", "threading.py")),
    ("asyncio / uvloop (C: epoll, socket I/O, callbacks)", ("asyncio/",)),
]
_FRAME_FILE = re.compile(r"\((.*):\d+\)$")


def _frame_file(frame: str) -> str:
    m = _FRAME_FILE.search(frame)
    return m.group(1) if m else ""


def categorize(frames: list[str]) -> str:
    """The category of a stack: that of the frame nearest the leaf that has one."""
    for frame in reversed(frames):
        path = _frame_file(frame)
        for name, needles in CATEGORIES:
            if any(n in path for n in needles):
                return name
    return "other"


def start_pyspy(pid: int, seconds: float, out: Path, idle: bool) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(exe):
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    cmd = [
        exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
        "--rate", str(PYSPY_RATE), "--format", "raw", "--output", str(out),
        "--threads", "--function", "--nonblocking",
    ] + (["--idle"] if idle else [])  # fmt: skip
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent
    )


def read_pyspy(raw: Path) -> list[tuple[str, list[str], int]]:
    """(thread name, frames root first, samples) per distinct stack of py-spy raw output."""
    stacks: list[tuple[str, list[str], int]] = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        if frames[0].startswith("thread "):
            thread, frames = frames[0].split(": ", 1)[-1], frames[1:]
        else:
            thread = "?"
        stacks.append((re.sub(r"_\d+$", "_N", thread), frames, int(count)))
    return stacks


def summarize_wall(raw: Path, seconds: float, top: int = 6) -> list[dict[str, Any]]:
    """From a py-spy ``--idle`` recording: per thread, the leaf frames it sat in, in % of
    wall time (idle included: waiting in epoll, in fdatasync, for work)."""
    per: dict[str, Counter[str]] = defaultdict(Counter)
    for thread, frames, count in read_pyspy(raw):
        per[thread][frames[-1] if frames else "?"] += count
    expected = PYSPY_RATE * seconds
    return [
        {
            "thread": thread,
            "pct_wall": 100 * sum(leaves.values()) / expected,
            "leaves": [
                {"what": k, "pct_wall": 100 * v / expected} for k, v in leaves.most_common(top)
            ],
        }
        for thread, leaves in sorted(per.items(), key=lambda kv: -sum(kv[1].values()))
    ]


def summarize_profile(raw: Path, cpu_pct: float, top: int = 25) -> dict[str, Any]:
    """Own time, inclusive time, threads and categories from py-spy raw output.

    py-spy records a thread when the OS says it is running (no ``--idle``), which includes
    waiting in the run queue: on a busy machine the sample count overstates CPU use. So
    each figure is a share of the recorded samples (``pct``), and ``core_pct`` scales that
    share by the process's CPU use measured in /proc over the same window (``cpu_pct``, in
    % of one core). py-spy without ``--native`` charges time in C code (socket writes,
    fdatasync, RocksDB) to the Python frame that called it."""
    stacks = read_pyspy(raw)
    total = sum(c for _, _, c in stacks) or 1
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    cats: Counter[str] = Counter()
    for thread, frames, count in stacks:
        threads[thread] += count
        if frames:
            own[frames[-1]] += count
        for f in set(frames):
            if any(p in _frame_file(f) for p in ("tidekv/", "uvicorn/")) and not any(
                p in _frame_file(f) for p in ("tidekv/cli", "tidekv/__main__")
            ):
                incl[f] += count
        cats[categorize(frames)] += count

    def rows(counter: Counter[str], n: int) -> list[dict[str, Any]]:
        return [
            {
                "what": k,
                "samples": v,
                "pct": 100 * v / total,
                "core_pct": cpu_pct * v / total,
            }
            for k, v in counter.most_common(n)
        ]

    return {
        "samples": total,
        "process_cpu_pct": cpu_pct,
        "threads": rows(threads, 10),
        "categories": rows(cats, len(CATEGORIES) + 1),
        "own": rows(own, top),
        "inclusive_app": rows(incl, top),
    }


def print_profile(prof: dict[str, Any], cell: dict[str, Any], seconds: float) -> None:
    i = prof["member"] - 1
    role = "leader" if prof["is_leader"] else "follower"
    print()
    print(
        f"py-spy on tidekv member {i + 1} ({role}; load sent to the {cell['target']}), "
        f"{cell['op']} at {cell['clients']} clients: {cell['ops_s']:,.0f} ops/s, p99 "
        f"{cell['p99_ms']:.1f} ms while profiled; the process used {prof['process_cpu_pct']:.0f}%"
        f" of a core (/proc), its threads queued for a CPU "
        f"{cell['runqueue_wait_pct']['members'][i]:.0f}% of wall time; {prof['samples']:,} "
        f"samples in {seconds:g} s at {PYSPY_RATE} Hz"
    )
    print(
        "  pct: share of the samples; core%: that share of the process's measured CPU "
        "(% of one core). C time is charged to its Python caller."
    )
    sections = (
        ("threads", "threads", 10),
        ("where the time goes (each stack goes to its leaf-most known module)", "categories", 20),
        ("top functions by own time (leaf frame)", "own", 25),
        ("top tidekv/uvicorn functions by inclusive time", "inclusive_app", 25),
    )
    for title, key, n in sections:
        print(f"\n  {title}:")
        print(f"  {'pct':>6} {'core%':>6}  what")
        for r in prof[key][:n]:
            print(f"  {r['pct']:>6.1f} {r['core_pct']:>6.1f}  {r['what']}")
    if prof.get("wall"):
        print(
            "\n  wall-clock view (py-spy --idle): where each thread sits, in % of wall time "
            "(waiting included)"
        )
        for t in prof["wall"]:
            print(f"  {t['pct_wall']:>6.1f}  {t['thread']}")
            for leaf in t["leaves"]:
                print(f"  {leaf['pct_wall']:>12.1f}  {leaf['what']}")


# -- the report -----------------------------------------------------------------------------


def summarize(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median over rounds of each figure, per (system, op, clients)."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for c in cells:
        groups[(c["system"], c["op"], c["clients"])].append(c)
    out = []
    for (system, op, clients), cs in groups.items():

        def med(get: Callable[[dict[str, Any]], float], cs: list[dict[str, Any]] = cs) -> float:
            vals = [v for v in (get(c) for c in cs) if v is not None and not math.isnan(v)]
            return statistics.median(vals) if vals else math.nan

        out.append(
            {
                "system": system,
                "op": op,
                "clients": clients,
                "rounds": len(cs),
                "ops_s": med(lambda c: c["ops_s"]),
                "p50_ms": med(lambda c: c["p50_ms"]),
                "p99_ms": med(lambda c: c["p99_ms"]),
                "errors": sum(c["errors"] for c in cs),
                "server_cpu_us_per_op": med(lambda c: c["server_cpu_us_per_op"]),
                "leader_cpu_pct": med(lambda c: c["cpu_pct"]["leader"]),
                "leader_wait_pct": med(lambda c: c["runqueue_wait_pct"]["leader"]),
                "loadgen_cpu_pct": med(lambda c: c["cpu_pct"]["loadgen"]),
                "other_cpu_pct": med(lambda c: c["cpu_pct"]["other"]),
                "fsyncs_per_op": med(lambda c: c.get("leader_per_op", {}).get("fsyncs", math.nan)),
                "ops_s_all_rounds": [round(c["ops_s"]) for c in cs],
            }
        )
    return out


def ratios(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(s["system"], s["op"], s["clients"]): s for s in summary}
    out = []
    for (system, op, clients), t in by.items():
        e = by.get(("etcd", op, clients))
        if system != "tidekv" or e is None:
            continue
        out.append(
            {
                "op": op,
                "clients": clients,
                "throughput_ratio": t["ops_s"] / e["ops_s"] if e["ops_s"] else math.nan,
                "p99_ratio": t["p99_ms"] / e["p99_ms"] if e["p99_ms"] else math.nan,
            }
        )
    return out


def print_table(summary: list[dict[str, Any]], rat: list[dict[str, Any]]) -> None:
    print()
    print(
        f"{'system':<7} {'op':<4} {'clients':>7} {'ops/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6} {'srv us/op':>9} {'leader%':>7} {'l.wait%':>7} {'lg cpu%':>7} "
        f"{'other%':>6} "
        f"{'fsync/op':>8}  ops/s by round"
    )
    order = {"put": 0, "get": 1}
    for s in sorted(summary, key=lambda s: (order.get(s["op"], 9), s["clients"], s["system"])):
        print(
            f"{s['system']:<7} {s['op']:<4} {s['clients']:>7} {s['ops_s']:>8,.0f} "
            f"{s['p50_ms']:>7.2f} {s['p99_ms']:>7.2f} {s['errors']:>6} "
            f"{s['server_cpu_us_per_op']:>9,.0f} {s['leader_cpu_pct']:>7.0f} "
            f"{s['leader_wait_pct']:>7.0f} "
            f"{s['loadgen_cpu_pct']:>7.0f} {s['other_cpu_pct']:>6.0f} "
            f"{s['fsyncs_per_op']:>8.3f}  {s['ops_s_all_rounds']}"
        )
    if not rat:
        return
    print(f"\n{'op':<4} {'clients':>7} {'tidekv/etcd ops/s':>18} {'tidekv/etcd p99':>16}")
    for r in sorted(rat, key=lambda r: (order.get(r["op"], 9), r["clients"])):
        print(
            f"{r['op']:<4} {r['clients']:>7} {r['throughput_ratio']:>18.2f} {r['p99_ratio']:>16.2f}"
        )
    puts = [r for r in rat if r["op"] == "put"]
    if puts:
        top = max(puts, key=lambda r: r["clients"])
        tp, p99 = top["throughput_ratio"], top["p99_ratio"]
        print(
            f"\ntargets at {top['clients']} clients, put: throughput tidekv/etcd {tp:.2f} "
            f"(>= 1.00: {'MET' if tp >= 1 else 'MISSED'}), p99 tidekv/etcd {p99:.2f} "
            f"(<= 2.00: {'MET' if p99 <= 2 else 'MISSED'})"
        )


def environment(data_root: str, etcd_bin: str | None) -> dict[str, Any]:
    def run(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    repo = Path(__file__).resolve().parent.parent
    m0, w0 = machine_cpu(), time.perf_counter()
    time.sleep(1.0)
    busy = 100 * (machine_cpu() - m0) / (time.perf_counter() - w0)
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "machine_busy_pct_before": busy,
        "data_fs": fs_type(data_root),
        "python": sys.version.split()[0],
        "tidekv_commit": run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"]),
        "tidekv_dirty": bool(run(["git", "-C", str(repo), "status", "--porcelain", "src"])),
        "etcd": run([etcd_bin, "--version"]).splitlines()[0] if etcd_bin else None,
    }


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--only", choices=["tidekv", "etcd"], help="run one system only")
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per cell")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per cell")
    ap.add_argument("--clients", default="1,16,64", help="comma-separated connection counts")
    ap.add_argument("--ops", default="put,get", help="put, get or both")
    ap.add_argument("--rounds", type=int, default=1, help="repeat every cell; report medians")
    ap.add_argument("--keys", type=int, default=1000, help="size of the key space")
    ap.add_argument("--target", choices=["leader", "follower"], default="leader")
    ap.add_argument("--json", help="write every cell, the medians and the profile here")
    ap.add_argument(
        "--profile",
        nargs="?",
        const="put",
        choices=["put", "get"],
        help="py-spy the tidekv leader during an extra cell of this op (default put) at the "
        "largest client count",
    )
    ap.add_argument("--profile-duration", type=float, default=10.0, help="profiled seconds")
    ap.add_argument(
        "--profile-node",
        choices=["leader", "target"],
        default="leader",
        help="profile the leader, or the member the load goes to (with --target follower)",
    )
    ap.add_argument("--profile-out", help="py-spy raw output (default bench/out/...)")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the load generator ceiling")
    ap.add_argument("--etcd", default="etcd", help="the etcd binary")
    ap.add_argument("--engine", default="lsm", help="tidekv engine")
    ap.add_argument(
        "--shards",
        type=int,
        default=1,
        help="tidekv shards (the load goes to shard 0's leader; the other shards' "
        "writes are forwarded to their leaders through Raft)",
    )
    ap.add_argument("--data-root", default=None, help="where the temporary data dirs go")
    ap.add_argument("--serve-trivial", type=int, help=argparse.SUPPRESS)
    return ap.parse_args()


def _json_safe(x: Any) -> Any:
    """NaN (a cell with no successful op) as null, so the file is strict JSON."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    return x


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    args = parse_args()
    if args.serve_trivial:
        serve_trivial(args.serve_trivial)
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    systems = [args.only] if args.only else ["tidekv", "etcd"]
    etcd_bin = shutil.which(args.etcd) if "etcd" in systems else None
    if "etcd" in systems and not etcd_bin:
        print("etcd not found: apt-get install -y etcd-server (or --etcd PATH)", file=sys.stderr)
        return 2
    DATA[:] = make_data(args.keys)
    root = Path(tempfile.mkdtemp(prefix="tide-bench-cluster-", dir=args.data_root))
    env = environment(str(root), etcd_bin)
    print(
        f"{env['date']}  {env['cpus']} CPUs, load average {env['loadavg'][0]:.2f}, machine "
        f"{env['machine_busy_pct_before']:.0f}% busy (of {100 * (env['cpus'] or 1)}%) before "
        f"start; data on {env['data_fs']}; tidekv {env['tidekv_commit']}"
        f"{' (src modified)' if env['tidekv_dirty'] else ''}; {env['etcd'] or 'no etcd'}"
    )
    print(
        f"{args.warmup:g} s warm-up + {args.duration:g} s per cell, {args.rounds} round(s), "
        f"{args.keys} keys of {KEY_BYTES} B, values of {VALUE_BYTES} B, load to the "
        f"{args.target}"
    )
    report: dict[str, Any] = {"meta": {**env, "args": vars(args)}, "cells": []}
    clusters: dict[str, Cluster] = {}
    pyspies: list[subprocess.Popen[bytes]] = []
    try:
        if not args.no_ceiling:
            ceil = measure_ceiling(max(clients), args.warmup, min(args.duration, 3.0))
            report["ceiling"] = ceil
            print(
                f"load generator vs a trivial uvloop server, {ceil['clients']} connections: "
                f"{ceil['ops_s']:,.0f} req/s, load generator {ceil['loadgen_cpu_pct']:.0f}% "
                f"of a core ({ceil['loadgen_us_per_req']:.1f} us/req, so ~"
                f"{ceil['loadgen_ceiling_ops_s']:,.0f} req/s on a full core), trivial server "
                f"{ceil['server_cpu_pct']:.0f}%, others {ceil['other_cpu_pct']:.0f}%"
            )
        for name in systems:
            if name == "tidekv":
                clusters[name] = TideCluster(root / "tidekv", args.engine, args.shards)
            else:
                assert etcd_bin is not None
                clusters[name] = EtcdCluster(root / "etcd", etcd_bin)
            clusters[name].start()
        for c in clusters.values():
            leader = c.wait_ready()
            target = leader if args.target == "leader" else (leader + 1) % 3
            preload(c, target)
            print(f"{c.name}: 3 members up, leader member {leader + 1}, {args.keys} keys loaded")

        idle = Sampler(
            {f"{c.name}:{i + 1}": pid for c in clusters.values() for i, pid in enumerate(c.pids)}
        )
        idle.mark()
        time.sleep(2.0)
        idle.mark()
        shares = idle.shares()
        report["idle_cpu_pct"] = shares
        print(
            "idle (2 s, no load), % of one core: "
            + ", ".join(
                f"{c.name} members {sum(shares[f'{c.name}:{i + 1}'] for i in range(3)):.1f}"
                for c in clusters.values()
            )
            + f"; other processes {shares['other']:.0f}"
        )

        names = list(clusters)
        step = 0
        for rnd in range(args.rounds):
            for op in ops:
                for n in clients:
                    order = names if step % 2 == 0 else names[::-1]
                    step += 1
                    for name in order:
                        c = clusters[name]
                        others = [o for o in clusters.values() if o is not c]
                        cell = run_cell(c, others, op, n, args)
                        cell["round"] = rnd
                        report["cells"].append(cell)
                        print(
                            f"  round {rnd + 1} {name:<6} {op} {n:>3} clients: "
                            f"{cell['ops_s']:>8,.0f} ops/s  p50 {cell['p50_ms']:6.2f} ms  "
                            f"p99 {cell['p99_ms']:7.2f} ms  errors {cell['errors']}  "
                            f"leader {cell['cpu_pct']['leader']:.0f}%  "
                            f"other {cell['cpu_pct']['other']:.0f}%",
                            flush=True,
                        )
                        if cell["leader_changed"]:
                            print(f"    the leader moved to member {c.leader + 1} in this cell")
                        if cell["errors"] or cell["stuck_after_window"]:
                            print(
                                f"    statuses {cell['statuses']}, lost "
                                f"{cell['connections_lost']}, stuck {cell['stuck_after_window']}"
                            )

        summary = summarize(report["cells"])
        rat = ratios(summary)
        report["summary"], report["ratios"] = summary, rat
        print_table(summary, rat)
        print(
            "\nsrv us/op: CPU of the 3 members per op; leader%/lg cpu%: leader / load generator "
            "CPU in % of one core; l.wait%: time the leader's threads were ready to run but "
            "queued for a CPU, in % of wall time; other%: machine CPU used by processes "
            "outside this run (% of one core, 200 = both cores); fsync/op: the leader's WAL "
            "fsyncs per op (whole cell)"
        )

        if args.profile and "tidekv" in clusters:
            c = clusters["tidekv"]
            others = [o for o in clusters.values() if o is not c]
            OUT_DIR.mkdir(exist_ok=True)
            raw = Path(args.profile_out or OUT_DIR / f"cluster-pyspy-{args.profile}.txt")
            raw_wall = raw.with_name(raw.stem + "-wall" + raw.suffix)
            pargs = argparse.Namespace(**{**vars(args), "duration": args.profile_duration})
            profiled = [-1]

            def begin_profile() -> None:  # when the window opens: the leader is known by now
                i = c.leader
                if args.profile_node == "target" and args.target == "follower":
                    i = (c.leader + 1) % 3
                profiled[0] = i
                for out, idle in ((raw, False), (raw_wall, True)):
                    pyspies.append(start_pyspy(c.pids[i], pargs.duration, out, idle))

            cell = run_cell(c, others, args.profile, max(clients), pargs, begin_profile)
            for spy, out in zip(pyspies, (raw, raw_wall), strict=True):
                _, err = spy.communicate(timeout=pargs.duration + 30)
                if spy.returncode != 0 or not out.exists():
                    raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-2000:]}")
            i = profiled[0]
            prof = summarize_profile(raw, cell["cpu_pct"]["members"][i])
            prof["member"], prof["is_leader"] = i + 1, i == c.leader
            prof["wall"] = summarize_wall(raw_wall, round(pargs.duration))
            report["profile"] = {"cell": cell, "raw": [str(raw), str(raw_wall)], **prof}
            print_profile(prof, cell, round(pargs.duration))
            print(f"\n  raw stacks: {raw} (on CPU), {raw_wall} (wall clock)")
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the clusters", file=sys.stderr)
        return 130
    finally:
        for spy in pyspies:
            if spy.poll() is None:
                spy.kill()
                spy.wait(10)
        for c in clusters.values():
            c.stop()
        shutil.rmtree(root, ignore_errors=True)
        if args.json and report["cells"]:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(_json_safe(report), f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
