"""Broker accounts: mosquitto's password file and the ACL that confines each account.

A node's MQTT username is its node id. The ACL gives every node, through ``pattern``
lines with ``%u``, exactly: write ``faces/<id>/embedding`` and ``faces/<id>/status``;
read ``faces/<id>/result``, ``…/error``, ``…/event`` and the classifier's retained
``faces/classifier/status`` (the edge checks the gallery's model with it). A node
given ``enroll`` may also write ``faces/gallery/enroll`` and read
``faces/gallery/reply`` (``facewire enroll``); that is off by default because the
replies are everyone's and an enrolment changes who the system recognises.

The service accounts (:data:`SERVICES`) get what their code uses and no more:

* ``classifier``: read embeddings and gallery requests; write results, errors,
  events, its status, the thresholds and gallery replies.
* ``monitor``: read results, statuses, errors, thresholds and gallery replies; write
  the monitor's teach requests (enrol, correct).
* ``gallery``: ``facewire gallery`` (an operator's tool): write reload, read replies.

Passwords are stored only as mosquitto 2.0 hashes (``$7$``: PBKDF2-SHA512), written
here so no mosquitto binary is needed:

>>> h = hash_password("s3cret", salt=b"0123456789ab")
>>> h.startswith("$7$101$"), check_password("s3cret", h), check_password("x", h)
(True, True, False)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from facewire.bus import topics

#: mosquitto 2.0's defaults for ``$7$`` hashes (mosquitto_passwd writes the same).
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
HASH_BYTES = 64

CLASSIFIER = "classifier"
MONITOR = "monitor"
GALLERY = "gallery"

#: Service account → ACL lines (``topic read|write <filter>``), from what each uses.
SERVICES: dict[str, tuple[str, ...]] = {
    CLASSIFIER: (
        f"topic read {topics.EMBEDDINGS}",
        f"topic read {topics.RELOAD}",
        f"topic read {topics.ENROLL}",
        f"topic read {topics.CORRECT}",
        f"topic write {topics.RESULTS}",
        f"topic write {topics.ERRORS}",
        f"topic write {topics.EVENTS}",
        f"topic write {topics.CLASSIFIER_STATUS}",
        f"topic write {topics.THRESHOLDS}",
        f"topic write {topics.GALLERY_REPLIES}",
    ),
    MONITOR: (
        # the node patterns below would let it speak as a node called "monitor"
        f"topic deny {topics.PREFIX}/{MONITOR}/embedding",
        f"topic deny {topics.PREFIX}/{MONITOR}/status",
        f"topic read {topics.RESULTS}",
        f"topic read {topics.STATUSES}",
        f"topic read {topics.ERRORS}",
        f"topic read {topics.THRESHOLDS}",
        f"topic read {topics.GALLERY_REPLIES}",
        f"topic write {topics.ENROLL}",
        f"topic write {topics.CORRECT}",
    ),
    GALLERY: (
        f"topic write {topics.RELOAD}",
        f"topic read {topics.GALLERY_REPLIES}",
    ),
}

#: What every node may do, for its own id only (mosquitto replaces %u by the username).
NODE_PATTERNS = (
    f"pattern write {topics.PREFIX}/%u/embedding",
    f"pattern write {topics.PREFIX}/%u/status",
    f"pattern read {topics.PREFIX}/%u/result",
    f"pattern read {topics.PREFIX}/%u/error",
    f"pattern read {topics.PREFIX}/%u/event",
    f"pattern read {topics.CLASSIFIER_STATUS}",
)

#: The extra lines of a node allowed to enrol people.
ENROLL_LINES = (f"topic write {topics.ENROLL}", f"topic read {topics.GALLERY_REPLIES}")


class AccountError(ValueError):
    """A bad account name, a damaged password file or ACL: the text says which."""


def check_node_account(node: str) -> str:
    """``node`` if it can be a node's account: a valid node id that is no service's."""
    try:
        topics.check_node_id(node)
    except ValueError as exc:
        raise AccountError(str(exc).removeprefix("[bad_topic] ")) from None
    if node in SERVICES:
        raise AccountError(f"invalid node id {node!r}: it is the {node} service's account")
    if ":" in node:  # the password file's separator
        raise AccountError(f"invalid node id {node!r}: must not contain ':'")
    return node


# -- passwords ---------------------------------------------------------------------------


def new_password() -> str:
    """A random password: 32 URL-safe characters (192 bits)."""
    return secrets.token_urlsafe(24)


def hash_password(
    password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS
) -> str:
    """mosquitto 2.0's ``$7$<iterations>$<salt b64>$<hash b64>`` of ``password``."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, HASH_BYTES)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, hashed: str) -> bool:
    """True if ``hashed`` (a ``$7$`` entry) is the hash of ``password``."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        raise AccountError(f"not a mosquitto $7$ password hash: {hashed[:20]!r}")
    salt, want = base64.b64decode(parts[3]), base64.b64decode(parts[4])
    got = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, int(parts[2]), len(want))
    return hmac.compare_digest(got, want)


def read_passwords(path: Path) -> dict[str, str]:
    """Username → hash of a mosquitto password file; ``{}`` if it does not exist."""
    if not path.exists():
        return {}
    entries: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user or not hashed.startswith("$"):
            raise AccountError(f"{path}:{number}: not a 'username:hash' line")
        entries[user] = hashed
    return entries


def write_passwords(path: Path, entries: Mapping[str, str]) -> None:
    """Write the password file (mode 0600, replaced atomically)."""
    _write_private(path, "".join(f"{user}:{hashed}\n" for user, hashed in sorted(entries.items())))


# -- the ACL -----------------------------------------------------------------------------

_USER = re.compile(r"^user\s+(\S+)\s*$")


def render_acl(enroll: Iterable[str] = ()) -> str:
    """The whole ACL file: node patterns, service accounts, the nodes that may enrol."""
    lines = [
        "# facewire broker ACL: written by `facewire nodes`; edits here are overwritten.",
        "# Anonymous clients get nothing (and the broker refuses them: allow_anonymous false).",
        "",
        "# every node, for its own id only (its MQTT username is its node id)",
        *NODE_PATTERNS,
    ]
    for name, grants in SERVICES.items():
        lines += ["", f"# the {name} service", f"user {name}", *grants]
    for node in sorted(set(enroll)):
        lines += ["", f"# node {node} may enrol people (facewire enroll)", f"user {node}"]
        lines += ENROLL_LINES
    return "\n".join(lines) + "\n"


def read_enrollers(path: Path) -> set[str]:
    """The nodes an ACL written by :func:`render_acl` lets enrol (its non-service users)."""
    if not path.exists():
        return set()
    found = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _USER.match(line)
        if m and m.group(1) not in SERVICES:
            found.add(m.group(1))
    return found


def write_acl(path: Path, enroll: Iterable[str] = ()) -> None:
    """Write the ACL (mode 0600, replaced atomically)."""
    _write_private(path, render_acl(enroll))


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o600)  # an older tmp file may have had another mode
    os.replace(tmp, path)
