"""``facewire doctor``: check a deployment and say what to fix.

Checks, in order (each prints ``ok``, ``warn`` or ``FAIL`` and, unless ok, a fix):

* **broker**: the address answers TCP; for ``mqtts://`` the TLS handshake with
  ``broker.ca_certs`` and the host name, and how long the certificate has left; the
  login (``broker.username``/``password``) is accepted and may read the statuses.
* **models**: each model file the pipeline uses exists, its sidecar's sha256 is the
  file's (a truncated copy or another export shows here), and no random-weights export.
* **gallery**: every photo has a face, no person has a single photo, no two people
  look like the same person (the centroid of their photos' vectors is closer than
  ``--duplicate-at``), built with the classifier's own code and its embedding cache.
* **agreement**: the classifier's retained status names the model this install's
  pipeline makes (``pipeline_model_id``), and so does every node's status (with
  ``--edge-config``: that edge config's pipeline too).

The exit status is 1 when anything FAILed, else 0 (warnings alone pass; ``--strict``
fails on them too). It changes nothing, except refreshing the gallery's embedding
cache as the classifier would.
"""

from __future__ import annotations

import argparse
import datetime as dt
import socket
import ssl
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import facewire.config as config
from facewire.config.schema import ClassifierConfig, EdgeConfig, MonitorConfig, PipelineConfig
from facewire.status_cli import add_broker_options, broker_settings, collect

#: centroid cosine at or above which two people are flagged as maybe one person
DUPLICATE_AT = 0.7
CERT_WARN_DAYS = 30


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failed: int = 0
    warned: int = 0

    def ok(self, what: str) -> None:
        self.lines.append(f"ok    {what}")

    def warn(self, what: str, fix: str) -> None:
        self.warned += 1
        self.lines += [f"warn  {what}", f"      fix: {fix}"]

    def fail(self, what: str, fix: str) -> None:
        self.failed += 1
        self.lines += [f"FAIL  {what}", f"      fix: {fix}"]

    def section(self, name: str) -> None:
        self.lines.append(f"\n{name}" if self.lines else name)


# --- broker ------------------------------------------------------------------------


def check_broker(r: Report, mon: MonitorConfig) -> dict[str, Any] | None:
    """Reachability, TLS, login; the retained statuses (``None`` if not read)."""
    b = mon.broker
    r.section(f"broker {b.host}:{b.port}")
    try:
        with socket.create_connection((b.host, b.port), timeout=3):
            pass
    except OSError as exc:
        r.fail(
            f"cannot reach {b.host}:{b.port}: {exc}",
            "start mosquitto (docker compose up -d mosquitto, or systemctl start mosquitto); "
            "check broker.url and the firewall",
        )
        return None
    r.ok(f"{b.host}:{b.port} answers")
    if b.tls:
        if not check_tls(r, b.host, b.port, b.ca_certs):
            return None
    elif b.host not in ("127.0.0.1", "localhost", "::1"):
        r.warn(
            f"{b.host} is reached without TLS: passwords and templates cross the network in clear",
            "use mqtts:// with the deployment broker config (docs/deploy.md)",
        )
    if not b.username:
        r.warn(
            "no broker.username: only a broker that allows anonymous clients lets it in",
            "use the monitor's account (deploy/secrets/env/monitor.env, or --config with "
            "its broker section)",
        )
    from facewire.monitor.state import State

    try:
        state: State = collect(mon, wait_s=1.0)
    except ConnectionError as exc:
        r.fail(
            f"login refused: {exc}",
            "check broker.username / broker.password (facewire nodes passwd NAME makes a "
            "new password)",
        )
        return None
    except TimeoutError as exc:
        r.fail(f"no MQTT answer: {exc}", "is it mosquitto on that port? (TLS vs plain port)")
        return None
    r.ok(f"logged in as {b.username or '(anonymous)'}")
    return {"classifier": state.classifier(), "nodes": state.nodes()}


def check_tls(r: Report, host: str, port: int, ca: str) -> bool:
    ctx = ssl.create_default_context(cafile=ca or None)
    try:
        with (
            socket.create_connection((host, port), timeout=3) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as tls,
        ):
            cert = tls.getpeercert() or {}
    except FileNotFoundError:
        r.fail(f"broker.ca_certs {ca} does not exist", "copy the CA (deploy/secrets/tls/ca.crt)")
        return False
    except ssl.SSLCertVerificationError as exc:
        r.fail(
            f"TLS: the broker's certificate does not check out: {exc.verify_message}",
            f"give broker.ca_certs the CA that signed it, and a server certificate for "
            f"{host!r} (facewire certs init --host {host})",
        )
        return False
    except (ssl.SSLError, OSError) as exc:
        r.fail(f"TLS handshake failed: {exc}", "is this the broker's TLS port (8883)?")
        return False
    left = None
    if "notAfter" in cert:
        ends = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(str(cert["notAfter"])), dt.UTC)
        left = (ends - dt.datetime.now(dt.UTC)).days
    if left is not None and left < CERT_WARN_DAYS:
        r.warn(
            f"TLS ok, but the broker's certificate expires in {left} days",
            "facewire certs init --force (then restart the broker)",
        )
    else:
        r.ok(f"TLS: certificate checked for {host}" + (f", {left} days left" if left else ""))
    return True


