"""tidekv: a distributed, versioned key-value and document store."""

from __future__ import annotations

from tidekv.errors import *  # noqa: F403
from tidekv.errors import __all__ as _errors_all

__version__ = "0.1.0"

__all__ = ["__version__", *_errors_all]
