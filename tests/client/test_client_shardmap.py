"""The client's shard map, as a unit: what it makes of GET /v1/cluster answers."""

from __future__ import annotations

import httpx

from tidekv.client import _Call, _ShardMap
from tidekv.sharding.keys import shard_of


def put(key: str) -> _Call:
    return _Call("PUT", "/v1/kv/" + key, write=True, key=key)


def sharded_body(shards: int, nodes: int = 3) -> dict[str, object]:
    return {
        "shard_count": shards,
        "nodes": [{"id": n, "address": f"127.0.0.1:{7000 + n}"} for n in range(1, nodes + 1)],
        "shards": [
            {"id": s, "leader": 1 + s % nodes, "leader_address": f"127.0.0.1:{7001 + s % nodes}"}
            for s in range(shards)
        ],
    }


def test_keys_go_to_their_shard_leader() -> None:
    m = _ShardMap(True)
    m.load(sharded_body(64))
    assert not m.stale
    for key in ("user/1", "{user42}:a", "{user42}:b", "zz"):
        s = shard_of(key, 64)
        assert m.target(put(key)) == f"http://127.0.0.1:{7001 + s % 3}"
    assert m.target(put("{user42}:a")) == m.target(put("{user42}:b"))
    assert m.target(_Call("GET", "/v1/kv")) is None  # listings: the configured URLs


def test_today_cluster_without_shard_count_is_one_shard() -> None:
    m = _ShardMap(True)
    m.load(
        {
            "nodes": [{"id": 1, "address": "127.0.0.1:1"}, {"id": 2, "address": "127.0.0.1:2"}],
            "shards": [{"id": 0, "leader": 2}],
        }
    )
    assert m.shards == 1 and m.target(put("anything")) == "http://127.0.0.1:2"


def test_a_shard_without_leader_keeps_the_map_stale() -> None:
    m = _ShardMap(True)
    body = sharded_body(4)
    body["shards"][2]["leader_address"] = None  # type: ignore[index]
    body["shards"][2]["leader"] = None  # type: ignore[index]
    m.load(body)
    assert m.stale and len(m.leaders) == 3


def test_forwarded_answers_and_not_leader_mark_it_stale() -> None:
    m = _ShardMap(True)
    m.load(sharded_body(4))
    m.answered(httpx.Response(200, headers={"X-Tide-Forwarded-By": "2"}))
    assert m.stale
    m.load(sharded_body(4))
    m.answered(httpx.Response(503, json={"error": {"code": "unavailable", "message": "x"}}))
    assert not m.stale
    m.answered(httpx.Response(503, json={"error": {"code": "not_leader", "message": "x"}}))
    assert m.stale


def test_an_unreachable_leader_is_dropped() -> None:
    m = _ShardMap(True)
    m.load(sharded_body(4))
    base = m.target(put("k"))
    assert base is not None
    m.lost(base, unreachable=True)
    m.load(sharded_body(4))  # the map still names it: not routed to for a while
    assert m.target(put("k")) is None


def test_route_false_and_local_servers_route_nothing() -> None:
    off = _ShardMap(False)
    off.load(sharded_body(4))
    assert off.target(put("k")) is None and not off.due(put("k"))
    local = _ShardMap(True)
    local.load({"mode": "local", "nodes": [{"id": 1, "address": "x:1"}], "shards": [{"id": 0}]})
    assert not local.stale and local.target(put("k")) is None


def test_a_map_that_cannot_be_loaded_is_asked_for_less_often() -> None:
    import pytest

    from tidekv import Client
    from tidekv.chaos.ports import port_free
    from tidekv.errors import Unavailable

    port = next(p for p in range(47000, 47100) if port_free(p))
    with Client(f"http://127.0.0.1:{port}", retries=0) as db:
        with pytest.raises(Unavailable, match="connection refused"):
            db.put("k", 1)
        assert db._map.loads == 0 and db._map.empty == 1
        assert not db._map.due(put("k"))  # not again within the next second
