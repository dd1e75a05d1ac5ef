"""A sharded cluster of real ``tide serve --shards 8`` processes over real sockets.

Three nodes, eight shards, three replicas each (every node holds every shard): writes
to keys of every shard through any node, linearizable reads back through another, the
shard map in ``GET /v1/cluster``, hash tags, listings merged across shards with paging,
per-shard listings and watches (the feed across shards: test_sharded_watch.py), a
SIGKILL of every node then a restart, and a SIGKILL
of one; a single sharded node; four nodes, where every node lacks a shard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tidekv.sharding.keys import shard_of

from .proc_cluster import ProcCluster, sse_events

SHARDS = 8
DEADLINE = 60.0


@pytest.fixture
def sharded(tmp_path: Path) -> Iterator[ProcCluster]:
    c = ProcCluster(tmp_path, 3, shards=SHARDS)
    c.start_all()
    try:
        for i in (1, 2, 3):
            c.wait_ready(i)
        yield c
    finally:
        c.close()


def keys_over_every_shard(per_shard: int = 3) -> list[str]:
    """``per_shard`` keys of each shard (found by the same hash the node uses)."""
    found: dict[int, list[str]] = {s: [] for s in range(SHARDS)}
    n = 0
    while any(len(v) < per_shard for v in found.values()):
        k = f"k{n:04d}"
        if len(found[shard_of(k, SHARDS)]) < per_shard:
            found[shard_of(k, SHARDS)].append(k)
        n += 1
    return sorted(k for v in found.values() for k in v)


def put_retrying(c: ProcCluster, nodes: list[int], key: str, value: bytes) -> httpx.Response:
    """PUT through the given nodes until one acknowledges (an election may be under way);
    the Idempotency-Key makes a retry of a write whose outcome was unknown safe."""
    deadline = time.monotonic() + DEADLINE
    while True:
        for i in nodes:
            try:
                r = c.put(i, key, value, **{"idempotency-key": f"put-{key}"})
            except httpx.HTTPError:
                continue
            if r.status_code == 200:
                return r
            assert r.status_code in (503, 504), (r.status_code, r.text)
        assert time.monotonic() < deadline, f"no node acknowledged {key}\n{c.logs()}"
        time.sleep(0.1)


def wait_all_led(c: ProcCluster, i: int, nodes: list[int]) -> dict[str, object]:
    deadline = time.monotonic() + DEADLINE
    while True:
        info = c.cluster(i)
        if info is not None and all(s["leader"] in nodes for s in info["shards"]):
            return info
        assert time.monotonic() < deadline, f"not every shard led: {info}\n{c.logs()}"
        time.sleep(0.1)


def list_all(c: ProcCluster, i: int, prefix: str, limit: int, **params: str) -> list[str]:
    """Every key of a listing, page by page through the cursor."""
    got: list[str] = []
    cursor: str | None = None
    while True:
        q = {"prefix": prefix, "limit": str(limit), **params}
        if cursor:
            q["cursor"] = cursor
        r = c.http.get(c.url(i) + "/v1/kv", params=q)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= limit
        got.extend(item["key"] for item in body["items"])
        cursor = body["next"]
        if cursor is None:
            return got


def test_writes_to_every_shard_through_any_node_read_back_linearizably(
    sharded: ProcCluster,
) -> None:
    c = sharded
    keys = keys_over_every_shard()
    for n, k in enumerate(keys):
        r = c.put(1 + n % 3, k, k.encode() + b"-v")
        assert r.status_code == 200, r.text
        assert r.json()["shard"] == shard_of(k, SHARDS)
    assert {shard_of(k, SHARDS) for k in keys} == set(range(SHARDS))
    for n, k in enumerate(keys):
        r = c.get(1 + (n + 1) % 3, k)  # another node than the writer
        assert r.status_code == 200 and r.content == k.encode() + b"-v", (k, r.text)

    info = wait_all_led(c, 2, [1, 2, 3])
    assert info["shard_count"] == SHARDS
    addresses = {n["id"]: n["address"] for n in info["nodes"]}  # type: ignore[index]
    assert addresses == {i: c.address(i) for i in (1, 2, 3)}
    shards = info["shards"]
    assert [s["id"] for s in shards] == list(range(SHARDS))  # type: ignore[index]
    for s in shards:  # type: ignore[attr-defined]
        assert s["replicas"] == [1, 2, 3] and s["learners"] == []
        assert s["leader_address"] == addresses[s["leader"]]
        assert s["commit_index"] >= 1
    assert info["meta"]["voters"] == [1, 2, 3]  # type: ignore[index]
    assert info["moves"] == []

    # `tide status` prints the shard map; a join of an existing id at another address is
    # a conflict, a bad address bad input (joins that move shards: test_sharded_join.py)
    out = tide("status", "--url", c.url(3))
    assert out.returncode == 0, out.stderr
    assert "shard_count: 8" in out.stdout and "leader_address" in out.stdout
    r = c.http.post(c.url(1) + "/v1/cluster/nodes", json={"id": 2, "address": "127.0.0.1:9"})
    assert r.status_code == 409 and "already a member" in r.json()["error"]["message"]
    r = c.http.post(c.url(3) + "/v1/cluster/nodes", json={"id": 9, "address": "nowhere"})
    assert r.status_code == 400 and "host:port" in r.json()["error"]["message"]


def tide(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidekv", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_a_hash_tagged_pair_lands_on_one_shard(sharded: ProcCluster) -> None:
    c = sharded
    a = c.put(1, "{user42}:contacts:7", b"a").json()
    b = c.put(2, "{user42}:profile", b"b").json()
    assert a["shard"] == b["shard"] == shard_of("user42", SHARDS)
    # a prefix inside the tag is listed (and watched) from that one shard, in order
    assert list_all(c, 3, "{user42}:", 1) == ["{user42}:contacts:7", "{user42}:profile"]
    with c.http.stream(
        "GET", c.url(1) + "/v1/watch", params={"prefix": "{user42}:", "since": "0"}, timeout=30
    ) as resp:
        assert resp.status_code == 200
        events = sse_events(resp, 2)
    assert [d["key"] for _, d in events] == ["{user42}:contacts:7", "{user42}:profile"]


def test_listing_across_shards_is_in_key_order_with_paging(sharded: ProcCluster) -> None:
    c = sharded
    keys = keys_over_every_shard()
    for n, k in enumerate(keys):
        assert c.put(1 + n % 3, k, b"x").status_code == 200
    assert c.put(1, "other", b"x").status_code == 200
    for limit in (1, 5, 7, len(keys), 100):
        assert list_all(c, 1 + limit % 3, "k", limit) == keys, limit
    # one shard's listing holds exactly its keys
    for s in range(SHARDS):
        mine = [k for k in keys if shard_of(k, SHARDS) == s]
        assert list_all(c, 2, "k", 2, shard=str(s)) == mine
    r = c.http.get(c.url(1) + "/v1/kv", params={"shard": str(SHARDS)})
    assert r.status_code == 400 and "shard" in r.json()["error"]["message"]


def test_watch_one_shard_and_refuse_a_revision_for_the_feed_across_shards(
    sharded: ProcCluster,
) -> None:
    c = sharded
    # a plain revision names no shard: the feed across shards refuses it
    r = c.http.get(c.url(1) + "/v1/watch", params={"since": "7"})
    assert r.status_code == 400 and "single-shard revision" in r.json()["error"]["message"]
    keys = keys_over_every_shard(2)
    target = shard_of(keys[0], SHARDS)
    mine = [k for k in keys if shard_of(k, SHARDS) == target]
    with c.http.stream(
        "GET", c.url(2) + "/v1/watch", params={"shard": str(target), "since": "0"}, timeout=30
    ) as resp:
        assert resp.status_code == 200
        for n, k in enumerate(keys):
            assert c.put(1 + n % 3, k, b"w").status_code == 200
        events = sse_events(resp, len(mine))
    assert [d["key"] for _, d in events] == mine
    assert {d["shard"] for _, d in events} == {target}


def test_a_crash_and_restart_of_every_node_keeps_the_data_and_the_placement(
    sharded: ProcCluster,
) -> None:
    c = sharded
    keys = keys_over_every_shard()
    for n, k in enumerate(keys):
        assert c.put(1 + n % 3, k, k.encode()).status_code == 200
    before = wait_all_led(c, 1, [1, 2, 3])
    for i in (1, 2, 3):  # a crash of every node: acknowledged writes are in the WALs
        c.kill(i)
    recorded = json.loads((c.data_dir(1) / "node.json").read_text())
    assert recorded["shards"] == SHARDS
    assert [m[0] for m in recorded["members"]] == [1, 2, 3]
    c.start_all()
    for i in (1, 2, 3):
        c.wait_ready(i)
    after = wait_all_led(c, 3, [1, 2, 3])
    for field in ("cluster_id", "shard_count"):
        assert after[field] == before[field], field
    members = [(n["id"], n["address"], n["raft_address"]) for n in after["nodes"]]  # type: ignore[attr-defined]
    assert members == [(n["id"], n["address"], n["raft_address"]) for n in before["nodes"]]  # type: ignore[attr-defined]
    place = [(s["id"], s["replicas"]) for s in after["shards"]]  # type: ignore[attr-defined]
    assert place == [(s["id"], s["replicas"]) for s in before["shards"]]  # type: ignore[attr-defined]
    for n, k in enumerate(keys):
        r = c.get(1 + n % 3, k)
        assert r.status_code == 200 and r.content == k.encode(), (k, r.text)
    assert list_all(c, 2, "k", 10) == keys


def test_sigkill_of_one_node_leaves_every_shard_serving(sharded: ProcCluster) -> None:
    c = sharded
    keys = keys_over_every_shard()
    for n, k in enumerate(keys):
        assert c.put(1 + n % 3, k, b"before").status_code == 200
    c.kill(3)
    wait_all_led(c, 1, [1, 2])
    for n, k in enumerate(keys):
        put_retrying(c, [1 + n % 2, 2 - n % 2], k, b"after")
    for n, k in enumerate(keys):
        r = c.get(2 - n % 2, k)
        assert r.status_code == 200 and r.content == b"after", (k, r.text)
    assert list_all(c, 1, "k", 6) == keys
    info = c.cluster(2)
    assert info is not None
    reach = {n["id"]: n["reachable"] for n in info["nodes"]}
    assert reach == {1: True, 2: True, 3: False}


def test_a_single_node_sharded_cluster_serves_every_shard(tmp_path: Path) -> None:
    c = ProcCluster(tmp_path, 1, shards=4)
    c.start_all()
    try:
        c.wait_ready(1)
        keys = [f"solo{n}" for n in range(20)]
        for k in keys:
            r = c.put(1, k, b"s")
            assert r.status_code == 200 and r.json()["shard"] == shard_of(k, 4), r.text
        assert {shard_of(k, 4) for k in keys} == set(range(4))
        assert list_all(c, 1, "solo", 3) == sorted(keys)
        info = c.cluster(1)
        assert info is not None and info["shard_count"] == 4
        assert [s["replicas"] for s in info["shards"]] == [[1]] * 4
        assert {s["leader"] for s in info["shards"]} == {1}
        c.stop(1)
        # the shard count is fixed at creation: another one is refused, none keeps it
        r = tide("serve", "--data-dir", str(c.data_dir(1)), "-a", c.address(1), "--shards", "2")
        assert r.returncode == 2 and "fixed when a cluster is created" in r.stderr, r.stderr
        c.procs[1] = subprocess.Popen(
            [sys.executable, "-m", "tidekv", "serve", "-d", str(c.data_dir(1)), "-a", c.address(1)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        c.wait_ready(1)
        assert list_all(c, 1, "solo", 50) == sorted(keys)
        info = c.cluster(1)
        assert info is not None and info["shard_count"] == 4
    finally:
        c.close()


def test_four_nodes_route_to_the_nodes_holding_each_shard(tmp_path: Path) -> None:
    """With 4 nodes and 3 replicas a node lacks some shards: it forwards their requests
    to a node that has one, and fetches their pages for a listing across shards."""
    c = ProcCluster(tmp_path, 4, shards=SHARDS)
    c.start_all()
    try:
        for i in (1, 2, 3, 4):
            c.wait_ready(i)
        info = wait_all_led(c, 1, [1, 2, 3, 4])
        placed = {s["id"]: s["replicas"] for s in info["shards"]}  # type: ignore[attr-defined]
        assert all(len(r) == 3 for r in placed.values())
        lacking = {i: [s for s, r in placed.items() if i not in r] for i in (1, 2, 3, 4)}
        assert all(lacking.values()), lacking  # every node lacks a shard: routing is needed
        for s in info["shards"]:  # type: ignore[attr-defined]
            assert s["local"] == (1 in s["replicas"])
        keys = keys_over_every_shard()
        for n, k in enumerate(keys):
            r = c.put(1 + n % 4, k, k.encode())
            assert r.status_code == 200 and r.json()["shard"] == shard_of(k, SHARDS), r.text
        for n, k in enumerate(keys):
            r = c.get(1 + (n + 1) % 4, k)
            assert r.status_code == 200 and r.content == k.encode(), (k, r.text)
        for i in (1, 2, 3, 4):
            assert list_all(c, i, "k", 4) == keys
            s = lacking[i][0]
            mine = [k for k in keys if shard_of(k, SHARDS) == s]
            assert list_all(c, i, "k", 2, shard=str(s)) == mine  # forwarded
    finally:
        c.close()
