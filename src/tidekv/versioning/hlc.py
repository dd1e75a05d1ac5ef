"""Hybrid logical clock (HLC) time stamps and the clock that issues them.

An HLC (Kulkarni, Demirbas et al., "Logical Physical Clocks", 2014) pairs a physical
wall time in milliseconds with a logical counter. Time stamps are close to physical time,
never go backwards on one node even when its physical clock jumps back, and a receive
event always ends up after the remote event it observed, so the order of HLC time stamps
respects causality across sites.

This module is pure: the clock never reads the system time. The caller passes the
physical time (``physical_ms``) into every :meth:`HLC.now` / :meth:`HLC.update` call, so
a simulator can drive it with a drifting fake clock.
"""

from __future__ import annotations

import datetime
import re
import struct
from dataclasses import dataclass

from tidekv.errors import InvalidInput

__all__ = [
    "HLC",
    "MAX_LOGICAL",
    "MAX_WALL",
    "ZERO",
    "ClockOffsetTooLarge",
    "HLCTimestamp",
]

MAX_LOGICAL = 0xFFFF
"""The largest logical counter; one more advances the wall time by 1 ms."""

MAX_WALL = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the last millisecond a :class:`datetime.datetime` can show,
so every valid time stamp can be rendered as RFC 3339 time."""

_STRUCT = struct.Struct(">QH")
_TEXT = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_new = object.__new__


class ClockOffsetTooLarge(InvalidInput):
    """A remote HLC time stamp is further ahead of the local physical clock than allowed."""

    code = "clock_offset"


@dataclass(frozen=True, slots=True, order=True)
class HLCTimestamp:
    """One HLC time stamp; orders by ``(wall, logical)``."""

    wall: int  # physical milliseconds since the Unix epoch, 0..MAX_WALL
    logical: int  # counter, 0..MAX_LOGICAL

    def __post_init__(self) -> None:
        if type(self.wall) is not int or not 0 <= self.wall <= MAX_WALL:
            raise InvalidInput(f"HLC wall time must be an int in 0..{MAX_WALL}, got {self.wall!r}")
        if type(self.logical) is not int or not 0 <= self.logical <= MAX_LOGICAL:
            raise InvalidInput(
                f"HLC logical counter must be an int in 0..{MAX_LOGICAL}, got {self.logical!r}"
            )

    @classmethod
    def trusted(cls, wall: int, logical: int) -> HLCTimestamp:
        """Build without the range checks, for fields read back from a record this
        package wrote (a hot path: every read returns a time stamp)."""
        ts = _new(cls)
        _set_wall(ts, wall)
        _set_logical(ts, logical)
        return ts

    def encode(self) -> bytes:
        """10 bytes, big-endian (8 wall + 2 logical); byte order equals time stamp order."""
        return _STRUCT.pack(self.wall, self.logical)

    @classmethod
    def decode(cls, data: bytes) -> HLCTimestamp:
        """The inverse of :meth:`encode`; :class:`InvalidInput` on anything else."""
        if len(data) != _STRUCT.size:
            raise InvalidInput(f"an encoded HLC time stamp is 10 bytes, got {len(data)}")
        wall, logical = _STRUCT.unpack(data)
        return cls(wall, logical)

    def __str__(self) -> str:
        return f"{self.wall}.{self.logical}"

    @classmethod
    def parse(cls, text: str) -> HLCTimestamp:
        """The inverse of ``str()``: ``"<wall>.<logical>"`` in canonical decimal."""
        m = _TEXT.fullmatch(text) if isinstance(text, str) else None
        if m is None:
            raise InvalidInput(f"not an HLC time stamp (want '<wall>.<logical>'): {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    def to_datetime(self) -> datetime.datetime:
        """The wall time as an aware UTC datetime (millisecond precision)."""
        return _EPOCH + datetime.timedelta(milliseconds=self.wall)

    def rfc3339(self) -> str:
        """The wall time as RFC 3339 UTC with milliseconds, e.g. ``2025-11-22T05:20:00.000Z``."""
        dt = self.to_datetime()
        return f"{dt:%Y-%m-%dT%H:%M:%S}.{dt.microsecond // 1000:03d}Z"


# the slots' own setters: a frozen dataclass refuses setattr, these do not (and cost
# less than object.__setattr__); only for time stamps being built
_set_wall = HLCTimestamp.__dict__["wall"].__set__
_set_logical = HLCTimestamp.__dict__["logical"].__set__
ZERO = HLCTimestamp(0, 0)


class HLC:
    """Hybrid logical clock (Kulkarni et al. 2014). Monotonic even when the physical clock
    jumps back.

    Not thread-safe: the owner serialises calls (the store holds its write lock).
    When the logical counter would pass :data:`MAX_LOGICAL` the wall time advances by
    1 ms instead, so the clock may run up to a few ms ahead of physical time under a
    burst of more than 65,536 events in one millisecond.
    """

    __slots__ = ("_last", "_max_offset_ms")

    def __init__(self, last: HLCTimestamp = ZERO, max_offset_ms: int | None = None) -> None:
        if max_offset_ms is not None and max_offset_ms < 0:
            raise InvalidInput(f"max_offset_ms must not be negative, got {max_offset_ms}")
        self._last = last
        self._max_offset_ms = max_offset_ms

    @property
    def last(self) -> HLCTimestamp:
        """The last time stamp issued or observed."""
        return self._last

    @property
    def max_offset_ms(self) -> int | None:
        return self._max_offset_ms

    def now(self, physical_ms: int) -> HLCTimestamp:
        """A send or local event at physical time ``physical_ms``: a new, larger time stamp."""
        if type(physical_ms) is not int or not 0 <= physical_ms <= MAX_WALL:
            _check_physical(physical_ms)
        last = self._last
        wall = last.wall
        if physical_ms > wall:  # in range: checked above
            ts = _new(HLCTimestamp)
            _set_wall(ts, physical_ms)
            _set_logical(ts, 0)
        elif (logical := last.logical) < MAX_LOGICAL:
            ts = _new(HLCTimestamp)
            _set_wall(ts, wall)
            _set_logical(ts, logical + 1)
        else:
            ts = _tick(wall, logical + 1)
        self._last = ts
        return ts

    def update(self, remote: HLCTimestamp, physical_ms: int) -> HLCTimestamp:
        """A receive event: the new time stamp is after both ``last`` and ``remote``.

        Raises :class:`ClockOffsetTooLarge` (and leaves the clock unchanged) when
        ``max_offset_ms`` is set and ``remote`` is more than that ahead of ``physical_ms``.
        """
        _check_physical(physical_ms)
        if self._max_offset_ms is not None and remote.wall - physical_ms > self._max_offset_ms:
            raise ClockOffsetTooLarge(
                f"remote HLC time {remote} is {remote.wall - physical_ms} ms ahead of the "
                f"local clock ({physical_ms}); the limit is {self._max_offset_ms} ms",
                remote=str(remote),
                physical_ms=physical_ms,
                max_offset_ms=self._max_offset_ms,
            )
        last = self._last
        wall = max(last.wall, remote.wall, physical_ms)
        if wall == last.wall and wall == remote.wall:
            logical = max(last.logical, remote.logical) + 1
        elif wall == last.wall:
            logical = last.logical + 1
        elif wall == remote.wall:
            logical = remote.logical + 1
        else:
            logical = 0
        ts = _tick(wall, logical)
        self._last = ts
        return ts

    def __repr__(self) -> str:
        return f"HLC(last={self._last!s}, max_offset_ms={self._max_offset_ms})"


def _tick(wall: int, logical: int) -> HLCTimestamp:
    """A time stamp from a wall time and a counter that may have just overflowed."""
    if logical > MAX_LOGICAL:
        return HLCTimestamp(wall + 1, 0)
    return HLCTimestamp(wall, logical)


def _check_physical(physical_ms: int) -> None:
    if type(physical_ms) is not int or not 0 <= physical_ms <= MAX_WALL:
        raise InvalidInput(f"physical time must be an int in 0..{MAX_WALL} ms, got {physical_ms!r}")
