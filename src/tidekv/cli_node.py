"""``tide serve`` and ``tide dev-cluster``: run nodes.

``tide serve`` with no arguments is the embedded default: a single-node cluster on
127.0.0.1:7070 (peer port 7170) with its data in ./tide-data. A data directory that holds
an embedded store (made by ``tide put`` without ``--url``, whose default is also
./tide-data) is served as it is: one node, no replication, the same HTTP API. ``tide dev-cluster
--nodes 3`` runs three such processes on loopback (HTTP 7070.., peer 7170..), data in
./tide-cluster/nN, waits until a leader serves, prints the endpoints and stops them on
Ctrl-C; a second start reuses the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import typer

from tidekv.chaos.cli import chaos as chaos_command
from tidekv.cli import app, err, out
from tidekv.errors import InvalidInput, TideError
from tidekv.node.config import (
    DEFAULT_HTTP,
    DEFAULT_SHARDS_ENV,
    NODE_DEFAULT_SHARDS,
    NodeConfig,
    default_shards,
    parse_peers,
    split_address,
)
from tidekv.sharding.keys import MAX_SHARDS
from tidekv.store import MARKER_FILE

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
        await service.aclose()  # its pooled client to the other nodes (lifespan did, too)
        await node.stop()
    return rc


async def run_embedded(path: str, address: str) -> int:
    """Serve the embedded store in ``path`` (one node, no replication) until SIGINT/SIGTERM:
    the same HTTP API; membership changes are refused."""
    import tidekv
    from tidekv.http import create_app
    from tidekv.http import server as http_server
    from tidekv.localservice import LocalService

    store = tidekv.open(path)  # an existing store keeps its engine
    service = LocalService(store, node_id=1, address=address)
    host, port = split_address(address)
    server = http_server(create_app(service), host, port, timeout_graceful_shutdown=2)
    try:
        await server.serve()
    finally:
        service.close()
        store.close()
    return 0


def _raise_fd_limit() -> None:
    """Raise the soft limit on open files to the hard one (as Go programs such as etcd
    do): a node of S shards holds S + 1 engines, each a few descriptors (a 64-shard lsm
    node: about 480 when empty, and more table files as data grows), past the common
    soft default of 1024."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 1 << 20
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


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
        bool,
        typer.Option(
            "--join",
            help="Join the cluster of the members in --peers: a sharded cluster is asked "
            "to take this node in (its shard count is the cluster's; --shards, if given, "
            "must match); an unsharded one is waited on to add it (tide cluster add).",
        ),
    ] = False,
    engine: Annotated[str, typer.Option("--engine", "-e", help="lsm, btree or hash.")] = "lsm",
    cluster_id: Annotated[str | None, typer.Option("--cluster-id")] = None,
    tick_ms: Annotated[int, typer.Option("--tick-ms", help="Raft tick in ms.")] = 50,
    shards: Annotated[
        int | None,
        typer.Option(
            "--shards",
            help="Shards of a new cluster (fixed at creation; the same on every node; "
            f"default {NODE_DEFAULT_SHARDS}, or ${DEFAULT_SHARDS_ENV}). 1: one data group. "
            "More: keys spread over that many Raft groups, placed on the nodes by a "
            "consistent-hash ring (3 replicas each).",
        ),
    ] = None,
    ready_file: Annotated[str | None, typer.Option("--ready-file", hidden=True)] = None,
    balance_leaders: Annotated[
        bool,
        typer.Option(
            "--balance-leaders/--no-balance-leaders",
            help="Sharded clusters: spread shard leaders evenly over the nodes "
            "(leadership transfers by the metadata leader).",
        ),
    ] = True,
    leader_wait: Annotated[
        float | None,
        typer.Option(
            "--leader-wait",
            help="Seconds a request waits for a shard leader across a leader change "
            "before answering 503 (default: two election timeouts + 1 s).",
        ),
    ] = None,
    down_after: Annotated[
        float,
        typer.Option(
            "--down-after",
            help="Sharded clusters: seconds of silence before the metadata leader marks "
            "a node down (the metadata leader's setting counts).",
        ),
    ] = 10.0,
    evict_after: Annotated[
        float,
        typer.Option(
            "--evict-after",
            help="Sharded clusters: seconds a node stays down before its replicas are "
            "re-created on other nodes (the metadata leader's setting counts).",
        ),
    ] = 300.0,
    compact_every: Annotated[
        int, typer.Option("--compact-every", hidden=True, help="Raft log compaction period.")
    ] = 10_000,
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
        if compact_every <= 0:
            raise InvalidInput("--compact-every must be positive")
        if leader_wait is not None and not 0 <= leader_wait <= 3600:
            raise InvalidInput("--leader-wait must be between 0 and 3600 seconds")
        if shards is not None and not 1 <= shards <= MAX_SHARDS:
            raise InvalidInput(f"--shards must be between 1 and {MAX_SHARDS}")
        default_shards()  # a bad $TIDEKV_DEFAULT_SHARDS is an error here, not a traceback
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
            compact_every=compact_every,
            balance_leaders=balance_leaders,
            leader_wait=leader_wait,
            shards=shards,
            down_after=down_after,
            evict_after=evict_after,
        )
        cfg.check_liveness()
        cfg.me()
        cfg.initial_peers()
        from tidekv.storage import engine_class

        engine_class(engine)
    except TideError as exc:
        err.print(f"error: {exc.message}", markup=False)
        raise typer.Exit(2) from None
    embedded = os.path.exists(os.path.join(data_dir, MARKER_FILE))
    if embedded and (peers or join):
        err.print(
            f"error: {data_dir} holds an embedded store (tide put --path), which serves as "
            "one node only; give a replicated node its own empty --data-dir",
            markup=False,
        )
        raise typer.Exit(2)
    _install_uvloop()
    with contextlib.suppress(AttributeError, ValueError, OSError):  # kill -USR1: stacks
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    _raise_fd_limit()
    if embedded:
        err.print(
            f"tidekv: serving the embedded store in {data_dir} on http://{address} "
            "(one node, no replication)",
            markup=False,
        )
        run = run_embedded(data_dir, address)
    else:
        err.print(f"tidekv node {node_id}: http://{address} (data in {data_dir})", markup=False)
        run = run_node(cfg, ready_file=ready_file)
    try:
        rc = asyncio.run(run)
    except KeyboardInterrupt:
        rc = 0
    except TideError as exc:  # e.g. a join the cluster refused
        err.print(f"error: {exc.message}", markup=False)
        rc = 2
    except OSError as exc:
        err.print(f"error: {exc}", markup=False)
        rc = 1
    raise typer.Exit(rc)


