"""A cluster of real ``tide serve`` processes on loopback, for the node tests.

Each node is ``python -m tidekv serve`` with its own data directory, HTTP port and peer
port (HTTP port + 100). The harness talks to the nodes over real HTTP only. Ports come
from :func:`tidekv.chaos.ports.free_base_port`: a block reserved for this test process
(no other process using it gets the same ports), below the kernel's ephemeral range (no
client connection can take a port a stopped node will bind again).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tidekv.chaos.ports import free_base_port, port_free
from tidekv.cli_node import serve_command

__all__ = ["DEADLINE", "ProcCluster", "free_base_port", "port_free", "running", "sse_events"]

DEADLINE = 60.0


class ProcCluster:
    def __init__(
        self,
        root: Path,
        n: int,
        *,
        engine: str = "lsm",
        tick_ms: int = 50,
        extra_args: tuple[str, ...] = (),
        shards: int | None = None,
    ) -> None:
        self.root = root
        self.extra_args = list(extra_args)
        self.env: dict[int, dict[str, str]] = {}
        """Extra environment variables of node i's next start."""
        self.n = n
        self.shards = shards
        """``--shards`` of every node (None: not given, the nodes' default)."""
        self.engine = engine
        self.tick_ms = tick_ms
        self.base = free_base_port(n + 2)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.http = httpx.Client(timeout=5.0)

    def address(self, i: int) -> str:
        return f"127.0.0.1:{self.base + i - 1}"

    def url(self, i: int) -> str:
        return f"http://{self.address(i)}"

    def data_dir(self, i: int) -> Path:
        return self.root / f"n{i}"

    @property
    def urls(self) -> list[str]:
        return [self.url(i) for i in range(1, self.n + 1)]

    def peers_spec(self) -> str:
        return ",".join(f"{i}={self.address(i)}" for i in range(1, self.n + 1))

    def start(self, i: int, *, join: bool = False, peers: str | None = None) -> None:
        """Start node ``i`` (``peers``: the --peers spec, default nodes 1..n)."""
        assert i not in self.procs or self.procs[i].poll() is not None
        log = open(self.root / f"n{i}.log", "ab")  # noqa: SIM115 - owned by the process
        extra = ["--tick-ms", str(self.tick_ms), "-v", *self.extra_args]
        extra += ["--join"] if join else []
        if self.shards is not None:
            extra += ["--shards", str(self.shards)]
        spec = peers or self.peers_spec()
        cmd = serve_command(i, str(self.data_dir(i)), self.address(i), spec, self.engine, *extra)
        self.procs[i] = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env.pop(i, {})},
        )
        log.close()

    def start_all(self) -> None:
        for i in range(1, self.n + 1):
            self.start(i)

    def signal(self, i: int, sig: int) -> None:
        self.procs[i].send_signal(sig)

    def kill(self, i: int) -> None:
        p = self.procs[i]
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def stop(self, i: int) -> None:
        p = self.procs[i]
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    def stop_all(self) -> None:
        for i in list(self.procs):
            self.stop(i)

    def wipe(self, i: int) -> None:
        shutil.rmtree(self.data_dir(i), ignore_errors=True)

    def alive(self, i: int) -> bool:
        return i in self.procs and self.procs[i].poll() is None

    def close(self) -> None:
        self.stop_all()
        self.http.close()

    def logs(self) -> str:
        parts = []
        for i in sorted(self.procs):
            with contextlib.suppress(OSError):
                text = (self.root / f"n{i}.log").read_text(errors="replace")
                parts.append(f"--- node {i} ---\n{text[-4000:]}")
        return "\n".join(parts)

    # -- views over HTTP ----------------------------------------------------------------------

    def cluster(self, i: int) -> dict[str, Any] | None:
        try:
            r = self.http.get(self.url(i) + "/v1/cluster", timeout=2.0)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    def leader(self, among: list[int] | None = None, timeout: float = DEADLINE) -> int:
        """The leader that the given live nodes agree on, waiting for one."""
        nodes = among or [i for i in range(1, self.n + 1) if self.alive(i)]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i in nodes:
                if not self.alive(i):
                    continue
                info = self.cluster(i)
                if info is None:
                    continue
                lead = info["shards"][0]["leader"]
                if lead in nodes and info.get("node_id") == lead:
                    with contextlib.suppress(httpx.HTTPError):
                        if self.http.get(self.url(lead) + "/ready", timeout=2.0).status_code == 200:
                            return int(lead)
            time.sleep(0.05)
        raise AssertionError(f"no leader among {nodes} within {timeout} s\n{self.logs()}")

    def wait_ready(self, i: int, timeout: float = DEADLINE) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get(self.url(i) + "/ready", timeout=2.0).status_code == 200:
                    return
            if not self.alive(i):
                raise AssertionError(f"node {i} exited\n{self.logs()}")
            time.sleep(0.05)
        raise AssertionError(f"node {i} not ready within {timeout} s\n{self.logs()}")

    def put(self, i: int, key: str, value: bytes, **headers: str) -> httpx.Response:
        return self.http.put(
            self.url(i) + "/v1/kv/" + key,
            content=value,
            headers={"content-type": "application/octet-stream", **headers},
        )

    def get(self, i: int, key: str, consistency: str = "linearizable") -> httpx.Response:
        return self.http.get(self.url(i) + "/v1/kv/" + key, params={"consistency": consistency})

    def metric(self, i: int, name: str) -> float | None:
        """A sample of this node's own /metrics (never forwarded)."""
        try:
            text = self.http.get(self.url(i) + "/metrics", timeout=2.0).text
        except httpx.HTTPError:
            return None
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return None


@contextlib.contextmanager
def running(root: Path, n: int, **options: Any) -> Iterator[ProcCluster]:
    """A :class:`ProcCluster` of ``n`` nodes (``options``: its keyword arguments), every
    node started and serving (``/ready``) before the body runs; every node stopped (a
    SIGSTOPped one too) when it ends, however it ends, the start included."""
    c = ProcCluster(root, n, **options)
    try:
        c.start_all()
        for i in range(1, n + 1):
            c.wait_ready(i)
        yield c
    finally:
        c.close()


def sse_events(resp: httpx.Response, count: int) -> list[tuple[str | None, dict[str, Any]]]:
    """The first ``count`` data events of a stream: (id, data)."""
    events: list[tuple[str | None, dict[str, Any]]] = []
    ev_id: str | None = None
    kind = ""
    for line in resp.iter_lines():
        if line.startswith("id:"):
            ev_id = line[3:].strip()
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:") and kind == "":
            events.append((ev_id, json.loads(line[5:])))
            if len(events) == count:
                return events
        elif line == "":
            ev_id, kind = None, ""
    raise AssertionError(f"the stream ended after {len(events)} events")
