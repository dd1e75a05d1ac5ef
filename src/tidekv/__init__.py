"""tidekv: a distributed, versioned key-value and document store.

The embedded store::

    import tidekv
    with tidekv.open("./data") as db:
        db.put("user/1", {"name": "Ada"})
        db.get("user/1").json()
"""

from __future__ import annotations

from tidekv.errors import *  # noqa: F403
from tidekv.errors import __all__ as _errors_all
from tidekv.statemachine import Change, WriteResult
from tidekv.store import Item, Store, VersionInfo, open

__version__ = "0.1.0"

__all__ = [
    "Change",
    "Item",
    "Store",
    "VersionInfo",
    "WriteResult",
    "__version__",
    "open",
    *_errors_all,
]
