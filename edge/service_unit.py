"""``facewire edge install-service``: the edge as a systemd service (a Raspberry Pi's).

One source for the unit: :func:`render_unit` writes it here, and the repository's
``deploy/facewire-edge.service`` is its output with the defaults (a test keeps the two
the same). The service runs ``facewire edge --config <config>`` as a dedicated user in
the camera group ``video``, logs to the journal and is restarted when it fails.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

UNIT_NAME = "facewire-edge"
DEFAULT_CONFIG = "/etc/facewire/edge.yaml"
DEFAULT_ENV = "/etc/facewire/edge.env"
DEFAULT_EXEC = "/opt/facewire/.venv/bin/facewire"
DEFAULT_USER = "facewire"
CAMERA_GROUP = "video"
#: exit statuses of ``facewire edge`` that restarting does not mend: 2 a bad config,
#: 3 the broker refused the node (password, ACL, TLS)
NO_RESTART_STATUSES = (2, 3)


@dataclass(frozen=True)
class Unit:
    exec_path: str = DEFAULT_EXEC
    config: str = DEFAULT_CONFIG
    user: str = DEFAULT_USER
    env_file: str = DEFAULT_ENV
    name: str = UNIT_NAME


def render_unit(u: Unit) -> str:
    """The unit file's text."""
    for what, value in (("exec", u.exec_path), ("config", u.config), ("env file", u.env_file)):
        if not os.path.isabs(value):
            raise ValueError(f"the {what} path must be absolute (systemd needs it): {value!r}")
        if any(c in value for c in " \n\t%\"'\\"):
            raise ValueError(f"the {what} path {value!r} holds a space, quote, % or backslash")
    if not u.user or not u.user.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"not a user name: {u.user!r}")
    no_restart = " ".join(map(str, NO_RESTART_STATUSES))
    return f"""\
# facewire edge node: camera -> face embeddings over MQTT (docs/raspberry-pi.md).
# Written by `facewire edge install-service`; deploy/facewire-edge.service is the same
# text with the defaults. Its config ({u.config}) is what `facewire nodes add NODE
# --out` made on the server: node id, broker, password, CA and key paths (mode 600,
# owned by {u.user}). Optional FACEWIRE_* overrides go into {u.env_file}.
#   journalctl -u {u.name} -f

[Unit]
Description=facewire edge node (camera to face embeddings over MQTT)
Wants=network-online.target
After=network-online.target time-sync.target
# a crash loop (no camera yet, broker away) backs off instead of spinning
StartLimitIntervalSec=300
StartLimitBurst=10

[Service]
Type=simple
User={u.user}
Group={u.user}
# the webcam: /dev/video* belong to the group {CAMERA_GROUP}
SupplementaryGroups={CAMERA_GROUP}
Environment=PYTHONUNBUFFERED=1
Environment=FACEWIRE_LOG=INFO
EnvironmentFile=-{u.env_file}
ExecStart={u.exec_path} edge --config {u.config}
# SIGTERM: the daemon stops capturing, flushes what is queued and publishes "offline"
KillSignal=SIGTERM
TimeoutStopSec=15
Restart=on-failure
RestartSec=5
# a bad config (2) or a refused login (3) needs the operator, not another try
RestartPreventExitStatus={no_restart}
StandardOutput=journal
StandardError=journal
SyslogIdentifier={u.name}

# hardening: it needs the camera, the network and to read its files, nothing else
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
DevicePolicy=closed
DeviceAllow=char-video4linux rw
DeviceAllow=char-media rw

[Install]
WantedBy=multi-user.target
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facewire edge install-service",
        description="Write the edge's systemd unit, make its user (in the camera group "
        "'video') and enable it: restarted on failure, logging to the journal. Needs root "
        "unless --dry-run. Check it with: systemctl status facewire-edge; "
        "journalctl -u facewire-edge -f",
    )
    p.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        metavar="PATH",
        help="the edge config the service runs with (`facewire nodes add NODE --out PATH` "
        "on the server makes it; default: %(default)s)",
    )
    p.add_argument(
        "--user", default=DEFAULT_USER, help="the service's own user (default: %(default)s)"
    )
    p.add_argument(
        "--exec",
        dest="exec_path",
        default=None,
        metavar="PATH",
        help="the facewire program (default: the one next to this Python, else on PATH)",
    )
    p.add_argument(
        "--env-file",
        default=DEFAULT_ENV,
        metavar="PATH",
        help="optional FACEWIRE_* overrides, read if present (default: %(default)s)",
    )
    p.add_argument(
        "--unit-dir",
        type=Path,
        default=Path("/etc/systemd/system"),
        help="where the unit file goes (default: %(default)s)",
    )
    p.add_argument("--name", default=UNIT_NAME, help="unit name (default: %(default)s)")
    p.add_argument("--start", action="store_true", help="also start it now (enable --now)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="write the unit into --unit-dir and print what would be run, but make no "
        "user and call no systemctl",
    )
    return p


def facewire_exe() -> str:
    """This install's ``facewire`` program."""
    beside = Path(sys.executable).parent / "facewire"
    if beside.exists():
        return str(beside)
    return shutil.which("facewire") or DEFAULT_EXEC


def _run(cmd: list[str], dry_run: bool) -> None:
    print(("would run: " if dry_run else "running: ") + " ".join(cmd))
    if not dry_run:
        subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    unit = Unit(
        exec_path=args.exec_path or facewire_exe(),
        config=args.config,
        user=args.user,
        env_file=args.env_file,
        name=args.name,
    )
    try:
        text = render_unit(unit)
    except ValueError as exc:
        print(f"facewire edge install-service: {exc}", file=sys.stderr)
        return 2
    if not args.dry_run and os.geteuid() != 0:
        print(
            "facewire edge install-service: needs root (sudo), or --dry-run to only write the unit",
            file=sys.stderr,
        )
        return 2
    if not Path(unit.config).exists():
        print(
            f"warning: {unit.config} does not exist yet: copy the config `facewire nodes add "
            f"NODE --out FILE` made there (owner {unit.user}, mode 600) before starting",
            file=sys.stderr,
        )
    try:
        pwd.getpwnam(unit.user)
        have_user = True
    except KeyError:
        have_user = False
    if not have_user:
        _run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
             "/nonexistent", "--shell", "/usr/sbin/nologin", "--groups", CAMERA_GROUP,
             unit.user],
            args.dry_run,
        )  # fmt: skip
    else:
        _run(["usermod", "--append", "--groups", CAMERA_GROUP, unit.user], args.dry_run)
    path = args.unit_dir / f"{unit.name}.service"
    try:
        args.unit_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        path.chmod(0o644)
    except OSError as exc:
        print(f"facewire edge install-service: cannot write {path}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    try:
        _run(["systemctl", "daemon-reload"], args.dry_run)
        enable = ["systemctl", "enable", *(["--now"] if args.start else []), f"{unit.name}.service"]
        _run(enable, args.dry_run)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"facewire edge install-service: {exc}", file=sys.stderr)
        return 1
    if not args.start:
        print(f"start it with: systemctl start {unit.name}; logs: journalctl -u {unit.name} -f")
    return 0
