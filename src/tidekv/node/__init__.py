"""tidekv.node: the replicated node (``tide serve``).

The edges around the pure cores: :mod:`.wal` and :mod:`.logstore` (the write-ahead
log of Raft entries with group commit), :mod:`.transport` (the peer TCP transport),
:mod:`.replica` (one Raft group: RawNode + log + versioned state machine),
:mod:`.server` (the node: the event loop that drives every replica), :mod:`.service`
(:class:`~tidekv.service.KVService` over the node, used by the HTTP edge).
"""
