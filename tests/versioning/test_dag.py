"""DAG queries, checked against dumb reference implementations on random DAGs."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidekv.errors import InvalidInput, VersionNotFound
from tidekv.versioning import (
    HLCTimestamp,
    Version,
    add_head,
    ancestors,
    common_ancestor,
    heads_of,
    history,
    is_ancestor,
    make_version,
    order_key,
)


@dataclass
class Dag:
    """Versions in creation order (every parent before its children)."""

    versions: list[Version]
    by_id: dict[str, Version] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {v.id: v for v in self.versions}

    def lookup(self, vid: str) -> Version | None:
        return self.by_id.get(vid)


@st.composite
def dags(draw: st.DrawFn, max_size: int = 12) -> Dag:
    n = draw(st.integers(1, max_size))
    out: list[Version] = []
    for i in range(n):
        parents = draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        # Small ranges so HLC and origin ties are common, and HLC times that do not
        # respect causality, so the topological rule has to win over the time stamps.
        hlc = HLCTimestamp(draw(st.integers(0, 4)), draw(st.integers(0, 2)))
        origin = draw(st.sampled_from(["a", "b"]))
        value = None if draw(st.booleans()) and i else str(i).encode()
        # the author makes every version distinct (two parentless tombstones would not be)
        parent_ids = [out[p].id for p in parents]
        out.append(make_version("k", parent_ids, value, hlc, origin, author=str(i)))
    return Dag(out)


# -- the dumb references -----------------------------------------------------------------


def ref_strict_ancestors(dag: Dag, vid: str) -> set[str]:
    out: set[str] = set()
    for p in dag.by_id[vid].parents:
        out |= {p} | ref_strict_ancestors(dag, p)
    return out


def ref_heads_closed(versions: list[Version], dag: Dag) -> set[str]:
    """In an ancestor-closed set: the members that are no other member's ancestor."""
    ids = {v.id for v in versions}
    return {a for a in ids if not any(a in ref_strict_ancestors(dag, b) for b in ids)}


def ref_common_ancestor(dag: Dag, a: str, b: str) -> str | None:
    common = (ref_strict_ancestors(dag, a) | {a}) & (ref_strict_ancestors(dag, b) | {b})
    lowest = [x for x in common if not any(x in ref_strict_ancestors(dag, y) for y in common)]
    if not lowest:
        return None
    return max((dag.by_id[x] for x in lowest), key=order_key).id


def ref_history(dag: Dag, heads: list[str]) -> list[Version]:
    remaining = set().union(*(ref_strict_ancestors(dag, h) | {h} for h in heads))
    out: list[Version] = []
    while remaining:
        ready = [
            dag.by_id[x] for x in remaining if not any(x in dag.by_id[y].parents for y in remaining)
        ]
        pick = max(ready, key=order_key)
        out.append(pick)
        remaining.remove(pick.id)
    return out


# -- properties ----------------------------------------------------------------------------


@settings(max_examples=300)
@given(dags(), st.data())
def test_ancestors_and_is_ancestor(dag: Dag, data: st.DataObject) -> None:
    ids = [v.id for v in dag.versions]
    b = data.draw(st.sampled_from(ids))
    a = data.draw(st.sampled_from(ids))
    ref = ref_strict_ancestors(dag, b)
    assert ancestors(b, dag.lookup) == ref
    assert ancestors(b, dag.lookup, include_self=True) == ref | {b}
    assert is_ancestor(a, b, dag.lookup) == (a in ref)
    assert not is_ancestor(b, b, dag.lookup)


@settings(max_examples=300)
@given(dags(), st.data())
def test_common_ancestor_matches_reference(dag: Dag, data: st.DataObject) -> None:
    ids = [v.id for v in dag.versions]
    a, b = data.draw(st.sampled_from(ids)), data.draw(st.sampled_from(ids))
    got = common_ancestor(a, b, dag.lookup)
    assert got == ref_common_ancestor(dag, a, b)
    assert got == common_ancestor(b, a, dag.lookup)  # symmetric


@settings(max_examples=300)
@given(dags(), st.data())
def test_history_matches_reference(dag: Dag, data: st.DataObject) -> None:
    ids = [v.id for v in dag.versions]
    heads = data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=3))
    got = history(heads, dag.lookup)
    assert got == ref_history(dag, heads)
    position = {v.id: i for i, v in enumerate(got)}
    assert len(position) == len(got)
    for v in got:  # a child always before its parents
        assert all(position[p] > position[v.id] for p in v.parents)
    limit = data.draw(st.integers(0, len(got) + 1))
    assert history(heads, dag.lookup, limit=limit) == got[:limit]


