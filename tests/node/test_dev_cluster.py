"""``tide dev-cluster`` as a user runs it: a real subprocess that starts three nodes on
loopback, prints their endpoints once a leader serves, stops every node on Ctrl-C with
exit code 0 (no orphans), and keeps the data for a second start."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .proc_cluster import DEADLINE, free_base_port

pytestmark = pytest.mark.timeout(240)


def processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, the /proc stat fields after the command name) of every process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        yield int(entry), stat[stat.rindex(")") + 2 :].split()


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid`` (the dev cluster runs in its own)."""
    return [pid for pid, f in processes() if int(f[3]) == sid and f[0] != "Z"]


def children_of(pid: int) -> list[int]:
    return [child for child, f in processes() if int(f[1]) == pid]


class DevCluster:
    """One run of ``tide dev-cluster`` in its own session (as a shell job would be)."""

    def __init__(
        self,
        cwd: Path,
        base: int,
        run: int,
        *,
        ignore_sigint: bool = False,
        nodes: int = 3,
        shards: int | None = None,
    ) -> None:
        self.out_path = cwd / f"dev-cluster-{run}.out"
        self.err_path = cwd / f"dev-cluster-{run}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tidekv",
                    "dev-cluster",
                    "--nodes",
                    str(nodes),
                    "--base-port",
                    str(base),
                    *([] if shards is None else ["--shards", str(shards)]),
                ],
                cwd=cwd,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                # as a background job of a script starts it: SIGINT ignored
                preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
                if ignore_sigint
                else None,
            )

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def diagnostics(self) -> str:
        return f"stdout:\n{self.output()}\nstderr:\n{self.err_path.read_text(errors='replace')}"

    def endpoints(self) -> list[str]:
        """The node URLs it prints once a leader serves."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            text = self.output()
            m = re.search(r"^export TIDE_URL=(\S+)$", text, re.M)
            if m:
                return m.group(1).split(",")
            assert self.proc.poll() is None, f"dev-cluster exited\n{self.diagnostics()}"
            time.sleep(0.1)
        raise AssertionError(f"no endpoints printed within {DEADLINE} s\n{self.diagnostics()}")

    def kill(self) -> None:
        """Teardown: whatever is left of the session dies."""
        for pid in session_members(self.proc.pid) or [self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[DevCluster]]:
    started: list[DevCluster] = []
    try:
        yield started
    finally:
        for dc in started:
            dc.kill()


def stop_and_check(dc: DevCluster, children: list[int], how: str) -> None:
    """Stop it ("group": Ctrl-C in a terminal, SIGINT to its whole process group; else the
    named signal to the dev-cluster process alone); it exits 0 and no node outlives it."""
    if how == "group":
        os.killpg(dc.proc.pid, signal.SIGINT)
    else:
        dc.proc.send_signal(getattr(signal, how))
    rc = dc.proc.wait(60)
    assert rc == 0, dc.diagnostics()
    assert "Traceback" not in dc.diagnostics(), dc.diagnostics()
    deadline = time.monotonic() + DEADLINE
    while session_members(dc.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert session_members(dc.proc.pid) == [], f"nodes outlived it\n{dc.diagnostics()}"
    assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []


def assert_leaders_line(out: str, url: str, dc: DevCluster) -> None:
    """The line naming the leader(s), in the form of the cluster's shard count (the
    nodes' default): ``leader: node N``, or ``S shards; node 1 leads A, ...``."""
    shards = httpx.get(url + "/v1/cluster", timeout=10.0).json().get("shard_count", 1)
    if shards == 1:
        m = re.search(r"^leader: node (\d+); Ctrl-C stops", out, re.M)
        assert m and 1 <= int(m.group(1)) <= 3, dc.diagnostics()
        return
    m = re.search(rf"^{shards} shards; ((?:node \d leads \d+(?:, )?)+); Ctrl-C stops", out, re.M)
    assert m, dc.diagnostics()
    assert sum(int(n) for n in re.findall(r"leads (\d+)", m.group(1))) == shards, out


