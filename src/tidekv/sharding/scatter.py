"""Queries that span shards, pure: merged listings, the watch cursor, the feed interleaver.

The node (and :mod:`tidekv.scatter`, the async edge) fetches per-shard listing pages
and per-shard change streams; this module decides what to fetch next and what the
merged answer is, with no I/O (tests/sharding/test_purity.py).

**Listings.** Shards hold disjoint keys, and each shard lists its keys in key order.
:class:`ListingMerge` merges per-shard pages into one page of at most ``limit`` keys in
key order. Each shard's page may be truncated (it says whether it has ``more``); so a
merged page only includes keys up to the smallest *last key* among shards that still
have more: a key beyond it may be preceded by a key that shard has not sent yet. When
that blocks the page, :meth:`ListingMerge.wanted` names the shards to fetch again (the
ones whose last key is below the next candidate), with growing page sizes. The merged
cursor is a position in key space, ``after K`` (every key <= K was returned), so it
needs nothing per shard and resumes exactly: the next page asks every shard for keys
``>= successor(K)`` (``K + "\\0"``, the least string greater than K).

**The watch cursor.** :class:`WatchCursor` is a revision per shard: "every change of
shard i up to revision r[i] has been delivered". Encoded it is opaque and URL-safe:
``w1.`` + base64url of (shard count, an encoding of the vector, a 2-byte check). The
vector is stored as a frame of reference (the minimum, then every revision's offset
from it bit-packed at the width of the largest offset) or, when most shards sit at one
revision, as that revision plus the exceptions: whichever is shorter. A one-shard
cursor is the plain decimal revision, the form tidekv used before sharding (and still
accepts).

**The interleaver.** :class:`Interleaver` merges per-shard change streams into one: it
keeps each shard's order (and so each key's, since a key lives on one shard), drops
what a reconnected shard stream sends again (revisions at or below what it has seen),
and hands out, with every event, the cursor right after it.

**One-shard prefixes.** A prefix that contains a whole hash tag (``{user42}:``) can only
match keys with that tag, which all live on one shard: :func:`shards_for_prefix`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tidekv.sharding.keys import check_shards, hash_tag, shard_of

__all__ = [
    "LIST_CURSOR_PREFIX",
    "WATCH_CURSOR_PREFIX",
    "Interleaver",
    "ListPosition",
    "ListingMerge",
    "ShardFetch",
    "ShardPage",
    "WatchCursor",
    "decode_list_cursor",
    "encode_list_cursor",
    "merge_pages",
    "shards_for_prefix",
    "successor",
]

T = TypeVar("T")

LIST_CURSOR_PREFIX = "k1."
"""Version tag of a merged listing cursor (``k1.`` + base64url of a flag and a key)."""

WATCH_CURSOR_PREFIX = "w1."
"""Version tag of a many-shard watch cursor."""

MAX_REVISION = 2**63 - 1
_MAX_CURSOR_CHARS = 64 * 1024  # 4096 shards of 63-bit revisions fit in about 44 KiB


def shards_for_prefix(prefix: str | None, shards: int) -> list[int]:
    """The shards that can hold a key starting with ``prefix``: one shard when the prefix
    contains a whole hash tag (every key with that prefix has the same tag), else all.

    A key ``prefix + rest`` finds its first ``{`` where the prefix does, and the first
    ``}`` after it inside the prefix too, so its tag is the prefix's tag.
    """
    check_shards(shards)
    if prefix and hash_tag(prefix) is not None:
        return [shard_of(prefix, shards)]
    return list(range(shards))


def successor(key: str) -> str:
    """The least string greater than ``key`` (in code point and in UTF-8 byte order)."""
    return key + "\0"


# -- listings ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListPosition:
    """Where a listing resumes: at ``key`` (inclusive) or after it."""

    key: str
    inclusive: bool = False

    @property
    def start(self) -> str:
        """The inclusive lower bound to ask the shards for."""
        return self.key if self.inclusive else successor(self.key)


def encode_list_cursor(pos: ListPosition) -> str:
    """The opaque listing cursor of a position."""
    raw = (b"\x01" if pos.inclusive else b"\x00") + pos.key.encode("utf-8")
    return LIST_CURSOR_PREFIX + _b64(raw)


def decode_list_cursor(cursor: str) -> ListPosition:
    """The position of a listing cursor; ``ValueError`` naming the problem when it is not
    one. A cursor without the version tag is the single-shard form (base64url of the key
    to start at, inclusive), which tidekv sent before sharding."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > 8 * 1024:
        raise ValueError(f"invalid list cursor {str(cursor)[:60]!r}: empty or too long")
    if cursor.startswith(LIST_CURSOR_PREFIX):
        raw = _unb64(cursor[len(LIST_CURSOR_PREFIX) :], "list cursor", cursor)
        if not raw or raw[0] not in (0, 1):
            raise ValueError(f"invalid list cursor {cursor[:60]!r}: unknown flag")
        return ListPosition(_utf8(raw[1:], cursor), inclusive=raw[0] == 1)
    return ListPosition(_utf8(_unb64(cursor, "list cursor", cursor), cursor), inclusive=True)


