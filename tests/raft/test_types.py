"""Wire encoding of every message type, and the public names."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import tidekv.raft as raft
from tidekv.raft import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
    decode_conf_change,
    decode_message,
    encode_conf_change,
    encode_message,
)

entries = st.lists(
    st.builds(
        Entry,
        term=st.integers(0, 2**40),
        index=st.integers(0, 2**40),
        kind=st.sampled_from(EntryKind),
        data=st.binary(max_size=64),
    ),
    max_size=5,
)
snapshots = st.none() | st.builds(
    Snapshot,
    meta=st.builds(
        SnapshotMeta,
        index=st.integers(0, 2**40),
        term=st.integers(0, 2**40),
        conf=st.builds(
            ConfState,
            voters=st.frozensets(st.integers(1, 99), max_size=5),
            learners=st.frozensets(st.integers(1, 99), max_size=3),
        ),
    ),
    data=st.binary(max_size=64),
)
messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=st.integers(0, 2**31),
    frm=st.integers(0, 2**31),
    term=st.integers(0, 2**40),
    log_term=st.integers(0, 2**40),
    index=st.integers(0, 2**40),
    entries=entries,
    commit=st.integers(0, 2**40),
    reject=st.booleans(),
    reject_hint=st.integers(0, 2**40),
    hint_term=st.integers(0, 2**40),
    snapshot=snapshots,
    context=st.binary(max_size=32),
)


@settings(max_examples=500)
@given(messages)
def test_message_round_trip(m: Message) -> None:
    assert decode_message(encode_message(m)) == m


def test_every_message_type_round_trips() -> None:
    for t in MessageType:
        m = Message(t, to=2, frm=1, term=3, entries=[Entry(3, 7, EntryKind.NOOP)])
        assert decode_message(encode_message(m)) == m


def test_conf_change_round_trip() -> None:
    for t in ConfChangeType:
        cc = ConfChange(t, 5, b"ctx")
        assert decode_conf_change(encode_conf_change(cc)) == cc


def test_exported_names_exist() -> None:
    for name in raft.__all__:
        assert hasattr(raft, name), name
