"""``tide serve`` defaults as real processes: no arguments serves 127.0.0.1:7070 with
./tide-data; a directory made by the embedded commands (also ./tide-data by default) is
served as it is; the embedded commands refuse a node's data directory instead of
writing an embedded store into it (which would stop the node from starting)."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tidekv.sharding.keys import shard_of

from .proc_cluster import free_base_port, port_free

pytestmark = pytest.mark.timeout(240)

WAIT = 60.0


def tide(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidekv", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "TIDE_URL": "", "TIDE_PATH": "", "TIDE_DATA_DIR": ""},
    )


class Serve:
    """One ``tide serve`` process, SIGINTed (and if need be killed) at teardown."""

    def __init__(
        self,
        cwd: Path,
        *args: str,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.err_path = cwd / f"serve-{time.monotonic_ns()}.err"
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tidekv", "serve", *args],
                cwd=cwd,
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "TIDE_DATA_DIR": "", **(env or {})},
                preexec_fn=preexec_fn,
            )

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"tide serve exited\n{self.stderr()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/ready", timeout=2.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"{url} not ready within {WAIT} s\n{self.stderr()}")

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def serves() -> Iterator[list[Serve]]:
    started: list[Serve] = []
    try:
        yield started
    finally:
        for s in started:
            s.kill()


def test_serve_with_no_arguments_is_a_node_on_7070_with_tide_data(
    tmp_path: Path, serves: list[Serve]
) -> None:
    deadline = time.monotonic() + WAIT  # the default port: another run may hold it a while
    while not (port_free(7070) and port_free(7170)):
        assert time.monotonic() < deadline, "127.0.0.1:7070/7170 stay in use"
        time.sleep(0.5)
    srv = Serve(tmp_path)
    serves.append(srv)
    url = "http://127.0.0.1:7070"
    srv.wait_ready(url)
    assert (tmp_path / "tide-data" / "node.json").exists()
    r = tide("put", "hello", '{"msg": "world"}', "--json-doc", "--url", url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert httpx.get(url + "/v1/kv/hello").json() == {"msg": "world"}
    info = httpx.get(url + "/v1/cluster").json()
    assert info["nodes"][0]["address"] == "127.0.0.1:7070"
    assert srv.interrupt() == 0, srv.stderr()
    # a second start without arguments has the data
    srv2 = Serve(tmp_path)
    serves.append(srv2)
    srv2.wait_ready(url)
    r = tide("get", "hello", "--url", url, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, '{"msg": "world"}'), r.stderr
    assert srv2.interrupt() == 0, srv2.stderr()
    # and the embedded commands do not write into the node's directory by mistake
    r = tide("put", "oops", "x", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr == (
        "error: ./tide-data is the data directory of a tidekv node (tide serve): "
        "talk to the node with --url (or set TIDE_URL)\n"
    )
    assert not (tmp_path / "tide-data" / "tidekv.json").exists()


def test_serve_serves_the_embedded_store_the_cli_made(tmp_path: Path, serves: list[Serve]) -> None:
    for doc in ('{"msg": "world"}', '{"msg": "tide"}'):  # the README's quick start
        r = tide("put", "hello", doc, "--json-doc", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    port = free_base_port(1)  # reserved, below the ephemeral range
    url = f"http://127.0.0.1:{port}"
    srv = Serve(tmp_path, "--address", f"127.0.0.1:{port}")
    serves.append(srv)
    srv.wait_ready(url)
    assert "serving the embedded store in ./tide-data" in srv.stderr()
    assert httpx.get(url + "/v1/kv/hello").json() == {"msg": "tide"}
    r = tide("put", "hello", '{"msg": "served"}', "-j", "--url", url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = tide("cluster", "add", "2", "127.0.0.1:1", "--url", url, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert srv.interrupt() == 0, srv.stderr()
    r = tide("history", "hello", "--json", cwd=tmp_path)  # back to the embedded store
    assert r.returncode == 0, r.stderr
    assert r.stdout.count('"version"') == 3
    # a replicated node cannot take it over
    r = tide("serve", "--peers", f"1=127.0.0.1:{port}", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ./tide-data holds an embedded store")
    assert r.stderr.count("\n") == 1


def test_the_default_shard_count_comes_from_the_environment(
    tmp_path: Path, serves: list[Serve]
) -> None:
    """TIDEKV_DEFAULT_SHARDS (how the suite runs with the default flipped): one node,
    no --shards, 64 shards on it (65 groups), writes on every shard; the count is then
    the cluster's, whatever the environment says at the next start."""
    port = free_base_port(1)
    url = f"http://127.0.0.1:{port}"
    args = ("--address", f"127.0.0.1:{port}", "--data-dir", "n1")
    srv = Serve(tmp_path, *args, env={"TIDEKV_DEFAULT_SHARDS": "64"})
    serves.append(srv)
    srv.wait_ready(url)
    info = httpx.get(url + "/v1/cluster").json()
    assert info["shard_count"] == 64 and len(info["shards"]) == 64
    assert {sh["leader"] for sh in info["shards"]} == {1}
    keys = [f"k{i}" for i in range(400)]  # at least one on every shard
    assert {shard_of(k, 64) for k in keys} == set(range(64))
    shards = set()
    with httpx.Client(timeout=10.0) as http:
        for k in keys:
            r = http.put(f"{url}/v1/kv/{k}", content=k.encode())
            assert r.status_code == 200, r.text
            shards.add(r.json()["shard"])
        assert shards == set(range(64))
        listed = http.get(url + "/v1/kv", params={"prefix": "k", "limit": 1000}).json()
        assert sorted(it["key"] for it in listed["items"]) == sorted(keys)
    assert srv.interrupt() == 0, srv.stderr()
    srv2 = Serve(tmp_path, *args, env={"TIDEKV_DEFAULT_SHARDS": "1"})
    serves.append(srv2)
    srv2.wait_ready(url)
    assert httpx.get(url + "/v1/cluster").json()["shard_count"] == 64
    assert httpx.get(url + "/v1/kv/k7").content == b"k7"
    assert srv2.interrupt() == 0, srv2.stderr()


@pytest.mark.parametrize("bad", ["0", "4097", "many"])
def test_a_bad_default_shard_count_is_bad_input(tmp_path: Path, bad: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tidekv", "serve", "--address", f"127.0.0.1:{free_base_port(1)}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "TIDE_DATA_DIR": "", "TIDEKV_DEFAULT_SHARDS": bad},
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"error: TIDEKV_DEFAULT_SHARDS={bad!r}")
    assert r.stderr.count("\n") == 1
    assert not (tmp_path / "tide-data").exists()


def test_serve_raises_its_soft_open_files_limit(tmp_path: Path, serves: list[Serve]) -> None:
    """A node of S shards holds S + 1 engines, each a few descriptors: tide serve lifts
    the soft limit (1024 on many systems; 256 here) to the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = 256 if hard == resource.RLIM_INFINITY else min(256, hard)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    port = free_base_port(1)
    url = f"http://127.0.0.1:{port}"
    srv = Serve(tmp_path, "--address", f"127.0.0.1:{port}", "--shards", "4", preexec_fn=lower)
    serves.append(srv)
    srv.wait_ready(url)
    limits = Path(f"/proc/{srv.proc.pid}/limits").read_text()
    soft = next(line.split()[3] for line in limits.splitlines() if line.startswith("Max open"))
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    assert int(soft) == want, limits
    assert srv.interrupt() == 0, srv.stderr()
