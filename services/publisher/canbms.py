"""Encode a bank message as Victron CAN-bus BMS frames (seed 004, "CAN-bus BMS Protocol").

Pure functions: :func:`frames` returns ``[(can_id, data), ...]`` for 11-bit identifiers, every
multi-byte field little-endian except the 0x35F firmware version (big-endian, as the seed says).
Every value is clamped to its field's range, never wrapped: 70000 A is sent as 6553.5 A, not 443 A,
and a negative limit as 0. Unknown values are sent as 0 (the seed allows 0x0000 for unsupported
0x373 fields). All frames carry 8 bytes (zero padded) like the seed's candump example.

Frames:
    0x351  CVL 0.1 V, CCL 0.1 A, DCL 0.1 A, discharge voltage 0.1 V (= bank low_voltage), un16
    0x355  SoC 1 %, SoH 1 % (100: the bank does not track SoH), SoC 0.01 %, un16
    0x356  voltage 0.01 V, current 0.1 A (+ = charge), temperature 0.1 degC, sn16
    0x35A  alarms (bytes 0-3) and warnings (bytes 4-7), 2-bit pairs, see :data:`PAIRS`
    0x35E  manufacturer, 8 ASCII characters, NUL padded
    0x35F  model un16 (0: "not implemented" in the seed), firmware major/minor big-endian,
           online capacity Ah un16
    0x372  modules online, blocking charge, blocking discharge, offline (un16). "Modules OK" is
           taken as "online" (blocking ones included) because Venus shows this field as
           "N online"; the blocking counts follow in their own fields.
    0x373  min / max cell voltage [mV], min / max cell temperature [K], un16
    0x379  installed capacity [Ah] un16 (Victron extension)

0x35A mapping (alarm pair active when any source is at level 2, warning pair at level >= 1;
10 = OK when at least one source is present in the bank, 00 = not supported otherwise):

    =====  ======================================  ==============================================
    pair   seed name                               bank alarms
    =====  ======================================  ==============================================
    0      general                                 00 ("not implemented" in the seed)
    1      high voltage                            high_voltage, high_cell_voltage
    2      low voltage                             low_voltage, low_cell_voltage
    3      high temperature                        high_temperature
    4      low temperature                         low_temperature
    5      high temperature charge                 high_charge_temperature
    6      low temperature charge                  low_charge_temperature
    7      high current (shown "high discharge")   high_discharge_current, high_current
    8      high charge current                     high_charge_current
    9      contactor                               00 ("not implemented")
    10     short circuit                           00 ("not implemented"; short_circuit unused)
    11     BMS internal                            internal_failure, high_internal_temperature,
                                                   bms_cable (a pack or the arbiter is lost)
    12     cell imbalance                          cell_imbalance
    13-15  reserved; warnings byte 7 bits 2-3 is   00 (the seed does not say which value is
           "system status"                         "online")
    =====  ======================================  ==============================================

``low_soc`` has no CAN field. Pair ``k`` of the alarms sits in byte ``k // 4`` at bits
``2 * (k % 4)``; warnings use the same layout four bytes later.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from bmsbank import __version__
from bmsbank.config import CanConfig
from bmsbank.schema import ALARM, WARNING

Frame = tuple[int, bytes]

UN16 = (0, 0xFFFF)
SN16 = (-0x8000, 0x7FFF)
SOH_UNKNOWN = 100  # the bank does not track state of health; 100 keeps Venus quiet
KELVIN = 273.15

NOT_SUPPORTED, ACTIVE, OK = 0b00, 0b01, 0b10

#: 0x35A pair index -> bank alarm names feeding it (empty: not supported, sent as 00).
PAIRS: tuple[tuple[str, ...], ...] = (
    (),
    ("high_voltage", "high_cell_voltage"),
    ("low_voltage", "low_cell_voltage"),
    ("high_temperature",),
    ("low_temperature",),
    ("high_charge_temperature",),
    ("low_charge_temperature",),
    ("high_discharge_current", "high_current"),
    ("high_charge_current",),
    (),
    (),
    ("internal_failure", "high_internal_temperature", "bms_cable"),
    ("cell_imbalance",),
    (),
    (),
    (),
)


def scaled(value: Any, scale: float, bounds: tuple[int, int]) -> int:
    """``value / scale`` rounded and clamped to ``bounds``; 0 for unknown (None, NaN, non-number).

    Args:
        value: the physical value (for example volts).
        scale: the field's resolution (for example 0.1 for 0.1 V).
        bounds: (lowest, highest) raw value of the field.

    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return 0
    raw = value / scale  # may overflow to inf for huge values: clamp that too
    if math.isinf(raw):
        return bounds[1] if raw > 0 else bounds[0]
    return max(bounds[0], min(bounds[1], round(raw)))


