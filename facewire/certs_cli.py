"""``facewire certs``: a lab CA and the broker's TLS certificate (and client ones)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facewire.bus import certs
from facewire.bus.keys import secrets_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facewire certs",
        description="Make TLS certificates for a lab or small site without its own PKI: a CA, "
        "the broker's server certificate (for localhost, 127.0.0.1, ::1 and every --host) "
        "and optional client certificates. Keys are ECDSA P-256, written with mode 0600.",
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=secrets_dir(),
        help="secrets folder; certificates go to its tls/ (default: $FACEWIRE_SECRETS_DIR "
        "or deploy/secrets)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    init = sub.add_parser("init", help="a new CA, server certificate and client certificates")
    init.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name or address clients use for the broker (repeatable; docker "
        "compose services reach it as 'mosquitto')",
    )
    init.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="NAME",
        help="also a client certificate with this common name (repeatable)",
    )
    init.add_argument("--days", type=int, default=825, help="validity (default: %(default)s)")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    client = sub.add_parser("client", help="one more client certificate from the existing CA")
    client.add_argument("name", help="its common name")
    client.add_argument("--days", type=int, default=825, help="validity (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = args.dir / "tls"
    if args.days < 1:
        print("facewire certs: --days must be at least 1", file=sys.stderr)
        return 2
    try:
        if args.command == "init":
            files = certs.init_ca(root, args.host, args.client, days=args.days, force=args.force)
            made = [files.ca_cert, files.server_cert]
            made += [files.client_cert(name) for name in args.client]
        else:
            made = [certs.client_cert(root, args.name, days=args.days)[0]]
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"facewire certs: {exc}", file=sys.stderr)
        return 2
    for path in made:
        print(f"{path.parent}/{certs.describe(path)}")
    print(
        f"keys (mode 600) next to them; give clients {root / 'ca.crt'} as broker.ca_certs. "
        f"{root / 'ca.key'} signs new certificates: keep it off the broker.",
        file=sys.stderr,
    )
    return 0
