"""docker-compose.yml's services as real processes on this machine (no Docker engine).

Each service gets a folder standing in for its container's file system: every bind
mount of the compose file is a symlink at its container path under that folder (named
volumes are empty folders), so a path a service is given (``/secrets/keys``,
``/data/gallery``) becomes ``<root>/secrets/keys`` by prefixing, and nothing else is
rewritten. The compose network's names become loopback (``mosquitto:8883`` → the
broker's free port; the lab certificate also names 127.0.0.1) and a published port a
free one. The secrets are what ``facewire certs init`` and ``facewire nodes init|add``
make, run into a temp folder standing in for ``deploy/secrets``.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from facewire import certs_cli, nodes_cli
from facewire.devtools.broker import Mosquitto, free_port
from tests.secrets_rig import run_cli

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
BROKER_IN_COMPOSE = "mqtts://mosquitto:8883"
EDGE_NODE = "webcam"  # the node the compose file's edge profile runs


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def make_secrets(secrets: Path) -> dict[str, str]:
    """What the README tells an operator to run; returns the monitor's login."""
    status, _, err = run_cli(certs_cli.main, "--dir", str(secrets), "init", "--host", "mosquitto")
    assert status == 0, err
    status, out, err = run_cli(
        nodes_cli.main, "--dir", str(secrets), "--broker", BROKER_IN_COMPOSE, "init"
    )
    assert status == 0, err
    login = re.search(r"admin / (\S+)", out)
    assert login, out
    # the edge profile's node, made as the compose file's comment says
    status, _, err = run_cli(
        nodes_cli.main, "--dir", str(secrets), "--broker", BROKER_IN_COMPOSE,
        "--ca", "/secrets/tls/ca.crt", "add", EDGE_NODE, "--keys-at", "/secrets/keys",
        "--out", str(secrets / "edge" / f"{EDGE_NODE}.yaml"),
    )  # fmt: skip
    assert status == 0, err
    return {"user": "admin", "password": login.group(1)}


def host_source(source: str, secrets: Path) -> Path:
    """A bind mount's host side: ``./deploy/secrets/…`` is the temp secrets folder."""
    rel = source.removeprefix("./")
    if rel == "deploy/secrets" or rel.startswith("deploy/secrets/"):
        return secrets / rel.removeprefix("deploy/secrets").lstrip("/")
    return ROOT / rel


def split_volume(spec: str) -> tuple[str, str, str]:
    parts = spec.split(":")
    return parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"


