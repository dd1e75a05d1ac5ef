"""tidekv.AsyncClient against a real server: the same methods as Client, awaited."""

from __future__ import annotations

import asyncio

import pytest
from conftest import LosingProxy, free_port

import tidekv
from tidekv.errors import Conflict, KeyNotFound, PreconditionFailed, Unavailable
from tidekv.testing import LocalServer


def test_every_method(live: LocalServer) -> None:
    async def main() -> None:
        async with tidekv.AsyncClient(live.url) as c:
            w1 = await c.put("doc", {"v": 1})
            w2 = await c.put("doc", {"v": 2}, if_match=w1.version)
            assert w2.parents == (w1.version,)
            assert await c.get("doc") == live.store.get("doc")
            assert (await c.get("doc", version=w1.version)).json() == {"v": 1}
            assert (await c.get("doc", as_of=1)).json() == {"v": 1}
            await c.put("txt", "hello", author="ada")
            assert [i.key async for i in c.scan(page_size=1)] == ["doc", "txt"]
            assert [i.key for i in await c.list_keys("t")] == ["txt"]
            hist = await c.history("doc", page_size=1)
            assert hist == live.store.history("doc")
            assert len(await c.history("doc", limit=1)) == 1
            d = await c.diff("doc", w1.version, w2.version)
            assert d.changes == [{"op": "replace", "path": "/v", "value": 2}]
            rb = await c.rollback("doc", w1.version)
            assert rb.parents == (w2.version,)
            with pytest.raises(PreconditionFailed):
                await c.put("doc", {"v": 3}, if_match=w1.version)
            gone = await c.delete("txt")
            assert gone.deleted
            with pytest.raises(KeyNotFound):
                await c.get("txt")
            assert (await c.cluster())["shards"][0]["commit_index"] == 5
            with pytest.raises(Conflict):
                await c.add_node(2, "127.0.0.1:1")
            with pytest.raises(Conflict):
                await c.remove_node(2)
            assert await c.health() and await c.ready()
            events = []
            async for ev in c.watch(since="3"):
                events.append(ev)
                if len(events) == 2:
                    break
            assert [(e.type, e.key) for e in events] == [("put", "doc"), ("delete", "txt")]

    asyncio.run(main())


def test_retries_a_lost_answer_and_gives_up_on_a_dead_server(live: LocalServer) -> None:
    proxy = LosingProxy(live.port, lose=1)

    async def main() -> None:
        async with tidekv.AsyncClient(proxy.url, retries=2) as c:
            w = await c.put("once", "v")
            assert (await c.get("once")).version == w.version
        dead = f"http://127.0.0.1:{free_port()}"
        async with tidekv.AsyncClient(dead, retries=1) as c:
            with pytest.raises(Unavailable, match="connection refused"):
                await c.get("k")
            assert not await c.health()

    try:
        asyncio.run(main())
    finally:
        proxy.close()
    assert len(live.store.history("once")) == 1
