""":class:`NodeService`: the :class:`~tidekv.service.KVService` of a replicated node.

Writes are validated here (key and value limits, JSON documents) before anything is
proposed, then proposed on the shard leader and acknowledged once applied, which
happens only after the entry is durable on a majority. A node that does not lead the
shard raises :class:`~tidekv.errors.NotLeader` naming the leader's URL; the HTTP edge
forwards the request there.

Reads, by ``consistency``:

* ``linearizable`` (default) and ``follower``: a ReadIndex round confirmed by the
  leader (on a follower the core asks the leader for the index), then a wait until
  this replica has applied that far; served by whichever node got the request.
* ``lease``: on the leader, served without a round while its lease holds (CheckQuorum
  and bounded clock drift, see :class:`tidekv.raft.Config`); other nodes forward.
* ``stale``: this replica's applied state, no check.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from tidekv.errors import (
    Conflict,
    InvalidInput,
    NotFound,
)
from tidekv.node.config import Peer
from tidekv.node.replica import Replica
from tidekv.node.server import DATA_GROUP, Node
from tidekv.raft import NONE, ConfChange, ConfChangeType, Role
from tidekv.service import CONSISTENCY_LEVELS, Consistency
from tidekv.statemachine import WriteResult
from tidekv.store import AsOf, Item, VersionInfo
from tidekv.versioning import BYTES_CONTENT_TYPE, Diff, check_version_id, is_json_type


class NodeService:
    """API v1 over a :class:`~tidekv.node.server.Node` (one data shard for now)."""

    shard = DATA_GROUP

    def __init__(self, node: Node) -> None:
        self.node = node
        self.timeout = node.cfg.request_timeout
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_NodeCollector(node))

    def shard_of(self, key: str) -> int:
        return DATA_GROUP

    @property
    def rep(self) -> Replica:
        return self.node.replica(DATA_GROUP)

    # -- writes -----------------------------------------------------------------------------

    async def put(
        self,
        key: str,
        value: bytes,
        content_type: str,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        idempotency_key: str | None = None,
        author: str | None = None,
    ) -> WriteResult:
        rep = self.rep
        store = rep.store
        store.check_key(key)
        data, ctype = store.encode_value(value, content_type or BYTES_CONTENT_TYPE)
        return await self._write(
            rep,
            key=key,
            value=data,
            content_type=ctype,
            if_match=if_match,
            if_none_match=if_none_match,
            idempotency_key=idempotency_key,
            author=author,
        )

    async def delete(
        self,
        key: str,
        *,
        if_match: str | None = None,
        idempotency_key: str | None = None,
        author: str | None = None,
    ) -> WriteResult:
        rep = self.rep
        rep.store.check_key(key)
        return await self._write(
            rep,
            key=key,
            value=None,
            content_type=BYTES_CONTENT_TYPE,
            if_match=if_match,
            require_exists=True,
            idempotency_key=idempotency_key,
            author=author,
        )

    async def rollback(
        self,
        key: str,
        to: str,
        *,
        if_match: str | None = None,
        idempotency_key: str | None = None,
        author: str | None = None,
    ) -> WriteResult:
        rep = self.rep
        if not rep.is_leader:
            raise rep.not_leader()
        store = rep.store
        store.check_key(key)
        check_version_id(to)
        # versions never change once written: reading the target here is safe even if
        # other writes to the key are applied before this one
        target = store._version_of(key, to)
        value = store.sm.value_of(target)
        return await self._write(
            rep,
            key=key,
            value=value,
            content_type=target.content_type,
            if_match=if_match,
            idempotency_key=idempotency_key,
            author=author,
        )

    async def _write(self, rep: Replica, **fields: Any) -> WriteResult:
        if fields.get("if_match") is not None:
            check_version_id(fields["if_match"])
        if fields.get("author") is None:
            fields["author"] = ""
        if not rep.can_propose():
            raise rep.not_leader()
        return await rep.write(fields, self.timeout)

    # -- reads ------------------------------------------------------------------------------

    async def _barrier(self, consistency: str) -> Replica:
        if consistency not in CONSISTENCY_LEVELS:
            raise InvalidInput(
                f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}",
                consistency=consistency,
            )
        rep = self.rep
        await rep.read_barrier(consistency, self.timeout)
        return rep

    async def get(
        self,
        key: str,
        *,
        consistency: Consistency = "linearizable",
        version: str | None = None,
        as_of: str | None = None,
    ) -> Item:
        self.rep.store.check_key(key)
        if version is not None:
            check_version_id(version)
        when: AsOf = None
        if as_of is not None:
            when = int(as_of) if as_of.isdigit() else as_of
        rep = await self._barrier(consistency)
        return rep.store.get(key, version=version, as_of=when)

    async def scan(
        self,
        *,
        prefix: str | None = None,
        start: str | None = None,
        end: str | None = None,
        limit: int | None = None,
        consistency: Consistency = "linearizable",
    ) -> list[Item]:
        if limit is not None and limit < 0:
            raise InvalidInput("limit must not be negative")
        rep = await self._barrier(consistency)
        return list(rep.store.scan(prefix, start=start, end=end, limit=limit))

    async def history(
        self,
        key: str,
        *,
        limit: int | None = None,
        before: str | None = None,
        consistency: Consistency = "linearizable",
    ) -> list[VersionInfo]:
        self.rep.store.check_key(key)
        if limit is not None and limit < 0:
            raise InvalidInput("limit must not be negative")
        rep = await self._barrier(consistency)
        return rep.store.history(key, limit=limit, before=before)

    async def diff(
        self,
        key: str,
        from_version: str,
        to_version: str | None = None,
        *,
        consistency: Consistency = "linearizable",
    ) -> Diff:
        check_version_id(from_version)
        if to_version is not None:
            check_version_id(to_version)
        rep = await self._barrier(consistency)
        return rep.store.diff(key, from_version, to_version)

    # -- the change feed --------------------------------------------------------------------

    async def watch(
        self, *, prefix: str | None = None, since: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        if since is None or since == "":
            after = self.rep.store.sm.revision
            yield {"cursor": str(after)}  # a position: resume from here
        elif since.isdigit():
            after = int(since)
        else:
            raise InvalidInput(f"watch cursor {since!r} is not a revision number", since=since)
        while True:
            rep = self.rep
            sm = rep.store.sm
            skipped = False
            for change in sm.changes(after):
                after = change.revision
                if prefix and not change.key.startswith(prefix):
                    skipped = True
                    continue
                skipped = False
                yield self._event(rep, change.revision, change.version)
            if skipped:
                yield {"cursor": str(after)}
            await rep.wait_change(after)

    def _event(self, rep: Replica, revision: int, version_id: str) -> dict[str, Any]:
        sm = rep.store.sm
        v = sm.lookup(version_id)
        assert v is not None, f"change {revision} names a missing version"
        ev: dict[str, Any] = {
            "cursor": str(revision),
            "type": "delete" if v.deleted else "put",
            "key": v.key,
            "version": v.id,
            "parents": list(v.parents),
            "revision": revision,
            "shard": rep.group,
            "hlc": str(v.hlc),
        }
        if not v.deleted:
            value = sm.value_of(v)
            assert value is not None
            ev["content_type"] = v.content_type
            if is_json_type(v.content_type):
                ev["value"] = msgspec.json.decode(value)
            else:
                ev["value_b64"] = base64.b64encode(value).decode()
        return ev

    # -- cluster ----------------------------------------------------------------------------

    async def cluster_info(self) -> dict[str, Any]:
        rep = self.rep
        raft = rep.raw.raft
        if not rep.is_leader and raft.lead != NONE and rep.leader_peer() is not None:
            raise rep.not_leader()  # the leader has the replication progress
        st = rep.raw.status()
        conf = st.conf
        nodes = []
        for nid, peer in sorted(rep.peers.items()):
            state = (
                "leader"
                if nid == st.lead
                else "voter"
                if nid in conf.voters
                else "learner"
                if nid in conf.learners
                else "removed"
            )
            nodes.append({**peer.to_dict(), "state": state})
        shard: dict[str, Any] = {
            "id": rep.group,
            "leader": None if st.lead == NONE else st.lead,
            "term": st.term,
            "replicas": sorted(conf.voters),
            "learners": sorted(conf.learners),
            "removed": sorted(rep.removed),
            "commit_index": st.commit,
            "applied_index": rep.applied,
            "revision": rep.store.sm.revision,
        }
        if st.progress:
            shard["progress"] = {
                str(nid): {
                    "match": p.match,
                    "next": p.next,
                    "lag": max(0, st.commit - p.match),
                    "state": p.state.name.lower(),
                    "learner": p.is_learner,
                    "active": p.recent_active,
                }
                for nid, p in st.progress.items()
            }
        return {
            "cluster_id": self.node.identity.cluster_id,
            "node_id": self.node.cfg.node_id,
            "nodes": nodes,
            "shards": [shard],
        }

    async def add_node(self, node_id: int, address: str) -> dict[str, Any]:
        peer = Peer.make(node_id, address)
        rep = self.rep
        if node_id in rep.removed:  # tombstones are never lifted: any replica may answer
            raise Conflict(
                f"node id {node_id} was removed from this cluster; join it with a new id",
                id=node_id,
            )
        if not rep.is_leader:
            raise rep.not_leader()
        conf = rep.raw.raft.conf_state()
        if node_id in conf.voters:
            known = rep.peers.get(node_id)
            if known is not None and known.address == peer.address:
                return {**known.to_dict(), "state": "voter"}
            raise Conflict(f"node {node_id} is already a member at another address", id=node_id)
        members = set(conf.voters) | set(conf.learners)
        for other_id in sorted(members - {node_id}):
            other = rep.peers.get(other_id)
            taken = () if other is None else (other.address, other.raft_address)
            for what, addr in (("address", peer.address), ("peer address", peer.raft_address)):
                if addr in taken:
                    raise Conflict(
                        f"{what} {addr} is already node {other_id}'s; "
                        "a new node needs an address of its own",
                        id=node_id,
                        address=addr,
                    )
        if node_id not in conf.learners:
            await rep.conf_change(Replica.add_change(peer, learner=True), self.timeout)
        wait = max(30.0, self.timeout * 6)
        if not await self._catch_up(rep, node_id, wait):
            # never a voter that does not answer (it would count in every quorum), and
            # no learner left behind: the add did not happen
            await rep.conf_change(ConfChange(ConfChangeType.REMOVE_NODE, node_id), self.timeout)
            raise Conflict(
                f"node {node_id} at {peer.address} did not catch up within {wait:.0f} s "
                "(is it running, started with --join?); it was not added, and its id is "
                "now retired: start the node with a new id",
                id=node_id,
            )
        await rep.conf_change(Replica.add_change(peer, learner=False), self.timeout)
        return {**peer.to_dict(), "state": "voter"}

    async def _catch_up(self, rep: Replica, node_id: int, wait: float) -> bool:
        """Wait until the learner has acknowledged the log up to its own addition and is
        close to the leader's (a snapshot first if it is far behind), so promoting it does
        not stall commits. False when it did not within ``wait`` seconds."""
        target = rep.raw.raft.log.committed  # its addition is committed by now
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not rep.is_leader:
                raise rep.not_leader()
            pr = rep.raw.raft.prs.get(node_id)
            committed = rep.raw.raft.log.committed
            if pr is not None and pr.match >= target and pr.match >= committed - 16:
                return True
            await asyncio.sleep(0.05)
        return False

    async def remove_node(self, node_id: int) -> dict[str, Any]:
        rep = self.rep
        if not rep.is_leader:
            raise rep.not_leader()
        conf = rep.raw.raft.conf_state()
        if node_id not in conf.voters and node_id not in conf.learners:
            raise NotFound(f"node {node_id} is not a member", id=node_id)
        if conf.voters == frozenset({node_id}):
            raise Conflict("cannot remove the last voter", id=node_id)
        await rep.conf_change(ConfChange(ConfChangeType.REMOVE_NODE, node_id), self.timeout)
        return {"id": node_id, "state": "removed"}

    # -- health -----------------------------------------------------------------------------

    async def ready(self) -> bool:
        rep = self.rep
        raft = rep.raw.raft
        if raft.lead == NONE:
            return False
        if raft.role is Role.LEADER:
            return raft.log.term(raft.log.committed) == raft.term
        return True

    def metrics_text(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


class _NodeCollector(Collector):
    """Raft and node gauges, read at scrape time."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Any:
        node = self.node
        g = {
            "term": GaugeMetricFamily("tidekv_raft_term", "Raft term", labels=["shard"]),
            "commit": GaugeMetricFamily(
                "tidekv_raft_commit_index", "Raft commit index", labels=["shard"]
            ),
            "applied": GaugeMetricFamily(
                "tidekv_raft_applied_index", "Applied index", labels=["shard"]
            ),
            "leader": GaugeMetricFamily(
                "tidekv_raft_is_leader", "1 when this node leads the shard", labels=["shard"]
            ),
            "revision": GaugeMetricFamily(
                "tidekv_shard_revision", "Revision of the shard's change log", labels=["shard"]
            ),
        }
        c_prop = CounterMetricFamily(
            "tidekv_proposals", "Write commands proposed on this node", labels=["shard"]
        )
        c_removed = CounterMetricFamily(
            "tidekv_messages_from_removed",
            "Raft messages dropped because their sender was removed from the shard",
            labels=["shard"],
        )
        c_reads = CounterMetricFamily(
            "tidekv_read_index_rounds", "ReadIndex rounds started", labels=["shard"]
        )
        for gid, rep in node.replicas.items():
            raft = rep.raw.raft
            s = str(gid)
            g["term"].add_metric([s], raft.term)
            g["commit"].add_metric([s], raft.log.committed)
            g["applied"].add_metric([s], rep.applied)
            g["leader"].add_metric([s], 1 if raft.role is Role.LEADER else 0)
            g["revision"].add_metric([s], rep.store.sm.revision)
            c_prop.add_metric([s], rep.stats["proposed"])
            c_reads.add_metric([s], rep.stats["read_rounds"])
            c_removed.add_metric([s], rep.stats["from_removed"])
        yield from g.values()
        yield c_prop
        yield c_reads
        yield c_removed
        yield GaugeMetricFamily(
            "tidekv_groups_quiesced",
            "Raft groups on this node that are quiesced (idle: no ticks, no heartbeats)",
            value=node.groups_quiesced(),
        )
        yield CounterMetricFamily(
            "tidekv_liveness_wakes",
            "Quiesced groups woken because their leader's node went silent",
            value=node.stats["liveness_wakes"],
        )
        yield CounterMetricFamily("tidekv_wal_fsyncs", "WAL fsyncs", value=node.stats["fsyncs"])
        yield CounterMetricFamily(
            "tidekv_node_loops", "Turns of the node loop", value=node.stats["loops"]
        )
        t = node.transport
        yield CounterMetricFamily(
            "tidekv_transport_frames_sent", "Peer frames written", value=t.frames_sent
        )
        yield CounterMetricFamily(
            "tidekv_transport_messages_sent", "Raft messages sent to peers", value=t.msgs_sent
        )
