"""The change feed across shards (``GET /v1/watch`` without ``shard=``) on sharded
clusters of real ``tide serve --shards 8`` processes: every change once, each key's
changes in order, ``w1.`` cursors that resume on another node (``Last-Event-ID``), the
clients and ``tide watch`` over it, bad cursors refused with 400; and on four nodes,
where every node lacks some shards and streams them from a node that holds them (and
from another one when that node is SIGKILLed)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tidekv
from tidekv.client import Event
from tidekv.sharding.keys import shard_of
from tidekv.sharding.scatter import WatchCursor

from .proc_cluster import ProcCluster, running
from .test_sharded_cluster import (
    SHARDS,
    keys_over_every_shard,
    put_retrying,
    sharded,
    wait_all_led,
)

__all__ = ["sharded"]  # the fixture, shared with test_sharded_cluster.py

pytestmark = pytest.mark.timeout(180)

Acked = list[tuple[str, str]]  # (key, version) in the order acknowledged


class Feed:
    """The frames of one open SSE response, read in order."""

    def __init__(self, resp: httpx.Response) -> None:
        assert resp.status_code == 200, resp.read()
        self.lines = resp.iter_lines()

    def frame(self) -> tuple[str | None, dict[str, Any] | None]:
        """The next frame: (id, data); data None for a position (an id only)."""
        ev_id: str | None = None
        kind = ""
        data: dict[str, Any] | None = None
        for line in self.lines:
            if line.startswith("id:"):
                ev_id = line[3:].strip()
            elif line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
            elif line == "":
                if ev_id is None and data is None:
                    continue  # after a keep-alive comment
                assert kind == "", (kind, data)
                return ev_id, data
        raise AssertionError("the stream ended")

    def position(self) -> str:
        """The first frame of a watch from now on: the position of now."""
        ev_id, data = self.frame()
        assert data is None and ev_id is not None, (ev_id, data)
        return ev_id

    def events(self, n: int) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        while len(out) < n:
            ev_id, data = self.frame()
            if data is not None:
                assert ev_id is not None
                out.append((ev_id, data))
        return out

    def until(self, sentinels: set[str]) -> list[tuple[str, dict[str, Any]]]:
        """Events until every sentinel key was seen, without the sentinels. A sentinel
        per shard, written last, comes after every earlier change of its shard: so any
        replay of a shard would show up before it."""
        out: list[tuple[str, dict[str, Any]]] = []
        missing = set(sentinels)
        while missing:
            ev = self.events(1)[0]
            if ev[1]["key"] in sentinels:
                missing.discard(ev[1]["key"])
            else:
                out.append(ev)
        return out


def sentinels() -> dict[int, str]:
    """One key per shard, under the test keys' prefix ``k`` (a watch of it sees them)."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < SHARDS:
        found.setdefault(shard_of(f"kz{n}", SHARDS), f"kz{n}")
        n += 1
    return found


def write_rounds(c: ProcCluster, nodes: list[int], keys: list[str], rounds: int) -> Acked:
    acked: Acked = []
    for rnd in range(rounds):
        for n, k in enumerate(keys):
            r = c.put(nodes[(n + rnd) % len(nodes)], k, f"{k} round {rnd}".encode())
            assert r.status_code == 200, r.text
            acked.append((k, r.json()["version"]))
    return acked


def write_sentinels(c: ProcCluster, node: int) -> set[str]:
    keys = set(sentinels().values())
    for k in sorted(keys):
        assert c.put(node, k, b"end").status_code == 200
    return keys


def check_once_in_key_order(got: list[tuple[str, dict[str, Any]]], acked: Acked) -> None:
    """Exactly the acknowledged changes, each once; each key's in the order written;
    every id a ``w1.`` cursor, equal to the event's own ``cursor``."""
    pairs = [(d["key"], d["version"]) for _, d in got]
    assert len(pairs) == len(set(pairs)) == len(acked)
    assert set(pairs) == set(acked)
    for k in {k for k, _ in acked}:
        assert [v for kk, v in pairs if kk == k] == [v for kk, v in acked if kk == k], k
    for ev_id, d in got:
        assert ev_id.startswith("w1.") and d["cursor"] == ev_id
        assert d["shard"] == shard_of(d["key"], SHARDS)