def _wait_ready(
    urls: list[str], procs: list[subprocess.Popen[bytes]], timeout: float
) -> dict[str, Any]:
    """The cluster view, once every node serves HTTP and the cluster serves linearizable
    requests through every endpoint printed: unsharded, once the leader is ready; sharded,
    once every node is ready (each of its replicas, the metadata's too, knows a leader)."""
    deadline = time.monotonic() + timeout
    up: set[str] = set()
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            for p in procs:
                if p.poll() is not None:
                    raise TideError(f"a node exited with code {p.returncode} while starting")
            for url in urls:
                with contextlib.suppress(httpx.HTTPError):
                    if url not in up and client.get(url + "/health").status_code == 200:
                        up.add(url)
            if len(up) == len(urls):
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, IndexError):
                    r = client.get(urls[0] + "/v1/cluster")
                    view = r.json() if r.status_code == 200 else {}
                    shards = view.get("shards") or [{}]
                    if int(view.get("shard_count", 1)) > 1:
                        ready = all(isinstance(sh.get("leader"), int) for sh in shards) and all(
                            client.get(u + "/ready").status_code == 200 for u in urls
                        )
                    else:
                        leader = shards[0].get("leader")
                        ready = (
                            isinstance(leader, int)
                            and 1 <= leader <= len(urls)
                            and client.get(urls[leader - 1] + "/ready").status_code == 200
                        )
                    if ready:
                        return view
            time.sleep(0.1)
    raise TideError(f"no leader within {timeout:.0f} s")


