"""Hypothesis strategies shared by the versioning tests."""

from __future__ import annotations

from hypothesis import strategies as st

from tidekv.versioning import MAX_LOGICAL, MAX_WALL, HLCTimestamp

timestamps = st.builds(HLCTimestamp, st.integers(0, MAX_WALL), st.integers(0, MAX_LOGICAL))
# Text that UTF-8 can encode (no lone surrogates), including the empty string.
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
version_ids = st.text("0123456789abcdef", min_size=40, max_size=40)
values = st.none() | st.binary(max_size=64)

json_docs = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
