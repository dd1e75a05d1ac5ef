"""tidekv.scatter: scatter-gather over per-shard calls.

Fakes for the unit layer (bounded fan-out, one failing shard fails the listing, a broken
shard stream is reopened from its last revision); then real servers over real sockets,
one embedded store per "shard" (tidekv.testing.local_server), bound with HTTPShards.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tidekv.errors import Gone, InvalidInput, TideError, Unavailable
from tidekv.scatter import HTTPShards, Scatter
from tidekv.sharding.keys import shard_of
from tidekv.sharding.scatter import WatchCursor
from tidekv.testing import LocalServer, local_server


class FakeShards:
    def __init__(self, keys: list[str], shards: int) -> None:
        self.by_shard: dict[int, list[str]] = {s: [] for s in range(shards)}
        for k in sorted(keys):
            self.by_shard[shard_of(k, shards)].append(k)
        self.in_flight = 0
        self.most = 0
        self.calls: list[int] = []
        self.broken: set[int] = set()

    async def fetch(self, shard: int, params: dict[str, str]) -> Mapping[str, Any]:
        self.calls.append(shard)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.001)
            if shard in self.broken:
                raise Unavailable("no quorum")
            start, limit = params.get("start"), int(params["limit"])
            prefix = params.get("prefix", "")
            keys = [k for k in self.by_shard[shard] if k.startswith(prefix)]
            keys = [k for k in keys if start is None or k >= start]
            nxt = "more" if len(keys) > limit else None
            return {"items": [{"key": k} for k in keys[:limit]], "next": nxt}
        finally:
            self.in_flight -= 1

    async def no_stream(self, shard: int, since: int | None) -> AsyncIterator[Mapping[str, Any]]:
        raise AssertionError("not used")
        yield {}


def drain(scatter: Scatter, limit: int, **options: Any) -> list[list[str]]:
    async def main() -> list[list[str]]:
        pages, cursor = [], None
        while True:
            body = await scatter.scan(limit=limit, cursor=cursor, **options)
            pages.append([i["key"] for i in body["items"]])
            cursor = body["next"]
            if cursor is None:
                return pages

    return asyncio.run(main())


def test_listing_merges_in_key_order_with_bounded_fan_out() -> None:
    keys = [f"user/{i:03}" for i in range(300)]
    fake = FakeShards(keys, 64)
    scatter = Scatter(64, fake.fetch, fake.no_stream, concurrency=5)
    pages = drain(scatter, 50)
    assert pages == [keys[i : i + 50] for i in range(0, 300, 50)]
    assert fake.most == 5  # never more shards asked at once than allowed


def test_one_failing_shard_fails_the_listing_naming_it() -> None:
    fake = FakeShards([f"k{i}" for i in range(100)], 8)
    fake.broken.add(3)
    scatter = Scatter(8, fake.fetch, fake.no_stream)
    with pytest.raises(Unavailable, match="shard 3 did not answer: no quorum") as info:
        asyncio.run(scatter.scan(limit=10))
    assert info.value.details["shard"] == 3


def test_a_hash_tag_prefix_asks_one_shard() -> None:
    keys = [f"{{user42}}:contact:{i}" for i in range(20)] + [f"other/{i}" for i in range(50)]
    fake = FakeShards(keys, 64)
    scatter = Scatter(64, fake.fetch, fake.no_stream)
    pages = drain(scatter, 7, prefix="{user42}:")
    assert [k for p in pages for k in p] == sorted(k for k in keys if k.startswith("{user42}:"))
    assert set(fake.calls) == {shard_of("{user42}", 64)}


def test_a_bad_cursor_is_invalid_input() -> None:
    fake = FakeShards([], 4)
    scatter = Scatter(4, fake.fetch, fake.no_stream)
    with pytest.raises(InvalidInput, match="list cursor"):
        asyncio.run(scatter.scan(limit=10, cursor="k1.!!"))
    with pytest.raises(InvalidInput, match="watch cursor"):
        asyncio.run(anext(aiter(scatter.watch(since="garbage"))))


def test_a_shard_position_that_is_no_revision_ends_the_watch() -> None:
    async def stream(shard: int, since: int | None) -> AsyncIterator[Mapping[str, Any]]:
        yield {"cursor": "w1.AAAA"}

    async def no_fetch(shard: int, params: dict[str, str]) -> Mapping[str, Any]:
        raise AssertionError

    async def main() -> None:
        async for _ in Scatter(2, no_fetch, stream).watch():
            pass

    with pytest.raises(TideError, match="not a revision"):
        asyncio.run(asyncio.wait_for(main(), 20))
    with pytest.raises(InvalidInput, match="limit"):
        asyncio.run(Scatter(2, no_fetch, stream).scan(limit=-1))


def test_a_broken_shard_stream_is_reopened_from_its_last_revision() -> None:
    opened: list[tuple[int, int | None]] = []

    async def stream(shard: int, since: int | None) -> AsyncIterator[Mapping[str, Any]]:
        opened.append((shard, since))
        if since is None:
            yield {"cursor": "0"}
            since = 0
        for rev in range(max(1, since), 7):  # a reopened stream sends its last one again
            # shard 1 breaks after each second event
            yield {"type": "put", "key": f"s{shard}/{rev}", "revision": rev}
            if shard == 1 and rev % 2 == 0 and rev != since:
                raise Unavailable("connection lost")
        await asyncio.sleep(30)

    async def no_fetch(shard: int, params: dict[str, str]) -> Mapping[str, Any]:
        raise AssertionError

    async def nap(_: float) -> None:
        await asyncio.sleep(0)

    async def main() -> list[dict[str, Any]]:
        scatter = Scatter(2, no_fetch, stream, sleep=nap)
        out = []
        async for item in scatter.watch():
            out.append(item)
            if sum(1 for i in out if "key" in i) == 12:
                return out
        raise AssertionError

    out = asyncio.run(main())
    assert out[0] == {"cursor": WatchCursor((0, 0)).encode()}
    for shard in (0, 1):
        assert [i["revision"] for i in out if i.get("key", "").startswith(f"s{shard}/")] == list(
            range(1, 7)
        )
    assert [s for s in opened if s[0] == 1] == [(1, None), (1, 2), (1, 4), (1, 6)]
    last = WatchCursor.decode(out[-1]["cursor"], 2)
    assert last == WatchCursor((6, 6))


def test_a_gone_shard_ends_the_watch_with_gone() -> None:
    async def stream(shard: int, since: int | None) -> AsyncIterator[Mapping[str, Any]]:
        if shard == 1:
            raise Gone("compacted")
        yield {"cursor": "3"}
        await asyncio.sleep(30)

    async def no_fetch(shard: int, params: dict[str, str]) -> Mapping[str, Any]:
        raise AssertionError

    async def main() -> None:
        async for _ in Scatter(2, no_fetch, stream).watch(since=WatchCursor((1, 1)).encode()):
            pass

    with pytest.raises(Gone, match="compacted"):
        asyncio.run(asyncio.wait_for(main(), 20))


# -- real servers, one per shard -------------------------------------------------------

SHARDS = 3


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[LocalServer]]:
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(local_server(str(tmp_path / f"shard{s}"), "lsm"))
            for s in range(SHARDS)
        ]


def put(servers: list[LocalServer], key: str) -> None:
    url = servers[shard_of(key, SHARDS)].url
    r = httpx.put(f"{url}/v1/kv/{quote(key, safe='')}", content=key.encode())
    assert r.status_code == 200, r.text


def test_listing_over_real_servers(servers: list[LocalServer]) -> None:
    keys = sorted({f"user/{i:02}" for i in range(40)} | {"user/\u00e9", "user/a\0b", "zz"})
    for k in keys:
        put(servers, k)
    assert all(s.store.revision > 0 for s in servers)  # every shard holds some

    async def main() -> list[list[str]]:
        async with httpx.AsyncClient() as http:
            shards = HTTPShards(http, lambda s: servers[s].url, shard_param=False)
            scatter = Scatter(SHARDS, shards.fetch, shards.stream)
            pages, cursor = [], None
            while True:
                body = await scatter.scan(prefix="user/", limit=6, cursor=cursor)
                pages.append([i["key"] for i in body["items"]])
                if (cursor := body["next"]) is None:
                    return pages

    pages = asyncio.run(main())
    expected = [k for k in keys if k.startswith("user/")]
    assert pages == [expected[i : i + 6] for i in range(0, len(expected), 6)]


def test_listing_fails_when_a_real_shard_is_down(servers: list[LocalServer]) -> None:
    servers[1].stop()

    async def main() -> None:
        async with httpx.AsyncClient() as http:
            shards = HTTPShards(http, lambda s: servers[s].url, shard_param=False)
            await Scatter(SHARDS, shards.fetch, shards.stream).scan(limit=10)

    with pytest.raises(Unavailable, match="shard 1 did not answer"):
        asyncio.run(main())


def test_watch_over_real_servers_survives_a_shard_restart(
    servers: list[LocalServer], tmp_path: Path
) -> None:
    """Events from every shard, each once and in its shard's order, across a restart of
    one shard's server; then a new watch from a cursor in the middle gets exactly the
    rest."""
    first = [f"a/{i:02}" for i in range(12)]
    second = [f"b/{i:02}" for i in range(12)]
    restarted: list[LocalServer] = []

    async def main() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=30) as http:
            shards = HTTPShards(http, lambda s: servers[s].url, shard_param=False)
            scatter = Scatter(SHARDS, shards.fetch, shards.stream)
            out: list[dict[str, Any]] = []
            feed = scatter.watch()
            out.append(await anext(feed))  # the start position
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, lambda: [put(servers, k) for k in first])
            while sum(1 for i in out if "key" in i) < len(first):
                out.append(await anext(feed))

            def restart() -> None:
                old = servers[2]
                old.stop()
                old.service.close()
                old.store.close()  # (the fixture's second close does nothing)
                cm = local_server(str(tmp_path / "shard2"), "lsm", port=old.port)
                servers[2] = cm.__enter__()
                restarted.append(servers[2])
                stack.callback(cm.__exit__, None, None, None)
                for k in second:
                    put(servers, k)

            await loop.run_in_executor(None, restart)
            while sum(1 for i in out if "key" in i) < len(first) + len(second):
                out.append(await asyncio.wait_for(anext(feed), 30))
            await feed.aclose()
            return out

    with contextlib.ExitStack() as stack:  # stops the restarted server
        out = asyncio.run(main())
        assert restarted
        keys = [i["key"] for i in out if "key" in i]
        assert sorted(keys) == sorted(first + second)  # each once
        for s in range(SHARDS):
            mine = [i for i in out if "key" in i and shard_of(i["key"], SHARDS) == s]
            assert [i["key"] for i in mine] == sorted(i["key"] for i in mine)
            revs = [i["revision"] for i in mine]
            assert revs == sorted(revs)

        # resume from the cursor after the 5th event: exactly the rest, nothing twice
        events = [i for i in out if "key" in i]
        middle = events[4]["cursor"]

        async def rest() -> list[str]:
            async with httpx.AsyncClient(timeout=30) as http:
                shards = HTTPShards(http, lambda s: servers[s].url, shard_param=False)
                feed = Scatter(SHARDS, shards.fetch, shards.stream).watch(since=middle)
                got: list[str] = []
                while len(got) < len(events) - 5:
                    item = await asyncio.wait_for(anext(feed), 30)
                    if "key" in item:
                        got.append(item["key"])
                await feed.aclose()
                return got

        got = asyncio.run(rest())
        assert sorted(got) == sorted(i["key"] for i in events[5:])
