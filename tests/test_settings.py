"""One source of truth for settings: the schema drives checks, env names, flags and docs."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from facewire import config
from facewire.config import cli, reference
from facewire.config.fields import leaves
from facewire.config.schema import (
    SERVICES,
    ClassifierConfig,
    EdgeConfig,
    MonitorConfig,
    SearchConfig,
)
from facewire.models.embedders import GENERIC_THRESHOLD
from tests.conftest import ROOT

TYPO_MESSAGE = (
    "FACEWIRE_SEARCH_THRESHHOLD: no service has a setting search.threshhold; "
    "did you mean FACEWIRE_SEARCH_THRESHOLD? allowed in search: "
    "ef_search, hnsw_above, index, ivf_above, k, nprobe, people_above, pq_m, pq_rerank, "
    "target_fpir, threads, threshold"
)


def load(cls: type, **kw: object) -> object:
    kw.setdefault("env", {})
    return config.load(cls, **kw)  # type: ignore[arg-type]


def parsers() -> dict[str, argparse.ArgumentParser]:
    from facewire.classifier import __main__ as classifier_main
    from facewire.edge import __main__ as edge_main
    from facewire.monitor import cli as monitor_cli

    return {
        "edge": edge_main.build_parser(),
        "classifier": classifier_main.build_parser(),
        "monitor": monitor_cli.build_parser(),
    }


def options(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {o: a for a in p._actions for o in a.option_strings}


# --- the schema itself -------------------------------------------------------------------


@pytest.mark.parametrize("service", list(SERVICES))
def test_every_setting_has_help_and_a_default_it_accepts(service):
    for leaf in leaves(SERVICES[service]):
        assert leaf.meta.help, leaf.key
        assert leaf.coerce(leaf.default) == leaf.default, leaf.key


@pytest.mark.parametrize("service", list(SERVICES))
def test_env_names_are_unambiguous(service):
    names = [leaf.env for leaf in leaves(SERVICES[service])]
    assert len(names) == len(set(names))
    assert set(config.OTHER_ENV).isdisjoint(names)


# --- values: the same checks for YAML, data, env and overrides -----------------------------


@pytest.mark.parametrize(
    ("cls", "data", "message"),
    [
        (ClassifierConfig, {"batch_max": 0}, "batch_max = 0: expected a whole number >= 1"),
        (ClassifierConfig, {"queue_size": 0}, "queue_size = 0: expected a whole number >= 1"),
        (ClassifierConfig, {"queue_size": 2.7}, "queue_size = 2.7: expected a whole number >= 1"),
        (
            ClassifierConfig,
            {"stats_interval_s": 0},
            "stats_interval_s = 0: expected a number >= 0.1",
        ),
        (
            ClassifierConfig,
            {"stats_interval_s": 0.001},
            "stats_interval_s = 0.001: expected a number >= 0.1",
        ),
        (
            EdgeConfig,
            {"pipeline": {"model": "sfac"}},
            "pipeline.model = 'sfac': expected one of sface, clip-vit-b32, clip-vit-b32-int8",
        ),
        (EdgeConfig, {"fps": True}, "fps = True: expected a number >= 0"),
        (EdgeConfig, {"fps": float("nan")}, "fps = nan: expected a number >= 0"),
        (EdgeConfig, {"node": True}, "node = True: expected a string"),
        (EdgeConfig, {"qos": 3}, "qos = 3: expected a whole number within 0..2"),
        (
            ClassifierConfig,
            {"search": {"threshold": 1.5}},
            "search.threshold = 1.5: expected a number within -1..1",
        ),
        (MonitorConfig, {"port": 70000}, "port = 70000: expected a whole number within 0..65535"),
        (
            EdgeConfig,
            {"pipeline": {"detector": {"kind": "cnn"}}},
            "pipeline.detector.kind = 'cnn': expected one of haar, yunet",
        ),
        (
            EdgeConfig,
            {"pipeline": {"detector": {"pad": 2}}},
            "pipeline.detector.pad = 2: expected a number within 0..1, or null",
        ),
        (
            MonitorConfig,
            {"broker": "mqtt://h:1"},
            "broker = 'mqtt://h:1': expected a section with the keys url, host, port",
        ),
        (
            MonitorConfig,
            {"broker": {"url": "http://u:secret@h"}},
            "broker.url = 'http://u:***@h': scheme must be mqtt:// or mqtts://",
        ),
    ],
)
def test_wrong_values_name_key_value_and_what_is_allowed(cls, data, message):
    with pytest.raises(config.ConfigError) as err:
        load(cls, data=data)
    assert str(err.value).startswith(f"data: {message}")
    assert "secret" not in str(err.value)


def test_the_model_setting_names_exactly_the_models_there_are():
    from facewire.config.fields import leaves
    from facewire.models import embedders

    (leaf,) = [x for x in leaves(EdgeConfig) if x.key == "pipeline.model"]
    assert list(leaf.choices) == embedders.available()


def test_yaml_errors_name_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("queue_size: 2.7\n")
    with pytest.raises(config.ConfigError, match=r"c\.yaml: queue_size = 2\.7: expected a whole"):
        config.load(ClassifierConfig, p, env={})


def test_whole_numbers_and_strings_are_accepted():
    cfg = load(
        ClassifierConfig,
        data={"queue_size": 3.0, "batch_max": "7", "search": {"threshold": "0.5", "k": " 2 "}},
    )
    assert (cfg.queue_size, cfg.batch_max, cfg.search.threshold, cfg.search.k) == (3, 7, 0.5, 2)
    assert isinstance(cfg.queue_size, int)
    # YAML reads an unquoted off/on as a boolean; for an on/off choice that is what was meant
    edge = config.load(EdgeConfig, data=yaml.safe_load("pipeline: {ort_spinning: off}"), env={})
    assert edge.pipeline.ort_spinning == "off"
    assert load(EdgeConfig, data={"source": 0}).source == "0"  # a webcam index


def test_cross_field_check():
    with pytest.raises(config.ConfigError, match="broker: reconnect_max_s must be >= reconnect_"):
        load(MonitorConfig, data={"broker": {"reconnect_min_s": 5, "reconnect_max_s": 1}})


def test_overrides_are_checked_too():
    with pytest.raises(config.ConfigError, match="overrides: unknown key pipeline.alin; did you"):
        load(EdgeConfig, overrides={"pipeline.alin": False})
    with pytest.raises(config.ConfigError, match="overrides: batch_max = 0"):
        load(ClassifierConfig, overrides={"batch_max": 0})


def test_to_dict_hides_the_password_also_in_the_url():
    cfg = load(MonitorConfig, overrides={"broker.url": "mqtts://u:s3cret@h:8884"})
    out = config.to_dict(cfg)
    assert out["broker"]["password"] == "***"
    assert out["broker"]["url"] == "mqtts://u:***@h:8884"
    assert cfg.broker.password == "s3cret"  # only the dict is scrubbed


# --- environment ------------------------------------------------------------------------


def test_env_at_any_depth():
    env = {
        "FACEWIRE_PIPELINE_DETECTOR_KIND": "haar",
        "FACEWIRE_PIPELINE_DETECTOR_PAD": "",  # empty: null
        "FACEWIRE_PIPELINE_MESH": "off",
        "FACEWIRE_QUEUE_SIZE": "3",
        "FACEWIRE_CACHE_DIR": "/cache",
        "FACEWIRE_SEARCH_THRESHOLD": "0.45",
        "FACEWIRE_BROKER_CA_CERTS": "ca.crt",
        "FACEWIRE_BROKER": "mqtts://b:8884",
    }
    cfg = config.load(ClassifierConfig, data={"pipeline": {"detector": {"pad": 0.2}}}, env=env)
    assert cfg.pipeline.detector.kind == "haar"
    assert cfg.pipeline.detector.pad is None
    assert cfg.pipeline.mesh is False
    assert (cfg.queue_size, cfg.cache_dir, cfg.search.threshold) == (3, "/cache", 0.45)
    assert (cfg.broker.ca_certs, cfg.broker.host, cfg.broker.port, cfg.broker.tls) == (
        "ca.crt",
        "b",
        8884,
        True,
    )


def test_env_typo_is_one_line_with_the_key_and_a_suggestion():
    with pytest.raises(config.ConfigError) as err:
        config.load(ClassifierConfig, env={"FACEWIRE_SEARCH_THRESHHOLD": "0.9"})
    assert str(err.value) == TYPO_MESSAGE
    # the edge has no search section, but the variable is still no setting of anyone
    with pytest.raises(config.ConfigError) as err:
        config.load(EdgeConfig, env={"FACEWIRE_SEARCH_THRESHHOLD": "0.9"})
    assert str(err.value) == TYPO_MESSAGE


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "FACEWIRE_PIPELINE_DETECTOR_KINDD",
            "FACEWIRE_PIPELINE_DETECTOR_KINDD: no service has a setting pipeline.detector.kindd; "
            "did you mean FACEWIRE_PIPELINE_DETECTOR_KIND? allowed in pipeline.detector: cascade,",
        ),
        (
            "FACEWIRE_PORTT",
            "FACEWIRE_PORTT: no service has a setting portt; did you mean FACEWIRE_PORT? "
            "allowed at the top level: alerts, batch_max, broker,",
        ),
        (
            "FACEWIRE_PIPELINE",
            "FACEWIRE_PIPELINE: pipeline is a section, not a setting;",
        ),
    ],
)
def test_unknown_env_names_the_level(name, message):
    with pytest.raises(config.ConfigError) as err:
        config.load(MonitorConfig, env={name: "1"})
    assert str(err.value).startswith(message)


def test_env_of_another_service_and_known_variables_are_ignored():
    env = {
        "FACEWIRE_PORT": "1",  # the monitor's
        "FACEWIRE_QUEUE_SIZE": "0",  # the classifier's (and out of range: not ours to check)
        "FACEWIRE_SEARCH_K": "many",
        **{name: "x" for name in config.OTHER_ENV},
        "OTHER_PROGRAM_SETTING": "y",
    }
    assert config.load(EdgeConfig, env=env) == EdgeConfig()
    assert config.load(MonitorConfig, env={"FACEWIRE_NODE": "door"}) == MonitorConfig()


def test_env_values_are_checked_like_yaml():
    with pytest.raises(config.ConfigError) as err:
        config.load(ClassifierConfig, env={"FACEWIRE_QUEUE_SIZE": "2.7"})
    assert str(err.value) == "FACEWIRE_QUEUE_SIZE: queue_size = '2.7': expected a whole number >= 1"
    with pytest.raises(
        config.ConfigError, match="FACEWIRE_PIPELINE_ALIGN: pipeline.align = 'maybe'"
    ):
        config.load(EdgeConfig, env={"FACEWIRE_PIPELINE_ALIGN": "maybe"})


def test_env_is_read_from_the_process_by_default(monkeypatch):
    monkeypatch.setenv("FACEWIRE_SEARCH_THRESHHOLD", "0.9")
    with pytest.raises(config.ConfigError, match="did you mean FACEWIRE_SEARCH_THRESHOLD"):
        config.load(ClassifierConfig)


# --- shipped files and the shared pipeline ---------------------------------------------


KNOWN = {  # values the shipped files ran with before the schema held every default
    "edge": {"node": "edge1", "source": "0", "fps": 5.0, "dedup_distance": 0.15, "qos": 1},
    "classifier": {"dataset": "dataset/gallery", "queue_size": 64, "batch_max": 64},
    "monitor": {"host": "127.0.0.1", "port": 6010, "db": "var/monitor.sqlite3", "window": 500},
}


@pytest.mark.parametrize("service", list(SERVICES))
def test_shipped_yaml_gives_the_defaults(service):
    cls = SERVICES[service]
    cfg = config.load(cls, config.default_path(service), env={})
    assert cfg == cls()
    values = config.to_dict(cfg)
    for key, value in KNOWN[service].items():
        assert values[key] == value, key
    assert (values["broker"]["host"], values["broker"]["port"]) == ("127.0.0.1", 1883)
    if "pipeline" in values:
        p = values["pipeline"]
        assert (p["model"], p["detector"]["kind"], p["mesh"], p["align"]) == (
            "sface",
            "yunet",
            True,
            True,
        )
        assert (p["mesh_runtime"], p["on_mesh_miss"], p["ort_spinning"]) == (
            "landmarks",
            "fallback",
            "run",
        )
    if "search" in values:
        assert (values["search"]["threshold"], values["search"]["k"]) == ("auto", 5)


def test_shipped_edge_and_classifier_share_pipeline_yaml(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(config.CONFIG_DIR, conf, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (conf / "pipeline.yaml").write_text(
        "pipeline:\n  model: clip-vit-b32\n  threads: 3\n  detector: {kind: haar}\n"
    )
    with (conf / "edge.yaml").open("a") as f:
        f.write("pipeline:\n  threads: 2\n")  # a device's own knob over the shared file
    edge = config.load(EdgeConfig, conf / "edge.yaml", env={})
    cls = config.load(ClassifierConfig, conf / "classifier.yaml", env={})
    assert edge.pipeline.model == cls.pipeline.model == "clip-vit-b32"
    assert edge.pipeline.detector.kind == cls.pipeline.detector.kind == "haar"
    assert (edge.pipeline.threads, cls.pipeline.threads) == (2, 3)
    env = {"FACEWIRE_PIPELINE_MODEL": "sface"}
    assert config.load(EdgeConfig, conf / "edge.yaml", env=env).pipeline.model == "sface"
    flags = {"pipeline.detector.kind": "yunet"}
    got = config.load(EdgeConfig, conf / "edge.yaml", env={}, overrides=flags)
    assert got.pipeline.detector.kind == "yunet"
    assert dataclasses.replace(got.pipeline.detector, kind="haar") == edge.pipeline.detector
    (conf / "pipeline.yaml").write_text("pipeline:\n  treads: 2\n")
    with pytest.raises(config.ConfigError, match=r"pipeline\.yaml: unknown key pipeline\.treads"):
        config.load(EdgeConfig, conf / "edge.yaml", env={})


def test_include_errors(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("include: b.yaml\n")
    with pytest.raises(config.ConfigError, match=r"config file not found: .*b\.yaml \(included by"):
        config.load(MonitorConfig, a, env={})
    b.write_text("include: [a.yaml]\n")
    with pytest.raises(config.ConfigError, match="include loop"):
        config.load(MonitorConfig, a, env={})
    a.write_text("include: {b: 1}\n")
    with pytest.raises(config.ConfigError, match="expected a file name or a list of them"):
        config.load(MonitorConfig, a, env={})


# --- flags ------------------------------------------------------------------------------


EXISTING_FLAGS = {
    "edge": "--node --source --fps --loop --dedup-distance --dedup-seconds --model --detector "
    "--no-mesh --no-align --on-mesh-miss --broker --config --frames --print-results",
    "classifier": "--dataset --group --queue-size --threshold -k --model --detector --no-mesh "
    "--no-align --on-mesh-miss --broker --config --no-cache --client-id",
    "monitor": "--host --port --db --window --broker --config --connect-timeout -v",
}


@pytest.mark.parametrize("service", list(SERVICES))
def test_flags_come_from_the_schema(service):
    opts = options(parsers()[service])
    assert set(EXISTING_FLAGS[service].split()) <= set(opts)
    flagged = [leaf for leaf in leaves(SERVICES[service]) if leaf.meta.flag]
    assert flagged
    for leaf in flagged:  # every setting with a flag has it in every service that has it
        action = opts[leaf.meta.flag]
        assert action.dest == cli.DEST + leaf.key
        assert action.help is not None
        assert leaf.meta.help.replace("%", "%%") in action.help
        if leaf.type is not bool and leaf.default not in ("", None):
            assert action.help.endswith(f"(default: {leaf.default})")


def test_flags_parse_into_overrides():
    p = parsers()["classifier"]
    args = p.parse_args(["--threshold", "0.5", "--no-mesh", "-k", "3", "--detector", "haar"])
    assert cli.overrides_from(args) == {
        "search.threshold": 0.5,
        "pipeline.mesh": False,
        "search.k": 3,
        "pipeline.detector.kind": "haar",
    }
    assert cli.overrides_from(p.parse_args([])) == {}
    edge = parsers()["edge"].parse_args(["--loop", "--fps", "0", "--broker", "mqtt://h:2"])
    assert cli.overrides_from(edge) == {"loop": True, "fps": 0.0, "broker.url": "mqtt://h:2"}
    cfg = config.load(EdgeConfig, env={}, overrides=cli.overrides_from(edge))
    assert (cfg.loop, cfg.fps, cfg.broker.port) == (True, 0.0, 2)


def test_flag_values_are_checked_like_yaml(capsys):
    with pytest.raises(SystemExit) as exit_:
        parsers()["classifier"].parse_args(["--queue-size", "2.7"])
    assert exit_.value.code == 2
    assert "argument --queue-size: '2.7': expected a whole number >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parsers()["monitor"].parse_args(["--broker", "http://h"])
    assert "scheme must be mqtt:// or mqtts://" in capsys.readouterr().err


def test_add_setting_flag_refuses_a_second_name():
    p = argparse.ArgumentParser()
    with pytest.raises(ValueError, match="--threshold"):
        cli.add_setting_flag(p, "search.threshold", "--thresh")
    with pytest.raises(ValueError, match="no flag"):
        cli.add_setting_flag(p, "batch_max")
    cli.add_setting_flag(p, "search.threshold", "--threshold")
    assert p.parse_args(["--threshold", "-0.1"]).__dict__ == {"setting:search.threshold": -0.1}


def test_eval_takes_pipeline_and_search_flags_and_the_shared_pipeline():
    from facewire.evaluation import evaluate

    p = argparse.ArgumentParser()
    evaluate.add_arguments(p)
    opts = options(p)
    for flag in ("--model", "--detector", "--no-mesh", "--no-align", "--on-mesh-miss"):
        assert flag in opts
    assert {"--threshold", "-k", "--config"} <= set(opts)


# --- defaults used outside config -------------------------------------------------------


def test_matcher_takes_its_defaults_from_the_search_settings():
    from facewire.classifier.search import Matcher

    vecs = np.eye(3, dtype=np.float32)
    m = Matcher(vecs, ["a", "b", "b"])
    # k capped at the gallery; "auto" not calibrated by the caller: the generic default
    assert (m.k, m.threshold) == (3, GENERIC_THRESHOLD)
    m = Matcher(vecs, ["a", "b", "b"], search=SearchConfig(k=2, threshold=0.5))
    assert (m.k, m.threshold) == (2, 0.5)
    assert Matcher(vecs, ["a", "b", "b"], 1, 0.9, SearchConfig(k=2)).threshold == 0.9


# --- reference --------------------------------------------------------------------------


def test_reference_is_up_to_date():
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == reference.render(), (
        f"docs/configuration.md is stale; regenerate it with `{reference.COMMAND}`"
    )


def test_reference_lists_every_setting_with_env_flag_and_default():
    text = reference.render()
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.splitlines() if "| `" in line}
    for cls in SERVICES.values():
        for leaf in leaves(cls):
            row = rows[leaf.key]
            assert f"`{leaf.env}`" in row
            assert leaf.meta.flag == "" or f"`{leaf.meta.flag}`" in row
            assert leaf.bounds().replace("<", "&lt;") in row
    assert "`FACEWIRE_BROKER`" in rows["broker.url"]
    assert "| `search.threshold` | float or auto | `auto` | -1..1 |" in text


def test_config_command(capsys):
    assert cli.main(["reference"]) == 0
    assert capsys.readouterr().out == reference.render()
    assert cli.main(["show", "edge"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown == config.to_dict(config.load(EdgeConfig, config.default_path("edge")))


def test_config_show_reports_errors(capsys, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("FACEWIRE_SEARCH_THRESHHOLD", "0.9")
    assert cli.main(["show", "monitor"]) == 2
    assert capsys.readouterr().err.strip() == f"facewire config: {TYPO_MESSAGE}"