# --- models ------------------------------------------------------------------------


def model_files(p: PipelineConfig) -> list[tuple[str, Path]]:
    from facewire.models.detect import yunet_path
    from facewire.models.embedders import model_path
    from facewire.models.files import models_dir
    from facewire.models.mesh import landmark_model_path

    files = [(p.model, model_path(p.model, p.models_dir))]
    if p.detector.kind == "yunet":
        files.append(("yunet", yunet_path(p.models_dir)))
    if (p.mesh or p.align) and p.mesh_runtime == "landmarks":
        files.append(("face_landmark", landmark_model_path(models_dir(p.models_dir))))
    return files


def check_models(r: Report, p: PipelineConfig) -> bool:
    from facewire.models.files import read_sidecar, sha256

    r.section("models")
    good = True
    for name, path in model_files(p):
        how = (
            f"facewire models prepare {name} --force"
            if not name.startswith("clip")
            else "facewire models export clip --force (or copy the file and its .json again)"
        )
        if not path.exists():
            r.fail(f"{name}: {path} is missing", how)
            good = False
            continue
        info = read_sidecar(path)
        if not info.get("sha256"):
            r.warn(f"{name}: {path} has no sidecar with its sha256 to check", how)
            continue
        actual = sha256(path)
        if actual != info["sha256"]:
            r.fail(
                f"{name}: {path} is not the file its sidecar describes (sha256 "
                f"{actual[:12]}…, expected {str(info['sha256'])[:12]}…)",
                how,
            )
            good = False
        elif info.get("random_init"):
            r.fail(f"{name}: {path} has RANDOM weights (a test export)", how)
            good = False
        else:
            r.ok(f"{name}: {path.name} sha256 {actual[:12]}… as its sidecar says")
    return good


# --- gallery -----------------------------------------------------------------------


