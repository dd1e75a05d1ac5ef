"""PeerTransport over real sockets on 127.0.0.1, on the default loop and on uvloop.

Every test runs inside :func:`run`, which fails the test if the loop reported an
unhandled error (a callback that raised, a task that died) or if a task is still
pending once the test's transports are closed. Waiting is on events (messages arriving,
reports, connections coming up), bounded by a generous deadline that only turns a hang
into a failure: no timing assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import socket
import struct
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, cast

import pytest
import uvloop

from tidekv.node.transport import (
    DEFAULT_MAX_FRAME_SIZE,
    PeerTransport,
    decode_frame,
    encode_frame,
)
from tidekv.raft import (
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

MT = MessageType
DEADLINE = 20.0  # seconds; only bounds a hang, never a performance expectation

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


Run = Callable[[Callable[[], Awaitable[None]]], None]
"""The ``run`` fixture: runs one test coroutine to completion."""


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Iterator[Run]:
    """Run a test coroutine on a fresh loop of the parametrised kind; check it ended clean."""
    factory = LOOPS[request.param]

    def runner(test: Callable[[], Awaitable[None]]) -> None:
        errors: list[dict[str, Any]] = []
        leftover: list[asyncio.Task[Any]] = []

        async def main() -> None:
            asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
            await test()
            await asyncio.sleep(0)  # let done-callbacks of finished tasks run
            leftover.extend(t for t in asyncio.all_tasks() if t is not asyncio.current_task())

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with asyncio.Runner(loop_factory=factory) as runner_:
                runner_.run(main())
            gc.collect()
        assert not errors, errors
        assert not leftover, leftover
        # unclosed transports/sockets, coroutines never awaited
        bad = [w for w in caught if issubclass(w.category, (ResourceWarning, RuntimeWarning))]
        assert not bad, [str(w.message) for w in bad]

    yield runner


class Node:
    """A transport plus everything its callbacks reported, and a way to wait for more."""

    def __init__(self, node_id: int, **options: Any) -> None:
        self.id = node_id
        self.received: list[tuple[int, int, Message]] = []  # (from, group, message)
        self.frames: list[tuple[int, int]] = []  # (from, messages in the frame)
        self.unreachable: list[int] = []
        self.snap_status: list[tuple[int, int, bool]] = []
        self._changed = asyncio.Event()
        options.setdefault("backoff_initial", 0.005)
        options.setdefault("backoff_max", 0.05)
        options.setdefault("rng", random.Random(node_id))
        self.t = PeerTransport(
            node_id,
            on_messages=self._on_messages,
            on_unreachable=self._on_unreachable,
            on_snapshot_status=self._on_snapshot_status,
            **options,
        )

    def _on_messages(self, frm: int, msgs: list[tuple[int, Message]]) -> None:
        self.frames.append((frm, len(msgs)))
        self.received.extend((frm, g, m) for g, m in msgs)
        self._changed.set()

    def _on_unreachable(self, peer: int) -> None:
        self.unreachable.append(peer)
        self._changed.set()

    def _on_snapshot_status(self, group: int, to: int, ok: bool) -> None:
        self.snap_status.append((group, to, ok))
        self._changed.set()

    async def until(self, pred: Callable[[], bool]) -> None:
        async with asyncio.timeout(DEADLINE):
            while not pred():
                self._changed.clear()
                await self._changed.wait()

    async def start(self, port: int = 0) -> Node:
        await self.t.start("127.0.0.1", port)
        return self

    def addr(self) -> str:
        return f"127.0.0.1:{self.t.port}"


async def mesh(n: int, **options: Any) -> list[Node]:
    """``n`` started transports, each a peer of every other, all connected."""
    nodes = [await Node(i + 1, **options).start() for i in range(n)]
    for a in nodes:
        for b in nodes:
            if a is not b:
                a.t.set_peer(b.id, b.addr())
    for a in nodes:
        for b in nodes:
            if a is not b:
                async with asyncio.timeout(DEADLINE):
                    await a.t.wait_connected(b.id)
    return nodes


async def close_all(nodes: list[Node]) -> None:
    for node in nodes:
        await node.t.close()


def app(frm: int, to: int, index: int, n_entries: int = 2) -> Message:
    entries = [
        Entry(term=3, index=index * 10 + k, kind=EntryKind.NORMAL, data=bytes([k % 256]) * 100)
        for k in range(n_entries)
    ]
    return Message(
        MT.APP, to=to, frm=frm, term=3, log_term=2, index=index, entries=entries, commit=index
    )


def snap_msg(frm: int, to: int, size: int) -> Message:
    meta = SnapshotMeta(index=500, term=4, conf=ConfState(frozenset({1, 2, 3})))
    data = random.Random(size).randbytes(size)
    return Message(MT.SNAP, to=to, frm=frm, term=4, snapshot=Snapshot(meta=meta, data=data))


def free_port() -> int:
    """A port nothing listens on (bound then released; loopback only)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- the frame format ------------------------------------------------------------------------


