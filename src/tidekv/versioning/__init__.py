"""tidekv.versioning: the pure versioning core.

- :mod:`~tidekv.versioning.hlc`: hybrid logical clock time stamps and the clock.
- :mod:`~tidekv.versioning.version`: the :class:`Version` record, its content-derived id,
  value digests, JSON validation.
- :mod:`~tidekv.versioning.dag`: per-key DAG queries (heads, ancestors, common
  ancestor, history order) over a lookup function.
- :mod:`~tidekv.versioning.resolve`: sibling resolution policies (last-write-wins, manual).
- :mod:`~tidekv.versioning.diff`: diffs between two values (JSON Patch, lines, bytes).

Pure: no I/O, no clocks, no randomness; physical time is an argument.
"""

from __future__ import annotations

from tidekv.versioning.dag import (
    Lookup,
    add_head,
    ancestors,
    common_ancestor,
    heads_of,
    history,
    is_ancestor,
    order_key,
)
from tidekv.versioning.diff import Diff, diff_values, is_json_type, is_text_type
from tidekv.versioning.hlc import (
    HLC,
    MAX_LOGICAL,
    MAX_WALL,
    ZERO,
    ClockOffsetTooLarge,
    HLCTimestamp,
)
from tidekv.versioning.resolve import (
    RESOLVERS,
    LastWriteWins,
    Load,
    Manual,
    Resolution,
    Resolver,
    get_resolver,
)
from tidekv.versioning.version import (
    BYTES_CONTENT_TYPE,
    CONTENT_TYPE_CODES,
    JSON_CONTENT_TYPE,
    RECORD_FORMAT,
    TEXT_CONTENT_TYPE,
    VERSION_ID_LENGTH,
    EncodedVersion,
    Version,
    canonical_version_bytes,
    check_version_id,
    compute_version_id,
    id_tail,
    is_version_id,
    make_version,
    trusted_id_bytes,
    trusted_version_id,
    validate_json,
    value_digest,
)

__all__ = [
    "BYTES_CONTENT_TYPE",
    "CONTENT_TYPE_CODES",
    "HLC",
    "JSON_CONTENT_TYPE",
    "MAX_LOGICAL",
    "MAX_WALL",
    "RECORD_FORMAT",
    "RESOLVERS",
    "TEXT_CONTENT_TYPE",
    "VERSION_ID_LENGTH",
    "ZERO",
    "ClockOffsetTooLarge",
    "Diff",
    "EncodedVersion",
    "HLCTimestamp",
    "LastWriteWins",
    "Load",
    "Lookup",
    "Manual",
    "Resolution",
    "Resolver",
    "Version",
    "add_head",
    "ancestors",
    "canonical_version_bytes",
    "check_version_id",
    "common_ancestor",
    "compute_version_id",
    "diff_values",
    "get_resolver",
    "heads_of",
    "history",
    "id_tail",
    "is_ancestor",
    "is_json_type",
    "is_text_type",
    "is_version_id",
    "make_version",
    "order_key",
    "trusted_id_bytes",
    "trusted_version_id",
    "validate_json",
    "value_digest",
]
