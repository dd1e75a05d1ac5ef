"""The change feed over SSE: ids are cursors, since / Last-Event-ID resume exactly after
them, prefixes filter, idle streams get heartbeats, and a stopping server ends them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx

from tidekv.testing import LocalServer, local_server


def sse_events(lines: Iterator[str], n: int) -> list[tuple[str | None, dict[str, object]]]:
    """The first ``n`` data events of a stream as (id, data)."""
    out: list[tuple[str | None, dict[str, object]]] = []
    ev_id, data = None, None
    for line in lines:
        if line.startswith("id: "):
            ev_id = line[4:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and data is not None:
            out.append((ev_id, data))
            data = None
            if len(out) == n:
                break
    return out


def test_events_carry_their_cursor_and_the_change(http: httpx.Client) -> None:
    w1 = http.put("/v1/kv/a", json={"n": 1}).json()
    w2 = http.put("/v1/kv/b", content=b"\x01", headers={"Content-Type": "x/y"}).json()
    w3 = http.delete("/v1/kv/a").json()
    with http.stream("GET", "/v1/watch", params={"since": "0"}) as s:
        assert s.status_code == 200
        assert s.headers["content-type"] == "text/event-stream"
        events = sse_events(s.iter_lines(), 3)
    assert [e[0] for e in events] == ["1", "2", "3"]
    put, raw, dele = (e[1] for e in events)
    assert set(put) >= {"type", "key", "version", "parents", "revision", "shard", "hlc"}
    assert put["type"] == "put" and put["key"] == "a" and put["value"] == {"n": 1}
    assert put["version"] == w1["version"] and put["hlc"] == w1["hlc"] and put["shard"] == 0
    assert raw["value_b64"] == "AQ==" and raw["content_type"] == "x/y"
    assert raw["version"] == w2["version"]
    assert dele["type"] == "delete" and dele["parents"] == [w1["version"]]
    assert dele["version"] == w3["version"] and "value" not in dele


def test_last_event_id_wins_over_since_and_prefix_filters(http: httpx.Client) -> None:
    for i in range(6):
        http.put(f"/v1/kv/{'x' if i % 2 else 'y'}/{i}", content=b"v")
    headers = {"Last-Event-ID": "3"}
    with http.stream("GET", "/v1/watch?since=0&prefix=x/", headers=headers) as s:
        events = sse_events(s.iter_lines(), 2)
    assert [(e[0], e[1]["key"]) for e in events] == [("4", "x/3"), ("6", "x/5")]


def test_watch_from_now_on_sees_later_writes_only(http: httpx.Client, live: LocalServer) -> None:
    http.put("/v1/kv/old", content=b"1")
    with (
        httpx.Client(base_url=live.url, timeout=30) as watcher,
        watcher.stream("GET", "/v1/watch") as s,
    ):
        lines = s.iter_lines()
        assert next(lines) == "id: 1"  # the position it starts from
        http.put("/v1/kv/new", content=b"2")
        events = sse_events(lines, 1)
    assert events[0][0] == "2" and events[0][1]["key"] == "new"


def test_idle_stream_gets_heartbeats_and_ends_when_the_server_stops(tmp_path: Path) -> None:
    with local_server(str(tmp_path), "memory", app_options={"heartbeat": 0.05}) as live:
        seen: list[str] = []
        opened = threading.Event()

        def read() -> None:
            with httpx.stream("GET", live.url + "/v1/watch?since=0", timeout=30) as s:
                for line in s.iter_lines():
                    seen.append(line)
                    if line.startswith(":"):
                        opened.set()

        reader = threading.Thread(target=read)
        reader.start()
        assert opened.wait(30)
    # leaving local_server stopped the server: the open stream ended, the reader returned
    reader.join(30)
    assert not reader.is_alive()
    assert ": keep-alive" in seen
