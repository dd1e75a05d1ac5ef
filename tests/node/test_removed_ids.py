"""Removed node ids on real ``tide serve`` processes: a removed id is tombstoned in the
replicated membership and can never be added again (409 over HTTP, exit 1 from
``tide cluster add``, membership unchanged), through restarts; a removed node that
comes back on its old data campaigns in vain: its messages are dropped, it gets no
votes and never leads. Membership by ``POST``/``DELETE /v1/cluster/nodes``: an unsharded
cluster (``--shards 1``)."""

from __future__ import annotations

import time

import pytest

from .proc_cluster import ProcCluster
from .test_cli_on_cluster import eventually, one_error_line, tide, write_keys

pytestmark = pytest.mark.timeout(300)


def refused(c: ProcCluster, via: int, victim: int) -> None:
    """Adding ``victim`` again through node ``via`` is refused and changes nothing."""
    before = c.cluster(c.leader())
    assert before is not None
    r = c.http.post(
        c.url(via) + "/v1/cluster/nodes",
        json={"id": victim, "address": c.address(victim)},
        timeout=30.0,
    )
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == "conflict"
    assert err["message"] == (
        f"node id {victim} was removed from this cluster; join it with a new id"
    )
    p = tide("cluster", "add", str(victim), c.address(victim), "--url", c.url(via))
    assert p.returncode == 1
    assert one_error_line(p) == (
        f"error: node id {victim} was removed from this cluster; join it with a new id"
    )
    after = c.cluster(c.leader())
    assert after is not None
    for key in ("replicas", "learners", "removed"):
        assert after["shards"][0][key] == before["shards"][0][key], key
    assert victim not in {n["id"] for n in after["nodes"]}


def removed_drops(c: ProcCluster, i: int) -> float:
    return c.metric(i, "tidekv_messages_from_removed_total") or 0.0


def test_a_removed_id_cannot_be_added_again_even_after_restarts(
    unsharded_trio: ProcCluster,
) -> None:
    c = unsharded_trio
    leader = c.leader()
    write_keys(c, leader, "a/", 10)
    victim = next(i for i in (1, 2, 3) if i != leader)
    rest = sorted({1, 2, 3} - {victim})
    r = c.http.delete(c.url(leader) + f"/v1/cluster/nodes/{victim}")
    assert r.status_code == 200, r.text
    for i in rest:  # every replica applies the tombstone
        eventually(
            f"node {i} knows {victim} was removed",
            lambda i=i: (
                (info := c.cluster(i)) is not None and info["shards"][0]["removed"] == [victim]
            ),
            c,
        )
    # with the removed process still running, with a wiped disk, and with its old disk
    for via in (leader, *rest):
        refused(c, via, victim)
    c.kill(victim)
    c.wipe(victim)
    c.start(victim, join=True)
    refused(c, leader, victim)
    c.kill(victim)
    # the tombstone is durable: it survives a restart of every remaining node
    for i in rest:
        c.stop(i)
    for i in rest:
        c.start(i)
    c.leader(among=rest)
    for i in rest:
        info = c.cluster(i)
        assert info is not None and info["shards"][0]["removed"] == [victim]
        # the restarted core has the membership as applied, not the initial one
        assert info["shards"][0]["replicas"] == rest
        refused(c, i, victim)
    write_keys(c, c.leader(among=rest), "b/", 5)


def test_a_removed_node_back_on_its_old_data_does_not_disturb_the_cluster(
    unsharded_trio: ProcCluster,
) -> None:
    c = unsharded_trio
    leader = c.leader()
    write_keys(c, leader, "a/", 10)
    victim = next(i for i in (1, 2, 3) if i != leader)
    rest = sorted({1, 2, 3} - {victim})
    # it is down when it is removed, so it never learns it: back on its old data it
    # believes it is a voter of {1, 2, 3} and campaigns, again and again
    c.kill(victim)
    r = c.http.delete(c.url(leader) + f"/v1/cluster/nodes/{victim}", timeout=30.0)
    assert r.status_code == 200, r.text
    write_keys(c, leader, "b/", 10)
    info = c.cluster(leader)
    assert info is not None
    term = info["shards"][0]["term"]
    c.start(victim)
    eventually(
        "the survivors dropping the removed node's messages",
        lambda: sum(removed_drops(c, i) for i in rest) >= 5,
        c,
    )
    # it did not disturb the leader: same leader, same term, writes commit
    write_keys(c, leader, "c/", 10)
    info = c.cluster(leader)
    assert info is not None
    assert (info["shards"][0]["leader"], info["shards"][0]["term"]) == (leader, term)
    assert info["shards"][0]["replicas"] == rest

    # an election among the survivors while it campaigns: it gets no votes, never leads
    c.stop(leader)
    c.start(leader)
    new_leader = c.leader(among=rest)
    assert new_leader in rest
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:  # sample its own view for a while
        with_victim = c.cluster(victim)
        if with_victim is not None:
            assert with_victim["shards"][0]["leader"] != victim, with_victim
        time.sleep(0.1)
    write_keys(c, new_leader, "d/", 10)
    for i in rest:
        info = c.cluster(i)
        assert info is not None
        assert info["shards"][0]["replicas"] == rest
        assert info["shards"][0]["leader"] in rest
    # it has its old data only: nothing written after its removal reached it
    r = c.get(victim, "b/0", "stale")
    assert r.status_code == 404, r.text
    assert c.alive(victim)
