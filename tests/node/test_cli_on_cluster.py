"""``tide status`` and ``tide cluster add|remove`` as subprocesses against a real 3-node
cluster (``tide serve`` processes on loopback): what they print, through any node, with
nodes down, and bad input (exit 2, one line, membership unchanged). An unsharded cluster
(``--shards 1``): its membership changes and its status shape (a sharded cluster's
``tide status`` is in test_sharded_cluster.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .proc_cluster import DEADLINE, ProcCluster, running

pytestmark = pytest.mark.timeout(240)


def tide(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidekv", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "TIDE_URL": ""},
    )


def ok(*args: str) -> str:
    r = tide(*args)
    assert r.returncode == 0, (args, r.returncode, r.stderr)
    return r.stdout


def status(url: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(ok("status", "--json", "--url", url))
    return info


def one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert r.stdout == ""
    return lines[0]


def eventually(what: str, check: Callable[[], Any], c: ProcCluster) -> Any:
    """``check()``'s first truthy result (AssertionErrors count as not yet)."""
    deadline = time.monotonic() + DEADLINE
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except AssertionError as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        time.sleep(0.1)
    raise AssertionError(f"not {what} within {DEADLINE} s (last: {last})\n{c.logs()}")


def write_keys(c: ProcCluster, node: int, prefix: str, n: int) -> None:
    for k in range(n):
        r = c.put(node, f"{prefix}{k}", f"v{k}".encode())
        assert r.status_code == 200, r.text


def replication_rows(text: str) -> dict[str, list[str]]:
    """The rows of the "shard 0 replication" table of ``tide status``, by node id."""
    lines = text.splitlines()
    start = lines.index("shard 0 replication")
    rows: dict[str, list[str]] = {}
    for line in lines[start + 3 :]:
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) != 6 or not cells[0].isdigit():
            break
        rows[cells[0]] = cells[1:]
    return rows


def test_status_through_every_node_and_with_nodes_down(unsharded_trio: ProcCluster) -> None:
    c = unsharded_trio
    leader = c.leader()
    write_keys(c, leader, "s/", 20)
    followers = [i for i in (1, 2, 3) if i != leader]

    def all_caught_up(url: str) -> dict[str, Any]:
        info = status(url)
        shard = info["shards"][0]
        lags = {k: p["lag"] for k, p in shard["progress"].items()}
        assert lags == {"1": 0, "2": 0, "3": 0}, lags
        return info

    for node in (leader, *followers):  # a follower forwards to the leader
        info = eventually("caught up", lambda n=node: all_caught_up(c.url(n)), c)
        assert info["node_id"] == leader
        assert [(n["id"], n["state"]) for n in info["nodes"]] == [
            (i, "leader" if i == leader else "voter") for i in (1, 2, 3)
        ]
        shard = info["shards"][0]
        assert shard["leader"] == leader and shard["replicas"] == [1, 2, 3]
        assert shard["term"] >= 1 and shard["revision"] == 20
        assert shard["commit_index"] >= 20
        assert {p["match"] for p in shard["progress"].values()} == {shard["commit_index"]}

    text = ok("status", "--url", c.url(followers[0]))
    assert f"node_id: {leader}" in text
    rows = replication_rows(text)
    assert sorted(rows) == ["1", "2", "3"]
    assert rows[str(leader)][0] == "leader" and rows[str(leader)][4] == "yes"
    for f in followers:
        assert rows[str(f)][0] == "follower" and rows[str(f)][2] == "0"

    # one follower down: the leader still reports it, inactive and falling behind
    down, up = followers
    c.kill(down)
    write_keys(c, leader, "t/", 10)

    def shows_down() -> dict[str, Any]:
        info = status(f"{c.url(down)},{c.url(up)}")  # the dead URL first: skipped
        prog = info["shards"][0]["progress"]
        assert prog[str(down)]["active"] is False and prog[str(down)]["lag"] >= 10, prog
        assert prog[str(up)]["lag"] == 0, prog
        return info

    info = eventually("showing the dead follower", shows_down, c)
    assert info["shards"][0]["replicas"] == [1, 2, 3]  # still a member, just not answering
    rows = replication_rows(ok("status", "--url", c.url(leader)))
    assert rows[str(down)][4] == "no" and int(rows[str(down)][2]) >= 10
    r = tide("status", "--url", c.url(down))
    assert r.returncode == 1
    assert one_error_line(r) == f"error: cannot reach {c.url(down)}: connection refused"

    # the leader down too: the last node answers on its own, with no leader
    c.kill(leader)

    def no_leader() -> dict[str, Any]:
        info = status(c.url(up))
        assert info["node_id"] == up and info["shards"][0]["leader"] is None, info
        return info

    info = eventually("reporting no leader", no_leader, c)
    assert info["shards"][0]["commit_index"] >= 30
    text = ok("status", "--url", c.url(up))
    assert f"node_id: {up}" in text


