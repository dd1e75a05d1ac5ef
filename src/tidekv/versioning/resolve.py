"""Sibling resolution: which content a key serves when it has several heads.

Concurrent writes (on different sites, or a write whose parents are not all the heads)
leave a key with several heads, its *siblings*. A :class:`Resolver` turns the heads into
one :class:`Resolution`. Resolvers are looked up by name (a namespace's policy):

- ``"lww"`` — :class:`LastWriteWins`: the head with the largest ``(hlc, origin, id)``.
- ``"manual"`` — :class:`Manual`: nothing is chosen; the caller shows the siblings
  (HTTP 300) until a client writes a version whose parents are all the heads.

Later policies (CRDT merges, registered 3-way merge functions) implement the same
protocol; a merge that makes new content returns ``version=None`` with its ``value``.
Resolvers are pure: values are read only through the ``load`` function they are given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tidekv.errors import InvalidInput
from tidekv.versioning.dag import order_key
from tidekv.versioning.version import BYTES_CONTENT_TYPE, Version

__all__ = [
    "RESOLVERS",
    "LastWriteWins",
    "Load",
    "Manual",
    "Resolution",
    "Resolver",
    "get_resolver",
]

Load = Callable[[Version], bytes | None]
"""Reads a version's value (``None`` for a tombstone)."""


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a key serves.

    ``version`` is the head whose content is served, or ``None`` when the content is new
    (a merge) or nothing was chosen. ``value`` ``None`` means deleted (or, when
    ``unresolved``, no value). ``unresolved`` is True when the policy refuses to choose
    among several siblings (``manual``): callers then list the heads instead.
    """

    version: Version | None
    value: bytes | None
    content_type: str
    siblings: int  # number of heads
    unresolved: bool = False


class Resolver(Protocol):
    """A sibling-resolution policy. ``heads`` is non-empty; ``load`` reads a head's value."""

    name: str

    def resolve(self, heads: Sequence[Version], load: Load) -> Resolution: ...


def _single(heads: Sequence[Version], load: Load) -> Resolution:
    """A key with one head serves it, whatever the policy."""
    (v,) = heads
    return Resolution(v, None if v.deleted else load(v), v.content_type, 1)


def _check_heads(heads: Sequence[Version]) -> None:
    if not heads:
        raise InvalidInput("no heads to resolve")


class LastWriteWins:
    """Serve the head with the largest :func:`~tidekv.versioning.dag.order_key`
    ``(hlc, origin, id)``; a tombstone winner serves ``value=None`` (deleted)."""

    name: str = "lww"

    def resolve(self, heads: Sequence[Version], load: Load) -> Resolution:
        _check_heads(heads)
        winner = max(heads, key=order_key)
        value = None if winner.deleted else load(winner)
        return Resolution(winner, value, winner.content_type, len(heads))

    def __repr__(self) -> str:
        return "LastWriteWins()"


class Manual:
    """Never choose between siblings. One head is served as usual; several give
    ``Resolution(version=None, value=None, unresolved=True, siblings=n)`` and the caller
    shows them (the HTTP API answers 300 with the siblings) until a client writes a
    version whose parents are all the heads."""

    name: str = "manual"

    def resolve(self, heads: Sequence[Version], load: Load) -> Resolution:
        _check_heads(heads)
        if len(heads) == 1:
            return _single(heads, load)
        return Resolution(None, None, BYTES_CONTENT_TYPE, len(heads), unresolved=True)

    def __repr__(self) -> str:
        return "Manual()"


RESOLVERS: dict[str, Resolver] = {r.name: r for r in (LastWriteWins(), Manual())}


def get_resolver(name: str) -> Resolver:
    """The resolver registered under ``name``; :class:`InvalidInput` for unknown names."""
    try:
        return RESOLVERS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(RESOLVERS))
        raise InvalidInput(
            f"unknown conflict resolver {name!r}; known: {known}", resolver=str(name)
        ) from None
