"""``facewire healthcheck``: the container health checks of docker-compose.yml.

Neither check logs into the broker: the deployment broker makes the username the
client id (``use_username_as_clientid``), so a probe with the service's own account
would take the running service's place.

* ``connected``: this network namespace holds an established TCP connection to the
  broker's port (in a container: the service's own connection). Read from
  ``/proc/net/tcp`` and ``/proc/net/tcp6``.
* ``http URL``: the URL answers with a status below 500 (the monitor's ``/login``
  answers 200 even when every other page needs a login).
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import facewire.config as config
from facewire.config.schema import BrokerConfig

ESTABLISHED = "01"


def established_ports(proc_net: Path = Path("/proc/net")) -> set[int]:
    """Remote ports of this namespace's established TCP connections."""
    ports: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_net / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == ESTABLISHED:
                ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


def broker_port(url: str | None) -> int:
    """The port of ``url``, else of the configured broker (``FACEWIRE_BROKER``)."""
    if url:
        return BrokerConfig(url=url).port
    return _configured_port()


def _configured_port() -> int:
    from facewire.config.schema import MonitorConfig

    # any service's settings read FACEWIRE_BROKER the same way; the monitor's has no
    # required file
    return config.load(MonitorConfig).broker.port


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facewire healthcheck",
        description="Container health checks that do not log into the broker (exit 0: "
        "healthy, 1: not). `connected`: a TCP connection to the broker's port is "
        "established (the service is connected); `http URL`: the URL answers.",
    )
    sub = p.add_subparsers(dest="check", required=True, metavar="CHECK")
    c = sub.add_parser("connected", help="this container is connected to the broker")
    c.add_argument(
        "--broker",
        default=None,
        metavar="URL",
        help="the broker URL whose port to look for (default: $FACEWIRE_BROKER)",
    )
    h = sub.add_parser("http", help="an HTTP URL answers with a status below 500")
    h.add_argument("url", help="e.g. http://127.0.0.1:6010/login")
    h.add_argument("--timeout", type=float, default=3.0, help="seconds (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.check == "connected":
        try:
            port = broker_port(args.broker)
        except (config.ConfigError, ValueError) as exc:
            print(f"facewire healthcheck: {exc}", file=sys.stderr)
            return 2
        if port in established_ports():
            print(f"connected to the broker's port {port}")
            return 0
        print(f"no established connection to port {port}", file=sys.stderr)
        return 1
    if urlsplit(args.url).scheme not in ("http", "https"):
        print(f"facewire healthcheck: not an http(s) URL: {args.url!r}", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(args.url, timeout=args.timeout) as resp:  # noqa: S310
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        print(f"{args.url}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.url}: HTTP {status}")
    return 0 if status < 500 else 1
