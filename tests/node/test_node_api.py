"""The API contract on real node processes: bad requests change nothing, retries with an
Idempotency-Key create one version even across a leader change, reads by consistency."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from .proc_cluster import ProcCluster, running

pytestmark = pytest.mark.timeout(240)


def _single(tmp_path_factory: pytest.TempPathFactory, shards: int | None) -> Iterator[ProcCluster]:
    with running(tmp_path_factory.mktemp("single"), 1, shards=shards) as c:
        yield c


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    """One node, the default shard count."""
    yield from _single(tmp_path_factory, None)


@pytest.fixture(scope="module")
def single_unsharded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    """One node, ``--shards 1``: membership changes by ``POST /v1/cluster/nodes``."""
    yield from _single(tmp_path_factory, 1)


def revision(c: ProcCluster) -> int:
    """Every shard's revision, summed: any write anywhere moves it."""
    info = c.cluster(1)
    assert info is not None
    return sum(int(sh["revision"]) for sh in info["shards"])


def error_code(r: httpx.Response) -> str:
    assert r.headers["content-type"].startswith("application/json"), r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    return str(body["error"]["code"])


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("PUT", "/v1/kv/" + "k" * 1025, {"content": b"x"}, 413, "too_large"),
        ("PUT", "/v1/kv/big", {"content": b"x" * ((1 << 20) + 1)}, 413, "too_large"),
        (
            "PUT",
            "/v1/kv/doc",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "invalid_json",
        ),
        ("PUT", "/v1/kv/cas", {"content": b"x", "headers": {"if-match": "nonsense"}}, 400, None),
        ("GET", "/v1/kv/seed", {"params": {"version": "f" * 40}}, 404, "version_not_found"),
        ("GET", "/v1/kv/seed", {"params": {"consistency": "sometimes"}}, 400, None),
        ("POST", "/v1/kv/seed/rollback", {"json": {"to": "a" * 40}}, 404, "version_not_found"),
        ("GET", "/v2/nothing-here", {}, 404, None),
        # found by schemathesis: an id past int64 was a 500 (msgpack could not encode it)
        (
            "POST",
            "/v1/cluster/nodes",
            {"json": {"id": 41284563208440475901363224576, "address": "127.0.0.1:1"}},
            400,
            "invalid_input",
        ),
        ("DELETE", "/v1/cluster/nodes/99999999999999999999", {}, 400, "invalid_input"),
    ],
)
def test_bad_requests_get_json_errors_and_write_nothing(
    single: ProcCluster,
    method: str,
    path: str,
    kwargs: dict[str, object],
    status: int,
    code: str | None,
) -> None:
    r = single.put(1, "seed", b"v")
    assert r.status_code == 200
    before = revision(single)
    r = single.http.request(method, single.url(1) + path, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    got = error_code(r)
    if code is not None:
        assert got == code
    assert revision(single) == before


def test_consistency_levels_all_read_the_acknowledged_write(trio: ProcCluster) -> None:
    leader = trio.leader()
    r = trio.put(leader, "cons", b"v1")
    assert r.status_code == 200
    version = r.json()["version"]
    for node in (1, 2, 3):
        for level in ("linearizable", "follower", "lease"):
            g = trio.get(node, "cons", consistency=level)
            assert g.status_code == 200 and g.content == b"v1", (node, level, g.text)
            assert g.headers["etag"] == f'"{version}"'


def test_idempotent_retry_across_a_leader_change_creates_one_version(trio: ProcCluster) -> None:
    leader = trio.leader()
    headers = {"idempotency-key": "retry-me-1"}
    first = trio.put(leader, "idem", b"once", **headers)
    assert first.status_code == 200, first.text
    trio.kill(leader)
    others = [i for i in (1, 2, 3) if i != leader]
    new = trio.leader(among=others)
    again = trio.put(new, "idem", b"once", **headers)
    assert again.status_code == 200, again.text
    assert again.json()["version"] == first.json()["version"]
    assert again.json()["revision"] == first.json()["revision"]
    hist = trio.http.get(trio.url(new) + "/v1/kv/idem/history").json()
    assert len(hist["versions"]) == 1
    # the same key with another body is still answered with the first outcome
    other = trio.put(new, "idem", b"different", **headers)
    assert other.json()["version"] == first.json()["version"]
    # a failed precondition is remembered too: the retry does not suddenly succeed
    fail_headers = {"idempotency-key": "retry-me-2", "if-none-match": "*"}
    r1 = trio.put(new, "idem", b"x", **fail_headers)
    assert r1.status_code == 412
    r2 = trio.put(new, "idem", b"x", **fail_headers)
    assert r2.status_code == 412 and error_code(r2) == "precondition_failed"


def test_joining_a_new_id_at_a_members_address_is_refused_at_once(
    single_unsharded: ProcCluster,
) -> None:
    """Found by schemathesis: a new id at an existing member's address became a learner
    that could never catch up (its messages reached node 1 itself) and the request hung
    until the catch-up deadline. Two members never share an address: 409, nothing added."""
    single = single_unsharded
    before = single.cluster(1)
    assert before is not None
    own = single.url(1).removeprefix("http://")
    r = single.http.post(single.url(1) + "/v1/cluster/nodes", json={"id": 9, "address": own})
    assert r.status_code == 409, r.text
    assert error_code(r) == "conflict"
    assert own in r.json()["error"]["message"]
    after = single.cluster(1)
    assert after is not None
    shard_before, shard_after = before["shards"][0], after["shards"][0]
    assert shard_after["replicas"] == shard_before["replicas"] == [1]
    assert shard_after.get("learners", []) == []
    assert [n["id"] for n in after["nodes"]] == [n["id"] for n in before["nodes"]]