def check_gallery(r: Report, cfg: ClassifierConfig, duplicate_at: float) -> None:
    import os

    from facewire.classifier.gallery import LazyPipeline, build_gallery
    from facewire.classifier.keeper import cache_folder

    root = Path(cfg.dataset)
    r.section(f"gallery {root}")
    if not root.is_dir():
        r.fail(f"{root} is not a folder", "set dataset (FACEWIRE_DATASET) to the gallery folder")
        return
    cache_dir = cache_folder(cfg)
    writable = os.access(cache_dir if cache_dir.exists() else cache_dir.parent, os.W_OK)
    cache = cache_dir / f"{cfg.pipeline.model}.npz" if writable else None
    pipeline = LazyPipeline(cfg.pipeline)
    try:
        gallery = build_gallery(root, pipeline, cache, progress=False)
    finally:
        pipeline.close()
    people = sorted({p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")})
    photos: dict[str, int] = defaultdict(int)
    for label in gallery.labels:
        photos[label] += 1
    r.ok(f"{len(gallery.names)} people, {len(gallery.labels)} photos with a face")
    for path, reason in sorted(gallery.skipped.items()):
        r.warn(
            f"{Path(path).relative_to(root)}: {reason}",
            "replace it with a sharp, frontal photo of that person, or remove it",
        )
    for person in people:
        if photos[person] == 0:
            r.fail(
                f"{person}: no photo with a face: nobody will be named {person}",
                f"add photos (facewire gallery add {person} PHOTO...)",
            )
        elif photos[person] == 1:
            r.warn(
                f"{person}: one photo only: matches are weaker and the threshold cannot be "
                "calibrated on them",
                f"add 3-6 photos (facewire gallery add {person} PHOTO...)",
            )
    for a, b, cos in near_duplicates(gallery.vectors, gallery.labels, duplicate_at):
        r.warn(
            f"{a} and {b} look like one person (centroid cosine {cos:.2f} >= {duplicate_at})",
            "merge the two folders if they are one person, else check their photos",
        )


def near_duplicates(
    vectors: np.ndarray, labels: list[str], at: float
) -> list[tuple[str, str, float]]:
    """Pairs of people whose mean vectors have a cosine of at least ``at``."""
    names = sorted(set(labels))
    if len(names) < 2:
        return []
    lab = np.array(labels)
    cents = np.stack([vectors[lab == n].mean(axis=0) for n in names])
    cents /= np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12)
    sims = cents @ cents.T
    i, j = np.triu_indices(len(names), k=1)
    hits = [(names[a], names[b], float(sims[a, b])) for a, b in zip(i, j, strict=True)]
    return sorted((h for h in hits if h[2] >= at), key=lambda h: -h[2])


# --- agreement ---------------------------------------------------------------------


def check_agreement(
    r: Report, local: str | None, edge: str | None, statuses: dict[str, Any] | None
) -> None:
    r.section("model agreement")
    if local:
        r.ok(f"this install's pipeline makes {local}")
    if edge is not None:
        if local and edge != local:
            r.fail(
                f"the edge config's pipeline makes {edge}, the classifier config's {local}",
                "give both the same pipeline settings and model files (config/pipeline.yaml)",
            )
        else:
            r.ok(f"the edge config's pipeline makes {edge}")
    if statuses is None:
        return  # --no-broker, or the broker checks failed (said above)
    c = statuses["classifier"]
    if c is None:
        r.fail(
            "no classifier status on the broker: it never ran here",
            "start the classifier (docker compose up -d classifier)",
        )
    elif c.get("state") != "online":
        r.fail(
            f"the classifier is {c.get('state')}",
            "start it and read its log (docker compose logs classifier)",
        )
    theirs = c.get("model") if c else None
    if theirs:
        for label, mine in (("this install", local), ("the edge config", edge)):
            if mine and mine != theirs:
                r.fail(
                    f"the classifier runs {theirs}, {label} {mine}: faces are refused "
                    "(wrong_model)",
                    "the same model file and crop settings on both (pipeline.model, mesh, "
                    "align, mesh_runtime; facewire config show)",
                )
        if c.get("state") == "online":
            r.ok(f"the classifier is online with {theirs}")
    for n in statuses["nodes"]:
        if theirs and n.get("model") and n["model"] != theirs:
            r.fail(
                f"node {n['node']} runs {n['model']}, the classifier {theirs}",
                f"on {n['node']}: the classifier's pipeline settings and model file",
            )
        elif n.get("model"):
            r.ok(f"node {n['node']} ({n['state']}) runs {n['model']}")


def local_model_id(p: PipelineConfig) -> str | None:
    from facewire.models.embedders import ModelFileMissing
    from facewire.models.pipeline import pipeline_model_id

    try:
        return pipeline_model_id(p)
    except ModelFileMissing:
        return None  # said under "models"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facewire doctor",
        description=__doc__.split("\n\n")[0].strip("`")
        + ": broker reachability, login and TLS, model files and their hashes, the "
        "gallery's health, and that edge and classifier agree on the model. Prints what "
        "to fix; exit status 1 on any FAIL.",
    )
    add_broker_options(p)
    p.add_argument(
        "--classifier-config",
        type=Path,
        default=None,
        metavar="PATH",
        help="the classifier's config: its dataset, cache and pipeline (default: "
        "config/classifier.yaml; FACEWIRE_DATASET etc. override it)",
    )
    p.add_argument("--dataset", default=None, metavar="DIR", help="the gallery folder")
    p.add_argument(
        "--edge-config",
        type=Path,
        default=None,
        metavar="PATH",
        help="also check that this edge config's pipeline makes the classifier's model",
    )
    p.add_argument(
        "--duplicate-at",
        type=float,
        default=DUPLICATE_AT,
        metavar="COS",
        help="flag two people whose mean vectors are this similar (default: %(default)s)",
    )
    p.add_argument("--no-gallery", action="store_true", help="skip the gallery (faster)")
    p.add_argument("--no-broker", action="store_true", help="skip everything on the broker")
    p.add_argument("--strict", action="store_true", help="fail on warnings too")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not -1.0 <= args.duplicate_at <= 1.0:
        print("facewire doctor: --duplicate-at is a cosine, -1..1", file=sys.stderr)
        return 2
    try:
        mon = broker_settings(args)
        ccfg = config.load(
            ClassifierConfig,
            args.classifier_config or config.default_path("classifier"),
            overrides={"dataset": args.dataset},
        )
        ecfg = config.load(EdgeConfig, args.edge_config) if args.edge_config else None
    except (config.ConfigError, OSError) as exc:
        print(f"facewire doctor: {exc}", file=sys.stderr)
        return 2
    r = Report()
    statuses = None if args.no_broker else check_broker(r, mon)
    models_ok = check_models(r, ccfg.pipeline)
    if ecfg is not None and ecfg.pipeline != ccfg.pipeline:
        check_models(r, ecfg.pipeline)
    if not args.no_gallery:
        if models_ok:
            check_gallery(r, ccfg, args.duplicate_at)
        else:
            r.section("gallery")
            r.warn("not checked: a model file is missing or wrong", "fix the models first")
    local = local_model_id(ccfg.pipeline)
    edge = local_model_id(ecfg.pipeline) if ecfg is not None else None
    check_agreement(r, local, edge, statuses)
    print("\n".join(r.lines))
    bad = r.failed + (r.warned if args.strict else 0)
    print(
        f"\n{r.failed} problem(s), {r.warned} warning(s)"
        + ("" if bad else ": nothing to fix" if not r.warned else "")
    )
    return 1 if bad else 0
