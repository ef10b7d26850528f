"""Config: YAML + env + flags onto typed dataclasses; wrong keys are clear errors."""

from __future__ import annotations

import pytest

from facewire import config
from facewire.config.schema import ClassifierConfig, EdgeConfig, MonitorConfig


def test_shipped_yaml_files_load():
    for cls, name in (
        (EdgeConfig, "edge"),
        (ClassifierConfig, "classifier"),
        (MonitorConfig, "monitor"),
    ):
        cfg = config.load(cls, config.default_path(name), env={})
        assert isinstance(cfg, cls)


def test_unknown_key_names_the_key_and_the_allowed_ones(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("search:\n  treshold: 0.5\n")
    with pytest.raises(
        config.ConfigError,
        match=r"c\.yaml: unknown key search\.treshold; did you mean search\.threshold\? "
        r"allowed in search: .*threshold",
    ):
        config.load(ClassifierConfig, p, env={})


def test_wrong_types_and_values_are_errors(tmp_path):
    with pytest.raises(config.ConfigError, match="search.k"):
        config.load(ClassifierConfig, data={"search": {"k": "many"}}, env={})
    with pytest.raises(config.ConfigError, match="on_mesh_miss"):
        config.load(EdgeConfig, data={"pipeline": {"on_mesh_miss": "ignore"}}, env={})
    with pytest.raises(config.ConfigError, match="scale_factor"):
        config.load(EdgeConfig, data={"pipeline": {"detector": {"scale_factor": 1.0}}}, env={})
    p = tmp_path / "bad.yaml"
    p.write_text("search: [unclosed\n")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load(ClassifierConfig, p, env={})


def test_precedence_file_env_flags(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text("node: from-file\nfps: 2\npipeline:\n  align: true\n")
    env = {
        "FACEWIRE_NODE": "from-env",
        "FACEWIRE_PIPELINE_ALIGN": "0",
        "FACEWIRE_BROKER": "mqtt://b:1999",
    }
    cfg = config.load(EdgeConfig, p, env=env, overrides={"fps": 7.5, "source": None})
    assert cfg.node == "from-env"
    assert cfg.pipeline.align is False
    assert cfg.fps == 7.5
    assert cfg.source == "0"
    assert (cfg.broker.host, cfg.broker.port, cfg.broker.tls) == ("b", 1999, False)


def test_broker_urls():
    cfg = config.load(MonitorConfig, overrides={"broker.url": "mqtts://u:p%40ss@h:8884"}, env={})
    assert (cfg.broker.host, cfg.broker.port, cfg.broker.tls) == ("h", 8884, True)
    assert (cfg.broker.username, cfg.broker.password) == ("u", "p@ss")
    assert config.to_dict(cfg)["broker"]["password"] == "***"
    with pytest.raises(config.ConfigError, match="scheme"):
        config.load(MonitorConfig, overrides={"broker.url": "http://h"}, env={})
