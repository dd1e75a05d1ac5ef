"""Sibling resolution policies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidekv.errors import InvalidInput
from tidekv.versioning import (
    JSON_CONTENT_TYPE,
    RESOLVERS,
    HLCTimestamp,
    LastWriteWins,
    Manual,
    Resolution,
    Resolver,
    Version,
    get_resolver,
    make_version,
    order_key,
)

from .strategies import values

heads_strategy = st.lists(
    st.builds(
        lambda v, w, lg, o, ct: make_version("k", [], v, HLCTimestamp(w, lg), o, content_type=ct),
        values,
        st.integers(0, 3),
        st.integers(0, 2),
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["text/plain", JSON_CONTENT_TYPE]),
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda v: v.id,
)


@given(heads_strategy, st.randoms(use_true_random=False))
def test_lww_picks_the_largest_order_key(heads: list[Version], rnd: object) -> None:
    store = {v.id: f"value of {v.id}".encode() for v in heads if not v.deleted}
    loaded: list[str] = []

    def load(v: Version) -> bytes | None:
        loaded.append(v.id)
        return store[v.id]

    res = LastWriteWins().resolve(heads, load)
    winner = max(heads, key=order_key)
    assert res.version == winner
    assert res.siblings == len(heads)
    assert res.content_type == winner.content_type
    assert not res.unresolved
    if winner.deleted:
        assert res.value is None and loaded == []
    else:
        assert res.value == store[winner.id] and loaded == [winner.id]
    shuffled = list(heads)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert LastWriteWins().resolve(shuffled, lambda v: store.get(v.id)) == res


def test_lww_example_tie_on_hlc_broken_by_origin() -> None:
    t = HLCTimestamp(5, 0)
    a = make_version("k", [], b"A", t, "site-a")
    b = make_version("k", [], b"B", t, "site-b")
    res = get_resolver("lww").resolve([b, a], lambda v: {a.id: b"A", b.id: b"B"}[v.id])
    assert res == Resolution(b, b"B", "application/octet-stream", 2)


def test_manual() -> None:
    a = make_version("k", [], b"A", HLCTimestamp(1, 0), "a")
    b = make_version("k", [], None, HLCTimestamp(2, 0), "b")
    m = get_resolver("manual")
    assert isinstance(m, Manual)
    assert m.resolve([a], lambda v: b"A") == Resolution(a, b"A", a.content_type, 1)
    assert m.resolve([b], lambda v: pytest.fail("a tombstone is not loaded")).value is None
    res = m.resolve([a, b], lambda v: pytest.fail("nothing is loaded"))
    assert res.unresolved and res.version is None and res.value is None and res.siblings == 2


def test_registry() -> None:
    assert set(RESOLVERS) >= {"lww", "manual"}
    for name, r in RESOLVERS.items():
        assert r.name == name
        typed: Resolver = r  # the protocol is satisfied (mypy checks this line)
        assert typed is get_resolver(name)
    with pytest.raises(InvalidInput, match="unknown conflict resolver 'nope'; known: lww"):
        get_resolver("nope")
    with pytest.raises(InvalidInput):
        get_resolver(["lww"])  # type: ignore[arg-type]


def test_no_heads_is_invalid() -> None:
    for r in RESOLVERS.values():
        with pytest.raises(InvalidInput):
            r.resolve([], lambda v: None)
