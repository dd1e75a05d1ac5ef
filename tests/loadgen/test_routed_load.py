"""bench/cluster.py's load generator with ``routes`` (what bench/scaling.py uses to send
each key to its shard leader): connections split over the targets in proportion to their
requests, and each target receives only its own requests. Two in-process servers."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for bench/

from bench import cluster as cb


class Recording(cb.TrivialServer):
    """The trivial server, recording the first line of every request it answers."""

    def __init__(self, seen: list[bytes], conns: list[int]) -> None:
        super().__init__()
        self.seen = seen
        conns[0] += 1

    def data_received(self, data: bytes) -> None:
        heads = (self.buf + data).split(b"\r\n\r\n")[:-1]  # complete header blocks only
        self.seen.extend(h[h.find(b"PUT ") :].split(b"\r\n", 1)[0] for h in heads if b"PUT " in h)
        super().data_received(data)


async def scenario() -> tuple[cb.Load, list[list[bytes]], list[int]]:
    loop = asyncio.get_running_loop()
    seen: list[list[bytes]] = [[], []]
    conns = [[0], [0]]
    servers = [
        await loop.create_server(lambda i=i: Recording(seen[i], conns[i]), cb.HOST, 0)
        for i in range(2)
    ]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    a = [cb.tide_put(f"a-{i:012d}", b"x" * 10) for i in range(3)]
    b = [cb.tide_put("b-000000000000", b"y" * 10)]
    try:
        load = await cb.drive(0, [], 8, 0.0, 0.2, routes=[(ports[0], a), (ports[1], b)])
    finally:
        for s in servers:
            s.close()
    return load, seen, [c[0] for c in conns]


def test_routes_split_connections_and_keep_each_target_to_its_requests() -> None:
    load, seen, conns = asyncio.run(scenario())
    assert conns == [6, 2]  # 8 connections, 3:1 by requests
    assert load.ok > 0 and load.errors == 0
    assert seen[0] and seen[1]
    assert all(line.startswith(b"PUT /v1/kv/a-") for line in seen[0])
    assert all(line == b"PUT /v1/kv/b-000000000000 HTTP/1.1" for line in seen[1])