def test_dev_cluster_serves_stops_on_ctrl_c_and_keeps_its_data(
    tmp_path: Path, runs: list[DevCluster]
) -> None:
    base = free_base_port(4)
    dc = DevCluster(tmp_path, base, 1)
    runs.append(dc)
    urls = dc.endpoints()
    assert urls == [f"http://127.0.0.1:{base + i}" for i in range(3)]
    out = dc.output()
    for i, u in enumerate(urls, 1):
        assert f"node {i}: {u}" in out
    assert_leaders_line(out, urls[0], dc)
    children = children_of(dc.proc.pid)
    assert len(children) == 3, (children, dc.diagnostics())

    written: dict[str, bytes] = {}
    with httpx.Client(timeout=10.0) as http:
        for n in range(30):
            key, value = f"dc/{n}", f"value {n}".encode()
            r = http.put(urls[n % 3] + "/v1/kv/" + key, content=value)
            assert r.status_code == 200, r.text
            written[key] = value
    assert sorted(os.listdir(tmp_path / "tide-cluster")) == ["n1", "n2", "n3"]

    stop_and_check(dc, children, "SIGINT")

    dc2 = DevCluster(tmp_path, base, 2)
    runs.append(dc2)
    urls2 = dc2.endpoints()
    assert urls2 == urls
    children2 = children_of(dc2.proc.pid)
    with httpx.Client(timeout=10.0) as http:
        for i, url in enumerate(urls2):
            for key, value in written.items():
                r = http.get(url + "/v1/kv/" + key)
                assert (r.status_code, r.content) == (200, value), (i, key, r.text)
    stop_and_check(dc2, children2, "group")


@pytest.mark.parametrize("how", ["sigterm", "sigint-ignored-at-start", "sigkill"])
def test_dev_cluster_stops_its_nodes_however_it_is_stopped(
    tmp_path: Path, runs: list[DevCluster], how: str
) -> None:
    """``kill PID`` and a Ctrl-C to a background job stop it cleanly (exit 0); even a
    SIGKILL, which it cannot handle, leaves no node running."""
    dc = DevCluster(tmp_path, free_base_port(4), 1, ignore_sigint=how == "sigint-ignored-at-start")
    runs.append(dc)
    url = dc.endpoints()[0]
    assert httpx.put(url + "/v1/kv/k", content=b"v", timeout=10.0).status_code == 200
    children = children_of(dc.proc.pid)
    assert len(children) == 3
    if how == "sigkill":
        dc.proc.kill()
        assert dc.proc.wait(30) == -signal.SIGKILL
        deadline = time.monotonic() + DEADLINE
        while session_members(dc.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert session_members(dc.proc.pid) == [], "nodes outlived the killed dev cluster"
        return
    stop_and_check(dc, children, "SIGTERM" if how == "sigterm" else "SIGINT")


def test_dev_cluster_port_in_use_is_an_error_and_leaves_nothing_running(
    tmp_path: Path, runs: list[DevCluster]
) -> None:
    import socket

    base = free_base_port(4)
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", base + 1))  # node 2's HTTP port
        blocker.listen()
        dc = DevCluster(tmp_path, base, 1)
        runs.append(dc)
        rc = dc.proc.wait(DEADLINE)
    assert rc == 1, dc.diagnostics()
    errors = [ln for ln in dc.err_path.read_text().splitlines() if ln.startswith("error:")]
    assert errors, dc.diagnostics()
    assert session_members(dc.proc.pid) == [], "nodes outlived the dev cluster"


def test_a_sharded_dev_cluster_prints_its_endpoints_only_once_every_node_serves(
    tmp_path: Path, runs: list[DevCluster]
) -> None:
    """With 4 nodes and rf 3 every node lacks some shard; each endpoint printed must
    answer linearizable requests for every shard at once (through forwarding)."""
    base = free_base_port(5)
    dc = DevCluster(tmp_path, base, 1, nodes=4, shards=6)
    runs.append(dc)
    urls = dc.endpoints()
    out = dc.output()
    m = re.search(r"^6 shards; ((?:node \d leads \d+(?:, )?)+); Ctrl-C stops", out, re.M)
    assert m, dc.diagnostics()
    leads = [int(n) for n in re.findall(r"leads (\d+)", m.group(1))]
    assert sum(leads) == 6, out
    with httpx.Client(timeout=10.0) as http:
        for u in urls:  # no retry: ready means ready
            assert http.get(u + "/ready").status_code == 200, u
        view = http.get(urls[0] + "/v1/cluster").json()
        assert view["shard_count"] == 6
        assert all(isinstance(sh["leader"], int) for sh in view["shards"])
        for n in range(24):
            r = http.put(f"{urls[n % 4]}/v1/kv/sdc{n}", content=b"v")
            assert r.status_code == 200, r.text
        for n in range(24):  # read back through another node
            r = http.get(f"{urls[(n + 1) % 4]}/v1/kv/sdc{n}")
            assert (r.status_code, r.content) == (200, b"v"), r.text
    stop_and_check(dc, children_of(dc.proc.pid), "SIGTERM")
