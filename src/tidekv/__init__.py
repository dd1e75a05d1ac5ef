"""tidekv: a distributed, versioned key-value and document store.

The embedded store::

    import tidekv
    with tidekv.open("./data") as db:
        db.put("user/1", {"name": "Ada"})
        db.get("user/1").json()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tidekv.errors import *  # noqa: F403
from tidekv.errors import __all__ as _errors_all
from tidekv.statemachine import Change, WriteResult
from tidekv.store import Item, Store, VersionInfo, open

if TYPE_CHECKING:
    from tidekv.client import AsyncClient, Client

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # the HTTP clients load httpx, which an embedded-only program need not pay for
    if name in ("Client", "AsyncClient"):
        from tidekv import client

        return getattr(client, name)
    raise AttributeError(f"module 'tidekv' has no attribute {name!r}")


__all__ = [
    "AsyncClient",
    "Change",
    "Client",
    "Item",
    "Store",
    "VersionInfo",
    "WriteResult",
    "__version__",
    "open",
    *_errors_all,
]
