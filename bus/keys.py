"""Key files for sealing and signing messages (PyNaCl / libsodium), and where they live.

Layout under a key folder (``facewire nodes`` makes it; ``<dir>/keys``)::

    classifier.box        the classifier's Curve25519 private key (0600): opens sealed embeddings
    classifier.box.pub    its public key: every edge seals to it
    classifier.sign       the classifier's Ed25519 signing key (0600): signs results
    classifier.sign.pub   its verify key: edges, the monitor and integrations check results
    nodes/<id>.sign       node <id>'s Ed25519 signing key (0600): copy it to that node only
    nodes/<id>.sign.pub   its verify key: the classifier checks that node's embeddings

Each file holds one key as base64 text on one line (easy to copy, diff and check).
Private key files are written with mode 0600 and refused on load when others may
read them.

>>> import tempfile
>>> ring = KeyRing(Path(tempfile.mkdtemp()))
>>> made = ring.ensure_classifier()
>>> node_key = ring.make_node("door")
>>> ring.node_verify_keys() == {"door": node_key.verify_key}
True
>>> ring.classifier_box_public() == ring.classifier_box_private().public_key
True
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path
from typing import TypeVar

from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

#: The secrets folder of a deployment (``$FACEWIRE_SECRETS_DIR`` overrides it); its
#: ``keys/`` subfolder is the key folder.
SECRETS_DIR = "deploy/secrets"


def secrets_dir() -> Path:
    """``$FACEWIRE_SECRETS_DIR``, else :data:`SECRETS_DIR`."""
    return Path(os.environ.get("FACEWIRE_SECRETS_DIR") or SECRETS_DIR)


CLASSIFIER_BOX = "classifier.box"
CLASSIFIER_SIGN = "classifier.sign"
PUB = ".pub"
NODES = "nodes"
SIGN = ".sign"

K = TypeVar("K", PrivateKey, PublicKey, SigningKey, VerifyKey)


class KeyFileError(ValueError):
    """A key file that is missing, damaged or readable by others."""


def save_key(path: Path, key: PrivateKey | PublicKey | SigningKey | VerifyKey) -> None:
    """Write ``key`` as base64; private keys with mode 0600. Replaces atomically."""
    private = isinstance(key, PrivateKey | SigningKey)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64encode(bytes(key)) + b"\n")
    os.chmod(tmp, 0o600 if private else 0o644)
    os.replace(tmp, path)


def load_key(path: Path, kind: type[K]) -> K:
    """Read a key of ``kind`` (``PrivateKey``, ``PublicKey``, ``SigningKey``, ``VerifyKey``)."""
    try:
        raw = path.read_bytes()
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    if kind in (PrivateKey, SigningKey) and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path}: private key readable by others (chmod 600 {path.name})")
    try:
        data = base64.b64decode(raw.strip(), validate=True)
        return kind(data)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a base64 {kind.__name__} ({exc})") from None


class KeyRing:
    """The key folder of a deployment: paths, and making, loading and removing keys."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # paths
    @property
    def classifier_box_path(self) -> Path:
        return self.root / CLASSIFIER_BOX

    @property
    def classifier_sign_path(self) -> Path:
        return self.root / CLASSIFIER_SIGN

    def node_sign_path(self, node: str) -> Path:
        return self.root / NODES / f"{node}{SIGN}"

    @staticmethod
    def public(path: Path) -> Path:
        """The public half's file of a private key file."""
        return path.with_name(path.name + PUB)

    # the classifier
    def ensure_classifier(self) -> bool:
        """Make the classifier's box and signing key pairs unless they exist; True if made."""
        made = False
        if not self.classifier_box_path.exists():
            box = PrivateKey.generate()
            save_key(self.classifier_box_path, box)
            save_key(self.public(self.classifier_box_path), box.public_key)
            made = True
        if not self.classifier_sign_path.exists():
            sign = SigningKey.generate()
            save_key(self.classifier_sign_path, sign)
            save_key(self.public(self.classifier_sign_path), sign.verify_key)
            made = True
        return made

    def classifier_box_private(self) -> PrivateKey:
        return load_key(self.classifier_box_path, PrivateKey)

    def classifier_box_public(self) -> PublicKey:
        return load_key(self.public(self.classifier_box_path), PublicKey)

    def classifier_signing_key(self) -> SigningKey:
        return load_key(self.classifier_sign_path, SigningKey)

    def classifier_verify_key(self) -> VerifyKey:
        return load_key(self.public(self.classifier_sign_path), VerifyKey)

    # nodes
    def make_node(self, node: str) -> SigningKey:
        """A new signing key pair for ``node`` (replacing any earlier one)."""
        key = SigningKey.generate()
        save_key(self.node_sign_path(node), key)
        save_key(self.public(self.node_sign_path(node)), key.verify_key)
        return key

    def node_signing_key(self, node: str) -> SigningKey:
        return load_key(self.node_sign_path(node), SigningKey)

    def node_verify_key(self, node: str) -> VerifyKey:
        return load_key(self.public(self.node_sign_path(node)), VerifyKey)

    def node_verify_keys(self) -> dict[str, VerifyKey]:
        """Every node's verify key, by node id (what the classifier checks against)."""
        folder = self.root / NODES
        if not folder.is_dir():
            return {}
        suffix = SIGN + PUB
        return {
            p.name[: -len(suffix)]: load_key(p, VerifyKey)
            for p in sorted(folder.glob(f"*{suffix}"))
        }

    def remove_node(self, node: str) -> None:
        """Delete ``node``'s key pair (missing files are fine)."""
        for path in (self.node_sign_path(node), self.public(self.node_sign_path(node))):
            path.unlink(missing_ok=True)
