"""The change feed (SSE ``GET /v1/watch``, ``Client.watch``, ``tide watch``) on a real
3-node cluster: served by a follower, resumed on another node after the one serving the
stream is SIGKILLed, every change exactly once and in per-key order. An unsharded cluster
(``--shards 1``): these check one group's revisions, 1, 2, ... as the cursor; the feed
across shards (``w1.`` cursors, resumed on another node, a SIGKILLed streaming node) is
tested in test_sharded_watch.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import tidekv
from tidekv.client import Event

from .proc_cluster import DEADLINE, ProcCluster, sse_events

pytestmark = pytest.mark.timeout(240)

KEYS = 5


class Writes:
    """Writes ``n`` values round-robin over KEYS keys through ``node``; remembers the
    acknowledged (key, version, value) in order."""

    def __init__(self, c: ProcCluster) -> None:
        self.c = c
        self.acked: list[tuple[str, str, bytes]] = []

    def write(self, node: int, n: int) -> None:
        start = len(self.acked)
        for seq in range(start, start + n):
            key, value = f"w/{seq % KEYS}", f"seq {seq}".encode()
            r = self.c.put(node, key, value)
            assert r.status_code == 200, r.text
            self.acked.append((key, r.json()["version"], value))


def started(c: ProcCluster, n: int) -> tuple[int, int, int, Writes]:
    """The leader, the two followers, and ``n`` writes done through the leader."""
    leader = c.leader()
    f1, f2 = (i for i in (1, 2, 3) if i != leader)
    w = Writes(c)
    w.write(leader, n)
    return leader, f1, f2, w


def check_exactly_once_in_order(events: list[Event], acked: list[Any]) -> None:
    """Every acknowledged write once, nothing else; revisions 1, 2, ... (so per-key order
    is the write order)."""
    assert [e.revision for e in events] == list(range(1, len(acked) + 1))
    assert [e.cursor for e in events] == [str(e.revision) for e in events]
    assert [(e.key, e.version, e.value) for e in events] == acked


def test_sse_through_a_follower_and_resume_by_cursor_on_another_node(
    unsharded_trio: ProcCluster,
) -> None:
    c = unsharded_trio
    leader, f1, f2, w = started(c, 12)
    with httpx.Client(timeout=httpx.Timeout(10.0, read=60.0)) as http:
        with http.stream("GET", c.url(f1) + "/v1/watch", params={"since": "0"}) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            first = sse_events(resp, 12)
        assert [ev_id for ev_id, _ in first] == [str(r) for r in range(1, 13)]
        assert [(d["key"], d["version"]) for _, d in first] == [(k, v) for k, v, _ in w.acked]
        assert all(d["type"] == "put" and d["shard"] == 0 for _, d in first)
        # resume on the other follower: after cursor 7 (Last-Event-ID beats since=)
        w.write(leader, 3)
        with http.stream(
            "GET",
            c.url(f2) + "/v1/watch",
            params={"since": "1"},
            headers={"Last-Event-ID": "7"},
        ) as resp:
            rest = sse_events(resp, 8)
        assert [d["revision"] for _, d in rest] == list(range(8, 16))
        assert [d["version"] for _, d in rest] == [v for _k, v, _ in w.acked[7:]]
        # a prefix and since= on the leader
        with http.stream(
            "GET", c.url(leader) + "/v1/watch", params={"since": "5", "prefix": "w/3"}
        ) as resp:
            only = sse_events(resp, 2)
        assert [(d["key"], d["revision"]) for _, d in only] == [("w/3", 9), ("w/3", 14)]
        # a bad cursor is a 400 JSON error from any node
        r = http.get(c.url(f1) + "/v1/watch", params={"since": "yesterday"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_input"


@pytest.mark.parametrize("fault", ["sigkill", "sigstop"])
def test_client_watch_resumes_after_the_serving_node_is_lost(
    unsharded_trio: ProcCluster, fault: str
) -> None:
    """SIGKILL ends the stream at once; a paused node (SIGSTOP) keeps the connection
    open, silent, until the client's read timeout gives up on it."""
    c = unsharded_trio
    leader, f1, f2, w = started(c, 20)
    total = 60
    events: list[Event] = []
    failure: list[BaseException] = []
    client = tidekv.Client([c.url(f1), c.url(f2), c.url(leader)], timeout=10.0)

    def follow() -> None:
        try:
            for event in client.watch(since="0", read_timeout=3.0):
                events.append(event)
                if len(events) == total:
                    return
        except BaseException as exc:  # reported by the test thread
            failure.append(exc)

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    try:
        wait_for(lambda: len(events) >= 20 or failure, "the first events")
        if fault == "sigkill":  # f1 serves the stream (the first URL)
            c.kill(f1)
        else:
            c.signal(f1, signal.SIGSTOP)
        w.write(leader, total - 20)
        t.join(DEADLINE)
        assert not failure, failure
        assert not t.is_alive(), f"{len(events)} of {total} events\n{c.logs()}"
    finally:
        client.close()
    check_exactly_once_in_order(events, w.acked)


def test_async_client_watch_resumes_after_the_serving_node_is_killed(
    unsharded_trio: ProcCluster,
) -> None:
    c = unsharded_trio
    leader, f1, f2, w = started(c, 20)
    total = 60

    async def run() -> list[Event]:
        events: list[Event] = []
        urls = [c.url(f1), c.url(f2), c.url(leader)]
        async with tidekv.AsyncClient(urls, timeout=10.0) as client:

            async def follow() -> None:
                stream = client.watch(since="0")
                try:
                    async for event in stream:
                        events.append(event)
                        if len(events) == total:
                            return
                finally:
                    await stream.aclose()

            task = asyncio.create_task(follow())
            try:
                deadline = time.monotonic() + DEADLINE
                while len(events) < 20:
                    assert not task.done() and time.monotonic() < deadline, "no first events"
                    await asyncio.sleep(0.05)
                await asyncio.to_thread(c.kill, f1)  # it serves the stream (the first URL)
                await asyncio.to_thread(w.write, leader, total - 20)
                await asyncio.wait_for(asyncio.shield(task), DEADLINE)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return events

    check_exactly_once_in_order(asyncio.run(run()), w.acked)


def test_tide_watch_survives_the_loss_of_its_node(
    unsharded_trio: ProcCluster, tmp_path: Path
) -> None:
    c = unsharded_trio
    leader, f1, f2, w = started(c, 10)
    total = 30
    out_path = tmp_path / "watch.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tidekv",
                "watch",
                "--since",
                "0",
                "-n",
                str(total),
                "--json",
                "--url",
                f"{c.url(f1)},{c.url(f2)}",
            ],
            stdout=out,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_for(lambda: len(out_path.read_bytes().splitlines()) >= 10, "the first lines")
        c.kill(f1)
        w.write(leader, total - 10)
        _, stderr = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    lines = [json.loads(x) for x in out_path.read_text().splitlines()]
    assert [(d["key"], d["version"], d["revision"]) for d in lines] == [
        (k, v, n) for n, (k, v, _) in enumerate(w.acked, 1)
    ]


def wait_for(cond: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not cond():
        assert time.monotonic() < deadline, f"no {what} within {DEADLINE} s"
        time.sleep(0.05)
