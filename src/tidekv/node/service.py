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
import heapq
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx
import msgspec
import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from tidekv.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    NotLeader,
    Unavailable,
)
from tidekv.node.config import Peer
from tidekv.node.membership import decommission_node, join_node
from tidekv.node.meta import META_GROUP
from tidekv.node.replica import Replica
from tidekv.node.server import DATA_GROUP, Node
from tidekv.raft import NONE, ConfChange, ConfChangeType, Role
from tidekv.scatter import HTTPShards, Scatter
from tidekv.service import CONSISTENCY_LEVELS, Consistency
from tidekv.sharding.keys import hash_tag, shard_of
from tidekv.sharding.metadata import MemberState
from tidekv.sharding.replicas import node_of
from tidekv.sharding.scatter import ListingMerge, ShardPage, WatchCursor, successor
from tidekv.statemachine import WriteResult
from tidekv.store import AsOf, Item, VersionInfo
from tidekv.versioning import (
    BYTES_CONTENT_TYPE,
    Diff,
    HLCTimestamp,
    check_version_id,
    is_json_type,
)


class NodeService:
    """API v1 over a :class:`~tidekv.node.server.Node` (one data shard for now)."""

    shard = DATA_GROUP

    def __init__(self, node: Node) -> None:
        self.node = node
        self.timeout = node.cfg.request_timeout
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_NodeCollector(node))
        self._http: httpx.AsyncClient | None = None

    def peer_http(self) -> httpx.AsyncClient:
        """The node's one pooled HTTP client to other nodes (remote listing pages and
        shard streams of a sharded cluster), opened on first use, closed by
        :meth:`aclose`: keep-alive connections are reused across requests."""
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout * 2, connect=_PEER_CONNECT_TIMEOUT),
                limits=_PEER_LIMITS,
                follow_redirects=False,
            )
        return self._http

    async def aclose(self) -> None:
        """Close the pooled client (the HTTP app's lifespan shutdown, and node stop)."""
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    def shard_of(self, key: str) -> int:
        node = self.node
        return shard_of(key, node.shard_count) if node.sharded else DATA_GROUP

    @property
    def rep(self) -> Replica:
        return self.node.replica(DATA_GROUP)

    def _rep_for_key(self, key: str) -> Replica:
        if not self.node.sharded:
            return self.node.replica(DATA_GROUP)
        return self._rep_for(shard_of(key, self.node.shard_count))

    def _rep_for(self, shard: int) -> Replica:
        """This node's replica of ``shard``, or NotLeader naming a node that has one."""
        rep = self.node.replicas.get(shard)
        if rep is None or shard == META_GROUP:
            raise self._not_here(shard)
        return rep

    def _check_shard(self, shard: int) -> int:
        count = self.node.shard_count
        if not 0 <= shard < count:
            raise InvalidInput(f"shard must be in 0..{count - 1}", shard=shard)
        return shard

    def _not_here(self, shard: int) -> NotLeader:
        """Where to send a request for a shard this node has no replica of: its leader as
        the metadata saw it, else any replica (a follower forwards writes through Raft and
        serves linearizable reads with ReadIndex)."""
        lead, holders = self._holders(shard)
        return NotLeader(
            f"node {self.node.cfg.node_id} has no replica of shard {shard}",
            shard=shard,
            leader=lead,
            leader_url=holders[0].http_url if holders else None,
        )

    def _holders(self, shard: int) -> tuple[int | None, list[Peer]]:
        """The leader of ``shard`` as known here, and the other nodes holding a replica
        of it: the leader first, then the voters of the shard map."""
        node = self.node
        st = node.cluster
        me = node.cfg.node_id
        seen = None if st is None else st.leaders.get(shard)
        lead = node.leader_hint.get(shard, seen.node if seen is not None else None)
        candidates = [] if st is None else list(st.shard_map[shard].voters)
        if lead is not None:
            candidates.insert(0, lead)
        ids = list(dict.fromkeys(n for n in candidates if n != me and n in node.members))
        # the nodes the metadata marked down last (still tried: the mark may be stale)
        down = set() if st is None else st.down()
        ids.sort(key=lambda n: n in down)
        return lead, [node.members[n] for n in ids]

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
        rep = self._rep_for_key(key)
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
        rep = self._rep_for_key(key)
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
        rep = self._rep_for_key(key)
        if rep.raw.raft.lead == NONE:  # a leader change: wait for the new leader
            await rep.wait_for_leader(min(self.timeout, rep.leader_wait), rep.not_leader)
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
        # with no leader known the replica waits for one (a leader change), bounded
        return await rep.write(fields, self.timeout)

    # -- reads ------------------------------------------------------------------------------

    async def _barrier(self, consistency: str, rep: Replica) -> Replica:
        if consistency not in CONSISTENCY_LEVELS:
            raise InvalidInput(
                f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}",
                consistency=consistency,
            )
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
        rep = self._rep_for_key(key)
        rep.store.check_key(key)
        if version is not None:
            check_version_id(version)
        when: AsOf = None
        if as_of is not None:
            when = int(as_of) if as_of.isdigit() else as_of
        await self._barrier(consistency, rep)
        return rep.store.get(key, version=version, as_of=when)

    async def scan(
        self,
        *,
        prefix: str | None = None,
        start: str | None = None,
        end: str | None = None,
        limit: int | None = None,
        consistency: Consistency = "linearizable",
        shard: int | None = None,
    ) -> list[Item]:
        """Keys in order. ``shard``: only that shard's. On a sharded cluster without it,
        every shard is read (all read barriers of one call share the loop turn, so each
        shard's ReadIndex rounds batch) and the pages are merged in key order; a prefix
        inside one hash tag (``{user42}:``) reads its one shard."""
        if limit is not None and limit < 0:
            raise InvalidInput("limit must not be negative")
        node = self.node
        if not node.sharded:
            if shard not in (None, DATA_GROUP):
                raise InvalidInput("this cluster has one shard, 0", shard=shard)
            shard = DATA_GROUP
        elif shard is None and prefix and hash_tag(prefix) is not None:
            shard = shard_of(prefix, node.shard_count)  # every key of it has that tag
        if shard is not None:
            rep = await self._barrier(consistency, self._rep_for(self._check_shard(shard)))
            return list(rep.store.scan(prefix, start=start, end=end, limit=limit))
        shard_ids = list(range(node.shard_count))
        if limit is not None:
            return await self._merged_scan(shard_ids, prefix, start, end, limit, consistency)
        reps: list[Replica] = []
        remote: list[asyncio.Task[list[Item]]] = []
        for s in shard_ids:
            local = node.replicas.get(s)
            if local is not None:
                reps.append(local)
            else:  # from a node that has it, concurrently with the local barriers
                remote.append(
                    asyncio.ensure_future(self._remote_scan(s, prefix, start, end, consistency))
                )
        try:
            await asyncio.gather(*(self._barrier(consistency, r) for r in reps))
        except BaseException:
            for t in remote:
                t.cancel()
            raise
        pages = [list(r.store.scan(prefix, start=start, end=end)) for r in reps]
        pages.extend(await asyncio.gather(*remote))
        return list(heapq.merge(*pages, key=_item_key))

    async def _merged_scan(
        self,
        shard_ids: list[int],
        prefix: str | None,
        start: str | None,
        end: str | None,
        limit: int,
        consistency: str,
    ) -> list[Item]:
        """The first ``limit`` keys over ``shard_ids``, asking each shard only for what
        the merge may need (:class:`~tidekv.sharding.scatter.ListingMerge`: about
        2·limit/shards keys each first, then more from the shards that block the page),
        not ``limit`` from every one. Local shards pass their read barrier once, all in
        one loop turn; a remote shard's node passes it for each page it serves."""
        node = self.node
        local = {s: r for s in shard_ids if (r := node.replicas.get(s)) is not None}
        await asyncio.gather(*(self._barrier(consistency, r) for r in local.values()))
        merge: ListingMerge[Item] = ListingMerge(shard_ids, limit, start=start, key=_item_key)
        while wanted := merge.wanted():
            remote = [
                (
                    f.shard,
                    asyncio.ensure_future(
                        self._remote_page(f.shard, prefix, f.start, end, f.limit, consistency)
                    ),
                )
                for f in wanted
                if f.shard not in local
            ]
            try:
                for f in wanted:
                    rep = local.get(f.shard)
                    if rep is not None:
                        got = list(
                            rep.store.scan(prefix, start=f.start, end=end, limit=f.limit + 1)
                        )
                        merge.feed(f.shard, ShardPage(got[: f.limit], more=len(got) > f.limit))
                pages = await asyncio.gather(*(t for _, t in remote))
            finally:  # a failure anywhere: no remote page is left running
                for _, t in remote:
                    t.cancel()
                await asyncio.gather(*(t for _, t in remote), return_exceptions=True)
            for (sid, _), page in zip(remote, pages, strict=True):
                merge.feed(sid, page)
        return merge.result()[0]

    async def _remote_page(
        self,
        shard: int,
        prefix: str | None,
        start: str | None,
        end: str | None,
        limit: int,
        consistency: str,
    ) -> ShardPage[Item]:
        """Up to ``limit`` keys ``>= start`` of a shard this node has no replica of, read
        over HTTP from a node that has one. JSON values come back byte for byte (the
        listing embeds them raw)."""
        url = self._url_of(shard)
        params = {"shard": str(shard), "consistency": consistency, "limit": str(limit)}
        for name, value in (("prefix", prefix), ("start", start), ("end", end)):
            if value is not None:
                params[name] = value
        try:
            r = await self.peer_http().get(url + "/v1/kv", params=params)
        except httpx.TransportError as exc:
            raise Unavailable(
                f"shard {shard} from {url}: {exc or type(exc).__name__}", shard=shard
            ) from exc
        if r.status_code != 200:
            raise Unavailable(f"shard {shard} from {url}: HTTP {r.status_code}", shard=shard)
        page = _page_dec.decode(r.content)
        return ShardPage([i.item() for i in page.items], more=page.next is not None)

    async def _remote_scan(
        self,
        shard: int,
        prefix: str | None,
        start: str | None,
        end: str | None,
        consistency: str,
    ) -> list[Item]:
        """Every key of a remote shard (an unbounded listing), page by page."""
        items: list[Item] = []
        while True:
            page = await self._remote_page(shard, prefix, start, end, _REMOTE_PAGE, consistency)
            items.extend(page.items)
            if not page.more:
                return items
            start = successor(items[-1].key)

    async def history(
        self,
        key: str,
        *,
        limit: int | None = None,
        before: str | None = None,
        consistency: Consistency = "linearizable",
    ) -> list[VersionInfo]:
        rep = self._rep_for_key(key)
        rep.store.check_key(key)
        if limit is not None and limit < 0:
            raise InvalidInput("limit must not be negative")
        await self._barrier(consistency, rep)
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
        rep = await self._barrier(consistency, self._rep_for_key(key))
        return rep.store.diff(key, from_version, to_version)

    # -- the change feed --------------------------------------------------------------------

    async def watch(
        self, *, prefix: str | None = None, since: str | None = None, shard: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The change feed. One shard's (cursor: that shard's revision) on an unsharded
        cluster, with ``shard=``, or for a prefix inside one hash tag; otherwise, on a
        sharded cluster, every shard's merged (cursor: a ``w1.`` revision per shard)."""
        node = self.node
        if not node.sharded:
            if shard not in (None, DATA_GROUP):
                raise InvalidInput("this cluster has one shard, 0", shard=shard)
            shard = DATA_GROUP
        elif shard is None:
            if not prefix or hash_tag(prefix) is None:
                async for item in self._watch_across(prefix, since):
                    yield item
                return
            shard = shard_of(prefix, node.shard_count)
        rep = self._rep_for(self._check_shard(shard) if node.sharded else shard)
        if since is None or since == "":
            after = None
        elif since.isdigit():
            after = int(since)
        else:
            raise InvalidInput(f"watch cursor {since!r} is not a revision number", since=since)
        async for item in self._feed(rep, prefix, after):
            yield item

    async def _feed(
        self, rep: Replica, prefix: str | None, after: int | None
    ) -> AsyncIterator[dict[str, Any]]:
        """One local shard's changes after revision ``after`` (None: from now on, first
        the position of now); positions ``{"cursor"}`` when only other keys changed."""
        if after is None:
            after = rep.store.sm.revision
            yield {"cursor": str(after)}  # a position: resume from here
        while True:
            sm = rep.store.sm  # a snapshot install replaces the store
            skipped = False
            for change in sm.changes(after):
                after = change.revision
                if prefix and not change.key.startswith(prefix):
                    skipped = True
                    continue
                skipped = False
                yield self._event(rep, change.revision, change.key, change.version)
            if skipped:
                yield {"cursor": str(after)}
            await rep.wait_change(after)

    async def _watch_across(
        self, prefix: str | None, since: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every shard's feed merged (:class:`~tidekv.scatter.Scatter`): the shards this
        node holds are read locally, the others streamed from a node that holds them
        (``GET /v1/watch?shard=N``, reopened on another one when it breaks)."""
        node = self.node
        count = node.shard_count
        if since == "0":  # from the beginning: unambiguous for any shard count
            since = WatchCursor.zero(count).encode()
        elif since:  # refused here, before any stream opens: the edge answers 400
            try:
                WatchCursor.decode(since, count)
            except ValueError as exc:
                raise InvalidInput(str(exc), parameter="since") from None
        opened: dict[int, int] = {}

        def url_of(shard: int) -> str:
            # each (re)open of a shard's stream tries the next holder, the leader first:
            # a stream that broke may have broken with its node
            _, holders = self._holders(shard)
            if not holders:
                raise Unavailable(f"no node is known to hold shard {shard}", shard=shard)
            n = opened.get(shard, 0)
            opened[shard] = n + 1
            return holders[n % len(holders)].http_url

        remote = HTTPShards(
            self.peer_http(),
            url_of,
            query={"prefix": prefix} if prefix else None,
            stream_timeout=httpx.Timeout(self.timeout, read=_REMOTE_WATCH_READ),
        )

        def stream(shard: int, after: int | None) -> AsyncIterator[Mapping[str, Any]]:
            rep = node.replicas.get(shard)
            if rep is not None:
                return self._feed(rep, prefix, after)
            return remote.stream(shard, after)

        scatter = Scatter(count, remote.fetch, stream)
        async for item in scatter.watch(prefix=prefix, since=since or None):
            yield item

    def _url_of(self, shard: int) -> str:
        """The URL of a node holding a replica of ``shard`` (its leader if known)."""
        url = self._not_here(shard).details.get("leader_url")
        if not isinstance(url, str):
            raise Unavailable(f"no node is known to hold shard {shard}", shard=shard)
        return url

    def _event(self, rep: Replica, revision: int, key: str, version_id: str) -> dict[str, Any]:
        sm = rep.store.sm
        v = sm.lookup(version_id, key)
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
        if self.node.sharded:
            return self._sharded_info()
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
        lead_peer = rep.leader_peer()
        shard: dict[str, Any] = {
            "id": rep.group,
            "leader": None if st.lead == NONE else st.lead,
            "leader_address": None if lead_peer is None else lead_peer.address,
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
            "shard_count": 1,
            "nodes": nodes,
            "shards": [shard],
        }

    def _sharded_info(self) -> dict[str, Any]:
        """A sharded cluster, as this node sees it: the metadata (members, shard map,
        moves, leaders seen) plus the Raft status of its own replicas. Served by any
        node, not forwarded: a shard's replication progress is shown where it is led."""
        node = self.node
        st = node.cluster
        assert st is not None
        me = node.cfg.node_id
        shards = []
        leads: dict[int, int] = {}
        down = st.down()
        for s in range(node.shard_count):
            ss = st.shard_map[s]
            rep = node.replicas.get(s)
            info: dict[str, Any]
            if rep is not None:
                status = rep.raw.status()
                lead = None if status.lead == NONE else node_of(status.lead)
                info = {
                    "id": s,
                    "leader": lead,
                    "term": status.term,
                    "replicas": sorted(node_of(v) for v in status.conf.voters),
                    "learners": sorted(node_of(v) for v in status.conf.learners),
                    "commit_index": status.commit,
                    "applied_index": rep.applied,
                    "revision": rep.store.sm.revision,
                    "local": True,
                }
                if status.progress:
                    info["progress"] = {
                        str(node_of(rid)): {
                            "match": p.match,
                            "lag": max(0, status.commit - p.match),
                            "state": p.state.name.lower(),
                            "learner": p.is_learner,
                            "active": p.recent_active,
                        }
                        for rid, p in status.progress.items()
                    }
            else:
                seen = st.leaders.get(s)
                # a leader seen on a node now marked down is no leader to route to
                lead = None if seen is None or seen.node in down else seen.node
                info = {
                    "id": s,
                    "leader": lead,
                    "term": None if seen is None else seen.term,
                    "replicas": list(ss.voters),
                    "learners": list(ss.learners),
                    "commit_index": None,
                    "local": False,
                }
            peer = None if lead is None else node.members.get(lead)
            info["leader_address"] = None if peer is None else peer.address
            info["placed"] = list(ss.voters)  # the metadata's record
            if lead is not None:
                leads[lead] = leads.get(lead, 0) + 1
            shards.append(info)
        nodes = []
        meta_voters = node.meta_group_voters()
        for nid, m in sorted(st.members.items()):
            peer = node.members.get(nid)
            nodes.append(
                {
                    "id": nid,
                    "address": m.address,
                    "raft_address": None if peer is None else peer.raft_address,
                    "state": m.state.value,
                    "live": m.live,
                    "down_since": m.down_since,
                    "heard_ago": node.heard_ago(nid),
                    "reachable": nid == me or node.transport.connected(nid),
                    "meta_voter": nid in meta_voters,
                    "leads": leads.get(nid, 0),
                }
            )
        meta = node.meta
        meta_lead = None
        if meta is not None and meta.raw.raft.lead != NONE:
            meta_lead = meta.raw.raft.lead
        moves = [
            {
                "shard": s,
                "from": list(ss.voters),
                "to": list(ss.target),
                "next_step": ss.next_step,
                "step": str(ss.steps[ss.next_step]) if ss.next_step < len(ss.steps) else None,
                "steps": [str(step) for step in ss.steps],
                "blocked": ss.blocked,
            }
            for s, ss in sorted(st.movements().items())
        ]
        return {
            "cluster_id": node.identity.cluster_id,
            "node_id": me,
            "shard_count": node.shard_count,
            "replication": st.replication,
            "nodes": nodes,
            "shards": shards,
            "meta": {
                "voters": meta_voters,
                "leader": meta_lead,
                "term": None if meta is None else meta.raw.raft.term,
                "revision": st.revision,
                "local": meta is not None,
                "down_after": node.cfg.down_after,
                "evict_after": node.cfg.evict_after,
            },
            "moves": moves,
        }

    async def add_node(
        self, node_id: int, address: str, raft_address: str | None = None
    ) -> dict[str, Any]:
        if self.node.sharded:
            return await join_node(self.node, node_id, address, raft_address, self.timeout)
        peer = Peer.make(node_id, address, raft_address)
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
        if self.node.sharded:
            return await decommission_node(self.node, node_id, self.timeout)
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
        if self.node.sharded:
            # every local replica (the metadata's too) knows a leader, and a local leader
            # has committed an entry of its term (it serves reads at once)
            return all(_replica_ready(r) for r in self.node.replicas.values())
        return _replica_ready(self.rep)

    def metrics_text(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


def _replica_ready(rep: Replica) -> bool:
    raft = rep.raw.raft
    if raft.lead == NONE:
        return False
    if raft.role is Role.LEADER:
        return raft.log.term(raft.log.committed) == raft.term
    return True


_REMOTE_PAGE = 1000
_PEER_CONNECT_TIMEOUT = 5.0
_PEER_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=32, keepalive_expiry=15)
"""Connections to other nodes: a merged listing asks at most one page per remote shard at
once, a merged watch holds one stream per remote shard; idle ones close after 15 s."""
_REMOTE_WATCH_READ = 60.0  # a shard stream sends a comment every 15 s when idle


class _RemoteItem(msgspec.Struct):
    key: str
    version: str
    revision: int
    hlc: str
    content_type: str
    value: msgspec.Raw | None = None
    value_b64: str | None = None
    siblings: int = 1

    def item(self) -> Item:
        if self.value is not None:
            data = bytes(self.value)
        else:
            data = base64.b64decode(self.value_b64 or "")
        return Item(
            key=self.key,
            value=data,
            content_type=self.content_type,
            version=self.version,
            revision=self.revision,
            hlc=HLCTimestamp.parse(self.hlc),
            siblings=self.siblings,
        )


class _RemotePage(msgspec.Struct):
    items: list[_RemoteItem]
    next: str | None = None


_page_dec = msgspec.json.Decoder(_RemotePage)


def _item_key(item: Item) -> str:
    return item.key


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
        ride = {
            "led": CounterMetricFamily(
                "tidekv_writes_led",
                "Write commands this node appended as the shard's leader",
                labels=["shard"],
            ),
            "proposals_held": CounterMetricFamily(
                "tidekv_proposals_held",
                "Proposals held because no leader could take them (a leader change)",
                labels=["shard"],
            ),
            "proposals_retried": CounterMetricFamily(
                "tidekv_proposals_retried",
                "Writes proposed again after their proposal was proven lost in a leader change",
                labels=["shard"],
            ),
            "reads_retried": CounterMetricFamily(
                "tidekv_read_index_retried",
                "Reads whose ReadIndex request was asked again (unanswered in time)",
                labels=["shard"],
            ),
        }
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
            for name, fam in ride.items():
                fam.add_metric([s], rep.stats[name])
        yield from g.values()
        yield from ride.values()
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
        yield CounterMetricFamily(
            "tidekv_leader_balance_transfers",
            "Leadership transfers this node (as metadata leader) asked for to spread leaders",
            value=node.stats["balance_transfers"],
        )
        yield CounterMetricFamily(
            "tidekv_leader_balance_hints",
            "Leader-balancing hints this node took from the metadata leader for a shard "
            "it replicates and the metadata leader does not",
            value=node.stats["balance_hints"],
        )
        yield from _member_metrics(node)
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


def _member_metrics(node: Node) -> Iterator[Metric]:
    """Failure handling on a sharded node (docs/sharding.md, "Failure handling")."""
    if not node.sharded or node.cluster is None:
        return
    st = node.cluster
    members = [m for m in st.members.values() if m.state is not MemberState.REMOVED]
    yield GaugeMetricFamily(
        "tidekv_nodes_down",
        "Members marked down in this node's view of the metadata",
        value=sum(not m.live for m in members),
    )
    yield GaugeMetricFamily(
        "tidekv_nodes_evicted",
        "Members evicted from the ring (down too long) in this node's view of the metadata",
        value=sum(m.state is MemberState.EVICTED for m in members),
    )
    heard = GaugeMetricFamily(
        "tidekv_peer_heard_age_seconds",
        "Seconds since this node last received a frame from the member",
        labels=["node"],
    )
    for m in members:
        age = node.heard_ago(m.id)
        if age is not None and m.id != node.cfg.node_id:
            heard.add_metric([str(m.id)], age)
    yield heard
    changes = node.meta.member_changes if node.meta is not None else {}
    for kind, name, text in (
        ("MarkDown", "tidekv_nodes_marked_down", "MarkDown commands applied"),
        ("MarkUp", "tidekv_nodes_marked_up", "MarkUp commands applied"),
        ("Evict", "tidekv_evictions", "Evict commands applied (re-replication)"),
    ):
        c = CounterMetricFamily(
            name, f"{text} by this node's metadata replica, since it started", labels=["node"]
        )
        for (k, nid), n in sorted(changes.items()):
            if k == kind:
                c.add_metric([str(nid)], n)
        yield c
