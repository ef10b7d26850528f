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

import hashlib

from facewire.bus.errors import WireError

PREFIX = "faces"

#: Middle segments used by service-wide topics; never valid node ids.
RESERVED_NODE_IDS = frozenset({"classifier", "stats", "gallery", "person"})

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

#: Integrations (docs/protocol.md): intruder alerts, and per-person sightings
ALERTS = f"{PREFIX}/alerts"
PERSON_PREFIX = f"{PREFIX}/person"
PEOPLE = f"{PERSON_PREFIX}/+"
#: The last segments of ``faces/<node>/<kind>``: a slug is never one of them, so
#: ``faces/person/<slug>`` never matches a ``faces/+/<kind>`` filter.
NODE_KINDS = frozenset({"embedding", "result", "status", "error", "event"})

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


# --- integrations ----------------------------------------------------------------------

_SLUG_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
MAX_SLUG = 48


def slug(text: str) -> str:
    """``text`` as one safe topic level and Home Assistant object id: ``[A-Za-z0-9_-]``.

    A name that is safe already is itself; any other (a space, an accent, a dot, over
    48 characters, one of :data:`NODE_KINDS`) has the others replaced by ``_`` and a
    short hash of the whole name appended, so two names never share a slug.

    >>> slug("Alice"), slug("Zoë Smith"), slug("status")
    ('Alice', 'Zo__Smith-20d880d2', 'status-073c1634')
    """
    if text and len(text) <= MAX_SLUG and set(text) <= _SLUG_OK and text not in NODE_KINDS:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    safe = "".join(c if c in _SLUG_OK else "_" for c in text)[:MAX_SLUG].strip("_")
    return f"{safe}-{digest}" if safe else digest


def person(name: str) -> str:
    """``faces/person/<slug of name>``: retained, the person's last sighting."""
    return f"{PERSON_PREFIX}/{slug(name)}"


def ha_last(node: str) -> str:
    """``faces/<node>/ha/last``: retained, the node's last track decision, for Home
    Assistant's sensors (plain JSON, never sealed)."""
    return f"{_node_topic(node, 'ha')}/last"


def ha_event(node: str) -> str:
    """``faces/<node>/ha/event``: each track decision (arrived, changed), for Home
    Assistant's event entity."""
    return f"{_node_topic(node, 'ha')}/event"


def ha_status(prefix: str) -> str:
    """``<prefix>/status``: Home Assistant's birth (``online``) and will messages."""
    return f"{prefix}/status"


def ha_device_config(prefix: str, object_id: str) -> str:
    """``<prefix>/device/<object_id>/config``: a device-based discovery message."""
    return f"{prefix}/device/{object_id}/config"


def ha_component_config(prefix: str, component: str, node_id: str, object_id: str) -> str:
    """``<prefix>/<component>/<node_id>/<object_id>/config``: one entity's discovery."""
    return f"{prefix}/{component}/{node_id}/{object_id}/config"
