"""A deployment's secrets and broker, made the way an operator makes them.

``facewire certs init`` and ``facewire nodes init|add`` write the password file, ACL,
keys and certificates; the broker runs the repository's deployment config
(``deploy/mosquitto.conf`` or ``deploy/mosquitto-compose.conf``) with only its paths and
port rewritten for a temp folder on loopback.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from facewire import certs_cli, nodes_cli
from facewire.bus.client import BusClient
from facewire.config.schema import BrokerConfig
from facewire.devtools.broker import Mosquitto, free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = {
    "single": ROOT / "deploy" / "mosquitto.conf",
    "compose": ROOT / "deploy" / "mosquitto-compose.conf",
}
_CREDENTIALS = re.compile(r'username: "([^"]+)"\n  password: "([^"]+)"')


def run_cli(main, *argv: str) -> tuple[int, str, str]:
    """Run a facewire command's ``main`` in-process: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(argv))
        except SystemExit as exc:  # argparse
            status = int(exc.code or 0)
    return status, out.getvalue(), err.getvalue()


@dataclass
class Deployment:
    secrets: Path
    broker: Mosquitto
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def ca(self) -> Path:
        return self.secrets / "tls" / "ca.crt"

    def settings(self, user: str | None, password: str | None = None, **kw: object) -> BrokerConfig:
        cfg = BrokerConfig(
            url=f"mqtts://127.0.0.1:{self.broker.port}",
            ca_certs=str(self.ca),
            reconnect_min_s=0.2,
            reconnect_max_s=1.0,
        )
        if user is not None:
            cfg.username = user
            cfg.password = self.passwords.get(user, "") if password is None else password
        for key, value in kw.items():
            setattr(cfg, key, value)
        return cfg

    def client(self, user: str | None, password: str | None = None, **kw: object) -> BusClient:
        """A connected client (``ConnectionError`` / ``TimeoutError`` if it can't)."""
        c = BusClient(self.settings(user, password, **kw), f"test-{user}")
        return c.connect(timeout=5)

    def add_node(self, node: str, *extra: str, reload: bool = False) -> dict:
        """``facewire nodes add node *extra`` (SIGHUP the broker with ``reload``)."""
        out = self.secrets / f"{node}.yaml"
        pid = ("--broker-pid", str(self.broker.pid)) if reload else ()
        status, _, err = run_cli(
            nodes_cli.main, "--dir", str(self.secrets), *pid, "add", node, *extra, "--out", str(out)
        )
        assert status == 0, err
        config = yaml.safe_load(out.read_text())
        self.passwords[node] = config["broker"]["password"]
        return config


def make_secrets(secrets: Path, nodes: tuple[str, ...] = ("A", "B")) -> dict[str, str]:
    """certs init + nodes init; the service passwords (nodes are added separately)."""
    status, _, err = run_cli(certs_cli.main, "--dir", str(secrets), "init", "--host", "mosquitto")
    assert status == 0, err
    status, out, err = run_cli(nodes_cli.main, "--dir", str(secrets), "init")
    assert status == 0, err
    return dict(_CREDENTIALS.findall(out))


def deployment_config(kind: str, secrets: Path, data: Path, port: int) -> str:
    """The repository's deployment config, with paths and port moved to a temp folder."""
    text = DEPLOY[kind].read_text()
    if kind == "single":
        text = text.replace("/etc/mosquitto/facewire/passwd", str(secrets / "broker" / "passwd"))
        text = text.replace("/etc/mosquitto/facewire/acl", str(secrets / "broker" / "acl"))
        text = text.replace("/etc/mosquitto/facewire/", str(secrets / "tls") + "/")
        text = text.replace("/var/lib/mosquitto/", f"{data}/")
        text = text.replace("/run/mosquitto/mosquitto.pid", str(data / "mosquitto.pid"))
        text = text.replace("listener 8883\n", f"listener {port} 127.0.0.1\n")
    else:
        text = text.replace("/mosquitto/secrets/", f"{secrets}/")
        text = text.replace("/mosquitto/data/", f"{data}/")
        text = text.replace("listener 8883 0.0.0.0\n", f"listener {port} 127.0.0.1\n")
    assert f"listener {port} 127.0.0.1" in text and "allow_anonymous false" in text
    return text


def start_deployment(kind: str, workdir: Path, nodes: tuple[str, ...] = ("A", "B")) -> Deployment:
    secrets, data = workdir / "secrets", workdir / "data"
    data.mkdir(parents=True)
    passwords = make_secrets(secrets)
    port = free_port()
    broker = Mosquitto(workdir, port=port, config=deployment_config(kind, secrets, data, port))
    d = Deployment(secrets, broker, passwords)
    for node in nodes:
        d.add_node(node)
    broker.start()
    return d