@settings(max_examples=300)
@given(dags(), st.data())
def test_heads_of_matches_reference(dag: Dag, data: st.DataObject) -> None:
    ids = [v.id for v in dag.versions]
    # an ancestor-closed set (what a history is): heads = no other member's ancestor
    tips = data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=3))
    closed = [
        dag.by_id[x]
        for x in set().union(*(ancestors(t, dag.lookup, include_self=True) for t in tips))
    ]
    got = heads_of(closed + closed[:2])  # duplicates are ignored
    assert {v.id for v in got} == ref_heads_closed(closed, dag)
    assert [v.id for v in got] == sorted(v.id for v in got)
    # any subset: the literal definition, no other member's parent
    subset = data.draw(st.lists(st.sampled_from(dag.versions), unique_by=lambda v: v.id))
    expect = {v.id for v in subset if not any(v.id in w.parents for w in subset)}
    assert {v.id for v in heads_of(subset)} == expect


@settings(max_examples=300)
@given(dags())
def test_add_head_incrementally_equals_heads_of(dag: Dag) -> None:
    heads: tuple[str, ...] = ()
    for i, v in enumerate(dag.versions):
        heads = add_head(heads, v)
        assert heads == tuple(x.id for x in heads_of(dag.versions[: i + 1]))


# -- examples ------------------------------------------------------------------------------


def chain() -> tuple[Version, Version, Version, Version, dict[str, Version]]:
    """root -> (left, right) -> merge"""
    t = HLCTimestamp
    root = make_version("k", [], b"0", t(1, 0), "a")
    left = make_version("k", [root.id], b"1", t(2, 0), "a")
    right = make_version("k", [root.id], b"2", t(2, 0), "b")
    merge = make_version("k", [left.id, right.id], b"3", t(3, 0), "a")
    return root, left, right, merge, {v.id: v for v in (root, left, right, merge)}


def test_examples() -> None:
    root, left, right, merge, db = chain()
    assert common_ancestor(left.id, right.id, db.get) == root.id
    assert common_ancestor(left.id, merge.id, db.get) == left.id
    assert history([merge.id], db.get) == [merge, right, left, root]  # right: origin b > a
    assert add_head([left.id, right.id], merge) == (merge.id,)
    assert add_head([right.id], left) == tuple(sorted([left.id, right.id]))
    assert heads_of([root, left, right]) == sorted([left, right], key=lambda v: v.id)
    other = make_version("k", [], b"x", HLCTimestamp(9, 0), "c")
    db[other.id] = other
    assert common_ancestor(other.id, merge.id, db.get) is None
    assert order_key(merge) == (merge.hlc, "a", merge.id)


def test_criss_cross_picks_the_newest_lowest_common_ancestor() -> None:
    t = HLCTimestamp
    root = make_version("k", [], b"0", t(1, 0), "a")
    x = make_version("k", [root.id], b"x", t(2, 0), "a")
    y = make_version("k", [root.id], b"y", t(2, 0), "b")
    m1 = make_version("k", [x.id, y.id], b"m1", t(3, 0), "a")
    m2 = make_version("k", [x.id, y.id], b"m2", t(3, 0), "b")
    db = {v.id: v for v in (root, x, y, m1, m2)}
    assert common_ancestor(m1.id, m2.id, db.get) == y.id  # x and y are both lowest; y newer


def test_missing_versions_raise_version_not_found() -> None:
    root, left, _right, merge, db = chain()
    del db[root.id]
    for call in (
        lambda: ancestors(merge.id, db.get),
        lambda: history([merge.id], db.get),
        lambda: common_ancestor(left.id, merge.id, db.get),
        lambda: is_ancestor(root.id, merge.id, db.get),
        lambda: is_ancestor(left.id, "f" * 40, db.get),
        lambda: ancestors("f" * 40, db.get),
    ):
        with pytest.raises(VersionNotFound):
            call()


def test_history_rejects_negative_limit() -> None:
    *_, db = chain()
    with pytest.raises(InvalidInput):
        history(list(db), db.get, limit=-1)


def test_history_of_nothing() -> None:
    assert history([], lambda vid: None) == []
    assert heads_of([]) == []
