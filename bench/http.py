"""The HTTP edge vs. a hello-world ASGI app, side by side in one run, on each server.

Both apps are served the same way (one process, uvloop, no access log) by each of
``--server``: ``lean`` (:mod:`tidekv.httpserver`, what ``tide serve`` uses; the app's
``respond`` is called directly, the hello app goes through its ASGI shim) and
``uvicorn`` (httptools; :func:`tidekv.http.uvicorn_server`), and driven by the same
load generator: a raw asyncio HTTP/1.1 client in another process, ``--conns``
keep-alive connections, one request in flight on each.

- hello:   ``GET /`` of a 12-line ASGI app answering ``hello`` (the ceiling);
- get:     ``GET /v1/kv/<key>`` of :func:`tidekv.http.create_app` over a
           :class:`~tidekv.localservice.LocalService` (one of 1,000 16-byte keys);
- put:     ``PUT /v1/kv/<key>`` with a 100-byte value;
- get/put with ``--engine lsm`` (RocksDB, writes not fsynced) besides ``memory``.

Reported per case: requests per second (and its ratio to hello), and the server
process's CPU time per request (from /proc, so it does not count the load generator or
anything else sharing the two cores; its ratio to hello is how many hello-world
requests one tidekv request costs). Not a test: the machine is shared and noisy; compare
within a run. ``--metrics off`` measures the edge without its Prometheus instrumentation.

    python bench/http.py                     # 5 s per case, 32 connections, both servers
    python bench/http.py --server lean --engine lsm
    python bench/http.py --seconds 3 --engine lsm --profile get
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's folder is sys.path[0] and its name would shadow the
# standard library's ``http`` package (which uvicorn and httpx import): drop it.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import argparse
import asyncio
import cProfile
import json
import pstats
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

KEYS = [f"bench/{i:010d}" for i in range(1000)]  # 16 bytes
VALUE = random.Random(7).randbytes(100)


# -- the servers (run in a child process) -----------------------------------------------


async def hello_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")],
        }
    )
    await send({"type": "http.response.body", "body": b"hello"})


def serve(kind: str, port: int, engine: str, metrics: bool, profile: bool, impl: str) -> None:
    from tidekv.http import server, uvicorn_server

    app: Any = hello_app
    tmp = None
    if kind == "tidekv":
        import tidekv
        from tidekv.http import create_app
        from tidekv.localservice import LocalService

        tmp = tempfile.mkdtemp(prefix="tide-bench-http-")
        store = tidekv.open(tmp, engine, sync=False)
        for k in KEYS:
            store.put(k, VALUE)
        app = create_app(LocalService(store), metrics=metrics)
    make = server if impl == "lean" else uvicorn_server
    srv = make(app, "127.0.0.1", port, log_level="error")
    prof = cProfile.Profile() if profile else None
    try:
        if prof is not None:
            prof.enable()
        srv.run()
    except KeyboardInterrupt:
        pass
    finally:
        if prof is not None:
            prof.disable()
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


# -- the load generator -------------------------------------------------------------------


async def _connection(
    port: int, requests: list[bytes], stop_at: float, counts: list[int], statuses: dict[int, int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = random.randrange(len(requests))
    while time.perf_counter() < stop_at:
        writer.write(requests[i % len(requests)])
        i += 1
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        statuses[status] = statuses.get(status, 0) + 1
        at = head.lower().find(b"\r\ncontent-length:")
        length = int(head[at + 17 : head.index(b"\r\n", at + 17)]) if at >= 0 else 0
        await reader.readexactly(length)
        counts[0] += 1
    writer.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _load(
    port: int, requests: list[bytes], conns: int, seconds: float, pid: int
) -> dict[str, Any]:
    counts = [0]
    statuses: dict[int, int] = {}
    # warm up, then measure
    await asyncio.gather(
        *(_connection(port, requests, time.perf_counter() + 0.5, [0], {}) for _ in range(conns))
    )
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(
        *(_connection(port, requests, t0 + seconds, counts, statuses) for _ in range(conns))
    )
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    return {
        "rps": counts[0] / elapsed,
        "requests": counts[0],
        "server_cpu_us": cpu / counts[0] * 1e6,
        "statuses": statuses,
    }


def load(port: int, requests: list[bytes], conns: int, seconds: float, pid: int) -> dict[str, Any]:
    try:
        import uvloop

        return uvloop.run(_load(port, requests, conns, seconds, pid))
    except ImportError:
        return asyncio.run(_load(port, requests, conns, seconds, pid))


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


def _put(path: str) -> bytes:
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(VALUE)}\r\n\r\n"
    )
    return head.encode() + VALUE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_case(
    kind: str,
    engine: str,
    requests: list[bytes],
    args: argparse.Namespace,
    profile: bool,
    impl: str,
) -> dict[str, Any]:
    port = free_port()
    cmd = [
        sys.executable,
        __file__,
        "--serve",
        kind,
        "--server",
        impl,
        "--port",
        str(port),
        "--engine",
        engine,
        "--metrics",
        args.metrics,
    ]
    if profile:
        cmd.append("--profile-server")
    proc = subprocess.Popen(cmd)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{kind} server did not start") from None
                time.sleep(0.05)
        return load(port, requests, args.conns, args.seconds, proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)  # graceful: a profile is printed on the way out
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--engine", action="append", help="memory (default) and/or lsm")
    ap.add_argument("--metrics", choices=["on", "off"], default="on")
    ap.add_argument("--profile", choices=["get", "put"], help="cProfile the server in this case")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--server", default="lean,uvicorn", help="lean and/or uvicorn")
    ap.add_argument("--serve", choices=["hello", "tidekv"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--profile-server", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    engines = args.engine or ["memory"]
    if args.serve:
        serve(
            args.serve,
            args.port,
            engines[0],
            args.metrics == "on",
            args.profile_server,
            args.server,
        )
        return
    impls = [x for x in args.server.split(",") if x]
    if not impls or any(x not in ("lean", "uvicorn") for x in impls):
        ap.error("--server takes lean, uvicorn or both (comma-separated)")

    gets = [_get(f"/v1/kv/{k}") for k in KEYS]
    puts = [_put(f"/v1/kv/{k}") for k in KEYS]
    results: list[dict[str, Any]] = []
    hellos: dict[str, dict[str, Any]] = {}
    for impl in impls:  # one server after the other; the hello of each is its ceiling
        hello = hellos[impl] = run_case("hello", "memory", [_get("/")], args, False, impl)
        results.append({"server": impl, "case": "hello", "engine": "-", **hello})
        for engine in engines:
            for case, reqs in (("get", gets), ("put", puts)):
                r = run_case("tidekv", engine, reqs, args, args.profile == case, impl)
                results.append({"server": impl, "case": case, "engine": engine, **r})
    base = hellos[impls[-1]]
    print(
        f"{'server':<9}{'case':<8}{'engine':<8}{'req/s':>10}{'vs hello':>10}"
        f"{'server CPU us/req':>19}{'vs hello':>10}  statuses"
        f"   (hello = {impls[-1]}'s hello)"
    )
    for r in results:
        ratio = r["rps"] / base["rps"]
        cpu_ratio = r["server_cpu_us"] / base["server_cpu_us"]
        print(
            f"{r['server']:<9}{r['case']:<8}{r['engine']:<8}{r['rps']:>10,.0f}{ratio:>10.2f}"
            f"{r['server_cpu_us']:>19.1f}{cpu_ratio:>9.2f}x  {r['statuses']}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"conns": args.conns, "seconds": args.seconds, "results": results}, f)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
