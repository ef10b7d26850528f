"""Home Assistant MQTT discovery: the configs, built by pure functions.

One device per edge node (``<prefix>/device/facewire_<node>/config``, device-based
discovery: ``dev``, ``o``, ``cmps``) with a sensor *last person seen*, a binary sensor
*unknown person present* (``off_dly``) and an ``event`` entity firing on each track
decision (``recognized``, ``unknown``); one device for the classifier (people enrolled,
faces per second, an ``event`` entity for intruder alerts); and a presence tracker per
enrolled person (``<prefix>/device_tracker/facewire/<slug>/config``, one entity each, so
removing a person is one empty retained message), attached to the classifier's device.

Availability follows the last wills: a node's entities read its retained
``faces/<node>/status`` and the classifier's ``faces/classifier/status`` (``state``:
``online``/``offline``), and are available only while both are online.

Keys are Home Assistant's abbreviations (:data:`ABBREVIATIONS` lists those used and
what they stand for); ids and topics use :func:`facewire.bus.topics.slug` for node ids
and names that are not ``[A-Za-z0-9_-]``.

>>> from facewire.config.schema import HomeAssistantConfig
>>> cfg = node_config("door", HomeAssistantConfig())
>>> sorted(cfg), sorted(c["p"] for c in cfg["cmps"].values())
(['avty', 'avty_mode', 'cmps', 'dev', 'o', 'qos'], ['binary_sensor', 'event', 'sensor'])
"""

from __future__ import annotations

import math
from typing import Any

from facewire import __version__
from facewire.bus import topics
from facewire.bus.messages.integration import ALERT_TYPES, DECISION_TYPES, NOT_HOME
from facewire.config.schema import HomeAssistantConfig

#: The abbreviations these configs use → Home Assistant's full key (its MQTT
#: discovery documentation, "Supported abbreviations"); ``dev`` and ``o`` objects
#: have their own (:data:`DEVICE_ABBREVIATIONS`, :data:`ORIGIN_ABBREVIATIONS`).
ABBREVIATIONS = {
    "avty": "availability",
    "avty_mode": "availability_mode",
    "cmps": "components",
    "dev": "device",
    "dev_cla": "device_class",
    "evt_typ": "event_types",
    "ic": "icon",
    "json_attr_t": "json_attributes_topic",
    "name": "name",
    "o": "origin",
    "off_dly": "off_delay",
    "p": "platform",
    "pl_avail": "payload_available",
    "pl_home": "payload_home",
    "pl_not_avail": "payload_not_available",
    "pl_not_home": "payload_not_home",
    "pl_off": "payload_off",
    "pl_on": "payload_on",
    "qos": "qos",
    "src_type": "source_type",
    "stat_cla": "state_class",
    "stat_t": "state_topic",
    "t": "topic",
    "uniq_id": "unique_id",
    "unit_of_meas": "unit_of_measurement",
    "val_tpl": "value_template",
}
DEVICE_ABBREVIATIONS = {
    "ids": "identifiers",
    "name": "name",
    "mf": "manufacturer",
    "mdl": "model",
    "sw": "sw_version",
    "via_device": "via_device",
}
ORIGIN_ABBREVIATIONS = {"name": "name", "sw": "sw_version"}

#: The classifier's device id (also the object id of its discovery topic).
CLASSIFIER_ID = "facewire_classifier"
#: The ``<node_id>`` level of the per-person tracker topics.
TRACKER_NODE_ID = "facewire"
ORIGIN = {"name": "facewire", "sw": __version__}
MANUFACTURER = "facewire"
STATE = "{{ value_json.state }}"


def node_object_id(node: str) -> str:
    """A node's device id and discovery object id: ``facewire_<slug of the node id>``."""
    return f"facewire_{topics.slug(node)}"


def availability(node: str | None = None) -> list[dict[str, str]]:
    """Online while the classifier's status (and the node's, if given) says online:
    both are retained and are their services' last wills."""
    sources = [topics.CLASSIFIER_STATUS] + ([topics.status(node)] if node is not None else [])
    return [
        {"t": t, "val_tpl": STATE, "pl_avail": "online", "pl_not_avail": "offline"} for t in sources
    ]


