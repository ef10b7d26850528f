"""``facewire nodes``: broker accounts, ACL and keys of a deployment's nodes and services.

Everything lives under one secrets folder (``--dir``, default ``$FACEWIRE_SECRETS_DIR``
or ``deploy/secrets``)::

    broker/passwd   mosquitto password file (hashes only)      → the broker
    broker/acl      mosquitto ACL                              → the broker
    keys/…          signing and box keys (facewire.bus.keys)    → services and nodes
    tls/…           lab CA and certificates (facewire certs)    → broker, services, nodes

Passwords are random, printed once and stored only hashed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from facewire.bus import accounts
from facewire.bus.keys import KeyRing, secrets_dir
from facewire.monitor.auth import hash_password as hash_monitor_password

RELOAD_HINT = (
    "reload the broker so it reads them: kill -HUP $(cat /run/mosquitto/mosquitto.pid), "
    "or under docker compose: docker compose kill -s HUP mosquitto"
)


class Secrets:
    """The paths of a secrets folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.passwd = root / "broker" / "passwd"
        self.acl = root / "broker" / "acl"
        self.keys = KeyRing(root / "keys")
        self.ca = root / "tls" / "ca.crt"
        self.monitor_users = root / "monitor-users"

    def env_file(self, service: str) -> Path:
        """A service account's credentials as environment lines (docker compose's env_file)."""
        return self.root / "env" / f"{service}.env"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)


def _yaml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def broker_yaml(url: str, username: str, password: str, ca: str) -> list[str]:
    """The ``broker:`` section of a service's or node's config."""
    return [
        "broker:",
        f"  url: {url}",
        f"  username: {_yaml_str(username)}",
        f"  password: {_yaml_str(password)}",
        f"  ca_certs: {ca}",
    ]


def edge_config(node: str, password: str, url: str, ca: str, s: Secrets, keys_at: str) -> str:
    """The YAML an edge node needs (its config/edge.yaml), with the files to copy."""
    lines = [
        f"# edge config of node {node}: config/edge.yaml on that node. It holds the node's",
        "# password (shown only now): keep it readable by the edge's user only (chmod 600).",
        f"node: {_yaml_str(node)}",
        *broker_yaml(url, node, password, ca),
        "sealing:  # embeddings sealed to the classifier, results checked",
        "  enabled: true",
        f"  keys: {keys_at}",
        "# copy to the node, with these modes:",
        f"#   {s.keys.node_sign_path(node)} -> {keys_at}/{node}.sign  (600, this node only)",
        f"#   {KeyRing.public(s.keys.classifier_box_path)} -> {keys_at}/classifier.box.pub",
        f"#   {KeyRing.public(s.keys.classifier_sign_path)} -> {keys_at}/classifier.sign.pub",
        f"#   {s.ca} -> {ca}",
    ]
    return "\n".join(lines) + "\n"


def reload_broker(pid: int | None, pid_file: Path | None) -> str:
    """SIGHUP the broker (it re-reads the password file and ACL); what happened, in words."""
    if pid is None and pid_file is not None:
        try:
            pid = int(pid_file.read_text().strip())
        except FileNotFoundError:
            return f"no pid file {pid_file}; {RELOAD_HINT}"
        except ValueError:
            return f"{pid_file} holds no process id; {RELOAD_HINT}"
    if pid is None:
        return RELOAD_HINT
    comm = Path(f"/proc/{pid}/comm")
    if comm.exists() and "mosquitto" not in comm.read_text():
        return f"process {pid} is not mosquitto ({comm.read_text().strip()}): not signalled"
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return f"no process {pid}; {RELOAD_HINT}"
    except PermissionError:
        return f"not allowed to signal process {pid}; {RELOAD_HINT}"
    return f"broker (pid {pid}) told to reload"


