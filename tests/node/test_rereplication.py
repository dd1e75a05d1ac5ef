"""Re-replication with real processes: SIGKILL one node of five, its shards return to the
replication factor on the live nodes (issue 5, "Rebalancing and failure handling").

Five ``tide serve --shards 16 --down-after 2 --evict-after 4`` nodes (48 shard
replicas); a writer thread writes keys through the live nodes and remembers each
acknowledged write. One node (the metadata leader: the detector then runs on a new
leader, which must mark it down from its own election) is SIGKILLed. The new metadata
leader marks it down after ``--down-after`` of silence and evicts it ``--evict-after``
later: it leaves the ring, and the shard leaders re-create its replicas on the other
nodes (a learner caught up by snapshot, promoted, the dead replica removed). Checked
once ``GET /v1/cluster`` shows no moves: every shard's record is the ring's placement of
the four live nodes (3 voters each, none on the dead node), every shard's real Raft
configuration (from its leader) is the same, writes were acknowledged while it happened
and after, and every acknowledged write reads back (linearizable). Then the killed node
is restarted on its old data: it is heard again, marked up, ACTIVE again, and the ring
moves its share back to it (its stale replicas were retired first: each has a newer
incarnation now), until the records, the real configurations and the placement of all
five agree again and the node serves its shards from its own replicas.
"""

from __future__ import annotations

import time
from pathlib import Path

from tidekv.sharding.keys import shard_of
from tidekv.sharding.ring import DEFAULT_VNODES, Ring

from .proc_cluster import ProcCluster
from .test_sharded_join import assert_served_locally, wait_settled
from .writers import Writer, assert_all_readable

SHARDS = 16
REPLICATION = 3
DOWN_AFTER = 2.0
EVICT_AFTER = 4.0
SETTLE = 240.0  # a wait for a condition, generous for a loaded machine


def placement(nodes: list[int]) -> list[set[int]]:
    ring = Ring({n: 1 for n in nodes}, DEFAULT_VNODES)
    return [set(r) for r in ring.place(SHARDS, REPLICATION).replicas]


def member_state(c: ProcCluster, i: int, nid: int) -> tuple[str, bool] | None:
    v = c.cluster(i)
    if v is None:
        return None
    m = next(n for n in v["nodes"] if n["id"] == nid)
    return m["state"], m["live"]


def wait_member(c: ProcCluster, among: list[int], nid: int, want: tuple[str, bool]) -> float:
    """Until every node of ``among`` shows member ``nid`` as ``want``; returns when."""
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline:
        if all(member_state(c, i, nid) == want for i in among):
            return time.monotonic()
        time.sleep(0.1)
    seen = {i: member_state(c, i, nid) for i in among}
    raise AssertionError(f"node {nid} never {want}: {seen}\n{c.logs()}")


def meta_leader(c: ProcCluster) -> int:
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline:
        v = c.cluster(1)
        if v is not None and isinstance(v["meta"]["leader"], int):
            return int(v["meta"]["leader"])
        time.sleep(0.1)
    raise AssertionError(f"no metadata leader\n{c.logs()}")


def test_sigkill_re_replicates_to_the_replication_factor_and_the_node_comes_back(
    tmp_path: Path,
) -> None:
    args = ("--down-after", str(DOWN_AFTER), "--evict-after", str(EVICT_AFTER))
    c = ProcCluster(tmp_path, 5, shards=SHARDS, extra_args=args)
    writer = Writer(c)
    try:
        c.start_all()
        for i in range(1, 6):
            c.wait_ready(i)
        five = placement([1, 2, 3, 4, 5])
        v = c.cluster(1)
        assert v is not None and [set(sh["placed"]) for sh in v["shards"]] == five
        writer.start()
        writer.wait_acked(30)

        # -- SIGKILL, eviction, re-replication ------------------------------------------------
        dead = meta_leader(c)
        live = [i for i in range(1, 6) if i != dead]
        held = [s for s in range(SHARDS) if dead in five[s]]
        assert held, f"node {dead} holds no replica"
        killed_at = time.monotonic()
        c.kill(dead)
        down_at = wait_member(c, live, dead, ("active", False))
        evicted_at = wait_member(c, live, dead, ("evicted", False))
        four = placement(live)
        assert all(len(r) == REPLICATION and dead not in r for r in four)
        wait_settled(c, live, four, SETTLE)
        settled_at = time.monotonic()
        moved = sum(len(after - before) for before, after in zip(five, four, strict=True))
        assert moved == len(held), (moved, held)  # only the dead node's replicas moved
        during = [t for _v, t in list(writer.acked.values()) if killed_at < t < settled_at]
        assert during, f"no write acknowledged during re-replication ({writer.errors} failed)"
        writer.wait_acked(20, after=settled_at)  # and writes keep succeeding
        assert_all_readable(c, live[0], dict(writer.acked))
        for i in live:  # every live node's view: the shards' replicas are on live nodes
            vi = c.cluster(i)
            assert vi is not None
            assert [set(sh["placed"]) for sh in vi["shards"]] == four, i

        # -- restart: marked up, ACTIVE again, its share moves back -------------------------
        restarted_at = time.monotonic()
        c.start(dead)
        up_at = wait_member(c, list(range(1, 6)), dead, ("active", True))
        wait_settled(c, list(range(1, 6)), five, SETTLE)
        back_at = time.monotonic()
        acked = dict(writer.acked)
        mine = {k: vt for k, vt in acked.items() if dead in five[shard_of(k, SHARDS)]}
        assert mine
        assert_served_locally(c, dead, mine)
        writer.wait_acked(20, after=back_at)
        writer.stop()
        meta = (c.cluster(live[0]) or {}).get("meta", {})
        assert_all_readable(c, dead, dict(writer.acked))
        print(
            f"node {dead} (metadata leader) killed: marked down after "
            f"{down_at - killed_at:.1f} s, evicted after {evicted_at - killed_at:.1f} s "
            f"(--down-after {DOWN_AFTER:g} + --evict-after {EVICT_AFTER:g}), {moved} replicas "
            f"re-created, settled {settled_at - killed_at:.1f} s after the kill with "
            f"{len(during)} writes acked meanwhile; restarted: up after "
            f"{up_at - restarted_at:.1f} s, its share back after {back_at - restarted_at:.1f} s; "
            f"{len(writer.acked)} writes acked, {writer.errors} failed attempts; metadata "
            f"voters now {meta.get('voters')}"
        )
    finally:
        writer.stop()
        c.close()
