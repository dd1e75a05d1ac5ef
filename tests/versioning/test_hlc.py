"""HLC time stamps and the hybrid logical clock."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidekv.errors import InvalidInput
from tidekv.versioning import (
    HLC,
    MAX_LOGICAL,
    MAX_WALL,
    ZERO,
    ClockOffsetTooLarge,
    HLCTimestamp,
)

from .strategies import timestamps

T = HLCTimestamp


def test_zero_and_str() -> None:
    assert T(0, 0) == ZERO
    assert str(T(1763788800000, 3)) == "1763788800000.3"
    assert T.parse("1763788800000.3") == T(1763788800000, 3)


@given(timestamps)
def test_str_parse_round_trip(ts: HLCTimestamp) -> None:
    assert T.parse(str(ts)) == ts


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "1.",
        ".1",
        "1.2.3",
        "a.b",
        "-1.0",
        "1.-1",
        " 1.2",
        "1.2 ",
        "01.2",
        "1.02",
        "1.65536",
        f"{MAX_WALL + 1}.0",
        "\uff11.\uff12",
        "1_0.2",
        "+1.2",
    ],
)
def test_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(InvalidInput):
        T.parse(text)


def test_parse_rejects_non_string() -> None:
    with pytest.raises(InvalidInput):
        T.parse(12)  # type: ignore[arg-type]


@given(timestamps)
def test_encode_decode_round_trip(ts: HLCTimestamp) -> None:
    data = ts.encode()
    assert len(data) == 10
    assert T.decode(data) == ts


@given(timestamps, timestamps)
def test_encoding_sorts_like_the_timestamp(a: HLCTimestamp, b: HLCTimestamp) -> None:
    assert (a < b) == (a.encode() < b.encode())
    assert (a == b) == (a.encode() == b.encode())


def test_decode_rejects_wrong_length_and_out_of_range() -> None:
    with pytest.raises(InvalidInput):
        T.decode(b"\x00" * 9)
    with pytest.raises(InvalidInput):
        T.decode(b"\xff" * 10)  # wall beyond year 9999


@pytest.mark.parametrize(
    "wall,logical", [(-1, 0), (MAX_WALL + 1, 0), (0, -1), (0, MAX_LOGICAL + 1), (True, 0), (1.5, 0)]
)
def test_constructor_rejects_out_of_range(wall: object, logical: object) -> None:
    with pytest.raises(InvalidInput):
        T(wall, logical)  # type: ignore[arg-type]


def test_to_datetime() -> None:
    assert ZERO.to_datetime() == datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    dt = T(1763788800123, 7).to_datetime()
    assert dt == datetime.datetime(2025, 11, 22, 5, 20, 0, 123000, tzinfo=datetime.UTC)
    assert T(1763788800123, 7).rfc3339() == "2025-11-22T05:20:00.123Z"
    assert T(MAX_WALL, 0).rfc3339() == "9999-12-31T23:59:59.999Z"


def test_order() -> None:
    assert T(1, 5) < T(2, 0) < T(2, 1)


# -- the clock ---------------------------------------------------------------


def test_now_follows_physical_time() -> None:
    c = HLC()
    assert c.now(1000) == T(1000, 0)
    assert c.now(1000) == T(1000, 1)
    assert c.now(1005) == T(1005, 0)
    assert c.last == T(1005, 0)


def test_now_is_monotonic_when_physical_clock_jumps_back() -> None:
    c = HLC()
    c.now(1000)
    assert c.now(10) == T(1000, 1)
    assert c.now(999) == T(1000, 2)


def test_restores_from_last() -> None:
    c = HLC(T(500, 9))
    assert c.now(400) == T(500, 10)


def test_update_cases() -> None:
    c = HLC(T(100, 4))
    # remote ahead of everything: take its wall, its logical + 1
    assert c.update(T(200, 7), 150) == T(200, 8)
    # all three equal walls: max logical + 1
    assert c.update(T(200, 3), 200) == T(200, 9)
    assert c.update(T(200, 20), 200) == T(200, 21)
    # local last ahead: logical + 1
    assert c.update(T(100, 50), 150) == T(200, 22)
    # physical ahead of both: reset logical
    assert c.update(T(250, 5), 300) == T(300, 0)


def test_logical_overflow_advances_wall() -> None:
    c = HLC(T(100, MAX_LOGICAL))
    assert c.now(50) == T(101, 0)
    c = HLC(T(100, 1))
    assert c.update(T(100, MAX_LOGICAL), 100) == T(101, 0)
    c = HLC()
    assert c.update(T(100, MAX_LOGICAL), 10) == T(101, 0)


def test_burst_of_more_than_65536_events_in_one_ms() -> None:
    c = HLC()
    prev = c.now(1000)
    for _ in range(70_000):
        ts = c.now(1000)
        assert ts > prev
        prev = ts
    assert prev.wall == 1001


def test_max_offset() -> None:
    c = HLC(T(1000, 0), max_offset_ms=500)
    assert c.update(T(1500, 0), 1000) == T(1500, 1)  # exactly the limit is fine
    with pytest.raises(ClockOffsetTooLarge) as info:
        c.update(T(2601, 0), 2100)
    assert "501 ms ahead" in str(info.value)
    assert isinstance(info.value, InvalidInput)
    assert c.last == T(1500, 1)  # unchanged by the refused update
    with pytest.raises(InvalidInput):
        HLC(max_offset_ms=-1)


@pytest.mark.parametrize("pt", [-1, MAX_WALL + 1, 1.0, True])
def test_rejects_bad_physical_time(pt: object) -> None:
    with pytest.raises(InvalidInput):
        HLC().now(pt)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        HLC().update(ZERO, pt)  # type: ignore[arg-type]


events = st.lists(
    st.tuples(
        st.integers(0, 2_000),  # physical time, jumping around
        st.none() | st.builds(T, st.integers(0, 2_000), st.integers(0, MAX_LOGICAL)),
    ),
    max_size=60,
)


@given(events)
def test_property_monotonic_causal_and_close_to_physical(
    evs: list[tuple[int, HLCTimestamp | None]],
) -> None:
    c = HLC()
    prev = c.last
    highest = 0  # the largest physical or remote wall seen so far
    for i, (pt, remote) in enumerate(evs, start=1):
        ts = c.now(pt) if remote is None else c.update(remote, pt)
        assert ts > prev  # strictly monotonic
        assert ts == c.last
        if remote is not None:
            assert ts > remote  # a receive is after what it observed
            highest = max(highest, remote.wall)
        highest = max(highest, pt)
        assert ts.wall >= pt
        # bounded drift: only counter overflows (at most one per 65,536 events) push ahead
        assert ts.wall <= highest + i // (MAX_LOGICAL + 1) + 1
        prev = ts


@given(st.integers(0, 10**13), st.integers(0, 10**13))
def test_property_two_sites_exchange(pa: int, pb: int) -> None:
    a, b = HLC(), HLC()
    sent = a.now(pa)
    received = b.update(sent, pb)
    reply = b.now(pb)
    assert sent < received < reply
    assert a.update(reply, pa) > reply