def _pad(data: bytes) -> bytes:
    return data.ljust(8, b"\x00")


def _pair(levels: Sequence[Any], threshold: int) -> int:
    known = [lv for lv in levels if isinstance(lv, int) and not isinstance(lv, bool)]
    if not known:
        return NOT_SUPPORTED
    return ACTIVE if max(known) >= threshold else OK


def alarm_bytes(alarms: Mapping[str, Any]) -> bytes:
    """Build the 8 data bytes of 0x35A for a bank's ``alarms`` map ({name: 0/1/2})."""
    data = bytearray(8)
    for k, names in enumerate(PAIRS):
        if not names:
            continue
        levels = [alarms.get(n) for n in names if n in alarms]
        shift = 2 * (k % 4)
        data[k // 4] |= _pair(levels, ALARM) << shift
        data[4 + k // 4] |= _pair(levels, WARNING) << shift
    return bytes(data)


def firmware_version(version: str = __version__) -> int:
    """Major and minor version as one un16 (major in the high byte): "1.4.2" -> 0x0104."""
    parts = [int(p) if p.isdigit() else 0 for p in version.split(".")[:2]] + [0, 0]
    return (min(parts[0], 255) << 8) | min(parts[1], 255)


def _kelvin(celsius: Any) -> int:
    """Convert degC to whole kelvin for 0x373; 0 (unsupported) when unknown."""
    if isinstance(celsius, bool) or not isinstance(celsius, (int, float)):
        return 0
    return scaled(celsius + KELVIN, 1, UN16)


def _un16(*values: int) -> bytes:
    return _pad(struct.pack(f"<{len(values)}H", *values))


def frames(bank: Mapping[str, Any], config: CanConfig) -> list[Frame]:
    """All CAN-bus BMS frames for one bank message.

    Args:
        bank: a validated bank message (see :mod:`bmsbank.services.arbiter.bank`).
        config: the CAN section of the configuration (manufacturer name for 0x35E).

    Returns:
        ``[(can_id, 8 data bytes), ...]``, 0x351 first.

    """
    soc = bank.get("soc")
    count = [scaled(bank.get(k), 1, UN16) for k in
             ("online", "blocking_charge", "blocking_discharge", "offline")]  # fmt: skip
    manufacturer = config.manufacturer.encode("ascii", "replace")[:8]
    alarms = bank.get("alarms")
    return [
        (0x351, _un16(
            scaled(bank.get("cvl"), 0.1, UN16), scaled(bank.get("ccl"), 0.1, UN16),
            scaled(bank.get("dcl"), 0.1, UN16), scaled(bank.get("low_voltage"), 0.1, UN16),
        )),
        (0x355, _un16(scaled(soc, 1, UN16), SOH_UNKNOWN, scaled(soc, 0.01, UN16))),
        (0x356, _pad(struct.pack(
            "<3h", scaled(bank.get("voltage"), 0.01, SN16), scaled(bank.get("current"), 0.1, SN16),
            scaled(bank.get("temperature"), 0.1, SN16),
        ))),
        (0x35A, alarm_bytes(alarms if isinstance(alarms, Mapping) else {})),
        (0x35E, manufacturer.ljust(8, b"\x00")),
        (0x35F, _pad(struct.pack(">HH", 0, firmware_version())
                     + struct.pack("<H", scaled(bank.get("capacity"), 1, UN16)))),
        (0x372, _un16(*count)),
        (0x373, _un16(
            scaled(bank.get("min_cell_voltage"), 0.001, UN16),
            scaled(bank.get("max_cell_voltage"), 0.001, UN16),
            _kelvin(bank.get("min_temperature")), _kelvin(bank.get("max_temperature")),
        )),
        (0x379, _un16(scaled(bank.get("installed_capacity"), 1, UN16))),
    ]  # fmt: skip
