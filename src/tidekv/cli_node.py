"""``tide serve`` and ``tide dev-cluster``: run nodes.

``tide serve`` with no arguments is the embedded default: a single-node cluster on
127.0.0.1:7070 (peer port 7170) with its data in ./tide-data. ``tide dev-cluster
--nodes 3`` runs three such processes on loopback (HTTP 7070.., peer 7170..), data in
./tide-cluster/nN, waits until a leader serves, prints the endpoints and stops them on
Ctrl-C; a second start reuses the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Annotated

import httpx
import typer

from tidekv.cli import app, err, out
from tidekv.errors import InvalidInput, TideError
from tidekv.node.config import DEFAULT_HTTP, NodeConfig, parse_peers, split_address

log = logging.getLogger("tidekv.node")


async def run_node(cfg: NodeConfig, *, ready_file: str | None = None) -> int:
    """Run a node and its HTTP API until SIGINT/SIGTERM (or a fatal driver error)."""
    from tidekv.http import create_app
    from tidekv.http import server as http_server
    from tidekv.node.server import Node
    from tidekv.node.service import NodeService

    node = Node(cfg)
    await node.start()
    service = NodeService(node)
    host, port = split_address(cfg.address)
    # lifespan on: shutdown ends open watch streams and closes the forwarding client
    server = http_server(create_app(service), host, port, timeout_graceful_shutdown=2)
    driver = node._driver
    rc = 0

    def on_driver_done(task: asyncio.Task[None]) -> None:
        nonlocal rc
        if not task.cancelled() and task.exception() is not None:
            log.error("the node's driver failed: %r; shutting down", task.exception())
            rc = 1
            server.should_exit = True

    if driver is not None:
        driver.add_done_callback(on_driver_done)
    if ready_file:
        with open(ready_file, "w", encoding="utf-8") as f:
            f.write(str(os.getpid()))
    try:
        await server.serve()
    finally:
        await node.stop()
    return rc


def _install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()


@app.command("serve")
def serve(
    node_id: Annotated[int, typer.Option("--id", help="This node's id (a positive integer).")] = 1,
    data_dir: Annotated[
        str, typer.Option("--data-dir", "-d", envvar="TIDE_DATA_DIR", help="Node data directory.")
    ] = "./tide-data",
    address: Annotated[
        str, typer.Option("--address", "-a", help="HTTP API host:port.")
    ] = DEFAULT_HTTP,
    raft_address: Annotated[
        str | None,
        typer.Option("--raft-address", help="Peer host:port (default: HTTP port + 100)."),
    ] = None,
    peers: Annotated[
        str | None,
        typer.Option(
            "--peers",
            help="Initial members, comma-separated: ID=HOST:PORT or "
            "ID=HOST:PORT/RAFT_HOST:PORT (include this node). "
            "With --join: where to reach the cluster until this node is added.",
        ),
    ] = None,
    join: Annotated[
        bool, typer.Option("--join", help="Start empty and wait to be added to a cluster.")
    ] = False,
    engine: Annotated[str, typer.Option("--engine", "-e", help="lsm, btree or hash.")] = "lsm",
    cluster_id: Annotated[str | None, typer.Option("--cluster-id")] = None,
    tick_ms: Annotated[int, typer.Option("--tick-ms", help="Raft tick in ms.")] = 50,
    ready_file: Annotated[str | None, typer.Option("--ready-file", hidden=True)] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a tidekv node (the HTTP API and a replica of the data)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format=f"%(asctime)s n{node_id} %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        if tick_ms <= 0:
            raise InvalidInput("--tick-ms must be positive")
        cfg = NodeConfig(
            node_id=node_id,
            data_dir=data_dir,
            address=address,
            raft_address=raft_address,
            peers=parse_peers(peers) if peers else {},
            join=join,
            engine=engine,
            cluster_id=cluster_id,
            tick_ms=tick_ms,
        )
        cfg.me()
        cfg.initial_peers()
        from tidekv.storage import engine_class

        engine_class(engine)
    except TideError as exc:
        err.print(f"error: {exc.message}", markup=False)
        raise typer.Exit(2) from None
    _install_uvloop()
    err.print(f"tidekv node {node_id}: http://{address} (data in {data_dir})", markup=False)
    try:
        rc = asyncio.run(run_node(cfg, ready_file=ready_file))
    except KeyboardInterrupt:
        rc = 0
    except OSError as exc:
        err.print(f"error: {exc}", markup=False)
        rc = 1
    raise typer.Exit(rc)


def _wait_ready(urls: list[str], procs: list[subprocess.Popen[bytes]], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            for p in procs:
                if p.poll() is not None:
                    raise TideError(f"a node exited with code {p.returncode} while starting")
            for url in urls:
                with contextlib.suppress(httpx.HTTPError):
                    r = client.get(url + "/v1/cluster")
                    if r.status_code == 200 and r.json()["shards"][0].get("leader"):
                        return url
            time.sleep(0.1)
    raise TideError(f"no leader within {timeout:.0f} s")


@app.command("dev-cluster")
def dev_cluster(
    nodes: Annotated[int, typer.Option("--nodes", "-n", help="How many nodes (1-9).")] = 3,
    data_dir: Annotated[str, typer.Option("--data-dir", "-d")] = "./tide-cluster",
    base_port: Annotated[int, typer.Option("--base-port", help="HTTP port of node 1.")] = 7070,
    engine: Annotated[str, typer.Option("--engine", "-e")] = "lsm",
) -> None:
    """Run N local nodes on loopback until Ctrl-C (data survives a second start)."""
    if not 1 <= nodes <= 9:
        err.print("error: --nodes must be between 1 and 9", markup=False)
        raise typer.Exit(2)
    addrs = {i: f"127.0.0.1:{base_port + i - 1}" for i in range(1, nodes + 1)}
    peers = ",".join(f"{i}={a}" for i, a in addrs.items())
    procs: list[subprocess.Popen[bytes]] = []
    for i, a in addrs.items():
        cmd = [
            sys.executable,
            "-m",
            "tidekv",
            "serve",
            "--id",
            str(i),
            "--data-dir",
            os.path.join(data_dir, f"n{i}"),
            "--address",
            a,
            "--peers",
            peers,
            "--engine",
            engine,
        ]
        procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL))
    urls = [f"http://{a}" for a in addrs.values()]

    def stop(*_: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    try:
        leader = _wait_ready(urls, procs, 60)
        out.print(f"tidekv dev cluster: {nodes} node(s), data in {data_dir}", markup=False)
        for i, u in zip(addrs, urls, strict=True):
            out.print(f"  node {i}: {u}", markup=False)
        out.print(f"leader reachable via {leader}; Ctrl-C stops the cluster", markup=False)
        out.print(f"export TIDE_URL={','.join(urls)}", markup=False)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        err.print("error: a node exited; stopping the others", markup=False)
        stop()
        raise typer.Exit(1)
    except KeyboardInterrupt:
        stop()
    except TideError as exc:
        stop()
        err.print(f"error: {exc.message}", markup=False)
        raise typer.Exit(1) from None


app.command("chaos")(__import__("tidekv.chaos.cli", fromlist=["chaos"]).chaos)  # docs/chaos.md


def main() -> None:
    """The ``tide`` console script: every command, including the node's."""
    from tidekv.cli import main as cli_main

    cli_main()
