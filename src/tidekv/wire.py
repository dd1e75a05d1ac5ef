"""The JSON shapes of API v1, built in one place for every edge and service.

The HTTP app (:mod:`tidekv.http`), the services behind it (:mod:`tidekv.localservice`,
the replicated node) and the client (:mod:`tidekv.client`) agree on these shapes:

- a written change (PUT/DELETE/rollback response, :func:`write_dict`);
- a listed item (``GET /v1/kv``, :func:`item_dict`);
- a change-feed event (``GET /v1/watch``, :func:`change_event`).

A value appears as JSON (``"value"``) when its content type is JSON, else base64
(``"value_b64"``). ``raw=True`` embeds a stored JSON document as :class:`msgspec.Raw`
(no parse, no re-encode; only :mod:`msgspec` can encode the result); ``raw=False`` gives
plain Python objects any JSON encoder accepts.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec

from tidekv.statemachine import WriteResult
from tidekv.store import Item
from tidekv.versioning import Version, is_json_type

__all__ = ["change_event", "item_dict", "value_fields", "write_dict"]


def value_fields(content_type: str, value: bytes, *, raw: bool = False) -> dict[str, Any]:
    """``{"content_type", "value"}`` for a JSON document, else ``{"content_type",
    "value_b64"}``."""
    if is_json_type(content_type):
        return {
            "content_type": content_type,
            "value": msgspec.Raw(value) if raw else msgspec.json.decode(value),
        }
    return {"content_type": content_type, "value_b64": base64.b64encode(value).decode()}


def write_dict(result: WriteResult, shard: int) -> dict[str, Any]:
    """The response of a write: ``{"key","version","parents","revision","shard","hlc",
    "deleted"}``."""
    return {
        "key": result.key,
        "version": result.version,
        "parents": list(result.parents),
        "revision": result.revision,
        "shard": shard,
        "hlc": str(result.hlc),
        "deleted": result.deleted,
    }


def item_dict(item: Item, *, raw: bool = False) -> dict[str, Any]:
    """A listed key: ``{"key","version","revision","hlc","content_type", "value" or
    "value_b64"}`` plus ``"siblings"`` when the key has more than one head."""
    d: dict[str, Any] = {
        "key": item.key,
        "version": item.version,
        "revision": item.revision,
        "hlc": str(item.hlc),
    }
    if item.siblings > 1:
        d["siblings"] = item.siblings
    d.update(value_fields(item.content_type, item.value, raw=raw))
    return d


def change_event(
    cursor: str, revision: int, version: Version, value: bytes | None, shard: int
) -> dict[str, Any]:
    """One change-feed event (JSON-ready): ``cursor``, ``type``, ``key``, ``version``,
    ``parents``, ``revision``, ``shard``, ``hlc``, ``origin``, and for a put the value
    as in listings."""
    ev: dict[str, Any] = {
        "cursor": cursor,
        "type": "delete" if version.deleted else "put",
        "key": version.key,
        "version": version.id,
        "parents": list(version.parents),
        "revision": revision,
        "shard": shard,
        "hlc": str(version.hlc),
        "origin": version.origin,
    }
    if value is not None:
        ev.update(value_fields(version.content_type, value))
    return ev