def test_frame_roundtrip_every_message_type() -> None:
    msgs = [(g, Message(t, to=2, frm=1, term=g, context=b"ctx")) for g, t in enumerate(MT)]
    msgs.append((7, app(1, 2, 9, n_entries=3)))
    msgs.append((8, snap_msg(1, 2, 1000)))
    frame = encode_frame(1, msgs)
    (length,) = struct.unpack_from(">I", frame)
    assert length == len(frame) - 4
    assert decode_frame(bytes(frame[4:])) == (1, msgs)


def test_backoff_doubles_to_its_cap_with_seeded_jitter() -> None:
    def delays(seed: int) -> list[float]:
        t = PeerTransport(
            1,
            on_messages=lambda _f, _m: None,
            backoff_initial=0.1,
            backoff_max=1.0,
            rng=random.Random(seed),
        )
        return [t._backoff(attempt) for attempt in range(8)]

    got = delays(7)
    assert got == delays(7) and got != delays(8)  # the injected generator decides
    for attempt, d in enumerate(got):
        cap = min(1.0, 0.1 * 2**attempt)
        assert cap / 2 <= d <= cap


# -- delivery ----------------------------------------------------------------------------------


def test_groups_between_three_nodes_arrive_intact_and_in_order(run: Run) -> None:
    async def body() -> None:
        nodes = await mesh(3)
        sent: dict[tuple[int, int], list[tuple[int, Message]]] = {}
        for rnd in range(20):
            for src in nodes:
                for dst in nodes:
                    if src is dst:
                        continue
                    for group in (1, 2, 64):
                        m = app(src.id, dst.id, index=rnd * 100 + group, n_entries=rnd % 4)
                        src.t.send(group, [m])
                        sent.setdefault((src.id, dst.id), []).append((group, m))
            await asyncio.sleep(0)  # next iteration: a new frame
        for dst in nodes:
            expect = sum(len(v) for (_, d), v in sent.items() if d == dst.id)
            await dst.until(lambda dst=dst, expect=expect: len(dst.received) >= expect)  # type: ignore[misc]
        for dst in nodes:
            for src in nodes:
                if src is not dst:
                    got = [(g, m) for frm, g, m in dst.received if frm == src.id]
                    assert got == sent[(src.id, dst.id)]
            assert dst.t.stats()["frames_rejected"] == 0
        assert not any(n.unreachable for n in nodes)
        await close_all(nodes)

    run(body)


def test_many_sends_in_one_iteration_share_one_frame_per_destination(run: Run) -> None:
    async def body() -> None:
        a, b, c = await mesh(3)
        before = a.t.stats()
        n = 0
        for group in range(64):
            a.t.send(group, [app(1, 2, group), app(1, 3, group)])
            a.t.send(group, [Message(MT.HEARTBEAT, to=2, frm=1, commit=group)])
            n += 3
        await b.until(lambda: len(b.received) == 128)
        await c.until(lambda: len(c.received) == 64)
        after = a.t.stats()
        assert after["frames_sent"] - before["frames_sent"] == 2
        assert after["msgs_sent"] - before["msgs_sent"] == n
        assert b.frames == [(1, 128)] and c.frames == [(1, 64)]
        assert [g for _, g, _ in c.received] == list(range(64))
        assert b.t.stats()["frames_received"] == 1
        await close_all([a, b, c])

    run(body)


