"""Topic names: the only place that spells them.

Per-node topics live under ``faces/<node>/…``; the service-wide ones reuse the same
two-level shape with a reserved middle segment (``classifier``, ``stats``,
``gallery``), which is why those words can never be node ids.

>>> embedding("door")
'faces/door/embedding'
>>> node_of("faces/door/result")
'door'
>>> shared(EMBEDDINGS, "classifier")
'$share/classifier/faces/+/embedding'

Caveat: ``faces/classifier/status`` matches the wildcard :data:`STATUSES`
(``faces/+/status``). A subscriber to :data:`STATUSES` that only wants edge nodes must
skip it; :func:`is_node_topic` does that test:

>>> is_node_topic(CLASSIFIER_STATUS), is_node_topic(status("door"))
(False, True)
"""

from __future__ import annotations

from facewire.bus.errors import WireError

PREFIX = "faces"

#: Middle segments used by service-wide topics; never valid node ids.
RESERVED_NODE_IDS = frozenset({"classifier", "stats", "gallery"})

#: Longest accepted node id, in bytes of UTF-8 (the embedding message's limit too).
MAX_NODE_ID = 64

CLASSIFIER_STATUS = f"{PREFIX}/classifier/status"
THRESHOLDS = f"{PREFIX}/stats/thresholds"
RELOAD = f"{PREFIX}/gallery/reload"
ENROLL = f"{PREFIX}/gallery/enroll"
CORRECT = f"{PREFIX}/gallery/correct"
GALLERY_REPLIES = f"{PREFIX}/gallery/reply"

EMBEDDINGS = f"{PREFIX}/+/embedding"
RESULTS = f"{PREFIX}/+/result"
STATUSES = f"{PREFIX}/+/status"  # also matches CLASSIFIER_STATUS, see is_node_topic()
ERRORS = f"{PREFIX}/+/error"
EVENTS = f"{PREFIX}/+/event"

_FORBIDDEN = frozenset("/+#$")


def check_node_id(node: str) -> str:
    """Return ``node`` if it is a valid node id, else raise :class:`WireError`
    (``bad_topic``; a ``ValueError``).

    A node id is one topic level and the node's MQTT username: 1–64 bytes of UTF-8, no
    ``/ + # $``, no whitespace or control characters, and not one of the reserved
    words ``classifier``, ``stats``, ``gallery``.

    >>> check_node_id("door-1")
    'door-1'
    >>> try:
    ...     check_node_id("a/b")
    ... except WireError as exc:
    ...     print(exc)
    [bad_topic] invalid node id 'a/b': must not contain any of / + # $
    """
    if not isinstance(node, str) or not node:
        raise WireError("bad_topic", f"invalid node id {node!r}: must be a non-empty string")
    size = len(node.encode("utf-8", "surrogatepass"))
    if size > MAX_NODE_ID:
        shown = node if len(node) <= 80 else node[:77] + "..."
        raise WireError(
            "bad_topic", f"invalid node id {shown!r}: {size} bytes, at most {MAX_NODE_ID}"
        )
    if any(c in _FORBIDDEN for c in node):
        raise WireError("bad_topic", f"invalid node id {node!r}: must not contain any of / + # $")
    if any(c.isspace() or not c.isprintable() for c in node):
        raise WireError(
            "bad_topic",
            f"invalid node id {node!r}: must not contain whitespace or control characters",
        )
    if node in RESERVED_NODE_IDS:
        raise WireError(
            "bad_topic",
            f"invalid node id {node!r}: reserved ({', '.join(sorted(RESERVED_NODE_IDS))})",
        )
    return node


def _node_topic(node: str, kind: str) -> str:
    return f"{PREFIX}/{check_node_id(node)}/{kind}"


def embedding(node: str) -> str:
    """``faces/<node>/embedding``: binary embedding messages, edge → classifier."""
    return _node_topic(node, "embedding")


def result(node: str) -> str:
    """``faces/<node>/result``: JSON classification results, classifier → anyone."""
    return _node_topic(node, "result")


def status(node: str) -> str:
    """``faces/<node>/status``: retained JSON heartbeat of an edge node (and its will)."""
    return _node_topic(node, "status")


def error(node: str) -> str:
    """``faces/<node>/error``: JSON rejection notices, classifier → edge."""
    return _node_topic(node, "error")


_PARSED: dict[tuple[str, str | None], str] = {}  # valid topics seen → their node id
_PARSED_MAX = 4096


def parse(topic: str, kind: str | None = None) -> str:
    """The node id of a ``faces/<node>/<kind>`` topic, checked; :class:`WireError`
    (``bad_topic``) for anything else, e.g. an invalid or reserved node id, or another
    ``kind`` than the one given.

    >>> parse("faces/door/embedding", "embedding")
    'door'
    >>> try:
    ...     parse("faces/a b/embedding")
    ... except WireError as exc:
    ...     print(exc.reason, exc.detail[:21])
    bad_topic invalid node id 'a b'
    """
    node = _PARSED.get((topic, kind))
    if node is not None:  # every message of a node comes on the same topic
        return node
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != PREFIX or (kind is not None and parts[2] != kind):
        shown = topic if len(topic) <= 120 else topic[:117] + "..."
        raise WireError("bad_topic", f"not a {PREFIX}/<node>/{kind or '<kind>'} topic: {shown!r}")
    node = check_node_id(parts[1])
    if len(_PARSED) < _PARSED_MAX:  # bounded: a flood of new topics must not grow it
        _PARSED[(topic, kind)] = node
    return node


def event(node: str) -> str:
    """``faces/<node>/event``: JSON track decisions, classifier → integrations."""
    return _node_topic(node, "event")


def node_of(topic: str) -> str:
    """The middle segment of a ``faces/<node>/<kind>`` topic.

    Raises ``ValueError`` for anything else. It does not reject the reserved words:
    ``node_of(CLASSIFIER_STATUS) == "classifier"`` (see :func:`is_node_topic`).
    """
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        raise ValueError(f"not a {PREFIX}/<node>/<kind> topic: {topic!r}")
    return parts[1]


def kind_of(topic: str) -> str:
    """The last segment of a ``faces/<node>/<kind>`` topic (``embedding``, ``status`` …)."""
    node_of(topic)
    return topic.rsplit("/", 1)[1]


def is_node_topic(topic: str) -> bool:
    """True if ``topic`` is ``faces/<node>/<kind>`` for an edge node (not a reserved id)."""
    try:
        return node_of(topic) not in RESERVED_NODE_IDS
    except ValueError:
        return False


def shared(topic_filter: str, group: str) -> str:
    """An MQTT v5 shared subscription ``$share/<group>/<filter>``; ``filter`` if no group.

    >>> shared(EMBEDDINGS, "")
    'faces/+/embedding'
    """
    if not group:
        return topic_filter
    if any(c in "/+#" for c in group):
        raise ValueError(f"invalid shared-subscription group {group!r}: no / + # allowed")
    return f"$share/{group}/{topic_filter}"


def unshared(topic_filter: str) -> str:
    """The plain filter of a shared subscription (``$share/g/a/+`` → ``a/+``)."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        if len(parts) == 3:
            return parts[2]
    return topic_filter
