"""Client.watch / AsyncClient.watch: events in order, and exactly once across a server
restart (the client reconnects with Last-Event-ID and resumes after its last event)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import free_port

import tidekv
from tidekv.client import Event
from tidekv.errors import InvalidInput
from tidekv.testing import LocalServer, local_server


def wait_for(cond: Callable[[], bool], what: str) -> None:
    """Liveness only: the generous deadline is never a performance threshold."""
    deadline = time.monotonic() + 60
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def watch_sync(url: str, events: list[Event], n: int, since: str | None) -> None:
    with tidekv.Client(url, retries=1000) as c:
        for ev in c.watch(since=since):
            events.append(ev)
            if len(events) == n:
                return


def watch_async(url: str, events: list[Event], n: int, since: str | None) -> None:
    async def main() -> None:
        async with tidekv.AsyncClient(url, retries=1000) as c:
            async for ev in c.watch(since=since):
                events.append(ev)
                if len(events) == n:
                    return

    asyncio.run(main())


@pytest.mark.parametrize("watch", [watch_sync, watch_async], ids=["sync", "async"])
@pytest.mark.parametrize("since", ["1", None], ids=["since-1", "from-now"])
def test_watch_resumes_exactly_once_across_a_restart(
    tmp_path: Path, watch: Callable[..., None], since: str | None
) -> None:
    path, port = str(tmp_path / "db"), free_port()
    events: list[Event] = []
    with local_server(path, "lsm", port=port) as srv, tidekv.Client(srv.url) as writer:
        writer.put("before", "not for this watch")  # revision 1
        if since is not None:
            writer.put("k/0", 0)
        url = srv.url
        reader = threading.Thread(target=watch, args=(url, events, 8, since), daemon=True)
        reader.start()
        if since is None:  # from now on: wait until the watch stands, then write
            wait_for(lambda: srv.service.watching > 0, "the watch to stand")
            writer.put("k/0", 0)
        for i in range(1, 4):
            writer.put(f"k/{i}", i)
        wait_for(lambda: len(events) == 4, "the first four events")
    # down: the reader keeps trying its URL while the store changes elsewhere
    with local_server(path, "lsm") as elsewhere, tidekv.Client(elsewhere.url) as writer:
        for i in range(4, 6):
            writer.put(f"k/{i}", i)
    with local_server(path, "lsm", port=port) as srv, tidekv.Client(srv.url) as writer:
        for i in range(6, 8):
            writer.put(f"k/{i}", i)
        reader.join(60)
    assert not reader.is_alive()
    assert [e.revision for e in events] == list(range(2, 10))
    assert [e.cursor for e in events] == [str(r) for r in range(2, 10)]
    assert [e.json() for e in events] == list(range(8))
    assert {e.type for e in events} == {"put"}


def test_events_carry_values_and_deletes(client: tidekv.Client, live: LocalServer) -> None:
    client.put("a", b"\x00raw", content_type="x/y")
    client.put("b", {"doc": True})
    client.delete("a")
    got: list[Event] = []
    for ev in client.watch(since="0"):
        got.append(ev)
        if len(got) == 3:
            break
    assert [(e.type, e.key) for e in got] == [("put", "a"), ("put", "b"), ("delete", "a")]
    assert got[0].value == b"\x00raw" and got[0].data["content_type"] == "x/y"
    assert got[1].json() == {"doc": True}
    assert got[2].value is None and got[2].json() is None
    prefixed = next(iter(client.watch("b", since="0")))
    assert prefixed.key == "b"


def test_a_refused_cursor_raises(client: tidekv.Client) -> None:
    with pytest.raises(InvalidInput):
        next(iter(client.watch(since="not-a-cursor")))
