"""Rebalancing with real processes: a 6th node joins a 5-node sharded cluster under writes,
then leaves again (issue 5, "Rebalancing").

Five ``tide serve --shards 64`` nodes (192 shard replicas, the issue's figure); a writer
thread writes keys through every node and remembers each acknowledged write. ``tide
serve --join`` starts a 6th node, which asks node 1 to join; the metadata re-plans, the
shard leaders add the new replicas as learners, catch them up by streamed snapshot,
promote them and remove the replicas they replace. Checked once ``GET /v1/cluster`` shows
no moves: the replicas moved are within 25% of the ideal share (1/6 of them), every
shard's real Raft configuration (from its leader) equals the metadata record and the
ring's placement, node 6's own replicas serve the writes of its shards, every
acknowledged write reads back (linearizable), and writes were acknowledged while the
shards moved. Nodes 6 and 2 restart with their replicas and the live metadata. Then nodes
6 and 2 (a metadata voter) are decommissioned: the reverse, until both are REMOVED, hold
no replica and their replica directories are gone, and the metadata group's voters are
the 3 that ``choose_meta_voters`` keeps.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidekv.cli_node import serve_command
from tidekv.sharding.keys import shard_of
from tidekv.sharding.ring import DEFAULT_VNODES, Ring

from .proc_cluster import ProcCluster
from .writers import Writer, assert_all_readable

SHARDS = 64
REPLICATION = 3
SETTLE = 150.0  # a wait for a condition, generous for a loaded machine (a join: 12-34 s)


def placement(nodes: list[int]) -> list[set[int]]:
    ring = Ring({n: 1 for n in nodes}, DEFAULT_VNODES)
    return [set(r) for r in ring.place(SHARDS, REPLICATION).replicas]


def views(c: ProcCluster, nodes: list[int]) -> dict[int, dict[str, Any]]:
    out = {}
    for i in nodes:
        v = c.cluster(i)
        if v is not None:
            out[i] = v
    return out


def real_configs(c: ProcCluster, nodes: list[int]) -> dict[int, tuple[set[int], set[int]]]:
    """Every shard's (voters, learners) as its leader's Raft core has them."""
    out: dict[int, tuple[set[int], set[int]]] = {}
    for i, v in views(c, nodes).items():
        for sh in v["shards"]:
            if sh.get("local") and sh["leader"] == i:
                out[sh["id"]] = (set(sh["replicas"]), set(sh["learners"]))
    return out


def wait_settled(
    c: ProcCluster, nodes: list[int], want: list[set[int]], settle: float = SETTLE
) -> dict[str, Any]:
    """Until ``nodes[0]``'s metadata shows no move, every record is ``want`` (one set per
    shard: the ring's placement), and every shard's leader (on one of ``nodes``) has
    exactly that configuration."""
    deadline = time.monotonic() + settle
    last: Any = None
    while time.monotonic() < deadline:
        v = c.cluster(nodes[0])
        if v is not None and not v["moves"]:
            records = [set(sh["placed"]) for sh in v["shards"]]
            real = real_configs(c, nodes)
            last = (records == want, len(real), [s for s in real if real[s] != (want[s], set())])
            if records == want and len(real) == len(want) and not last[2]:
                return v
        else:
            last = None if v is None else [(m["shard"], m["step"]) for m in v["moves"]][:8]
        time.sleep(0.25)
    raise AssertionError(f"the moves did not settle: {last}\n{c.logs()}")


@pytest.mark.timeout(900)  # a wait that fails must fail first, with the logs, and clean up
def test_join_moves_its_share_then_decommissions_move_shards_away(tmp_path: Path) -> None:
    c = ProcCluster(tmp_path, 5, shards=SHARDS)
    writer = Writer(c)
    try:
        c.start_all()
        for i in range(1, 6):
            c.wait_ready(i)
        five = placement([1, 2, 3, 4, 5])
        v = c.cluster(1)
        assert v is not None and [set(sh["placed"]) for sh in v["shards"]] == five
        writer.start()
        writer.wait_acked(30)

        # -- join ------------------------------------------------------------------------
        joined_at = time.monotonic()
        c.start(6, join=True, peers=f"1={c.address(1)}")
        six = placement([1, 2, 3, 4, 5, 6])
        wait_settled(c, [1, 2, 3, 4, 5, 6], six)
        settled_at = time.monotonic()
        moved = sum(len(after - before) for before, after in zip(five, six, strict=True))
        ideal = SHARDS * REPLICATION / 6
        assert abs(moved - ideal) <= 0.25 * ideal, (moved, ideal)
        mine = [s for s in range(SHARDS) if 6 in six[s]]
        assert len(mine) == moved  # every replica that moved went to the new node
        v6 = c.cluster(6)
        assert v6 is not None and v6["node_id"] == 6
        assert {sh["id"] for sh in v6["shards"] if sh.get("local")} == set(mine)
        assert {n["id"]: n["state"] for n in v6["nodes"]}[6] == "active"

        # writes went on while the shards moved, and node 6's own replicas hold them
        during = [t for _v, t in list(writer.acked.values()) if joined_at < t < settled_at]
        assert during, f"no write was acknowledged while the shards moved ({writer.errors} failed)"
        acked = dict(writer.acked)
        on6 = {k: vt for k, vt in acked.items() if shard_of(k, SHARDS) in mine}
        assert on6
        assert_served_locally(c, 6, on6)

        # a restart keeps every replica under its own incarnation (replicas.json) and the
        # live metadata (node 6 is outside the metadata group: cluster.state)
        for i in (6, 2):
            c.stop(i)
            c.start(i, join=i == 6, peers=f"1={c.address(1)}" if i == 6 else None)
            c.wait_ready(i)
        v6 = c.cluster(6)
        assert v6 is not None and {sh["id"] for sh in v6["shards"] if sh.get("local")} == set(mine)
        assert [set(sh["placed"]) for sh in v6["shards"]] == six
        wait_settled(c, [1, 2, 3, 4, 5, 6], six)

        # -- decommission: node 6, and node 2 (a metadata voter) right after -----------------
        r = c.http.delete(c.url(6) + "/v1/cluster/nodes/6", timeout=30.0)
        assert r.status_code == 200, r.text
        assert r.json()["state"] in ("decommissioning", "removed")
        left_at = time.monotonic()
        r = c.http.delete(c.url(4) + "/v1/cluster/nodes/2", timeout=30.0)
        assert r.status_code == 200 and r.json()["state"] == "decommissioning", r.text
        wait_settled(c, [1, 3, 4, 5], placement([1, 3, 4, 5]))
        for gone in (6, 2):
            wait_removed(c, gone)
        # the metadata group followed choose_meta_voters: 3 of the 4 members left
        wait_meta_voters(c, [1, 3, 4], hosts=[1, 3, 4, 5])
        removed_at = time.monotonic()
        leaving = [t for _v, t in list(writer.acked.values()) if left_at < t < removed_at]
        writer.wait_acked(20, after=removed_at)
        writer.stop()
        print(
            f"moved {moved} replicas (ideal {ideal:.0f}); join settled in "
            f"{settled_at - joined_at:.1f} s with {len(during)} writes acked, decommissions in "
            f"{removed_at - left_at:.1f} s with {len(leaving)}; {len(writer.acked)} acked, "
            f"{writer.errors} failed attempts"
        )
        assert leaving, "no write was acknowledged while nodes 6 and 2 were decommissioned"
        assert_all_readable(c, 1, dict(writer.acked))
        # bad input and conflicts answer 4xx with a JSON error
        r = c.http.post(c.url(2) + "/v1/cluster/nodes", json={"id": 3, "address": "127.0.0.1:1"})
        assert r.status_code == 409 and r.json()["error"]["message"]
        r = c.http.post(c.url(2) + "/v1/cluster/nodes", json={"id": "x", "address": "a:1"})
        assert r.status_code == 400
        r = c.http.delete(c.url(2) + "/v1/cluster/nodes/77")
        assert r.status_code == 404
        # `tide serve --join` with the id of a member: refused, exit code 2, nothing kept
        spare = c.root / "spare"
        cmd = serve_command(3, str(spare), c.address(7), f"1={c.address(1)}", "lsm")
        out = subprocess.run(
            [*cmd, "--join", "--shards", str(SHARDS)], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 2 and "already a member" in out.stderr, out.stderr
        assert not (spare / "node.json").exists()
        # ... or with another shard count: refused before anything is proposed
        cmd = serve_command(7, str(spare), c.address(7), f"1={c.address(1)}", "lsm")
        out = subprocess.run(
            [*cmd, "--join", "--shards", "8"], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 2 and "not 8 (--shards)" in out.stderr, out.stderr
        v = c.cluster(1)
        assert v is not None and 7 not in {n["id"] for n in v["nodes"]}
    finally:
        writer.stop()
        c.close()


def assert_served_locally(c: ProcCluster, node: int, acked: dict[str, tuple[bytes, float]]) -> None:
    """``node`` serves each write from its own replica (stale reads are never forwarded
    when the node has the shard)."""
    deadline = time.monotonic() + SETTLE
    pending = dict(acked)
    while pending and time.monotonic() < deadline:
        for key, (value, _t) in list(pending.items()):
            try:
                r = c.get(node, key, consistency="stale")
            except httpx.HTTPError:
                break
            if (
                r.status_code == 200
                and r.content == value
                and "x-tide-forwarded-by" not in r.headers
            ):
                del pending[key]
        if pending:
            time.sleep(0.2)
    assert not pending, f"node {node} does not serve {len(pending)} writes\n{c.logs()}"


def wait_meta_voters(c: ProcCluster, want: list[int], hosts: list[int]) -> None:
    """The metadata group's real voters (from the nodes that host a replica of it) are
    ``want``, and only they host one."""
    deadline = time.monotonic() + SETTLE
    last: Any = None
    while time.monotonic() < deadline:
        vs = views(c, hosts)
        local = sorted(i for i, v in vs.items() if v["meta"]["local"])
        voters = {tuple(v["meta"]["voters"]) for i, v in vs.items() if v["meta"]["local"]}
        last = (local, voters)
        if len(vs) == len(hosts) and local == want and voters == {tuple(want)}:
            return
        time.sleep(0.25)
    raise AssertionError(f"metadata voters not {want}: {last}\n{c.logs()}")


def wait_removed(c: ProcCluster, node: int) -> None:
    """``node`` is REMOVED in the metadata, hosts no shard replica, and its replica
    directories are gone."""
    deadline = time.monotonic() + SETTLE
    last: Any = None
    groups = c.data_dir(node) / "groups"
    while time.monotonic() < deadline:
        v = c.cluster(node)
        if v is not None:
            state = {n["id"]: n["state"] for n in v["nodes"]}.get(node)
            local = [sh["id"] for sh in v["shards"] if sh.get("local")]
            dirs = sorted(p.name for p in groups.iterdir()) if groups.exists() else []
            last = (state, local, dirs)
            if state == "removed" and not local and not dirs:
                return
        time.sleep(0.25)
    raise AssertionError(f"node {node} not removed and empty: {last}\n{c.logs()}")


def test_a_join_without_shards_takes_the_clusters_count(tmp_path: Path) -> None:
    """``tide serve --join`` without ``--shards`` asks a member for the shard count: the
    three members were created with 8 shards (``$TIDEKV_DEFAULT_SHARDS``), the joiner's
    own default is 64, and it must end a member of the 8-shard cluster holding replicas."""
    c = ProcCluster(tmp_path, 3, shards=None)
    try:
        for i in (1, 2, 3):
            c.env[i] = {"TIDEKV_DEFAULT_SHARDS": "8"}
            c.start(i)
        for i in (1, 2, 3):
            c.wait_ready(i)
        c.env[4] = {"TIDEKV_DEFAULT_SHARDS": ""}  # the joiner's default: 64
        c.start(4, join=True, peers=f"1={c.address(1)}")
        deadline = time.monotonic() + SETTLE
        info: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            info = c.cluster(4)
            if (
                info is not None
                and info.get("shard_count") == 8
                and any(4 in sh["replicas"] for sh in info["shards"])
                and any(n["id"] == 4 and n["state"] == "active" for n in info["nodes"])
                and not info.get("moves")
            ):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"node 4 did not join the 8-shard cluster: {info}")
        ident = json.loads((c.data_dir(4) / "node.json").read_text())
        assert ident["shards"] == 8
        # node 1's view (the metadata it holds or was pushed) agrees
        one = c.cluster(1)
        assert one is not None and one["shard_count"] == 8
        assert any(n["id"] == 4 and n["state"] == "active" for n in one["nodes"]), one["nodes"]
    finally:
        c.close()