@dataclass(frozen=True, slots=True)
class ShardPage(Generic[T]):
    """One shard's page: items in key order, and whether the shard has more after them."""

    items: Sequence[T]
    more: bool


@dataclass(frozen=True, slots=True)
class ShardFetch:
    """Ask ``shard`` for at most ``limit`` keys ``>= start`` (None: from the beginning)."""

    shard: int
    start: str | None
    limit: int


@dataclass(slots=True)
class _Shard(Generic[T]):
    buffer: deque[tuple[str, T]] = field(default_factory=deque)
    last: str | None = None  # the last key it sent
    fetched: bool = False
    done: bool = False
    size: int = 0  # the page size of its last fetch (doubles while it blocks the page)


class ListingMerge(Generic[T]):
    """Merges per-shard listing pages into one page of at most ``limit`` items.

    Loop: ``while (fetches := m.wanted()): for f in fetches: m.feed(f.shard, page)``,
    then :meth:`result`. ``key`` reads an item's key (default: ``item["key"]``).
    ``after`` is where the listing resumes (from a cursor), ``start`` the request's own
    inclusive lower bound; the later of the two wins.
    """

    def __init__(
        self,
        shards: Iterable[int],
        limit: int,
        *,
        after: ListPosition | None = None,
        start: str | None = None,
        key: Callable[[T], str] | None = None,
    ) -> None:
        if limit < 0:
            raise ValueError("limit must not be negative")
        self.limit = limit
        self._key: Callable[[T], str] = key or _item_key
        self._shards: dict[int, _Shard[T]] = {s: _Shard() for s in shards}
        if not self._shards:
            raise ValueError("a listing needs at least one shard")
        origin = start
        if after is not None and (origin is None or after.start > origin):
            origin = after.start
        self.origin = origin
        self.items: list[T] = []
        self._last: str | None = None  # the last key taken into the page

    def wanted(self) -> list[ShardFetch]:
        """The fetches needed before the page can grow; empty when it is complete."""
        if self.limit == 0:  # one probe of each shard: is there anything at all?
            if any(st.fetched for st in self._shards.values()):
                return []
            return [ShardFetch(sid, self.origin, 1) for sid in sorted(self._shards)]
        self._advance()
        if len(self.items) >= self.limit or self._exhausted():
            return []
        candidate = self._candidate()
        remaining = max(1, self.limit - len(self.items))
        share = 2 * -(-remaining // len(self._shards)) + 4
        out: list[ShardFetch] = []
        for sid, st in sorted(self._shards.items()):
            if st.done or st.buffer:
                continue  # a shard with buffered keys cannot be below the candidate
            below = candidate is None or st.last is None or st.last < candidate
            if st.fetched and not below:
                continue
            size = min(remaining, share if not st.fetched else max(share, 2 * st.size))
            st.size = size
            start = self.origin if st.last is None else successor(st.last)
            out.append(ShardFetch(sid, start, size))
        return out

    def feed(self, shard: int, page: ShardPage[T]) -> None:
        """Add a shard's answer to the last :class:`ShardFetch` for it."""
        st = self._shards[shard]
        prev = st.last
        for item in page.items:
            k = self._key(item)
            if prev is not None and k <= prev:
                raise ValueError(f"shard {shard} sent key {k!r} out of order (after {prev!r})")
            if self.origin is not None and k < self.origin:
                raise ValueError(f"shard {shard} sent key {k!r} before the start {self.origin!r}")
            st.buffer.append((k, item))
            prev = k
        if page.more and not page.items:
            raise ValueError(f"shard {shard} says it has more but sent nothing")
        st.last = prev
        st.fetched = True
        st.done = not page.more

    def result(self) -> tuple[list[T], ListPosition | None]:
        """The page and where the next one starts (None: the listing is complete)."""
        self._advance()
        if self._exhausted():
            return self.items, None
        if self._last is None:  # nothing taken (limit 0): resume where this page began
            return self.items, ListPosition(self.origin or "", inclusive=True)
        return self.items, ListPosition(self._last)

    def _exhausted(self) -> bool:
        return all(st.done and not st.buffer for st in self._shards.values())

    def _candidate(self) -> str | None:
        keys = [st.buffer[0][0] for st in self._shards.values() if st.buffer]
        return min(keys) if keys else None

    def _bound(self) -> tuple[bool, str | None]:
        """(blocked entirely, the largest key that may be taken; None: no bound)."""
        bound: str | None = None
        for st in self._shards.values():
            if st.done:
                continue
            if st.last is None:
                return True, None
            if bound is None or st.last < bound:
                bound = st.last
        return False, bound

    def _advance(self) -> None:
        """Take keys in order while they are at or below the bound (which only feeds
        move, so it is computed once; the buffered heads sit in a heap)."""
        if len(self.items) >= self.limit:
            return
        blocked, bound = self._bound()
        if blocked:
            return
        heads = [(st.buffer[0][0], sid) for sid, st in self._shards.items() if st.buffer]
        heapq.heapify(heads)
        while heads and len(self.items) < self.limit:
            k, sid = heads[0]
            if bound is not None and k > bound:
                return
            st = self._shards[sid]
            self.items.append(st.buffer.popleft()[1])
            self._last = k
            if st.buffer:
                heapq.heapreplace(heads, (st.buffer[0][0], sid))
            else:
                heapq.heappop(heads)


def _item_key(item: object) -> str:
    return str(item["key"])  # type: ignore[index]


def merge_pages(
    pages: Mapping[int, ShardPage[T]],
    limit: int,
    *,
    after: ListPosition | None = None,
    start: str | None = None,
    key: Callable[[T], str] | None = None,
) -> tuple[list[T], ListPosition | None]:
    """One round: the merged page of these per-shard pages (every shard of the listing
    must be in ``pages``) and where the next page starts."""
    m: ListingMerge[T] = ListingMerge(pages, limit, after=after, start=start, key=key)
    for sid, page in pages.items():
        m.feed(sid, page)
    return m.result()


# -- the watch cursor --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchCursor:
    """Per shard, the revision up to which its changes have been delivered."""

    revisions: tuple[int, ...]

    def __post_init__(self) -> None:
        check_shards(len(self.revisions))
        for r in self.revisions:
            if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= MAX_REVISION:
                raise ValueError(f"a revision must be an integer in 0..2**63-1: {r!r}")

    @classmethod
    def zero(cls, shards: int) -> WatchCursor:
        return cls((0,) * check_shards(shards))

    @property
    def shards(self) -> int:
        return len(self.revisions)

    def advance(self, shard: int, revision: int) -> WatchCursor:
        """The cursor after an event of ``shard`` at ``revision`` (never moves back)."""
        if revision <= self.revisions[shard]:
            return self
        rs = list(self.revisions)
        rs[shard] = revision
        return WatchCursor(tuple(rs))

    def encode(self) -> str:
        """The opaque, URL-safe text of the cursor (a plain integer for one shard)."""
        if self.shards == 1:
            return str(self.revisions[0])
        dense = _dense(self.revisions)
        sparse = _sparse(self.revisions, len(dense))
        body = _varint(self.shards) + (dense if sparse is None else min(dense, sparse, key=len))
        return WATCH_CURSOR_PREFIX + _b64(body + _check(body))

    @classmethod
    def decode(cls, text: str, shards: int) -> WatchCursor:
        """The cursor of ``text`` for a cluster of ``shards`` shards; ``ValueError`` naming
        the problem when it is not one (the HTTP edge answers 400)."""
        check_shards(shards)
        if not isinstance(text, str) or not text:
            raise ValueError("the watch cursor is empty")
        show = text[:60]
        if text.isdigit() and text.isascii():
            if shards != 1:
                raise ValueError(
                    f"watch cursor {show!r} is a single-shard revision, but the cluster has "
                    f"{shards} shards: watch from now on (no cursor) and keep the new cursors"
                )
            rev = int(text)
            if rev > MAX_REVISION:
                raise ValueError(f"watch cursor {show!r} is out of range")
            return cls((rev,))
        if not text.startswith(WATCH_CURSOR_PREFIX) or len(text) > _MAX_CURSOR_CHARS:
            raise ValueError(f"watch cursor {show!r} is not a tidekv watch cursor")
        raw = _unb64(text[len(WATCH_CURSOR_PREFIX) :], "watch cursor", text)
        if len(raw) < 4 or _check(raw[:-2]) != raw[-2:]:
            raise ValueError(f"watch cursor {show!r} is damaged (its check does not match)")
        try:
            revisions = _parse_vector(raw[:-2])
        except (IndexError, ValueError) as exc:
            raise ValueError(f"watch cursor {show!r} is malformed: {exc}") from None
        if len(revisions) != shards:
            raise ValueError(
                f"watch cursor {show!r} is for {len(revisions)} shards, "
                f"but the cluster has {shards}"
            )
        return cls(tuple(revisions))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str, what: str, whole: str) -> bytes:
    if not text.isascii() or any(c not in _B64_CHARS for c in text) or len(text) % 4 == 1:
        raise ValueError(f"invalid {what} {whole[:60]!r}: not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError(f"invalid {what} {whole[:60]!r}: not base64url") from None


_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _utf8(raw: bytes, whole: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"invalid list cursor {whole[:60]!r}: not a UTF-8 key") from None


def _check(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=2, person=b"tidekv-watch").digest()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class _Reader:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.i = 0

    def byte(self) -> int:
        if self.i >= len(self.raw):
            raise ValueError("it ends early")
        b = self.raw[self.i]
        self.i += 1
        return b

    def varint(self) -> int:
        n = shift = 0
        while True:
            b = self.byte()
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 63:
                raise ValueError("a number is too long")
        if n > MAX_REVISION:
            raise ValueError("a number is out of range")
        return n

    def take(self, n: int) -> bytes:
        if self.i + n > len(self.raw):
            raise ValueError("it ends early")
        out = self.raw[self.i : self.i + n]
        self.i += n
        return out


_DENSE, _SPARSE = 0, 1


def _dense(rs: Sequence[int]) -> bytes:
    """Frame of reference: the minimum, a bit width, every offset bit-packed."""
    lo = min(rs)
    width = max(r - lo for r in rs).bit_length()
    out = bytes([_DENSE]) + _varint(lo) + bytes([width])
    if width:
        bits = "".join(format(r - lo, f"0{width}b") for r in rs)
        nbytes = -(-len(bits) // 8)
        out += _pack(bits, nbytes)
    return out


def _pack(bits: str, nbytes: int) -> bytes:
    return int(bits + "0" * (nbytes * 8 - len(bits)), 2).to_bytes(nbytes, "big")


def _sparse(rs: Sequence[int], beat: int) -> bytes | None:
    """The most common revision, then each shard elsewhere as (index gap, revision);
    None when that cannot be shorter than ``beat`` bytes (each exception takes two)."""
    counts = Counter(rs)
    base, n = max(counts.items(), key=lambda rc: (rc[1], -rc[0]))
    if 2 * (len(rs) - n) >= beat:
        return None
    out = bytearray([_SPARSE])
    out += _varint(base)
    odd = [(i, r) for i, r in enumerate(rs) if r != base]
    out += _varint(len(odd))
    prev = -1
    for i, r in odd:
        out += _varint(i - prev - 1) + _varint(r)
        prev = i
    return bytes(out)


def _parse_vector(body: bytes) -> list[int]:
    rd = _Reader(body)
    shards = rd.varint()
    check_shards(shards)
    mode = rd.byte()
    if mode == _DENSE:
        lo = rd.varint()
        width = rd.byte()
        if width > 63:
            raise ValueError(f"bit width {width}")
        if width == 0:
            rs = [lo] * shards
        else:
            nbits = shards * width
            nbytes = -(-nbits // 8)
            bits = format(int.from_bytes(rd.take(nbytes), "big"), f"0{nbytes * 8}b")
            if "1" in bits[nbits:]:
                raise ValueError("stray bits after the last revision")
            rs = [lo + int(bits[i * width : (i + 1) * width], 2) for i in range(shards)]
    elif mode == _SPARSE:
        base = rd.varint()
        rs = [base] * shards
        prev = -1
        for _ in range(rd.varint()):
            i = prev + 1 + rd.varint()
            if i >= shards:
                raise ValueError(f"shard {i} of {shards}")
            rs[i] = rd.varint()
            prev = i
    else:
        raise ValueError(f"unknown encoding {mode}")
    if rd.i != len(body):
        raise ValueError("bytes left after the revisions")
    if any(r > MAX_REVISION for r in rs):
        raise ValueError("a revision is out of range")
    return rs


# -- the interleaver ---------------------------------------------------------------------


class Interleaver(Generic[T]):
    """Merges per-shard change streams into one feed, each shard's order kept.

    ``start`` is the position of every shard (None: not known yet, a watch "from now
    on": the shard's stream tells its position first). Only ``watched`` shards (default:
    all) are expected to report; the others keep their position (0 when unknown).
    Feed it with :meth:`offer` as shard streams deliver; take the merged feed with
    :meth:`pop`. Events come out in the order they were offered, so each shard's order
    (and each key's) is kept; a revision at or below what a shard already sent is a
    duplicate from a reconnected stream and is dropped.
    """

    def __init__(self, start: Sequence[int | None], watched: Iterable[int] | None = None) -> None:
        shards = check_shards(len(start))
        self.watched = frozenset(range(shards) if watched is None else watched)
        if not self.watched or not all(0 <= s < shards for s in self.watched):
            raise ValueError(f"watched shards must be a non-empty subset of 0..{shards - 1}")
        self._seen: list[int | None] = [
            r if r is not None or s in self.watched else 0 for s, r in enumerate(start)
        ]
        self._emitted: list[int] = [0 if r is None else r for r in self._seen]
        self._queue: deque[tuple[int, int, T | None]] = deque()
        self._announced: tuple[int, ...] | None = None
        if all(r is not None for r in start):
            self._announced = tuple(self._emitted)  # the caller knows where it starts

    @property
    def ready(self) -> bool:
        """Whether every watched shard's position is known (only then can it emit)."""
        return all(self._seen[s] is not None for s in self.watched)

    @property
    def pending(self) -> int:
        """Entries offered and not yet popped (for back-pressure)."""
        return len(self._queue)

    def resume_from(self, shard: int) -> int | None:
        """Where a (re)connected stream of ``shard`` must start: after this revision
        (None: from now on, its position not known yet)."""
        return self._seen[shard]

    def offer(self, shard: int, revision: int, event: T | None = None) -> bool:
        """A shard stream delivered ``event`` at ``revision`` (None: only a position, no
        change). False when it is a duplicate (at or below what the shard sent before)."""
        if shard not in self.watched:
            raise ValueError(f"shard {shard} is not watched")
        seen = self._seen[shard]
        if seen is None:
            # the stream's first word: its position, or (a stream that started at once
            # with a change) a change, which comes right after the revision before it
            base = revision if event is None else revision - 1
            self._seen[shard] = revision
            self._emitted[shard] = max(0, base)
            self._queue.append((shard, revision, event))
            return True
        if revision <= seen:
            return False
        self._seen[shard] = revision
        self._queue.append((shard, revision, event))
        return True

    def pop(self) -> tuple[WatchCursor, T | None] | None:
        """The next entry of the merged feed and the cursor right after it: an event, or
        (event None) a new position with no change to deliver. None: nothing to hand out
        now (nothing offered, or some shard's position still unknown)."""
        if not self.ready:
            return None
        while self._queue:
            shard, revision, event = self._queue.popleft()
            if revision > self._emitted[shard]:
                self._emitted[shard] = revision
            now = tuple(self._emitted)
            if event is None and now == self._announced:
                continue  # a position that tells nothing new
            self._announced = now
            return WatchCursor(now), event
        if self._announced is None:  # every shard reported; nothing queued any more
            self._announced = tuple(self._emitted)
            return WatchCursor(self._announced), None
        return None

    def cursor(self) -> WatchCursor | None:
        """The cursor after everything popped so far (None before the start is known)."""
        return WatchCursor(tuple(self._emitted)) if self.ready else None
