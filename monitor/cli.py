"""``facewire monitor``: subscribe to the bus, keep the detection log, serve the pages."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from facewire import config
from facewire.config.cli import add_setting_flag, overrides_from
from facewire.config.schema import MonitorConfig

log = logging.getLogger("monitor")

DESCRIPTION = """\
facewire monitor: subscribes to the classifier's results, the nodes' and the
classifier's status and the threshold statistics, keeps every detection in SQLite
and serves live pages:

  /log/html              live detection table (server-sent events)
  /nodes/html            nodes, classifier, latency over time, recent errors
  /threshold_stats/html  named/unknown per threshold, score histogram, FAR/FRR + EER

and JSON at /log, /log/stream, /nodes, /threshold_stats, /errors, /healthz.

It serves 127.0.0.1 unless told otherwise; on any other address it needs an account
(users: 'name:hash', the hash from `facewire monitor hash-password`) or a token, and
refuses to start without one. Log rows older than retention_days are deleted.

Settings come from the config file, then FACEWIRE_* environment variables
(e.g. FACEWIRE_BROKER=mqtt://host:1883, FACEWIRE_PORT=8080), then these flags;
every one is listed in docs/configuration.md."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facewire monitor",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        metavar="PATH",
        help="YAML config (default: config/monitor.yaml of this install, if present)",
    )
    for key in ("broker.url", "host", "port", "db", "window", "client_id"):
        add_setting_flag(p, key, cls=MonitorConfig)
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="wait up to S seconds for the broker at start, then serve anyway and keep "
        "retrying in the background (default 10)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def load_config(args: argparse.Namespace) -> MonitorConfig:
    path: Any = args.config
    if path is None:
        default = config.default_path("monitor")
        path = default if default.exists() else None
    return config.load(MonitorConfig, path, overrides=overrides_from(args))


def hash_password_main(argv: Sequence[str]) -> int:
    """``facewire monitor hash-password [NAME]``: a password hash for ``users``."""
    import getpass

    from facewire.monitor.auth import hash_password

    p = argparse.ArgumentParser(
        prog="facewire monitor hash-password",
        description="Print a password hash for the monitor's users setting (as NAME:hash "
        "with NAME). Reads the password from the terminal (twice), or one line from stdin.",
    )
    p.add_argument("name", nargs="?", help="account name: print NAME:hash")
    args = p.parse_args(argv)
    if args.name is not None and (not args.name or any(c in args.name for c in ":, #\t\n")):
        print("monitor: an account name has no ':', ',', '#' or spaces", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("monitor: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        print("monitor: use a password of at least 8 characters", file=sys.stderr)
        return 1
    hashed = hash_password(password)
    print(f"{args.name}:{hashed}" if args.name else hashed)
    return 0


def make_auth(cfg: MonitorConfig) -> Any:
    """The login from ``cfg``; ``ValueError`` (the operator's message) for bad accounts
    or a non-loopback host without any."""
    from pathlib import Path

    from facewire.monitor.auth import Auth, check_exposure, load_secret_key, parse_users

    users = parse_users(cfg.users)
    if cfg.users_file:
        try:
            text = Path(cfg.users_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"users_file: cannot read {cfg.users_file}: {exc}") from None
        for name, stored in parse_users(text, cfg.users_file).items():
            if name in users:
                raise ValueError(f"account {name!r} is in both users and users_file")
            users[name] = stored
    check_exposure(cfg.host, users, cfg.token)
    return Auth(
        users,
        cfg.token,
        secret_key=load_secret_key(cfg.secret_key, cfg.db),
        session_s=cfg.session_hours * 3600,
        login_per_min=cfg.login_per_min,
        teach_per_min=cfg.teach_per_min,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["hash-password"]:
        return hash_password_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # one line per request (the pages poll) is noise
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        cfg = load_config(args)
    except config.ConfigError as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return 2

    # Imported here so --help works even where Flask or the bus are missing.
    from werkzeug.serving import make_server

    from facewire.bus.client import BusClient
    from facewire.bus.sealing import key_folder, result_verifier
    from facewire.monitor.app import create_app
    from facewire.monitor.state import State
    from facewire.monitor.store import Store
    from facewire.monitor.subscriber import Subscriber

    try:
        auth = make_auth(cfg)
    except (ValueError, OSError) as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return 2
    try:  # only results signed by the classifier are shown
        verifier = result_verifier(key_folder(cfg.sealing.keys)) if cfg.sealing.enabled else None
    except ValueError as exc:
        print(f"monitor: sealing.enabled, but {exc} (facewire nodes init)", file=sys.stderr)
        return 2
    store = Store(cfg.db, window=cfg.window, retention_days=cfg.retention_days)
    state = State(max_nodes=cfg.max_nodes)
    # a stable id and a persistent session: results published while it restarts are kept
    bus = BusClient(
        cfg.broker,
        cfg.client_id,
        clean_start=cfg.session_expiry_s == 0,
        session_expiry_s=cfg.session_expiry_s,
    )
    subscriber = Subscriber(bus, store, state, verifier)
    try:
        app = create_app(
            store, state, teach=subscriber.teach, auth=auth, late_after_s=cfg.late_after_s
        )
        server = make_server(cfg.host, cfg.port, app, threaded=True)
    except OSError as exc:
        print(f"monitor: cannot listen on {cfg.host}:{cfg.port}: {exc}", file=sys.stderr)
        store.close()
        return 1
    try:
        subscriber.start(timeout=args.connect_timeout)
    except TimeoutError as exc:
        # Serve the pages anyway (they show the broker as disconnected) and keep trying.
        log.warning("%s; serving anyway and retrying in the background", exc)
        subscriber.start(wait=False)
    except ConnectionError as exc:  # refused: bad credentials, not authorised ...
        print(f"monitor: {exc}", file=sys.stderr)
        server.server_close()
        store.close()
        return 1

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    web = threading.Thread(target=server.serve_forever, name="monitor-http", daemon=True)
    web.start()
    log.info(
        "serving http://%s:%d/ (broker %s, db %s, %d detections logged)",
        cfg.host,
        server.server_port,
        cfg.broker.address,
        cfg.db,
        store.count(),
    )
    try:
        while not stop.wait(1.0):
            pass
    finally:
        log.info("shutting down")
        subscriber.close()
        store.feed.close()  # ends the open event streams
        server.shutdown()
        server.server_close()
        store.close()
    return 0