def test_cluster_remove_and_add_with_the_cli(unsharded_trio: ProcCluster) -> None:
    c = unsharded_trio
    leader = c.leader()
    write_keys(c, leader, "m/", 30)
    victim = next(i for i in (1, 2, 3) if i != leader)
    via = next(i for i in (1, 2, 3) if i not in (leader, victim))  # a follower forwards

    out = ok("cluster", "remove", str(victim), "--url", c.url(via))
    assert out == f"node {victim} removed\n"
    info = eventually(
        "without the removed node",
        lambda: (
            (i := status(c.url(leader)))["shards"][0]["replicas"] == sorted({1, 2, 3} - {victim})
            and i
        ),
        c,
    )
    assert str(victim) not in info["shards"][0]["progress"]
    r = tide("cluster", "remove", str(victim), "--url", c.url(leader))
    assert r.returncode == 1 and "not a member" in one_error_line(r)
    c.kill(victim)
    write_keys(c, leader, "n/", 10)  # two voters commit on their own

    # a fourth node joins with an empty disk, is caught up and promoted
    c4 = 4
    c.start(c4, join=True, peers=c.peers_spec() + f",{c4}={c.address(c4)}")
    out = ok("cluster", "add", str(c4), c.address(c4), "--url", c.url(via))
    assert out == f"node {c4} ({c.address(c4)}) added\n"
    info = status(c.url(c4))  # the new node forwards, too
    assert info["shards"][0]["replicas"] == sorted({1, 2, 3, c4} - {victim})
    assert [n["state"] for n in info["nodes"] if n["id"] == c4] == ["voter"]
    for k in range(30):
        r = eventually("replicated", lambda k=k: c.get(c4, f"m/{k}", "stale"), c)
        assert r.status_code == 200 and r.content == f"v{k}".encode()
    # adding it again is a no-op; the same id at another address is refused
    assert (
        json.loads(ok("cluster", "add", str(c4), c.address(c4), "--json", "--url", c.url(c4)))[
            "state"
        ]
        == "voter"
    )
    r = tide("cluster", "add", str(c4), "127.0.0.1:1", "--url", c.url(leader))
    assert r.returncode == 1 and "already a member" in one_error_line(r)


def test_cluster_add_of_a_node_that_does_not_answer_adds_nothing(shared: ProcCluster) -> None:
    """Nothing listens at the address: the node never catches up, so it is not promoted
    to a voter (it would count in every quorum) and its learner entry is removed again."""
    c = shared
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{s.getsockname()[1]}"
    r = tide("cluster", "add", "7", nowhere, "--url", c.url(1))
    assert r.returncode == 1, r.stderr
    line = one_error_line(r)
    assert f"node 7 at {nowhere} did not catch up" in line and "not added" in line
    shard = status(c.url(2))["shards"][0]
    assert (shard["replicas"], shard["learners"]) == ([1, 2, 3], [])
    assert "7" not in shard["progress"]
    write_keys(c, 1, "after-add/", 3)  # the cluster still commits


@pytest.mark.parametrize(
    "args",
    [
        ["cluster", "add", "0", "127.0.0.1:1"],
        ["cluster", "add", "abc", "127.0.0.1:1"],
        ["cluster", "add", "5"],
        ["cluster", "add", "5", "no-port"],
        ["cluster", "add", "5", "127.0.0.1:99999"],
        ["cluster", "remove", "-3"],
        ["cluster", "remove", "x"],
        ["cluster", "frobnicate", "5"],
        ["status", "--bogus"],
    ],
)
def test_bad_cluster_commands_exit_2_with_one_line_and_change_nothing(
    shared: ProcCluster, args: list[str]
) -> None:
    c = shared
    before = status(c.url(1))
    r = tide(*args, "--url", c.url(1))
    assert r.returncode == 2, (r.returncode, r.stderr)
    one_error_line(r)
    after = status(c.url(1))
    for info in (before, after):
        assert info["shards"][0]["replicas"] == [1, 2, 3] and info["shards"][0]["learners"] == []
    assert [n["address"] for n in after["nodes"]] == [n["address"] for n in before["nodes"]]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    with running(tmp_path_factory.mktemp("shared"), 3, shards=1) as c:
        yield c