def ensure_services(s: Secrets, url: str, ca: str) -> str:
    """Make the service accounts and the classifier's keys if missing; their configs
    (with the new passwords) as text, or '' if nothing was new."""
    s.root.mkdir(mode=0o700, parents=True, exist_ok=True)  # secrets: the owner's only
    entries = accounts.read_passwords(s.passwd)
    out: list[str] = []
    for name in accounts.SERVICES:
        if name in entries:
            continue
        password = accounts.new_password()
        entries[name] = accounts.hash_password(password)
        out += [f"# {name} service account: the broker section of its config (shown only now)"]
        out += broker_yaml(url, name, password, ca)
        # the same credentials for docker compose (env_file), readable by the owner only
        write_private(
            s.env_file(name),
            f"FACEWIRE_BROKER_USERNAME={name}\nFACEWIRE_BROKER_PASSWORD={password}\n",
        )
        if name in ("classifier", "monitor"):
            out += ["sealing:", "  enabled: true", f"  keys: {s.keys.root}"]
        out += [""]
    if out:
        accounts.write_passwords(s.passwd, entries)
    if not s.monitor_users.exists():
        # the monitor listens beyond loopback in compose, and then wants an account
        login = accounts.new_password()
        write_private(s.monitor_users, f"admin:{hash_monitor_password(login)}\n")
        out += [
            f"# the monitor's login (docker compose: {s.monitor_users}): admin / {login}",
            "# (shown only now; facewire monitor hash-password makes more accounts)",
            "",
        ]
    if not s.acl.exists() or out:
        accounts.write_acl(s.acl, accounts.read_enrollers(s.acl))
    if s.keys.ensure_classifier():
        out += [f"# classifier keys made in {s.keys.root} (the .box and .sign files: 600)", ""]
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facewire nodes",
        description="Manage the broker accounts of edge nodes (MQTT username = node id) and "
        "services: mosquitto password file, ACL, and signing/box keys. Passwords are random, "
        "printed once and stored only hashed. After a change the broker is told to reload.",
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=secrets_dir(),
        help="secrets folder (default: $FACEWIRE_SECRETS_DIR or deploy/secrets)",
    )
    p.add_argument("--broker-pid", type=int, default=None, help="mosquitto's pid, to SIGHUP it")
    p.add_argument("--pid-file", type=Path, default=None, help="mosquitto's pid_file, to SIGHUP it")
    p.add_argument(
        "--broker",
        default="mqtts://broker.lan:8883",
        metavar="URL",
        help="broker URL written into printed configs (default: %(default)s)",
    )
    p.add_argument(
        "--ca",
        default="/etc/facewire/ca.crt",
        help="where configs will find the CA certificate (default: %(default)s)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("init", help="make the service accounts and classifier keys (once)")
    add = sub.add_parser("add", help="a new node: password, ACL, signing key; prints its config")
    add.add_argument("node", help="node id (its MQTT username)")
    add.add_argument(
        "--enroll",
        action="store_true",
        help="also let it enrol people (write faces/gallery/enroll, read faces/gallery/reply)",
    )
    add.add_argument(
        "--keys-at",
        default="/etc/facewire/keys",
        help="where the node will keep its keys, for the printed config (default: %(default)s)",
    )
    add.add_argument(
        "--out", type=Path, default=None, help="write the edge config here (0600), not stdout"
    )
    rm = sub.add_parser("remove", help="delete a node's account, ACL entry and keys")
    rm.add_argument("node", help="node id")
    pw = sub.add_parser("passwd", help="a new password for a node or service account")
    pw.add_argument("name", help="node id or service (classifier, monitor, gallery)")
    sub.add_parser("list", help="the accounts: nodes (and whether they may enrol), services")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    s = Secrets(args.dir)
    try:
        return _run(args, s)
    except (accounts.AccountError, ValueError, OSError) as exc:
        print(f"facewire nodes: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, s: Secrets) -> int:
    if args.command == "list":
        entries = accounts.read_passwords(s.passwd)
        if not entries:
            print(f"no accounts in {s.passwd} (facewire nodes init / add)")
            return 0
        enrol = accounts.read_enrollers(s.acl)
        for name in sorted(entries):
            if name in accounts.SERVICES:
                print(f"{name}\tservice")
            else:
                key = "key" if s.keys.node_sign_path(name).exists() else "NO KEY"
                print(f"{name}\tnode\t{key}{chr(9) + 'enroll' if name in enrol else ''}")
        return 0
    if args.command == "init":
        text = ensure_services(s, args.broker, args.ca)
        print(text or f"nothing to do: the service accounts and keys exist in {s.root}")
        if text:
            print(reload_broker(args.broker_pid, args.pid_file), file=sys.stderr)
        return 0
    if args.command == "add":
        node = accounts.check_node_account(args.node)
        services = ensure_services(s, args.broker, args.ca)
        entries = accounts.read_passwords(s.passwd)
        if node in entries:
            raise accounts.AccountError(
                f"node {node!r} exists (facewire nodes passwd {node} for a new password, "
                f"or remove it first)"
            )
        password = accounts.new_password()
        entries[node] = accounts.hash_password(password)
        s.keys.make_node(node)
        enrol = accounts.read_enrollers(s.acl) | ({node} if args.enroll else set())
        accounts.write_acl(s.acl, enrol)
        accounts.write_passwords(s.passwd, entries)
        config = edge_config(node, password, args.broker, args.ca, s, args.keys_at)
        if services:
            print(services)
        if args.out is not None:
            write_private(args.out, config)
            print(f"edge config of {node} written to {args.out}", file=sys.stderr)
        else:
            print(config, end="")
        print(reload_broker(args.broker_pid, args.pid_file), file=sys.stderr)
        return 0
    if args.command == "remove":
        node = accounts.check_node_account(args.node)
        entries = accounts.read_passwords(s.passwd)
        if node not in entries:
            raise accounts.AccountError(f"no node {node!r} in {s.passwd}")
        del entries[node]
        accounts.write_passwords(s.passwd, entries)
        accounts.write_acl(s.acl, accounts.read_enrollers(s.acl) - {node})
        s.keys.remove_node(node)
        print(f"node {node} removed", file=sys.stderr)
        print(reload_broker(args.broker_pid, args.pid_file), file=sys.stderr)
        return 0
    if args.command == "passwd":
        entries = accounts.read_passwords(s.passwd)
        name = args.name
        if name not in entries:
            raise accounts.AccountError(f"no account {name!r} in {s.passwd}")
        password = accounts.new_password()
        entries[name] = accounts.hash_password(password)
        accounts.write_passwords(s.passwd, entries)
        print(f"# new password of {name} (shown only now)")
        print("\n".join(broker_yaml(args.broker, name, password, args.ca)))
        print(reload_broker(args.broker_pid, args.pid_file), file=sys.stderr)
        return 0
    raise AssertionError(args.command)
