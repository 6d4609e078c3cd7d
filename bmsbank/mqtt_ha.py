"""Home Assistant discovery configs and state payloads of the MQTT bridge (docs/MQTT.md).

Home Assistant MQTT discovery (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery):
a retained JSON config at ``<discovery_prefix>/<component>/<node_id>/<object_id>/config`` with
``unique_id``, a ``device`` block (identifiers, name, manufacturer, model, via_device),
``state_topic`` and ``value_template``; ``availability_topic`` with the default payloads
"online"/"offline". Sensor keys (``unit_of_measurement``, ``device_class``, ``state_class``
"measurement"): https://www.home-assistant.io/integrations/sensor/ ; the connectivity binary
sensor (``payload_on``/``payload_off``, default "ON"/"OFF"):
https://www.home-assistant.io/integrations/binary_sensor.mqtt/ . A state longer than 255
characters is refused by Home Assistant (home-assistant/core, homeassistant/const.py
MAX_LENGTH_STATE_STATE), so texts are cut there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bmsbank.config import MqttConfig

MAX_STATE_TEXT = 255  #: Home Assistant's longest state

#: (key, name, unit, device_class) of the bank's numeric sensors
BANK_SENSORS = (
    ("soc", "SoC", "%", "battery"),
    ("voltage", "Voltage", "V", "voltage"),
    ("current", "Current", "A", "current"),
    ("power", "Power", "W", "power"),
    ("cvl", "Charge voltage limit", "V", "voltage"),
    ("ccl", "Charge current limit", "A", "current"),
    ("dcl", "Discharge current limit", "A", "current"),
)
#: (key, name) of the bank's text sensors
BANK_TEXTS = (
    ("charge_state", "Charge state"),
    ("alarms", "Alarms"),
    ("reason_cvl", "CVL reason"),
    ("reason_ccl", "CCL reason"),
    ("reason_dcl", "DCL reason"),
)
PACK_SENSORS = (
    ("voltage", "Voltage", "V", "voltage"),
    ("current", "Current", "A", "current"),
    ("soc", "SoC", "%", "battery"),
    ("min_cell_voltage", "Min cell", "V", "voltage"),
    ("max_cell_voltage", "Max cell", "V", "voltage"),
    ("cell_delta", "Cell delta", "V", "voltage"),
    ("min_temperature", "Min temperature", "°C", "temperature"),
    ("max_temperature", "Max temperature", "°C", "temperature"),
)


def slug(text: str) -> str:
    """``text`` as an MQTT topic level and HA object id: [a-zA-Z0-9_-] only (rs485:3 → rs485_3)."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", text)


def _text(x: Any) -> str:
    return str(x)[:MAX_STATE_TEXT]


def _rounded(x: Any, digits: int = 3) -> float | None:
    return None if x is None else round(float(x), digits)


def _alarm_text(alarms: Mapping[str, int]) -> str:
    """The raised alarms as text: "high_voltage (alarm), low_soc (warning)", or "none"."""
    words = {1: "warning", 2: "alarm"}
    named = [f"{name} ({words[level]})" for name, level in sorted(alarms.items()) if level]
    return _text(", ".join(named) or "none")


def bank_state(bank: Mapping[str, Any], malformed: int) -> dict[str, Any]:
    """The bank's state topic payload (numbers in V, A, W, %; texts cut to 255 characters)."""
    state: dict[str, Any] = {key: _rounded(bank.get(key)) for key, *_ in BANK_SENSORS}
    reasons = bank.get("reasons", {})
    state.update(
        charge_state=bank.get("charge_state", "bulk"),
        alarms=_alarm_text(bank.get("alarms", {})),
        reason_cvl=_text(reasons.get("cvl", "")),
        reason_ccl=_text(reasons.get("ccl", "")),
        reason_dcl=_text(reasons.get("dcl", "")),
        online=bank.get("online"),
        offline=bank.get("offline"),
        tap_malformed=malformed,
    )
    return state


