"""A new node joins a sharded cluster: ``tide serve --join --shards N --peers ID=HOST:PORT``.

Before its first start the node has no ``node.json``. It asks a member (``--peers``, in
order, again until one answers) ``POST /v1/cluster/nodes {"id", "address",
"raft_address"}``; the member proposes ``Join`` to the metadata (forwarding to the
metadata group as needed) and answers with the cluster's identity: its id, shard count
and creation members. The node writes them to ``node.json`` and starts like any member
with nothing placed on it; the metadata leader pushes it the live state, and the shard
leaders add it to the shards the ring now gives it (docs/sharding.md, "Joining and
leaving").
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import httpx

from tidekv.errors import InvalidInput
from tidekv.node.config import NODE_FILE, Identity, NodeConfig, Peer, write_identity

log = logging.getLogger("tidekv.node")

JOIN_WAIT = 120.0
"""Seconds to keep asking the members (they may be starting, or electing)."""


async def join_sharded(cfg: NodeConfig) -> None:
    """Join through a member and write ``node.json``; nothing to do when it exists."""
    if os.path.exists(os.path.join(cfg.data_dir, NODE_FILE)):
        return
    me = cfg.me()
    seeds = [p for p in cfg.peers.values() if p.id != cfg.node_id]
    if not seeds:
        raise InvalidInput(
            "a node joining a sharded cluster needs --peers: a member to ask, ID=HOST:PORT"
        )
    body = {"id": me.id, "address": me.address, "raft_address": me.raft_address}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + JOIN_WAIT
    last = "no member answered"
    async with httpx.AsyncClient(timeout=30.0) as client:
        while loop.time() < deadline:
            for seed in seeds:
                try:
                    # the shard count first: a join it would refuse afterwards would leave
                    # a member that never starts in the ring
                    info = await client.get(seed.http_url + "/v1/cluster")
                    if info.status_code == 200:
                        _check_shards(cfg, info.json())
                    r = await client.post(seed.http_url + "/v1/cluster/nodes", json=body)
                except httpx.HTTPError as exc:
                    last = f"{seed.address}: {exc or type(exc).__name__}"
                    continue
                if r.status_code == 200:
                    _write(cfg, r.json())
                    return
                msg = _message(r)
                if 400 <= r.status_code < 500:
                    raise InvalidInput(f"the cluster refused node {me.id}: {msg}")
                last = f"{seed.address}: {r.status_code} {msg}"
            await asyncio.sleep(0.5)
    raise InvalidInput(f"could not join the cluster within {JOIN_WAIT:.0f} s ({last})")


def _message(r: httpx.Response) -> str:
    try:
        return str(r.json().get("error", {}).get("message") or r.text)
    except ValueError:
        return r.text[:200]


def _check_shards(cfg: NodeConfig, info: dict[str, Any]) -> int:
    shards = int(info.get("shard_count", 1))
    if cfg.shards is not None and cfg.shards != shards:
        raise InvalidInput(
            f"the cluster has {shards} shard(s), not {cfg.shards} (--shards): the shard count "
            "is fixed when a cluster is created"
        )
    return shards


def _write(cfg: NodeConfig, info: dict[str, Any]) -> None:
    shards = _check_shards(cfg, info)
    members = tuple(Peer(int(i), str(a), str(r)) for i, a, r in info["members"])
    ident = Identity(cfg.node_id, str(info["cluster_id"]), cfg.engine, shards, members)
    write_identity(cfg.data_dir, ident)
    log.info("node %d joined cluster %s (%d shards)", cfg.node_id, ident.cluster_id, shards)