def node_config(node: str, cfg: HomeAssistantConfig) -> dict[str, Any]:
    """The device-based discovery config of edge node ``node``."""
    oid = node_object_id(node)
    last, decision = topics.ha_last(node), topics.ha_event(node)
    return {
        "dev": {
            "ids": [oid],
            "name": node,
            "mf": MANUFACTURER,
            "mdl": "edge node",
            "via_device": CLASSIFIER_ID,
        },
        "o": ORIGIN,
        "avty": availability(node),
        "avty_mode": "all",  # the node's and the classifier's: both must be up
        "qos": 1,
        "cmps": {
            f"{oid}_last": {
                "p": "sensor",
                "name": "Last person seen",
                "uniq_id": f"{oid}_last",
                "stat_t": last,
                "val_tpl": "{{ value_json.name }}",
                "json_attr_t": last,  # score, frames, track, ts … as attributes
                "ic": "mdi:face-recognition",
            },
            f"{oid}_unknown": {
                "p": "binary_sensor",
                "name": "Unknown person present",
                "uniq_id": f"{oid}_unknown",
                "dev_cla": "occupancy",
                "stat_t": last,
                "val_tpl": "{{ value_json.unknown }}",
                "pl_on": "ON",
                "pl_off": "OFF",
                # a whole number of seconds (Home Assistant's schema): off even if the
                # track's "left" never comes
                "off_dly": max(1, math.ceil(cfg.unknown_off_s)),
            },
            f"{oid}_face": {
                "p": "event",
                "name": "Face",
                "uniq_id": f"{oid}_face",
                "stat_t": decision,  # not retained: an event fires when it happens
                "evt_typ": list(DECISION_TYPES),
                "ic": "mdi:account-eye",
            },
        },
    }


def classifier_config(cfg: HomeAssistantConfig) -> dict[str, Any]:
    """The device-based discovery config of the classifier."""
    oid = CLASSIFIER_ID
    return {
        "dev": {
            "ids": [oid],
            "name": "facewire classifier",
            "mf": MANUFACTURER,
            "mdl": "classifier",
            "sw": __version__,
        },
        "o": ORIGIN,
        "avty": availability(),
        "qos": 1,
        "cmps": {
            f"{oid}_people": {
                "p": "sensor",
                "name": "People enrolled",
                "uniq_id": f"{oid}_people",
                "stat_t": topics.CLASSIFIER_STATUS,
                "val_tpl": "{{ value_json.gallery.identities }}",
                "stat_cla": "measurement",
                "ic": "mdi:account-group",
            },
            f"{oid}_rate": {
                "p": "sensor",
                "name": "Faces per second",
                "uniq_id": f"{oid}_rate",
                "stat_t": topics.CLASSIFIER_STATUS,
                "val_tpl": "{{ value_json.messages_per_s }}",
                "unit_of_meas": "faces/s",
                "stat_cla": "measurement",
            },
            f"{oid}_intruder": {
                "p": "event",
                "name": "Intruder alert",
                "uniq_id": f"{oid}_intruder",
                "stat_t": topics.ALERTS,
                "evt_typ": list(ALERT_TYPES),
                "ic": "mdi:alarm-light",
            },
        },
    }


def person_config_topic(prefix: str, name: str) -> str:
    """Where the tracker of person ``name`` is discovered."""
    return topics.ha_component_config(prefix, "device_tracker", TRACKER_NODE_ID, topics.slug(name))


def person_config(name: str) -> dict[str, Any]:
    """One presence tracker: where ``name`` was seen last (the node), ``not_home`` once
    nobody has seen them for ``away_after_s``; on the classifier's device."""
    state = topics.person(name)
    return {
        "name": name,
        "uniq_id": f"facewire_person_{topics.slug(name)}",
        "stat_t": state,
        "val_tpl": "{{ value_json.where }}",
        "json_attr_t": state,
        "pl_home": "home",  # never sent: a node's id is where they are
        "pl_not_home": NOT_HOME,
        "src_type": "router",  # a fixed place saw them, not a GPS fix
        "ic": "mdi:account",
        "dev": {"ids": [CLASSIFIER_ID]},
        "o": ORIGIN,
        "avty": availability(),
        "qos": 1,
    }