# -- failures and recovery ------------------------------------------------------------------


def test_peer_down_then_starts_messages_flow_after_reconnect(run: Run) -> None:
    async def body() -> None:
        port = free_port()
        a = await Node(1).start()
        a.t.set_peer(2, f"127.0.0.1:{port}")
        await a.until(lambda: a.unreachable.count(2) >= 3)  # dial failures, with backoff
        a.t.send(5, [app(1, 2, 1)])  # dropped while down, and reported
        before = len(a.unreachable)
        await a.until(lambda: len(a.unreachable) > before)
        assert a.t.stats()["msgs_dropped"] >= 1
        assert a.t.stats()["connect_failures"] >= 3

        b = await Node(2).start(port)
        async with asyncio.timeout(DEADLINE):
            await a.t.wait_connected(2)
        a.t.send(5, [app(1, 2, 2)])
        await b.until(lambda: len(b.received) == 1)
        assert b.received == [(1, 5, app(1, 2, 2))]
        await close_all([a, b])

    run(body)


def test_peer_killed_mid_stream_recovers_on_restart(run: Run) -> None:
    async def body() -> None:
        a, b = await mesh(2)
        port = b.t.port
        for i in range(10):
            a.t.send(1, [app(1, 2, i)])
            await asyncio.sleep(0)
        await b.until(lambda: len(b.received) == 10)

        await b.t.close()
        await a.until(lambda: 2 in a.unreachable)
        a.t.send(1, [app(1, 2, 100)])  # into the void: dropped, never delivered later
        b2 = await Node(2).start(port)
        async with asyncio.timeout(DEADLINE):
            await a.t.wait_connected(2)
        for i in range(10, 20):
            a.t.send(1, [app(1, 2, i)])
            await asyncio.sleep(0)
        await b2.until(lambda: len(b2.received) == 10)
        assert [m.index for _, _, m in b2.received] == list(range(10, 20))
        assert a.t.stats()["reconnects"] >= 1
        await close_all([a, b2])

    run(body)


def test_dropped_sends_are_reported_never_raised(run: Run) -> None:
    async def body() -> None:
        a, b = await mesh(2, max_pending=10)
        a.t.send(1, [app(1, 9, 1)])  # unknown peer
        a.t.send(1, [app(1, 2, i) for i in range(15)])  # 5 over the per-iteration bound
        a.t.send(1, [object()])  # type: ignore[list-item]  # garbage from a buggy caller
        a.t.send(1, None)  # type: ignore[arg-type]
        await a.until(lambda: {2, 9} <= set(a.unreachable))
        await b.until(lambda: len(b.received) == 10)
        assert [m.index for _, _, m in b.received] == list(range(10))
        assert a.t.stats()["msgs_dropped"] == 6
        await close_all([a, b])

    run(body)


