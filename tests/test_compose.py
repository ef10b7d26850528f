"""docker-compose.yml and the Dockerfile (issue 13, item 4), without a Docker engine.

The static half reads both files and checks them against the repository: every mount
exists (or is made by ``facewire certs init`` / ``nodes init|add``), every setting the
environment gives is a real one, every path given is one the service reads, and the
Dockerfile's commands parse. The live half runs the same services as real processes
from the same files, arguments and environment (``tests/compose_rig.py``) and has a
face named end to end, sealed, by the edge profile's node.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from facewire import config
from facewire.config import env_settings
from facewire.config.schema import ClassifierConfig, EdgeConfig, MonitorConfig
from tests.compose_rig import (
    EDGE_NODE,
    ROOT,
    Stack,
    host_source,
    load_compose,
    make_secrets,
    split_volume,
    wait_for,
)

SCHEMAS = {"classifier": ClassifierConfig, "monitor": MonitorConfig, "edge": EdgeConfig}
DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compose-secrets") / "deploy" / "secrets"
    make_secrets(root)
    return root


def test_services_images_ports_and_profiles() -> None:
    c = load_compose()
    services = c["services"]
    assert set(services) == {"mosquitto", "classifier", "monitor", "edge"}
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    for name in ("classifier", "monitor", "edge"):
        assert services[name]["build"] == ".", name
        assert services[name]["image"] == "facewire:latest", name
    assert services["mosquitto"]["ports"] == ["8883:8883"]  # TLS only, nothing on 1883
    # the monitor on 6010, published on the host's loopback only
    assert services["monitor"]["ports"] == ["127.0.0.1:6010:6010"]
    assert MonitorConfig().port == 6010
    assert services["edge"]["profiles"] == ["edge"]
    assert services["edge"]["devices"] == ["/dev/video0:/dev/video0"]
    assert "--source" in services["edge"]["command"]
    named = {split_volume(v)[0] for s in services.values() for v in s.get("volumes", [])}
    assert {v for v in named if not v.startswith(".")} == set(c["volumes"])
    for name in ("classifier", "monitor", "edge"):
        assert services[name]["depends_on"]["mosquitto"]["condition"] == "service_healthy"


def test_every_service_has_a_health_check_that_exists() -> None:
    from facewire import healthcheck

    for name, spec in load_compose()["services"].items():
        hc = spec["healthcheck"]
        assert hc["test"][0] in ("CMD", "CMD-SHELL") and hc["retries"] >= 1, name
        if hc["test"][0] == "CMD":
            assert hc["test"][1:3] == ["facewire", "healthcheck"], name
            healthcheck.build_parser().parse_args(hc["test"][3:])  # the arguments are real
    mq = load_compose()["services"]["mosquitto"]["healthcheck"]["test"][1]
    assert "mosquitto_sub" in mq and "8883" in mq


def test_every_mount_exists_and_is_what_the_service_reads(secrets: Path) -> None:
    services = load_compose()["services"]
    for name, spec in services.items():
        for volume in spec.get("volumes", []):
            source, target, mode = split_volume(volume)
            if source.startswith("."):
                assert host_source(source, secrets).exists(), f"{name}: {source}"
                if "secrets" in source or source.endswith(".conf"):
                    assert mode == "ro", f"{name}: {source} mounted writable"
        for f in spec.get("env_file", []):
            assert (secrets.parent.parent / f).exists(), f"{name}: {f}"
    # the broker's config names exactly the files mounted for it
    mq = services["mosquitto"]
    targets = {split_volume(v)[1] for v in mq["volumes"]}
    assert "/mosquitto/config/mosquitto.conf" in targets  # the image's default config path
    conf = (ROOT / "deploy" / "mosquitto-compose.conf").read_text()
    named = re.findall(r"^(?:password_file|acl_file|cafile|certfile|keyfile) (\S+)", conf, re.M)
    assert len(named) == 5
    for path in named:
        assert any(path == t or path.startswith(t + "/") for t in targets), path
    assert re.search(r"^persistence_location /mosquitto/data/", conf, re.M)


def _paths_under_mounts(spec: dict, values: list[str]) -> None:
    targets = [split_volume(v)[1] for v in spec.get("volumes", [])]
    for value in values:
        # the path, a file in a mounted folder, or a folder the mounts fill
        assert any(
            value == t or value.startswith(t + "/") or t.startswith(value + "/") for t in targets
        ), value


def test_the_environment_is_real_settings_and_mounted_paths(secrets: Path) -> None:
    services = load_compose()["services"]
    for name in ("classifier", "monitor"):
        spec = services[name]
        cls = SCHEMAS[name]
        known = env_settings(cls)
        env = dict(spec["environment"])
        for f in spec.get("env_file", []):
            for line in (secrets.parent.parent / f).read_text().splitlines():
                key, _, value = line.partition("=")
                env[key] = value
        for key in env:
            assert key in known, f"{name}: {key} is no setting of {cls.__name__}"
        # what the service makes of it: the keys, CA, users file, cache under mounts
        cfg = config.load(cls, config.default_path(name), env=env)
        assert cfg.broker.url == "mqtts://mosquitto:8883" and cfg.broker.tls
        assert cfg.broker.username == name and cfg.broker.password
        assert cfg.sealing.enabled
        paths = [cfg.broker.ca_certs, cfg.sealing.keys]
        if name == "classifier":
            paths.append(cfg.cache_dir)
        else:
            paths.append(cfg.users_file)
        _paths_under_mounts(spec, paths)
    # the classifier's gallery folder is under its gallery mount
    cmd = services["classifier"]["command"]
    _paths_under_mounts(services["classifier"], [cmd[cmd.index("--dataset") + 1]])
    # the monitor needs the classifier's verify key, nothing private
    mon = [split_volume(v)[0] for v in services["monitor"]["volumes"]]
    assert "./deploy/secrets/keys/classifier.sign.pub" in mon
    assert not any(s.endswith((".box", ".sign")) or s.endswith("/keys") for s in mon)
    # the monitor's database is on its volume
    _paths_under_mounts(services["monitor"], [services["monitor"]["command"][-1]])


def test_the_edge_profile_reads_the_config_nodes_add_made(secrets: Path) -> None:
    spec = load_compose()["services"]["edge"]
    cmd = spec["command"]
    conf_at = cmd[cmd.index("--config") + 1]
    mounts = {split_volume(v)[1]: split_volume(v)[0] for v in spec["volumes"]}
    edge_yaml = host_source(mounts[conf_at], secrets)
    cfg = config.load(EdgeConfig, edge_yaml, env={})
    assert cfg.node == EDGE_NODE and cfg.broker.url == "mqtts://mosquitto:8883"
    assert cfg.sealing.enabled
    _paths_under_mounts(spec, [cfg.broker.ca_certs])
    # the key folder holds what a node needs, and only its own private key
    at = cfg.sealing.keys + "/"
    keys = {t.removeprefix(at) for t in mounts if t.startswith(at)}
    assert keys == {f"nodes/{EDGE_NODE}.sign", "classifier.box.pub", "classifier.sign.pub"}


def test_the_dockerfile_is_multi_stage_slim_non_root_and_its_commands_parse() -> None:
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM (\S+)(?: AS (\S+))?", text, re.M)
    assert len(froms) == 2 and froms[0][1] == "builder"
    assert all("slim" in image for image, _ in froms)
    runtime = text.split("\nFROM ")[-1]
    assert "COPY --from=builder /opt/facewire /opt/facewire" in runtime
    assert "pip install" not in runtime  # wheels are the builder's business
    users = re.findall(r"^USER (\S+)", runtime, re.M)
    assert users == ["facewire"]
    assert re.search(r"useradd .*facewire", runtime)
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in src.split():
            assert (ROOT / path).exists(), f"COPY {path}: not in the repository"
    # every facewire command the build runs is one the CLI takes
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    commands = re.findall(r"facewire (models [^\\&\n]+)", code)
    assert any("prepare all" in c for c in commands)
    from facewire.models.commands import build_parser

    for command in commands:
        build_parser().parse_args(shlex.split(command)[1:])
    # the build context leaves secrets and the virtualenv out
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert {"deploy/secrets", ".venv", ".git"} <= set(ignore)


def test_the_compose_file_and_secrets_are_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docker compose up" in readme and "facewire nodes init" in readme


# --- the same services as real processes ------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("compose"))
    try:
        yield s.start()
    finally:
        s.stop()


def test_the_broker_health_check_passes_on_the_compose_config(stack: Stack) -> None:
    mq = stack.services["mosquitto"]
    cmd = mq.spec["healthcheck"]["test"][1]
    cmd = cmd.replace("-p 8883", f"-p {stack.port}").replace(
        "--cafile /mosquitto/", f"--cafile {mq.root}/mosquitto/"
    )
    mq.spec = {**mq.spec, "healthcheck": {"test": ["CMD-SHELL", cmd]}}
    done = mq.healthcheck()
    assert done.returncode == 0, (done.stdout, done.stderr)
    stack.broker.stop()  # and it fails when the broker is down
    try:
        assert mq.healthcheck().returncode != 0
    finally:
        stack.broker.start()


def test_a_face_is_named_end_to_end_through_the_compose_services(stack: Stack) -> None:
    classifier, monitor = stack.services["classifier"], stack.services["monitor"]
    person = "ORL_s03"
    # it connects once the gallery is embedded; then its health check passes (here
    # the host's other connections to the port count too: a container has only its own)
    wait_for(
        lambda: "classifier: connected to" in classifier.output(), 240, "the classifier", classifier
    )
    assert classifier.healthcheck().returncode == 0
    mon_hc = dict(monitor.spec["healthcheck"])
    mon_hc["test"] = [a.replace(":6010", f":{stack.monitor_port}") for a in mon_hc["test"]]
    monitor.spec = {**monitor.spec, "healthcheck": mon_hc}
    wait_for(lambda: monitor.healthcheck().returncode == 0, 60, "the monitor's health", monitor)
    session = stack.monitor_session()
    edge = stack.start_edge(ROOT / "dataset" / "probes" / person)

    def named() -> list[dict]:
        rows = stack.get_json(session, "/log?limit=50")
        rows = rows["detections"]
        return [r for r in rows if r.get("node") == EDGE_NODE and r.get("name") == person]

    rows = wait_for(named, 120, f"{person} named on the monitor", edge, classifier, monitor)
    assert rows
    out = edge.output()
    assert "refused" not in out.lower() or "would not let" not in out
    # sealed all the way: the classifier took sealed embeddings only, the monitor
    # shows signed results only (both started with sealing.enabled from compose)
    nodes = stack.get_json(session, "/nodes")
    listed = nodes["nodes"] if isinstance(nodes, dict) else nodes
    assert any(n["node"] == EDGE_NODE for n in listed)
    # the monitor's pages need the login: without it, JSON gets 401
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(stack.monitor_url("/log"), timeout=5)
    assert refused.value.code == 401


def test_parse_args_of_every_compose_command() -> None:
    from facewire.classifier.__main__ import build_parser as classifier_parser
    from facewire.edge.__main__ import build_parser as edge_parser
    from facewire.monitor.cli import build_parser as monitor_parser

    parsers: dict[str, argparse.ArgumentParser] = {
        "classifier": classifier_parser(),
        "monitor": monitor_parser(),
        "edge": edge_parser(),
    }
    for name, spec in load_compose()["services"].items():
        if name in parsers:
            cmd = spec["command"]
            assert cmd[:2] == ["facewire", name]
            parsers[name].parse_args(cmd[2:])


def test_compose_yaml_loads_with_pyyaml() -> None:
    assert yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