def pack_state(summary: Mapping[str, Any]) -> dict[str, Any]:
    """One pack's state topic payload from its bank summary (delta = max - min cell, V)."""
    low, high = summary.get("min_cell_voltage"), summary.get("max_cell_voltage")
    temps = summary.get("temperatures") or []
    return {
        "voltage": _rounded(summary.get("voltage")),
        "current": _rounded(summary.get("current")),
        "soc": _rounded(summary.get("soc"), 1),
        "min_cell_voltage": _rounded(low),
        "max_cell_voltage": _rounded(high),
        "cell_delta": None if low is None or high is None else _rounded(high - low),
        "min_temperature": _rounded(min(temps), 1) if temps else None,
        "max_temperature": _rounded(max(temps), 1) if temps else None,
        "temperatures": [_rounded(t, 1) for t in temps],
        "online": "ON" if summary.get("online") else "OFF",
        "reason": _text(summary.get("last_rejection") or ""),
    }


class Topics:
    """Topic names of one bank: ``<prefix>/<bank>/...`` and its discovery node."""

    def __init__(self, cfg: MqttConfig, bank_name: str) -> None:
        self.cfg = cfg
        self.base = f"{cfg.topic_prefix}/{slug(bank_name)}"
        self.node = f"bmsbank_{slug(bank_name)}"
        self.bank_name = bank_name
        self.status = f"{self.base}/status"
        self.bank = f"{self.base}/bank/state"

    def pack(self, pack_id: str) -> str:
        """A pack's state topic."""
        return f"{self.base}/pack/{slug(pack_id)}/state"

    def config(self, component: str, object_id: str) -> str:
        """A discovery config topic."""
        return f"{self.cfg.discovery_prefix}/{component}/{self.node}/{object_id}/config"


def _entity(
    topics: Topics, object_id: str, name: str, state_topic: str, key: str, device: dict
) -> dict[str, Any]:
    return {
        "name": name,
        "unique_id": f"{topics.node}_{object_id}",
        "state_topic": state_topic,
        "value_template": f"{{{{ value_json.{key} }}}}",
        "availability_topic": topics.status,
        "device": device,
    }


def _sensor(entity: dict[str, Any], unit: str, device_class: str) -> dict[str, Any]:
    return {
        **entity,
        "unit_of_measurement": unit,
        "device_class": device_class,
        "state_class": "measurement",
    }


def bank_discovery(topics: Topics) -> list[tuple[str, dict[str, Any]]]:
    """(topic, payload) of every bank entity's discovery config."""
    device = {
        "identifiers": [topics.node],
        "name": f"{topics.bank_name} battery bank",
        "manufacturer": "bmsbank",
        "model": "battery bank",
    }
    out = []
    for key, name, unit, dclass in BANK_SENSORS:
        entity = _entity(topics, f"bank_{key}", name, topics.bank, key, device)
        out.append((topics.config("sensor", f"bank_{key}"), _sensor(entity, unit, dclass)))
    for key, name in BANK_TEXTS:
        entity = _entity(topics, f"bank_{key}", name, topics.bank, key, device)
        out.append((topics.config("sensor", f"bank_{key}"), entity))
    return out


def pack_discovery(topics: Topics, pack_id: str, bms: str | None) -> list[tuple[str, dict]]:
    """(topic, payload) of one pack's discovery configs (a device of its own, via the bank)."""
    obj = f"pack_{slug(pack_id)}"
    device = {
        "identifiers": [f"{topics.node}_{obj}"],
        "name": f"{topics.bank_name} pack {pack_id}",
        "manufacturer": "bmsbank",
        "model": bms or "BMS",
        "via_device": topics.node,
    }
    state = topics.pack(pack_id)
    out = []
    for key, name, unit, dclass in PACK_SENSORS:
        entity = _entity(topics, f"{obj}_{key}", name, state, key, device)
        out.append((topics.config("sensor", f"{obj}_{key}"), _sensor(entity, unit, dclass)))
    entity = _entity(topics, f"{obj}_reason", "Offline reason", state, "reason", device)
    out.append((topics.config("sensor", f"{obj}_reason"), entity))
    online = _entity(topics, f"{obj}_online", "Online", state, "online", device)
    online["device_class"] = "connectivity"
    out.append((topics.config("binary_sensor", f"{obj}_online"), online))
    return out