@dataclass
class Service:
    name: str
    spec: dict[str, Any]
    root: Path  # the container's file system, as far as the mounts make it
    broker_port: int = 0
    ports: dict[int, int] = field(default_factory=dict)  # container port → host port
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def mount(self, secrets: Path, volumes: Path) -> None:
        for spec in self.spec.get("volumes", []):
            source, target, _ = split_volume(spec)
            where = self.root / target.lstrip("/")
            where.parent.mkdir(parents=True, exist_ok=True)
            if source.startswith("."):
                host = host_source(source, secrets)
                assert host.exists(), f"{self.name}: {source} does not exist ({host})"
                where.symlink_to(host)
            else:  # a named volume
                (volumes / source).mkdir(parents=True, exist_ok=True)
                where.symlink_to(volumes / source)

    def translate(self, value: str) -> str:
        """A value of the compose file as this machine must see it."""
        value = value.replace(BROKER_IN_COMPOSE, f"mqtts://127.0.0.1:{self.broker_port}")
        for target in sorted(self.mount_points(), key=len, reverse=True):
            # the mount, a path inside it, or a folder the mounts fill
            if value == target or value.startswith(target + "/") or target.startswith(value + "/"):
                return str(self.root) + value
        return value

    def mount_points(self) -> list[str]:
        return [split_volume(v)[1] for v in self.spec.get("volumes", [])]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACEWIRE_")}
        for f in self.spec.get("env_file", []):
            for line in (self.root.parent.parent / "compose-dir" / f).read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    key, _, val = line.partition("=")
                    env[key] = val
        for key, val in (self.spec.get("environment") or {}).items():
            env[key] = self.translate(str(val))
        return env

    def command(self) -> list[str]:
        cmd = self.spec["command"]
        cmd = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        assert cmd[0] == "facewire", cmd
        return [sys.executable, "-m", "facewire", *(self.translate(a) for a in cmd[1:])]

    def start(self, extra_env: dict[str, str] | None = None, args: list[str] | None = None):
        self.log = self.root.parent / f"{self.name}.log"
        env = {**self.environment(), **(extra_env or {})}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.command() + (args or []),
                env=env,
                cwd=self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def healthcheck(self, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        test = self.spec["healthcheck"]["test"]
        run_env = {**self.environment(), **(env or {})}
        if test[0] == "CMD-SHELL":
            return subprocess.run(
                test[1], shell=True, env=run_env, capture_output=True, text=True, timeout=30
            )
        assert test[0] == "CMD" and test[1] == "facewire", test
        args = [sys.executable, "-m", "facewire", *(self.translate(a) for a in test[2:])]
        return subprocess.run(args, env=run_env, capture_output=True, text=True, timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


class Stack:
    """The compose file's services, made and started like ``docker compose up``."""

    def __init__(self, work: Path, services: tuple[str, ...] = ("classifier", "monitor")):
        self.work = work
        self.compose = load_compose()
        # the folder docker compose runs in: deploy/secrets is the temp one
        compose_dir = work / "compose-dir"
        self.secrets = compose_dir / "deploy" / "secrets"
        self.login = make_secrets(self.secrets)
        volumes = work / "volumes"
        self.port = free_port()
        self.services: dict[str, Service] = {}
        for name, spec in self.compose["services"].items():
            svc = Service(name, spec, work / name / "root", self.port)
            svc.root.mkdir(parents=True)
            svc.mount(self.secrets, volumes)
            self.services[name] = svc
        mq = self.services["mosquitto"]
        conf = (mq.root / "mosquitto/config/mosquitto.conf").read_text()
        conf = conf.replace("listener 8883 0.0.0.0\n", f"listener {self.port} 127.0.0.1\n")
        for target in sorted(mq.mount_points(), key=len, reverse=True):
            conf = conf.replace(f" {target}", f" {mq.root}{target}")
        left = [w for w in conf.split() if w.startswith("/mosquitto/")]
        assert not left, f"container paths left in the broker config: {left}"
        (work / "broker").mkdir()
        self.broker = Mosquitto(work / "broker", port=self.port, config=conf)
        self.wanted = services
        self.monitor_port = free_port()

    def start(self) -> Stack:
        self.broker.start()
        self.services["classifier"].start()
        if "monitor" in self.wanted:
            mon = self.services["monitor"]
            # the published port 127.0.0.1:6010:6010, on a free port here
            mon.ports[6010] = self.monitor_port
            mon.start(extra_env={"FACEWIRE_PORT": str(self.monitor_port)})
        return self

    def start_edge(self, source: Path) -> Service:
        """The edge profile's service, its webcam (``devices``) a folder of photos."""
        edge = self.services["edge"]
        conf = edge.root / "secrets/edge.yaml"
        text = conf.resolve().read_text()
        text = text.replace(BROKER_IN_COMPOSE, f"mqtts://127.0.0.1:{self.port}")
        for target in edge.mount_points():
            head = "/".join(target.split("/")[:2])  # /secrets
            text = text.replace(f" {head}/", f" {edge.root}{head}/")
        conf.unlink()
        conf.write_text(text)  # the mounted file, its container paths under this root
        device = edge.spec["devices"][0].split(":")[1]
        edge.spec = {
            **edge.spec,
            "command": [str(source) if a == device else a for a in edge.spec["command"]],
        }
        return edge.start(args=["--fps", "2", "--loop"])

    def stop(self) -> None:
        for svc in reversed(list(self.services.values())):
            svc.stop()
        self.broker.stop()

    # --- the monitor as a person with the login would use it -------------------------

    def monitor_url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.monitor_port}{path}"

    def monitor_session(self) -> urllib.request.OpenerDirector:
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        form = urllib.parse.urlencode(
            {"user": self.login["user"], "password": self.login["password"], "next": "/"}
        ).encode()
        req = urllib.request.Request(
            self.monitor_url("/login"), data=form, headers={"Origin": self.monitor_url()}
        )
        with opener.open(req, timeout=10) as resp:
            assert resp.status == 200, resp.status
        return opener

    def get_json(self, opener: urllib.request.OpenerDirector, path: str) -> Any:
        req = urllib.request.Request(self.monitor_url(path), headers={"Accept": "application/json"})
        with opener.open(req, timeout=10) as resp:
            return json.loads(resp.read())


def wait_for(cond: Any, timeout: float, what: str, *logs: Service) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        for svc in logs:
            if svc.proc is not None and svc.proc.poll() is not None:
                raise AssertionError(f"{svc.name} exited: {svc.output()[-3000:]}")
        time.sleep(0.2)
    tails = "\n".join(f"--- {s.name}\n{s.output()[-2000:]}" for s in logs)
    raise AssertionError(f"timed out waiting for {what}\n{tails}")
