"""The one error type of the wire contract: a message (or topic) that is not valid.

Every decoder in :mod:`facewire.bus` raises :class:`WireError`; its ``reason`` is a
short machine-readable code from :data:`REASONS`, the same word the classifier puts in
the ``reason`` of a ``faces/<node>/error`` message.

>>> from facewire.bus.errors import WireError
>>> err = WireError("bad_field", "'score' must be a number", seq=7)
>>> err.reason, str(err)
('bad_field', "[bad_field] 'score' must be a number")
"""

from __future__ import annotations

#: Every reason code, with what it means; ``docs/protocol.md`` lists the same table.
REASONS: dict[str, str] = {
    # the topic
    "bad_topic": "the topic is not faces/<node>/<kind> with a valid node id",
    # the binary embedding message, in the order the decoder checks them
    "truncated": "the payload ends inside the header or the metadata block",
    "bad_magic": "the first two bytes are not FW",
    "bad_version": "the version byte is not one this decoder reads",
    "bad_dtype": "the dtype code is not 1 (float16) or 2 (float32)",
    "bad_dim": "dim is 0 or > 4096, the vector bytes do not match it, or it is not the gallery's",
    "bad_metadata": "the metadata block is inconsistent, over a limit, or names another node",
    "non_finite": "the vector holds NaN or infinity",
    # JSON messages
    "bad_json": "the payload is not a UTF-8 JSON object",
    "bad_field": "a field is missing, of the wrong type, or over its limit",
    # the classifier's own refusals
    "wrong_model": "the vector's model id is not the gallery's",
    "queue_full": "the node's queue was full: its oldest message was dropped",
    # sealed embeddings and signed results (bus.sealing)
    "unsealed": "a plain embedding where the classifier takes sealed ones only",
    "unknown_node": "no key is known for the topic's node (facewire nodes add)",
    "bad_seal": "the sealed envelope is malformed or does not open with the node's key",
    "stale": "the capture time is outside the freshness window (replayed, or a clock is off)",
    "replayed": "this (seq, capture time) was classified before and its answer is gone",
    "unsigned": "a result without the classifier's signature",
    "bad_signature": "a result whose signature is not the classifier's",
}


class WireError(ValueError):
    """A payload, topic or message that does not fit the wire contract.

    ``node`` and ``seq`` are filled in when they could be read before the failure
    (e.g. for ``bad_dim`` and ``non_finite``), else ``None``.
    """

    def __init__(
        self, reason: str, detail: str, *, node: str | None = None, seq: int | None = None
    ) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown wire error reason {reason!r}")
        super().__init__(f"[{reason}] {detail}")
        self.reason = reason
        self.detail = detail
        self.node = node
        self.seq = seq
