"""PeerTransport throughput on loopback, side by side with raw asyncio streams in one run.

A sender pushes AppendEntries messages (1, 16 or 128 entries of 100 bytes) to one peer,
``--batch`` messages per event-loop iteration (one per Raft group: the shape a node with
that many groups produces, so the transport sends one frame per iteration). The receiver
acknowledges every frame it reads with a small message back; the sender keeps at most
``--window`` frames unacknowledged, so nothing is dropped and no buffer grows. Counted:
messages received per wall second, from first send to last ack.

Three ways of moving the same messages:

    transport   PeerTransport (asyncio.Protocol; msgspec encode per frame, decode per
                frame into Message structs, batching in send()/flush)
    streams     the same frames over asyncio streams: encode_frame per iteration, and
                StreamReader.readexactly + decode_frame on the other side; what the
                transport would cost if it were built on streams (Protocol vs streams)
    raw         reference: the same frame bytes, encoded once before the clock starts,
                over asyncio streams, read with readexactly and never decoded

A second table isolates the receive path, no sockets: the same frames cut into 64 KiB
chunks (one chunk per loop iteration, as reads arrive) are split and decoded by the
transport's ``asyncio.Protocol`` parser and by ``StreamReader.readexactly`` + decode.

Ratios are against ``raw`` in the same run (same loop, same process layout). By default
both ends run in one process (``--procs 1``); ``--procs 2`` puts the receiver in a child
process (the layout of two real nodes, one core each). Not a test: the machine is shared
and noisy; compare within one run only.

    .venv/bin/python bench/transport.py                      # uvloop and asyncio, 1 proc
    .venv/bin/python bench/transport.py --procs 2 --loops uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import struct
import time
from collections.abc import Callable

import uvloop

from tidekv.node.transport import PeerTransport, _Inbound, decode_frame, encode_frame
from tidekv.raft import Entry, Message, MessageType

MT = MessageType
_ACK = struct.Struct(">Q")
IMPLS = ("transport", "streams", "raw")
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


def append_entries(n_entries: int) -> Message:
    entries = [Entry(term=7, index=1000 + i, data=bytes(100)) for i in range(n_entries)]
    return Message(MT.APP, to=2, frm=1, term=7, log_term=7, index=999, entries=entries, commit=990)


def batch_of(batch: int, m: Message) -> list[tuple[int, Message]]:
    return [(group, m) for group in range(batch)]


# -- the receiving side (node 2) ----------------------------------------------------------


async def receive(
    impl: str, total: int, batch: int, ack_port: int, ready: Callable[[int], None]
) -> None:
    """Serve until ``total`` messages arrived; call ``ready(port)`` once listening."""
    done = asyncio.Event()
    count = 0
    if impl == "transport":
        t: PeerTransport

        def on_messages(frm: int, msgs: list[tuple[int, Message]]) -> None:
            nonlocal count
            count += len(msgs)
            t.send(0, [Message(MT.APP_RESP, to=1, frm=2, index=count)])
            if count >= total:
                done.set()

        t = PeerTransport(2, on_messages=on_messages)
        await t.start("127.0.0.1", 0)
        t.set_peer(1, f"127.0.0.1:{ack_port}")
        await t.wait_connected(1)
        ready(t.port)
        await done.wait()
        await asyncio.sleep(0)  # the last ack leaves with the next flush
        await t.close()
        return

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        while count < total:
            (size,) = struct.unpack(">I", await reader.readexactly(4))
            payload = await reader.readexactly(size)
            if impl == "streams":
                count += len(decode_frame(payload)[1])
            else:
                count += batch
            writer.write(_ACK.pack(count))
        await writer.drain()
        writer.close()
        done.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    ready(server.sockets[0].getsockname()[1])
    await done.wait()
    server.close()
    await server.wait_closed()


def receive_in_child(
    impl: str,
    loop: str,
    total: int,
    batch: int,
    ack_port: int,
    conn: multiprocessing.connection.Connection,
) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(receive(impl, total, batch, ack_port, conn.send))


# -- the sending side (node 1) and the clock ----------------------------------------------


async def one_run(
    impl: str, loop: str, procs: int, n_entries: int, args: argparse.Namespace
) -> float:
    """Messages per second for one implementation and message size."""
    batch: int = args.batch
    window: int = args.window
    total: int = args.messages // max(1, n_entries // 4)
    total -= total % batch
    msg = append_entries(n_entries)
    wake = asyncio.Event()
    acked = 0

    def on_ack(frm: int, msgs: list[tuple[int, Message]]) -> None:
        nonlocal acked
        acked = max(acked, msgs[-1][1].index)  # the receiver's count so far
        wake.set()

    sender = PeerTransport(1, on_messages=on_ack)
    await sender.start("127.0.0.1", 0)
    port_future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    child: multiprocessing.process.BaseProcess | None = None
    recv_task: asyncio.Task[None] | None = None
    if procs == 1:
        recv_task = asyncio.create_task(
            receive(impl, total, batch, sender.port, port_future.set_result)
        )
        port = await port_future
    else:
        ctx = multiprocessing.get_context("spawn")
        parent_end, child_end = ctx.Pipe()
        child = ctx.Process(
            target=receive_in_child, args=(impl, loop, total, batch, sender.port, child_end)
        )
        child.start()
        port = await asyncio.to_thread(parent_end.recv)

    send: Callable[[], None]
    writer: asyncio.StreamWriter | None = None
    ack_task: asyncio.Task[None] | None = None
    if impl == "transport":
        sender.set_peer(2, f"127.0.0.1:{port}")
        await sender.wait_connected(2)

        def send() -> None:
            for group in range(batch):
                sender.send(group, [msg])
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        frame = bytes(encode_frame(1, batch_of(batch, msg)))
        w = writer

        async def read_acks() -> None:
            nonlocal acked
            while acked < total:
                (acked,) = _ACK.unpack(await reader.readexactly(_ACK.size))
                wake.set()

        ack_task = asyncio.create_task(read_acks())
        if impl == "raw":

            def send() -> None:
                w.write(frame)
        else:

            def send() -> None:
                w.write(encode_frame(1, batch_of(batch, msg)))

    t0 = time.perf_counter()
    sent = 0
    while sent < total:
        while sent - acked >= window * batch:
            wake.clear()
            await wake.wait()
        send()
        sent += batch
        await asyncio.sleep(0)
    while acked < total:
        wake.clear()
        await wake.wait()
    elapsed = time.perf_counter() - t0

    if ack_task is not None:
        await ack_task
    if writer is not None:
        writer.close()
        await writer.wait_closed()
    if recv_task is not None:
        await recv_task
    if child is not None:
        await asyncio.to_thread(child.join)
    await sender.close()
    return total / elapsed


def measure(loop: str, procs: int, n_entries: int, args: argparse.Namespace) -> dict[str, float]:
    """Median msgs/s of each implementation; runs interleaved so noise hits all alike."""
    runs: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    for _ in range(args.repeat):
        for impl in IMPLS:
            with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
                runs[impl].append(runner.run(one_run(impl, loop, procs, n_entries, args)))
    return {impl: sorted(r)[len(r) // 2] for impl, r in runs.items()}


async def receive_path(impl: str, frames: int, per_frame: int, n_entries: int) -> float:
    """Frames per second through one receive path, fed 64 KiB chunks one per iteration."""
    m = append_entries(n_entries) if n_entries else Message(MT.HEARTBEAT, to=2, frm=1, term=7)
    data = bytes(encode_frame(1, batch_of(per_frame, m))) * frames
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    got = 0
    t0 = time.perf_counter()
    if impl == "protocol":

        def on_messages(frm: int, msgs: list[tuple[int, Message]]) -> None:
            nonlocal got
            got += 1

        proto = _Inbound(PeerTransport(2, on_messages=on_messages), asyncio.get_running_loop())
        for chunk in chunks:
            proto.data_received(chunk)
            await asyncio.sleep(0)
    else:
        reader = asyncio.StreamReader(limit=2**31)

        async def consume() -> None:
            nonlocal got
            for _ in range(frames):
                (size,) = struct.unpack(">I", await reader.readexactly(4))
                decode_frame(await reader.readexactly(size))
                got += 1

        task = asyncio.create_task(consume())
        for chunk in chunks:
            reader.feed_data(chunk)
            await asyncio.sleep(0)
        await task
    elapsed = time.perf_counter() - t0
    assert got == frames
    return frames / elapsed


def receive_paths(loops: list[str], repeat: int) -> None:
    print(f"\nreceive path only (no sockets), frames/s, best of {repeat} interleaved")
    print(f"{'loop':8} {'frame':22} {'protocol':>10} {'streams':>10} {'ratio':>6}")
    shapes = [("1 heartbeat", 1, 0), ("64 APP x 1 entry", 64, 1), ("1 APP x 16 entries", 1, 16)]
    for loop in loops:
        for label, per_frame, n_entries in shapes:
            rates = dict.fromkeys(("protocol", "streams"), 0.0)
            for _ in range(repeat):  # CPU-bound: noise only slows a run, so keep the best
                for impl in rates:
                    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
                        rate = runner.run(receive_path(impl, 20_000, per_frame, n_entries))
                    rates[impl] = max(rates[impl], rate)
            print(
                f"{loop:8} {label:22} {rates['protocol']:10,.0f} {rates['streams']:10,.0f} "
                f"{rates['protocol'] / rates['streams']:6.2f}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loops", default="uvloop,asyncio", help="comma list: uvloop,asyncio")
    ap.add_argument("--procs", type=int, choices=(1, 2), default=1)
    ap.add_argument("--sizes", default="1,16,128", help="entries per AppendEntries")
    ap.add_argument("--messages", type=int, default=200_000, help="messages at 1-4 entries")
    ap.add_argument("--batch", type=int, default=64, help="messages per loop iteration")
    ap.add_argument("--window", type=int, default=8, help="frames in flight")
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell (median kept)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"AppendEntries to one peer, 100-byte entries, {args.batch} msgs/iteration, "
        f"window {args.window} frames, procs={args.procs}, median of {args.repeat}"
    )
    print(f"{'loop':8} {'entries':>7} {'impl':10} {'msgs/s':>12} {'entries/s':>12} {'vs raw':>7}")
    for loop in args.loops.split(","):
        for n in sizes:
            rates = measure(loop, args.procs, n, args)
            for impl in IMPLS:
                r = rates[impl]
                print(
                    f"{loop:8} {n:7d} {impl:10} {r:12,.0f} {r * n:12,.0f} {r / rates['raw']:7.2f}"
                )
    receive_paths(args.loops.split(","), args.repeat)


if __name__ == "__main__":
    main()
