"""Sealed embeddings and signed results: what the broker and other clients cannot read
or forge.

**Embeddings** (edge → classifier): the binary message of ``bus.codec`` is encrypted
and authenticated with libsodium's ``crypto_box`` (X25519 + XSalsa20-Poly1305) from
the node's key to the classifier's public key. The node's Curve25519 key is the one
of its Ed25519 key (``bus.keys``), so a node has one key. Only the classifier can open
the box, and opening it proves which node's key made it: the box is the node's
signature too. Anyone else on the broker sees ciphertext, and no node can speak for
another. The envelope on the wire::

    offset  size  field
    0       2     magic b"FS"
    2       1     version (1)
    3       24    nonce (random)
    27      …     crypto_box ciphertext (16-byte tag + the codec's message)

Freshness: the classifier refuses a message whose capture time is further than
``window_s`` from its own clock (``stale``), and remembers the (seq, capture time)
pairs of each node within that window, with when each came first: one seen again is a
*repeat*, answered from the recent answers when the classifier has one (an edge that
resends) and otherwise refused as ``replayed``. The pair cannot be altered without
breaking the box.

**Results** (classifier → everyone): each result's JSON text gets a last field
``"sig"``: an Ed25519 signature by the classifier over the root of a hash tree of the
results published together (one signature per batch, not per result), the path from
this result's leaf to the root, and the leaf's index. A verifier rebuilds the text
without the field, hashes it, climbs the path and checks the signature once per root.

>>> import time
>>> from nacl.public import PrivateKey
>>> from nacl.signing import SigningKey
>>> import numpy as np
>>> from facewire.bus import codec
>>> node_key, classifier_box = SigningKey.generate(), PrivateKey.generate()
>>> sealer = Sealer(node_key, classifier_box.public_key)
>>> opener = Opener(classifier_box, {"door": node_key.verify_key}, window_s=30)
>>> msg = codec.EmbeddingMessage(node="door", seq=1, frame_id=0, face_index=0,
...     bbox=(0, 0, 80, 80), model_id="sface-1", captured_at=time.time(), stages={},
...     quality=(6400.0, 100.0, 120.0), vector=np.ones(4, np.float32) / 2)
>>> sealed = sealer.seal(codec.encode(msg))
>>> sealed[:2], len(sealed) - len(codec.encode(msg))   # 2 + 1 + 24 + a 16-byte tag
(b'FS', 43)
>>> opened, first_seen = opener.open("door", sealed)
>>> opened.seq, first_seen                  # new
(1, None)
>>> opener.open("door", sealed)[1] is not None   # the same message again: a repeat
True
>>> try:
...     opener.open("porch", sealed)         # another node's topic, another key
... except WireError as exc:
...     print(exc.reason)
unknown_node
>>> signer = ResultSigner(SigningKey.generate())
>>> texts = signer.sign([b'{"node":"door","seq":1}', b'{"node":"door","seq":2}'])
>>> verifier = ResultVerifier(signer.verify_key)
>>> verifier.verify(texts[1])
b'{"node":"door","seq":2}'
>>> try:
...     verifier.verify(texts[1].replace(b'"seq":2', b'"seq":3'))
... except WireError as exc:
...     print(exc.reason)
bad_signature
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from pathlib import Path

from nacl.bindings import (
    crypto_box_beforenm,
    crypto_box_easy_afternm,
    crypto_box_open_easy_afternm,
)
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

from facewire.bus import codec
from facewire.bus.errors import WireError
from facewire.bus.keys import KeyRing, load_key, secrets_dir

MAGIC = b"FS"
VERSION = 1
NONCE = 24
_HEAD = len(MAGIC) + 1 + NONCE
#: Pairs remembered per node for the replay check; past it, the oldest are forgotten
#: and anything older than the oldest remembered counts as stale.
MAX_REMEMBERED = 65536
SIG_FIELD = b',"sig":'


def is_sealed(payload: bytes) -> bool:
    return payload[:2] == MAGIC


class Sealer:
    """The edge's side: seals each encoded embedding to the classifier."""

    def __init__(self, node_key: SigningKey, classifier_box: PublicKey) -> None:
        private = node_key.to_curve25519_private_key()
        # the shared key once: per message only the symmetric part runs (a few µs)
        self._shared = crypto_box_beforenm(bytes(classifier_box), bytes(private))

    def seal(self, message: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return (
            MAGIC + bytes([VERSION]) + nonce + crypto_box_easy_afternm(message, nonce, self._shared)
        )


class Opener:
    """The classifier's side: opens, decodes and checks freshness, per node.

    Thread-safe (the receive thread opens; a reload may swap ``keys``)."""

    def __init__(
        self,
        classifier_box: PrivateKey,
        node_keys: Mapping[str, VerifyKey],
        window_s: float = 30.0,
        expected_dim: int | None = None,
    ) -> None:
        self._private = classifier_box
        self.window_s = window_s
        self.expected_dim = expected_dim
        self._lock = threading.Lock()
        self._shared: dict[str, bytes] = {}
        # node → ((seq, captured_at) → when first seen, the same by capture time, [floor])
        self._seen: dict[
            str, tuple[dict[tuple[int, float], float], deque[tuple[float, int]], list[float]]
        ] = {}
        self.set_node_keys(node_keys)

    def set_node_keys(self, node_keys: Mapping[str, VerifyKey]) -> None:
        """The nodes that may speak (``facewire nodes add/remove``): others are refused."""
        private = bytes(self._private)
        shared = {
            node: crypto_box_beforenm(bytes(key.to_curve25519_public_key()), private)
            for node, key in node_keys.items()
        }
        with self._lock:
            self._shared = shared
            for gone in set(self._seen) - set(shared):
                del self._seen[gone]

    @property
    def nodes(self) -> list[str]:
        return sorted(self._shared)

    def open(
        self,
        node: str,
        payload: bytes,
        now: float | None = None,
        expected_dim: int | None = None,
    ) -> tuple[codec.EmbeddingMessage, float | None]:
        """(the message, when this (seq, capture time) came first if it came before,
        else ``None``) or ``WireError``: ``unsealed``, ``unknown_node``, ``bad_seal``,
        ``stale`` or a codec reason (``expected_dim``: the gallery's, as
        ``codec.decode``)."""
        if payload[:2] != MAGIC:
            raise WireError("unsealed", "this classifier takes sealed embeddings only")
        if len(payload) < _HEAD + 16 or payload[2] != VERSION:
            raise WireError("bad_seal", f"not a version-{VERSION} sealed envelope")
        shared = self._shared.get(node)
        if shared is None:
            raise WireError("unknown_node", f"no key for node {node!r}: facewire nodes add")
        try:
            inner = crypto_box_open_easy_afternm(payload[_HEAD:], payload[3:_HEAD], shared)
        except CryptoError:
            raise WireError(
                "bad_seal", f"the box does not open with {node!r}'s key: forged or damaged"
            ) from None
        msg = codec.decode(inner, expected_dim or self.expected_dim)
        if msg.node != node:
            raise WireError("bad_metadata", f"sealed by {node!r} but names {msg.node!r}")
        now = time.time() if now is None else now
        if abs(now - msg.captured_at) > self.window_s:
            raise WireError(
                "stale",
                f"captured {now - msg.captured_at:+.0f} s from now, outside ±{self.window_s:g} s "
                "(replayed, or the node's clock is off)",
                node=node,
                seq=msg.seq,
            )
        return msg, self._remember(node, (msg.seq, msg.captured_at), now)

    def _remember(self, node: str, pair: tuple[int, float], now: float) -> float | None:
        with self._lock:
            seen, order, floor = self._seen.setdefault(node, ({}, deque(), [0.0]))
            while order and order[0][0] < now - self.window_s:
                captured, seq = order.popleft()
                seen.pop((seq, captured), None)
            first = seen.get(pair)
            if first is not None:
                return first
            if pair[1] <= floor[0]:  # older than what was forgotten to stay bounded
                raise WireError(
                    "stale", "older than this node's remembered messages", node=node, seq=pair[0]
                )
            seen[pair] = now
            order.append((pair[1], pair[0]))
            if len(order) > MAX_REMEMBERED:
                captured, seq = order.popleft()
                seen.pop((seq, captured), None)
                floor[0] = max(floor[0], captured)
            return None


def _leaf(text: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + text).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    levels = [leaves]
    while len(levels[-1]) > 1:
        row = levels[-1]
        # an odd last one is paired with itself
        levels.append([_node(row[i], row[min(i + 1, len(row) - 1)]) for i in range(0, len(row), 2)])
    return levels


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


class ResultSigner:
    """The classifier's side: one signature per batch of results."""

    def __init__(self, key: SigningKey) -> None:
        self._key = key
        self.verify_key = key.verify_key

    def sign(self, texts: Sequence[bytes]) -> list[bytes]:
        """Each JSON object text with its ``"sig"`` field appended."""
        if not texts:
            return []
        levels = _levels([_leaf(t) for t in texts])
        signature = _b64(self._key.sign(levels[-1][0]).signature)
        # every node's base64 once: each is on the path of many leaves
        coded = [[_b64(h) for h in row] for row in levels[:-1]]
        head = f'{SIG_FIELD.decode()}{{"s":"{signature}","i":'
        out = []
        for i, text in enumerate(texts):
            path, j = [], i
            for row in coded:
                path.append(row[min(j ^ 1, len(row) - 1)])
                j //= 2
            quoted = '","'.join(path)
            tail = f'{head}{i},"p":["{quoted}"]}}}}' if path else f'{head}{i},"p":[]}}}}'
            out.append(text[:-1] + tail.encode())
        return out


class ResultVerifier:
    """The monitor's or an integration's side: is this result the classifier's?"""

    def __init__(self, key: VerifyKey, remember: int = 4096) -> None:
        self._key = key
        self._roots: OrderedDict[bytes, None] = OrderedDict()  # verified recently
        self._remember = remember
        self._lock = threading.Lock()

    def verify(self, text: bytes) -> bytes:
        """The text without its ``"sig"`` field; ``WireError`` ``unsigned`` or ``bad_signature``."""
        at = text.rfind(SIG_FIELD)
        if at < 0 or not text.endswith(b"}"):
            raise WireError("unsigned", "the result carries no signature")
        body = text[:at] + b"}"
        try:
            sig = json.loads(text[at + len(SIG_FIELD) : -1])
            signature = base64.b64decode(sig["s"], validate=True)
            index = int(sig["i"])
            path = [base64.b64decode(p, validate=True) for p in sig["p"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise WireError("bad_signature", f"unreadable signature field ({exc})") from None
        h = _leaf(body)
        for sibling in path:
            h = _node(sibling, h) if index & 1 else _node(h, sibling)
            index //= 2
        with self._lock:
            known = (h + signature) in self._roots
        if not known:
            try:
                self._key.verify(h, signature)
            except (BadSignatureError, ValueError):
                raise WireError("bad_signature", "not signed by the classifier's key") from None
            with self._lock:
                self._roots[h + signature] = None
                if len(self._roots) > self._remember:
                    self._roots.popitem(last=False)
        return body


# -- the keys each service loads (``sealing.keys``: the folder ``facewire nodes`` fills) ---


def key_folder(configured: str) -> Path:
    """``sealing.keys``, else ``$FACEWIRE_SECRETS_DIR/keys``, else ``deploy/secrets/keys``."""
    if configured:
        return Path(configured)
    return secrets_dir() / "keys"


def edge_sealer(folder: Path, node: str) -> tuple[Sealer, ResultVerifier]:
    """The edge's: its own key (``nodes/<id>.sign`` or ``<id>.sign``, as copied to the
    node) sealing to the classifier's public key, and a check of the results."""
    ring = KeyRing(folder)
    own = ring.node_sign_path(node)
    if not own.exists() and (folder / own.name).exists():
        own = folder / own.name
    return (
        Sealer(load_key(own, SigningKey), ring.classifier_box_public()),
        ResultVerifier(ring.classifier_verify_key()),
    )


def classifier_keys(folder: Path, window_s: float) -> tuple[Opener, ResultSigner, KeyRing]:
    """The classifier's: its box key and every node's verify key (``reload_nodes``
    re-reads them after ``facewire nodes add``), and its signing key."""
    ring = KeyRing(folder)
    opener = Opener(ring.classifier_box_private(), ring.node_verify_keys(), window_s)
    return opener, ResultSigner(ring.classifier_signing_key()), ring


def result_verifier(folder: Path) -> ResultVerifier:
    """The monitor's or an integration's: the classifier's verify key."""
    return ResultVerifier(KeyRing(folder).classifier_verify_key())
