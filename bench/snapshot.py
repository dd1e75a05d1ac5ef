"""Raft snapshot transfer: the old whole-engine message vs the streamed, chunked one.

For each engine size an lsm engine is filled with incompressible 64 KiB values; then, for
each path, a sender process and a receiver process (real PeerTransports over loopback
TCP) move it:

* ``whole`` (format 2, what nodes did before): the sender dumps every keyspace into one
  msgpack blob (``dump_engine``) and sends it as one frame; the receiver decodes it and
  restores it into its engine in one batch (``restore_engine``).
* ``stream`` (format 3): the sender registers a point-in-time view (RocksDB checkpoint)
  and the transport streams 1 MiB checksummed chunks; the receiver stages them into
  ``engine.incoming`` and swaps the directory in (``install_staged``).

Reported: throughput (engine MB / seconds from the sender's start to the receiver's
engine holding the data), the sender's and the receiver's peak RSS growth (VmHWM minus
the RSS before the transfer, after the engine is open). Run::

    .venv/bin/python bench/snapshot.py --sizes 50,200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tidekv.chaos.ports import port_free
from tidekv.node.snapshot import dump_engine, restore_engine
from tidekv.node.snapstream import OUTGOING, SnapshotSink, encode_header, install_staged
from tidekv.node.transport import PeerTransport
from tidekv.raft import ConfState, Message, MessageType, Snapshot, SnapshotMeta
from tidekv.storage import open_engine

VALUE = 64 * 1024
META = SnapshotMeta(index=10, term=2, conf=ConfState(voters=frozenset({1, 2})))


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> int:
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS")


def build(path: str, mb: int) -> None:
    eng = open_engine("lsm", path)
    rng = random.Random(mb)
    n = mb * 2**20 // VALUE
    for start in range(0, n, 64):
        eng.write_batch(
            [(b"v%08d" % i, rng.randbytes(VALUE)) for i in range(start, min(n, start + 64))]
        )
    ks = eng.keyspace("keys")
    eng.write_batch_multi([(ks, b"k%08d" % i, b"x" * 40) for i in range(n)])
    eng.sync()
    eng.close()


async def sender(mode: str, path: str, port: int, out: str) -> None:
    eng = open_engine("lsm", path)
    done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def status(_group: int, _to: int, ok: bool) -> None:
        if not done.done():
            done.set_result(ok)

    t = PeerTransport(1, on_messages=lambda _f, _m: None, on_snapshot_status=status)
    await t.start("127.0.0.1", 0)
    t.set_peer(2, f"127.0.0.1:{port}")
    await t.wait_connected(2)
    base = _reset_peak()
    t0 = time.time()
    data = dump_engine(eng) if mode == "whole" else encode_header(OUTGOING.register(eng))
    t.send(0, [Message(MessageType.SNAP, to=2, frm=1, term=2, snapshot=Snapshot(META, data))])
    del data
    ok = await done
    peak = _status_kb("VmHWM")
    await t.close()
    eng.close()
    Path(out).write_text(json.dumps({"t0": t0, "ok": ok, "rss_mb": (peak - base) / 1024}))


async def receiver(mode: str, path: str, port: int, out: str) -> None:
    eng = open_engine("lsm", path)
    eng.put(b"old", b"1", sync=True)
    loop = asyncio.get_running_loop()
    got: asyncio.Future[Message] = loop.create_future()

    def on_messages(_frm: int, msgs: list[tuple[int, Message]]) -> None:
        if not got.done():
            got.set_result(msgs[0][1])

    def sink(_frm: int, _g: int, m: Message) -> SnapshotSink:
        return SnapshotSink("lsm", path, META, b"s" * 16, lambda _s, _ok: None)

    t = PeerTransport(2, on_messages=on_messages, snapshot_sink=sink)
    await t.start("127.0.0.1", port)
    Path(out + ".ready").write_text("")
    base = _reset_peak()
    m = await got
    if mode == "whole":
        assert m.snapshot is not None
        restore_engine(eng, m.snapshot.data, META)
        del m
        eng.close()
    else:
        eng.close()
        install_staged("lsm", path, b"s" * 16)
    t1 = time.time()
    peak = _status_kb("VmHWM")
    check = open_engine("lsm", path)
    n = sum(1 for _ in check.scan())
    check.close()
    await t.close()
    Path(out).write_text(json.dumps({"t1": t1, "rss_mb": (peak - base) / 1024, "keys": n}))


def run_one(mode: str, src: str, root: str, mb: int) -> dict[str, float]:
    work = tempfile.mkdtemp(dir=root)
    send_dir = os.path.join(work, "send")
    shutil.copytree(src, send_dir)
    port = next(p for p in range(random.randrange(30000, 40000), 45000) if port_free(p))
    me = [sys.executable, __file__]
    r_out, s_out = os.path.join(work, "r.json"), os.path.join(work, "s.json")
    recv = subprocess.Popen(
        [
            *me,
            "--role",
            "receiver",
            "--mode",
            mode,
            "--path",
            os.path.join(work, "engine"),
            "--port",
            str(port),
            "--out",
            r_out,
        ]
    )
    deadline = time.monotonic() + 60
    while not os.path.exists(r_out + ".ready"):
        if recv.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("receiver did not start")
        time.sleep(0.05)
    send = subprocess.Popen(
        [
            *me,
            "--role",
            "sender",
            "--mode",
            mode,
            "--path",
            send_dir,
            "--port",
            str(port),
            "--out",
            s_out,
        ]
    )
    try:
        assert send.wait(600) == 0 and recv.wait(600) == 0
    finally:
        for p in (send, recv):
            if p.poll() is None:
                p.kill()
                p.wait()
    s = json.loads(Path(s_out).read_text())
    r = json.loads(Path(r_out).read_text())
    shutil.rmtree(work, ignore_errors=True)
    secs = r["t1"] - s["t0"]
    assert s["ok"], "the snapshot send failed"
    return {
        "mb_s": mb / secs,
        "secs": secs,
        "sender_rss_mb": s["rss_mb"],
        "receiver_rss_mb": r["rss_mb"],
        "keys": r["keys"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="50,200")
    ap.add_argument("--role", choices=["sender", "receiver"])
    ap.add_argument("--mode", choices=["whole", "stream"])
    ap.add_argument("--path")
    ap.add_argument("--port", type=int)
    ap.add_argument("--out")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.role == "sender":
        asyncio.run(sender(a.mode, a.path, a.port, a.out))
        return
    if a.role == "receiver":
        asyncio.run(receiver(a.mode, a.path, a.port, a.out))
        return
    print(f"load before: {os.getloadavg()}")
    root = tempfile.mkdtemp(prefix="tidekv-bench-snap-")
    rows = []
    try:
        for mb in (int(x) for x in a.sizes.split(",")):
            src = os.path.join(root, f"src{mb}")
            build(src, mb)
            res = {mode: run_one(mode, src, root, mb) for mode in ("whole", "stream")}
            rows.append((mb, res))
            w, s = res["whole"], res["stream"]
            print(
                f"{mb:>4} MB  whole {w['mb_s']:6.1f} MB/s sender +{w['sender_rss_mb']:6.1f} MB"
                f" receiver +{w['receiver_rss_mb']:6.1f} MB | stream {s['mb_s']:6.1f} MB/s"
                f" sender +{s['sender_rss_mb']:5.1f} MB receiver +{s['receiver_rss_mb']:5.1f} MB"
                f" | speed x{s['mb_s'] / w['mb_s']:.2f}",
                flush=True,
            )
            shutil.rmtree(src, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"load after: {os.getloadavg()}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