def _leaders_line(view: dict[str, Any]) -> str:
    shards = view.get("shards") or [{}]
    if int(view.get("shard_count", 1)) <= 1:
        return f"leader: node {shards[0].get('leader')}"
    leads = Counter(sh.get("leader") for sh in shards)
    per_node = ", ".join(f"node {n} leads {leads[n]}" for n in sorted(k for k in leads if k))
    return f"{len(shards)} shards; {per_node}"


@app.command("dev-cluster")
def dev_cluster(
    nodes: Annotated[int, typer.Option("--nodes", "-n", help="How many nodes (1-9).")] = 3,
    data_dir: Annotated[str, typer.Option("--data-dir", "-d")] = "./tide-cluster",
    base_port: Annotated[int, typer.Option("--base-port", help="HTTP port of node 1.")] = 7070,
    engine: Annotated[str, typer.Option("--engine", "-e")] = "lsm",
    shards: Annotated[
        int | None,
        typer.Option(
            "--shards",
            help="Shards of a new cluster (1: one data group; default as tide serve's).",
        ),
    ] = None,
) -> None:
    """Run N local nodes on loopback until Ctrl-C (data survives a second start)."""
    if not 1 <= nodes <= 9:
        err.print("error: --nodes must be between 1 and 9", markup=False)
        raise typer.Exit(2)
    if shards is not None and not 1 <= shards <= MAX_SHARDS:
        err.print(f"error: --shards must be between 1 and {MAX_SHARDS}", markup=False)
        raise typer.Exit(2)
    addrs = {i: f"127.0.0.1:{base_port + i - 1}" for i in range(1, nodes + 1)}
    peers = ",".join(f"{i}={a}" for i, a in addrs.items())
    urls = [f"http://{a}" for a in addrs.values()]
    procs: list[subprocess.Popen[bytes]] = []
    # Ctrl-C, kill (SIGTERM) and a closed terminal all stop the nodes first, even when
    # SIGINT was ignored at start (a background job of a script)
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    rc = 0
    try:
        for i, a in addrs.items():
            extra = [] if shards is None else ["--shards", str(shards)]
            cmd = serve_command(i, os.path.join(data_dir, f"n{i}"), a, peers, engine, *extra)
            procs.append(
                subprocess.Popen(cmd, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent())
            )
        view = _wait_ready(urls, procs, 60)
        out.print(f"tidekv dev cluster: {nodes} node(s), data in {data_dir}", markup=False)
        for i, u in zip(addrs, urls, strict=True):
            out.print(f"  node {i}: {u}", markup=False)
        out.print(f"{_leaders_line(view)}; Ctrl-C stops the cluster", markup=False)
        out.print(f"export TIDE_URL={','.join(urls)}", markup=False)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        err.print("error: a node exited; stopping the others", markup=False)
        rc = 1
    except (_Stop, KeyboardInterrupt):
        rc = 0
    except TideError as exc:
        err.print(f"error: {exc.message}", markup=False)
        rc = 1
    finally:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C does not cut the stop short
        _stop_all(procs)
    raise typer.Exit(rc)


def serve_command(
    node_id: int, data_dir: str, address: str, peers: str, engine: str, *extra: str
) -> list[str]:
    """The command line of one ``tide serve`` node process (this Python, this tidekv)."""
    return [
        sys.executable,
        "-m",
        "tidekv",
        "serve",
        "--id",
        str(node_id),
        "--data-dir",
        data_dir,
        "--address",
        address,
        "--peers",
        peers,
        "--engine",
        engine,
        *extra,
    ]


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Stop(Exception):
    """A signal asked the dev cluster to stop."""


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signum)


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every node, then wait for each (SIGKILL after 10 s)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes a node get SIGTERM when the dev cluster dies, even by
    SIGKILL (Linux ``PR_SET_PDEATHSIG``): no node outlives it. None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def arm() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


app.command("chaos")(chaos_command)  # docs/chaos.md


def main() -> None:
    """The ``tide`` console script: every command, including the node's."""
    from tidekv.cli import main as cli_main

    cli_main()