def test_full_send_buffer_drops_and_reports_instead_of_queueing(run: Run) -> None:
    async def body() -> None:
        stalled: list[asyncio.Transport] = []

        class NotReading(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                t = cast(asyncio.Transport, transport)  # uvloop's is no subclass
                # uvloop starts reading after connection_made: pause in the next callback
                asyncio.get_running_loop().call_soon(t.pause_reading)
                stalled.append(t)

        loop = asyncio.get_running_loop()
        server = await loop.create_server(NotReading, "127.0.0.1", 0)
        a = await Node(1, high_water=64 * 1024).start()
        a.t.set_peer(2, f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
        async with asyncio.timeout(DEADLINE):
            await a.t.wait_connected(2)
        big = app(1, 2, 1, n_entries=2000)  # ~200 KB a message
        sends = 0
        async with asyncio.timeout(DEADLINE):
            while a.t.stats()["msgs_dropped"] == 0:
                a.t.send(1, [big])
                sends += 1
                await asyncio.sleep(0)
        assert 2 in a.unreachable
        assert a.t.stats()["msgs_sent"] < sends
        # bounded: above the high-water mark by at most the one frame that crossed it
        assert a.t.stats()["send_buffer_bytes"] <= 64 * 1024 + len(encode_frame(1, [(1, big)]))
        await a.t.close()
        for t in stalled:
            t.abort()
        server.close()
        await server.wait_closed()

    run(body)


# -- snapshots -------------------------------------------------------------------------------


def test_snapshot_status_true_on_delivery_false_when_unreachable(run: Run) -> None:
    async def body() -> None:
        a, b = await mesh(2)
        a.t.set_peer(3, f"127.0.0.1:{free_port()}")  # never comes up
        snap = snap_msg(1, 2, 3 * 1024 * 1024)
        a.t.send(7, [snap, app(1, 2, 1)])
        a.t.send(8, [snap_msg(1, 3, 1000)])  # peer down
        a.t.send(9, [snap_msg(1, 4, 1000)])  # peer unknown
        await a.until(lambda: len(a.snap_status) == 3)
        assert sorted(a.snap_status) == [(7, 2, True), (8, 3, False), (9, 4, False)]
        await b.until(lambda: len(b.received) == 2)
        got = {m.type: (g, m) for _, g, m in b.received}
        assert got[MT.SNAP] == (7, snap)
        assert got[MT.APP] == (7, app(1, 2, 1))
        await close_all([a, b])

    run(body)


# -- hostile input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "junk",
    [
        struct.pack(">I", DEFAULT_MAX_FRAME_SIZE + 1) + b"x" * 100,
        struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1",  # 0xc1: never valid msgpack
        struct.pack(">I", 3) + b"\x92\x01\x01",  # [1, 1]: wrong shape
        struct.pack(">I", 3) + b"\x92\x00\x90",  # [0, []]: sender 0 is nobody
    ],
    ids=["oversized", "garbage", "wrong-shape", "no-sender"],
)
def test_bad_frame_closes_that_connection_only(run: Run, junk: bytes) -> None:
    async def body() -> None:
        a, b = await mesh(2)
        reader, writer = await asyncio.open_connection("127.0.0.1", b.t.port)
        writer.write(junk)
        await writer.drain()
        async with asyncio.timeout(DEADLINE):
            with contextlib.suppress(ConnectionResetError):  # an abort may reset
                assert await reader.read() == b""  # closed by b
        writer.close()
        with contextlib.suppress(ConnectionResetError):
            await writer.wait_closed()
        assert b.t.stats()["frames_rejected"] == 1
        a.t.send(1, [app(1, 2, 1)])
        await b.until(lambda: len(b.received) == 1)
        assert not b.unreachable and not a.unreachable
        await close_all([a, b])

    run(body)


# -- shutdown --------------------------------------------------------------------------------


def test_close_is_clean_and_idempotent_with_traffic_in_flight(run: Run) -> None:
    async def body() -> None:
        a, b, c = await mesh(3)
        a.t.set_peer(4, f"127.0.0.1:{free_port()}")  # a dialer stuck in backoff
        a.t.send(1, [snap_msg(1, 2, 4 * 1024 * 1024)])
        await asyncio.sleep(0)  # the snapshot's own connection is being opened
        a.t.send(1, [app(1, 2, 1), app(1, 3, 1)])
        a.t.send(2, [snap_msg(1, 3, 1000)])  # queued, never started
        b.t.remove_peer(3)
        await a.t.close()  # the queued frames still leave; snapshots are cancelled
        await a.t.close()
        a.t.send(1, [app(1, 2, 2)])  # after close: dropped, no callback, no error
        a.t.set_peer(5, "127.0.0.1:1")
        await b.until(lambda: any(m.type is MT.APP for _, _, m in b.received))
        await c.until(lambda: len(c.received) == 1)
        assert a.snap_status == []
        await close_all([b, c])

    run(body)


def test_set_peer_validates_address_and_moves_on_change(run: Run) -> None:
    async def body() -> None:
        a, b = await mesh(2)
        c = await Node(3).start()
        with pytest.raises(ValueError):
            a.t.set_peer(9, "no-port")
        a.t.set_peer(2, c.addr())  # node 2 moved: redial at the new address
        async with asyncio.timeout(DEADLINE):
            await a.t.wait_connected(2)
        a.t.send(1, [app(1, 2, 1)])
        await c.until(lambda: len(c.received) == 1)
        assert a.t.peers == {2: c.addr()}
        assert b.received == []
        await close_all([a, b, c])

    run(body)