def http_client() -> httpx.Client:
    return httpx.Client(timeout=httpx.Timeout(10.0, read=60.0))


def test_feed_across_shards_resumes_on_another_node_with_every_change_once(
    sharded: ProcCluster,
) -> None:
    c = sharded
    keys = keys_over_every_shard(2)
    with http_client() as http:
        with http.stream("GET", c.url(1) + "/v1/watch", params={"prefix": "k"}) as resp:
            feed = Feed(resp)
            now = feed.position()  # from now on: every shard's position, merged
            assert now.startswith("w1.")
            acked = write_rounds(c, [1, 2, 3], keys, 3)  # during the watch, through all
            first = feed.events(len(acked) // 2)  # then the stream stops mid-way
        # resume on another node: Last-Event-ID (it beats since=) gives exactly the rest
        with http.stream(
            "GET",
            c.url(2) + "/v1/watch",
            params={"prefix": "k", "since": now},
            headers={"Last-Event-ID": first[-1][0]},
        ) as resp:
            feed = Feed(resp)
            ends = write_sentinels(c, 3)
            rest = feed.until(ends)
        check_once_in_key_order(first + rest, acked)
        assert {d["shard"] for _, d in first + rest} == set(range(SHARDS))
        # the position of "now" resumes on a third node with everything since then
        with http.stream("GET", c.url(3) + "/v1/watch", params={"since": now}) as resp:
            everything = Feed(resp).until(ends)
        check_once_in_key_order(everything, acked)

        # bad cursors: 400 with a JSON error, from since= or Last-Event-ID
        other_count = WatchCursor.zero(4).encode()
        bad = {
            "yesterday": "not a tidekv watch cursor",
            "42": "single-shard revision",
            "w1.AAAA": "watch cursor",
            other_count: "4 shards",
        }
        for cursor, words in bad.items():
            for how in ("since", "header"):
                r = http.get(
                    c.url(1) + "/v1/watch",
                    params={"since": cursor} if how == "since" else {},
                    headers={"Last-Event-ID": cursor} if how == "header" else {},
                )
                assert r.status_code == 400, (cursor, r.text)
                err = r.json()["error"]
                assert err["code"] == "invalid_input" and words in err["message"], err


def tide(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidekv", *args], capture_output=True, text=True, timeout=120
    )


def test_clients_and_tide_watch_follow_the_feed_across_shards(sharded: ProcCluster) -> None:
    c = sharded
    keys = keys_over_every_shard(2)
    acked = write_rounds(c, [1, 2, 3], keys, 2)
    assert c.put(1, "other", b"not under the prefix").status_code == 200
    total = len(acked)

    with tidekv.Client([c.url(3)], timeout=10.0) as client:
        it = client.watch("k", since="0")
        events = [next(it) for _ in range(total)]
        it.close()
    assert all((e.key, e.version) == (e.data["key"], e.data["version"]) for e in events)
    check_once_in_key_order([(e.cursor, e.data) for e in events], acked)

    # resumed from the middle on another node, by the async client
    middle = events[total // 3].cursor

    async def rest() -> list[Event]:
        async with tidekv.AsyncClient([c.url(2)], timeout=10.0) as ac:
            out: list[Event] = []
            async for e in ac.watch("k", since=middle):
                out.append(e)
                if len(out) == total - total // 3 - 1:
                    break
            return out

    more = asyncio.run(rest())
    check_once_in_key_order([(e.cursor, e.data) for e in events[: total // 3 + 1] + more], acked)

    out = tide(
        "watch", "--prefix", "k", "--since", "0", "-n", str(total), "--json", "--url", c.url(1)
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    check_once_in_key_order([(d["cursor"], d) for d in lines], acked)
    out = tide("watch", "--since", "42", "-n", "1", "--url", c.url(1))
    assert out.returncode == 2 and "single-shard revision" in out.stderr, out


def test_four_nodes_stream_the_shards_they_lack_from_nodes_that_hold_them(
    tmp_path: Path,
) -> None:
    with running(tmp_path, 4, shards=SHARDS) as c:
        info = wait_all_led(c, 1, [1, 2, 3, 4])
        placed = {s["id"]: s["replicas"] for s in info["shards"]}  # type: ignore[attr-defined]
        lacking = {i: {s for s, r in placed.items() if i not in r} for i in (1, 2, 3, 4)}
        assert all(lacking.values()), lacking
        keys = keys_over_every_shard(2)
        with http_client() as http:
            with http.stream("GET", c.url(4) + "/v1/watch") as resp:
                live = Feed(resp)
                live.position()  # node 4 knows where every shard is, the remote ones too
                acked = write_rounds(c, [1, 2, 3, 4], keys, 2)
                seen = live.events(len(acked))
            check_once_in_key_order(seen, acked)
            assert lacking[4] <= {d["shard"] for _, d in seen}
            # from the beginning on node 1, stopped mid-way, resumed on node 2
            with http.stream("GET", c.url(1) + "/v1/watch", params={"since": "0"}) as resp:
                first = Feed(resp).events(len(acked) // 2)
            with http.stream(
                "GET", c.url(2) + "/v1/watch", headers={"Last-Event-ID": first[-1][0]}
            ) as resp:
                feed = Feed(resp)
                rest = feed.until(write_sentinels(c, 3))
            check_once_in_key_order(first + rest, acked)

            # SIGKILL of the node that node 4 streams a shard it lacks from: that stream
            # is reopened on another holder, and the feed still has every change once
            view = c.cluster(4)
            assert view is not None
            lost = min(lacking[4])
            where = view["shards"][lost]  # its leader as node 4 saw it, else a replica
            victim = where["leader"] if where["leader"] is not None else where["replicas"][0]
            assert victim in (1, 2, 3), where
            alive = [i for i in (1, 2, 3, 4) if i != victim]
            with http.stream("GET", c.url(4) + "/v1/watch") as resp:
                live = Feed(resp)
                live.position()
                c.kill(victim)
                after: Acked = []
                for n, k in enumerate(keys):
                    r = put_retrying(c, [alive[n % 3], alive[(n + 1) % 3]], k, b"after")
                    after.append((k, r.json()["version"]))
                ends = set(sentinels().values())
                for k in sorted(ends):
                    put_retrying(c, alive, k, b"end")
                got = live.until(ends)
            check_once_in_key_order(got, after)
            assert lost in {d["shard"] for _, d in got}


@pytest.fixture
def solo_unsharded(tmp_path: Path) -> Iterator[ProcCluster]:
    with running(tmp_path, 1, shards=1) as c:
        yield c


def test_an_unsharded_cluster_keeps_plain_revision_cursors(solo_unsharded: ProcCluster) -> None:
    c = solo_unsharded
    for n in range(3):
        assert c.put(1, f"k{n}", b"v").status_code == 200
    with http_client() as http:
        with http.stream("GET", c.url(1) + "/v1/watch", params={"since": "1"}) as resp:
            got = Feed(resp).events(2)
        assert [(i, d["key"]) for i, d in got] == [("2", "k1"), ("3", "k2")]
        with http.stream("GET", c.url(1) + "/v1/watch") as resp:
            assert Feed(resp).position() == "3"
        r = http.get(c.url(1) + "/v1/watch", params={"since": WatchCursor.zero(8).encode()})
        assert r.status_code == 400 and "revision" in r.json()["error"]["message"]
