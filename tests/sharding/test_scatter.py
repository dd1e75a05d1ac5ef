"""The pure scatter-gather pieces against dumb references (tidekv.sharding.scatter).

Listings: merge everything, sort, slice -- the merged pages, followed by their cursors,
must be exactly those slices, whatever each shard's page size. Watch: every cursor
handed out must be exact (the events at or below it are precisely the ones delivered),
and its text must decode back to it.
"""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidekv.sharding.keys import shard_of
from tidekv.sharding.scatter import (
    LIST_CURSOR_PREFIX,
    WATCH_CURSOR_PREFIX,
    Interleaver,
    ListingMerge,
    ListPosition,
    ShardPage,
    WatchCursor,
    decode_list_cursor,
    encode_list_cursor,
    merge_pages,
    shards_for_prefix,
    successor,
)

KEY = st.text(alphabet="ab{}\0é\U0001f600", min_size=1, max_size=6)


def split(keys: set[str], shards: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {s: [] for s in range(shards)}
    for k in keys:
        out[shard_of(k, shards)].append(k)
    return {s: sorted(ks) for s, ks in out.items()}


def shard_answer(keys: list[str], start: str | None, limit: int) -> ShardPage[dict[str, str]]:
    """What a shard answers: its keys >= start, at most ``limit``, and whether more."""
    after = [k for k in keys if start is None or k >= start]
    return ShardPage([{"key": k} for k in after[:limit]], more=len(after) > limit)


def list_page(
    by_shard: dict[int, list[str]], limit: int, cursor: str | None, start: str | None = None
) -> tuple[list[str], str | None, int]:
    """One merged page through ListingMerge, as the edge drives it (and the fetch count)."""
    after = None if cursor is None else decode_list_cursor(cursor)
    m: ListingMerge[dict[str, str]] = ListingMerge(by_shard, limit, after=after, start=start)
    fetches = 0
    while wanted := m.wanted():
        for f in wanted:
            fetches += 1
            m.feed(f.shard, shard_answer(by_shard[f.shard], f.start, f.limit))
    items, pos = m.result()
    return [i["key"] for i in items], None if pos is None else encode_list_cursor(pos), fetches


@settings(max_examples=300, deadline=None)
@given(
    keys=st.sets(KEY, max_size=60),
    shards=st.integers(1, 9),
    limit=st.integers(1, 12),
    start=st.none() | KEY,
)
def test_merged_pages_are_the_slices_of_the_sorted_keys(
    keys: set[str], shards: int, limit: int, start: str | None
) -> None:
    by_shard = split(keys, shards)
    reference = sorted(k for k in keys if start is None or k >= start)
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        got, cursor, _ = list_page(by_shard, limit, cursor, start)
        pages.append(got)
        if cursor is None:
            break
        assert len(pages) <= len(reference) + 1
    expected = [reference[i : i + limit] for i in range(0, len(reference), limit)] or [[]]
    assert pages == expected


@settings(max_examples=300, deadline=None)
@given(
    keys=st.sets(KEY, max_size=50),
    shards=st.integers(1, 7),
    limit=st.integers(1, 10),
    seed=st.integers(0, 2**32),
)
def test_one_round_of_truncated_pages_resumes_exactly(
    keys: set[str], shards: int, limit: int, seed: int
) -> None:
    """Each shard's page cut at a random length: no key beyond the smallest last key of a
    shard that has more, and following the cursors returns every key exactly once."""
    rng = random.Random(seed)
    by_shard = split(keys, shards)
    reference = sorted(keys)
    out: list[str] = []
    after: ListPosition | None = None
    for _ in range(10 * len(reference) + 2):
        start = None if after is None else after.start
        pages = {}
        for s, ks in by_shard.items():
            rest = [k for k in ks if start is None or k >= start]
            cut = rng.randint(1, max(1, len(rest)))
            pages[s] = shard_answer(ks, start, cut)
        items, after = merge_pages(pages, limit, after=after)
        got = [i["key"] for i in items]
        assert len(got) <= limit
        more_last = [p.items[-1]["key"] for p in pages.values() if p.more]
        if more_last:
            assert all(k <= min(more_last) for k in got)
        if any(p.items for p in pages.values()):
            assert got, "a round with keys must make progress"
        out.extend(got)
        if after is None:
            break
    assert out == reference


def test_a_page_beyond_a_truncated_shard_stops_at_its_last_key() -> None:
    pages = {
        0: ShardPage([{"key": "a"}, {"key": "c"}], more=True),
        1: ShardPage([{"key": "b"}, {"key": "d"}, {"key": "e"}], more=False),
    }
    items, after = merge_pages(pages, 10)
    assert [i["key"] for i in items] == ["a", "b", "c"]  # "d" might follow an unsent key
    assert after == ListPosition("c")


def test_refetches_only_the_shards_that_block_and_grows_their_pages() -> None:
    # every key on shard 0 but one: the others are exhausted after one fetch
    by_shard = {0: [f"k{i:04}" for i in range(2000)], 1: ["zz"]}
    by_shard |= {s: [] for s in range(2, 16)}
    got, cursor, _ = list_page(by_shard, 1000, None)
    assert got == by_shard[0][:1000]
    assert cursor is not None
    m: ListingMerge[dict[str, str]] = ListingMerge(by_shard, 1000)
    rounds: list[list[tuple[int, int]]] = []
    while wanted := m.wanted():
        rounds.append([(f.shard, f.limit) for f in wanted])
        for f in wanted:
            m.feed(f.shard, shard_answer(by_shard[f.shard], f.start, f.limit))
    assert len(rounds[0]) == 16  # the first round asks every shard
    assert all(shard == 0 for r in rounds[1:] for shard, _ in r)  # then only the blocker
    sizes = [size for _, size in rounds[0][:1]] + [size for r in rounds[1:] for _, size in r]
    assert sizes == [130, 260, 520, 90]  # doubling, the last capped by what is left
    assert sum(sizes) == 1000


def test_limit_zero_probes_and_keeps_the_position() -> None:
    by_shard = {0: ["a"], 1: []}
    assert list_page(by_shard, 0, None)[:2] == ([], encode_list_cursor(ListPosition("", True)))
    assert list_page({0: [], 1: []}, 0, None)[:2] == ([], None)


def test_bad_shard_pages_are_refused() -> None:
    m: ListingMerge[dict[str, str]] = ListingMerge([0], 5)
    with pytest.raises(ValueError, match="out of order"):
        m.feed(0, ShardPage([{"key": "b"}, {"key": "a"}], more=False))
    m = ListingMerge([0], 5)
    with pytest.raises(ValueError, match="has more but sent nothing"):
        m.feed(0, ShardPage([], more=True))
    with pytest.raises(ValueError, match="at least one shard"):
        ListingMerge([], 5)


# -- listing cursors -------------------------------------------------------------------


@given(key=st.text(max_size=30), inclusive=st.booleans())
def test_list_cursor_round_trips(key: str, inclusive: bool) -> None:
    pos = ListPosition(key, inclusive)
    text = encode_list_cursor(pos)
    assert text.startswith(LIST_CURSOR_PREFIX)
    assert all(c.isalnum() or c in "-_." for c in text)  # URL-safe
    assert decode_list_cursor(text) == pos


def test_the_single_shard_list_cursor_is_still_read() -> None:
    # tidekv.http's cursor before sharding: base64url of the key to start at
    assert decode_list_cursor("dXNlci8y") == ListPosition("user/2", inclusive=True)


@pytest.mark.parametrize("bad", ["", "k1.", "k1.AgA", "k1.!!", "@@", "k1.AP8", "x" * 9000])
def test_garbage_list_cursors_are_value_errors(bad: str) -> None:
    with pytest.raises(ValueError, match="list cursor"):
        decode_list_cursor(bad)


def test_successor_is_the_least_greater_string() -> None:
    assert "a" < successor("a") < "a\x01" < "aa" < "b"
    assert successor("a").encode() > b"a"


# -- the hash-tag fast path ------------------------------------------------------------


@given(
    before=st.text(alphabet="ab}", max_size=3),
    tag=st.text(alphabet="xy{", min_size=1, max_size=4),
    after=st.text(alphabet="ab{}", max_size=3),
    rest=st.lists(st.text(alphabet="ab{}z", max_size=5), max_size=5),
    shards=st.sampled_from([2, 16, 64, 4096]),
)
def test_a_prefix_holding_a_whole_tag_is_one_shard(
    before: str, tag: str, after: str, rest: list[str], shards: int
) -> None:
    prefix = before + "{" + tag + "}" + after
    (only,) = shards_for_prefix(prefix, shards)
    for r in rest:
        assert shard_of(prefix + r, shards) == only


@pytest.mark.parametrize("prefix", [None, "", "user/", "{user42", "{}", "a}b{"])
def test_other_prefixes_span_every_shard(prefix: str | None) -> None:
    assert shards_for_prefix(prefix, 8) == list(range(8))


def test_a_tag_prefix_spans_all_when_its_tag_is_open() -> None:
    # "{user42" matches "{user42}:x" and "{user421}:x", which hash differently
    assert shard_of("{user42}:x", 64) != shard_of("{user421}:x", 64)
    assert len(shards_for_prefix("{user42", 64)) == 64


# -- watch cursors ---------------------------------------------------------------------

REVISION = st.integers(0, 2**63 - 1)


@settings(max_examples=200, deadline=None)
@given(
    revisions=st.one_of(
        st.lists(REVISION, min_size=1, max_size=80),
        st.lists(st.integers(0, 5), min_size=1, max_size=300),
        st.tuples(st.integers(1, 4096), st.integers(0, 10**9), st.integers(0, 3000)).map(
            lambda t: [t[1] + (i * 7919) % (t[2] + 1) for i in range(t[0])]
        ),
    )
)
def test_watch_cursor_round_trips(revisions: list[int]) -> None:
    c = WatchCursor(tuple(revisions))
    text = c.encode()
    assert all(ch.isalnum() or ch in "-_." for ch in text)
    assert WatchCursor.decode(text, len(revisions)) == c


def test_one_shard_cursor_is_the_plain_revision() -> None:
    assert WatchCursor((42,)).encode() == "42"
    assert WatchCursor.decode("42", 1) == WatchCursor((42,))


def test_a_plain_revision_is_refused_by_a_sharded_cluster() -> None:
    with pytest.raises(ValueError, match=r"single-shard revision.*64 shards"):
        WatchCursor.decode("42", 64)


def test_cursor_for_another_shard_count_is_refused() -> None:
    with pytest.raises(ValueError, match="for 64 shards, but the cluster has 16"):
        WatchCursor.decode(WatchCursor.zero(64).encode(), 16)


def test_watch_cursors_are_compact() -> None:
    fresh = WatchCursor.zero(4096).encode()
    assert fresh.startswith(WATCH_CURSOR_PREFIX) and len(fresh) <= 16
    # a busy cluster: every shard near a million, within a few thousand of each other
    rng = random.Random(5)
    busy64 = WatchCursor(tuple(10**6 + rng.randrange(4000) for _ in range(64))).encode()
    busy4096 = WatchCursor(tuple(10**6 + rng.randrange(4000) for _ in range(4096))).encode()
    # 12 bits a shard at most (the spread), plus a few bytes of header and check
    assert len(busy64) <= 3 + (64 * 12 // 8 + 10) * 4 // 3 + 1
    assert len(busy4096) <= 3 + (4096 * 12 // 8 + 10) * 4 // 3 + 1
    # one hot shard among idle ones
    hot = WatchCursor.zero(4096).advance(17, 123456789).encode()
    assert len(hot) <= 24


def test_damaged_watch_cursors_are_refused() -> None:
    rng = random.Random(9)
    c = WatchCursor(tuple(rng.randrange(10**6) for _ in range(64))).encode()
    for bad in (c[:-1], c[:-4], c + "A", c[:10] + ("B" if c[10] != "B" else "C") + c[11:]):
        with pytest.raises(ValueError, match="watch cursor"):
            WatchCursor.decode(bad, 64)
    for bad in ("", "w1.", "w1.#", "hello", "-3", "w2.AAAA", "12a", "٣"):
        with pytest.raises(ValueError):
            WatchCursor.decode(bad, 64)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=40), shards=st.sampled_from([1, 2, 64]))
def test_watch_cursor_decoding_fails_only_with_value_error(text: str, shards: int) -> None:
    with contextlib.suppress(ValueError):
        WatchCursor.decode(text, shards)
    with contextlib.suppress(ValueError):
        WatchCursor.decode(WATCH_CURSOR_PREFIX + text, shards)


def test_advance_never_moves_back() -> None:
    c = WatchCursor((5, 7))
    assert c.advance(0, 9) == WatchCursor((9, 7))
    assert c.advance(1, 3) is c


# -- the interleaver -------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    shards=st.integers(1, 5),
    seed=st.integers(0, 2**32),
    known=st.booleans(),
)
def test_interleaved_feed_keeps_shard_order_and_exact_cursors(
    shards: int, seed: int, known: bool
) -> None:
    """Random per-shard streams with reconnections that replay a stretch: every event
    comes out once, in its shard's order, and after each one the cursor covers exactly
    the events delivered (so resuming from it loses and repeats nothing)."""
    rng = random.Random(seed)
    streams: dict[int, list[int]] = {}
    for s in range(shards):
        rev, revs = rng.randrange(5), []
        for _ in range(rng.randrange(8)):
            rev += rng.randint(1, 3)  # filtered streams skip revisions
            revs.append(rev)
        streams[s] = revs
    starts: list[int | None] = [0 if known else None] * shards
    il: Interleaver[tuple[int, int]] = Interleaver(starts)
    sent = dict.fromkeys(range(shards), 0)  # how far each stream got
    delivered: list[tuple[int, int]] = []
    cursors: list[WatchCursor] = []
    if not known:
        for s in range(shards):  # a watch from now on: each stream tells its position
            il.offer(s, 0)
    steps = 0
    while steps < 400:
        steps += 1
        s = rng.randrange(shards)
        if rng.random() < 0.15:  # the stream broke: it resumes from where it was told
            after = il.resume_from(s)
            assert after is not None
            replay = rng.randint(0, 2)  # a server may send a little again
            sent[s] = max(0, sum(1 for r in streams[s] if r <= after) - replay)
        elif sent[s] < len(streams[s]):
            r = streams[s][sent[s]]
            il.offer(s, r, (s, r))
            sent[s] += 1
        while (out := il.pop()) is not None:
            cursor, event = out
            if event is not None:
                delivered.append(event)
            cursors.append(cursor)
            owed = {(q, r) for q, rs in streams.items() for r in rs if r <= cursor.revisions[q]}
            assert owed == set(delivered)
        if all(sent[q] == len(streams[q]) for q in streams) and il.pending == 0:
            break
    for s, revs in streams.items():
        assert [r for q, r in delivered if q == s] == revs[: sent[s]]
    assert len(delivered) == len(set(delivered))
    if not known:
        assert cursors and cursors[0] == WatchCursor.zero(shards)  # the start, announced


def test_the_start_waits_for_every_shard_position() -> None:
    il: Interleaver[str] = Interleaver([None, None, None])
    assert il.offer(0, 10)
    assert il.offer(0, 11, "a")
    assert il.pop() is None  # shards 1 and 2 not heard from: no cursor can be made
    il.offer(1, 4)
    il.offer(2, 8)
    assert il.pop() == (WatchCursor((10, 4, 8)), None)
    assert il.pop() == (WatchCursor((11, 4, 8)), "a")
    assert il.pop() is None
    assert not il.offer(0, 11, "a")  # a replay after reconnecting
    assert il.resume_from(0) == 11


def test_only_watched_shards_report() -> None:
    il: Interleaver[str] = Interleaver([None, None, None, None], watched=[2])
    il.offer(2, 5)
    assert il.pop() == (WatchCursor((0, 0, 5, 0)), None)
    with pytest.raises(ValueError, match="not watched"):
        il.offer(1, 3, "x")
