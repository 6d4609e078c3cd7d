"""Encode a bank message as Victron CAN-bus BMS frames (seed 004, "CAN-bus BMS Protocol").

Pure functions: :func:`frames` returns ``[(can_id, data), ...]`` for 11-bit identifiers, every
multi-byte field little-endian except the 0x35F firmware version (big-endian, as the seed says).
Every value is clamped to its field's range, never wrapped: 70000 A is sent as 6553.5 A, not 443 A,
and a negative limit as 0; only the 0x378 energy counters roll over, as the seed asks. Unknown
values are sent as 0 (the seed allows 0x0000 for unsupported 0x373 fields), except unknown module
counts in 0x372 (0xFFFF, as the seed asks) and SoH (100, see 0x355). All frames carry 8 bytes
(zero padded) like the seed's candump example. Strings are 7-bit ASCII (anything else becomes
"?"), cut to the field and NUL padded ("unused characters to be set to 0"). :data:`DBC`
describes every frame for cantools and CAN tools.

Frames (``period``: how often :class:`~.can_output.CanOutput` sends them, see there; a frame
whose content changes goes out at the next 1 s tick whatever its period):

    0x351  1 s   CVL 0.1 V, CCL 0.1 A, DCL 0.1 A, discharge voltage 0.1 V (= bank low_voltage),
                 un16. The seed: the GX stops charge and discharge after 3 s without it.
    0x355  1 s   SoC 1 %, SoH 1 %, SoC 0.01 %, un16. SoH is the bank's ``soh`` (the lowest a pack
                 reports); when no pack reports one it is sent as 100 (:data:`SOH_UNKNOWN`): the
                 seed has no "unsupported" value for it, 0 would read as a worn-out battery on
                 the GX and VRM, and the seed's own candump shows 100.
    0x356  1 s   voltage 0.01 V, current 0.1 A (+ = charge), temperature 0.1 degC, sn16
    0x35A  1 s   alarms (bytes 0-3) and warnings (bytes 4-7), 2-bit pairs, see :data:`PAIRS`
    0x35E  10 s  manufacturer, 8 ASCII characters, NUL padded; when 0x370 is sent, the same 8
                 bytes as 0x370 (the seed: "the contents of 0x35E and 0x370 must match")
    0x35F  10 s  model un16 (0: "not implemented" in the seed), firmware major/minor
                 big-endian, online capacity Ah un16 (0 when unknown: "set to zero if unused")
    0x360  1 s   force charge: byte 0 = 0xFF requests a charge, 0x00 does not (the seed: "any
                 other value indicates that battery charging should not be forced"); bytes 1-7
                 0. Only sent when the rule is configured (``can.force_charge_soc`` > 0), see
                 :class:`~.can_output.ForceCharge`.
    0x370  10 s  battery name, characters 1-8  } ASCII, NUL padded: manufacturer, a space and
    0x371  10 s  battery name, characters 9-16 } the bank ``name`` (just the manufacturer when
                 the name is empty or the same), cut to 16; both are left out when the name
                 fits 0x35E's 8 characters (the seed: "better to use 0x35E and omit 0x370 and
                 0x371"). Always sent together, 0x370 first.
    0x372  1 s   modules online, blocking charge, blocking discharge, offline (un16; 0xFFFF, the
                 seed's "not supported", for a count the bank does not carry). "Modules OK" is
                 taken as "online" (blocking ones included) because Venus shows this field as
                 "N online"; the blocking counts follow in their own fields.
    0x373  1 s   min / max cell voltage [mV], min / max cell temperature [K], un16; an unknown
                 value is 0x0000 (one of the seed's three choices; all 8 bytes are always sent)
    0x374  1 s   id of the lowest cell voltage       } 8 ASCII characters "<pack> ::<cell>"
    0x375  1 s   id of the highest cell voltage      } (the seed's own example is "1 ::9"):
    0x376  1 s   id of the coldest temperature sensor} <pack> is the pack's 1-based position
    0x377  1 s   id of the hottest temperature sensor} in bank["packs"], <cell> the cell or
                 sensor number of the bank's id ("jkbus:2 C9" -> "2 ::9", "jkbus:2 T1" ->
                 "2 ::1"). Fits 8 characters up to 99 packs and 999 cells. An unknown id (None,
                 or a pack not in bank["packs"]) is sent as 8 NUL bytes, the seed's empty string.
    0x378  10 s  energy in (charge), energy out (discharge), un32 each, 100 Wh units, from
                 :class:`~.energy.EnergyCounter`. The seed says the counters roll over to zero
                 when they exceed their maximum; the field holds 2**32 x 100 Wh (~429 GWh; the
                 seed's "42 MWh" does not match its own field size), so they roll over modulo
                 2**32 units (:data:`ENERGY_UNITS`).
    0x379  10 s  installed capacity [Ah] un16 (Victron extension)
    0x380  10 s  serial number, characters 1-8  } ASCII, NUL padded: the bank ``name``
    0x381  10 s  serial number, characters 9-16 } (configured, stable across restarts), cut to
                 16; both always sent together, 0x380 first (the seed: 0x381 completes the
                 serial), neither when the bank has no name.
    0x382  10 s  battery family name, 8 ASCII characters: :data:`FAMILY` ("bmsbank").

The GX sends 0x305 (keep-alive) and 0x307 (inverter identification); :mod:`.can_sender`
listens for them.

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
from pathlib import Path
from typing import Any

from bmsbank import __version__
from bmsbank.config import CanConfig
from bmsbank.schema import ALARM, WARNING

Frame = tuple[int, bytes]

UN16 = (0, 0xFFFF)
SN16 = (-0x8000, 0x7FFF)
SOH_UNKNOWN = 100  #: 0x355 SoH when no pack reports one (see the module docstring)
SOH = (0, 100)
FORCE_CHARGE = 0xFF  #: 0x360 byte 0 that requests a charge (the seed); 0x00 = not forced
ENERGY_WH = 100.0  #: 0x378 unit [Wh]
ENERGY_UNITS = 2**32  #: 0x378 counters roll over to zero at this many units (un32)
KELVIN = 273.15
FAMILY = "bmsbank"  #: 0x382 battery family name
NAME_CHARS = 16  #: 0x370 + 0x371 and 0x380 + 0x381
DBC = Path(__file__).with_name("victron_canbms.dbc")  #: the frames as a DBC file

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


def _count(value: Any) -> int:
    """A module count for 0x372; 0xFFFF (the seed's "not supported") when unknown."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return UN16[1]
    return scaled(value, 1, UN16)


def soh_value(soh: Any) -> int:
    """0x355 SoH [%]: the bank's ``soh`` rounded and clamped to 0-100, 100 when unknown."""
    if isinstance(soh, bool) or not isinstance(soh, (int, float)) or math.isnan(soh):
        return SOH_UNKNOWN
    return scaled(soh, 1, SOH)


def force_charge_bytes(request: bool) -> bytes:
    """0x360 data: 0xFF in byte 0 to request a charge, all zero otherwise."""
    return _pad(bytes([FORCE_CHARGE if request else 0]))


def energy_units(wh: Any) -> int:
    """An energy counter [Wh] as whole 100 Wh units, rolled over modulo 2**32 (0 when unknown)."""
    if isinstance(wh, bool) or not isinstance(wh, (int, float)) or not math.isfinite(wh) or wh < 0:
        return 0
    return int(wh // ENERGY_WH) % ENERGY_UNITS


def energy_bytes(energy_in: Any, energy_out: Any) -> bytes:
    """0x378 data: energy in (charge) and out (discharge) [Wh] as un32 in 100 Wh units."""
    return struct.pack("<2I", energy_units(energy_in), energy_units(energy_out))


def ascii_bytes(text: str, length: int = 8) -> bytes:
    """``text`` as 7-bit printable ASCII ("?" for anything else), cut and NUL padded to length."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in text)
    return clean.encode("ascii")[:length].ljust(length, b"\x00")


def battery_name(bank: Mapping[str, Any], config: CanConfig) -> str:
    """The 0x370/0x371 battery name: "<manufacturer> <bank name>", cut to 16 characters."""
    name = bank.get("name")
    if not isinstance(name, str) or not name.strip() or name == config.manufacturer:
        return config.manufacturer[:NAME_CHARS]
    return f"{config.manufacturer} {name}"[:NAME_CHARS]


def id_string(item_id: Any, packs: Any) -> bytes:
    """0x374-0x377 data: "jkbus:2 C9" -> b"2 ::9" + NULs (pack = position in ``packs``, from 1).

    Args:
        item_id: a bank cell or sensor id, "<pack id> C<n>" or "<pack id> T<n>" (or None).
        packs: the bank's ``packs`` list (rows with an ``id``).

    Returns:
        8 bytes; all NUL (the seed's empty string) when the id or its pack is unknown.

    """
    if not isinstance(item_id, str) or not isinstance(packs, Sequence):
        return bytes(8)
    pack, _, item = item_id.rpartition(" ")
    ids = [row.get("id") for row in packs if isinstance(row, Mapping)]
    if not pack or pack not in ids:
        return bytes(8)
    number = item[1:] if item[:1] in ("C", "T") else item
    return ascii_bytes(f"{ids.index(pack) + 1} ::{number}")


def _text_frames(first_id: int, text: str) -> list[Frame]:
    """Two consecutive ids carrying up to 16 ASCII characters, the second NUL when unused."""
    data = ascii_bytes(text, NAME_CHARS)
    return [(first_id, data[:8]), (first_id + 1, data[8:])]


def _measurements(bank: Mapping[str, Any]) -> list[Frame]:
    """0x351, 0x355, 0x356, 0x35A, 0x372, 0x373 and 0x374-0x377: what changes all the time."""
    soc = bank.get("soc")
    count = [_count(bank.get(k)) for k in
             ("online", "blocking_charge", "blocking_discharge", "offline")]  # fmt: skip
    alarms = bank.get("alarms")
    packs = bank.get("packs")
    keys = ("min_cell_id", "max_cell_id", "min_temperature_id", "max_temperature_id")
    return [
        (0x351, _un16(
            scaled(bank.get("cvl"), 0.1, UN16), scaled(bank.get("ccl"), 0.1, UN16),
            scaled(bank.get("dcl"), 0.1, UN16), scaled(bank.get("low_voltage"), 0.1, UN16),
        )),
        (0x355, _un16(scaled(soc, 1, UN16), soh_value(bank.get("soh")), scaled(soc, 0.01, UN16))),
        (0x356, _pad(struct.pack(
            "<3h", scaled(bank.get("voltage"), 0.01, SN16), scaled(bank.get("current"), 0.1, SN16),
            scaled(bank.get("temperature"), 0.1, SN16),
        ))),
        (0x35A, alarm_bytes(alarms if isinstance(alarms, Mapping) else {})),
        (0x372, _un16(*count)),
        (0x373, _un16(
            scaled(bank.get("min_cell_voltage"), 0.001, UN16),
            scaled(bank.get("max_cell_voltage"), 0.001, UN16),
            _kelvin(bank.get("min_temperature")), _kelvin(bank.get("max_temperature")),
        )),
        *[(0x374 + k, id_string(bank.get(key), packs)) for k, key in enumerate(keys)],
    ]  # fmt: skip


def _identity(bank: Mapping[str, Any], config: CanConfig) -> list[Frame]:
    """0x35E, 0x35F, 0x370/0x371, 0x379, 0x380/0x381 and 0x382: who the battery is."""
    manufacturer = config.manufacturer.encode("ascii", "replace")[:8]
    name = battery_name(bank, config)
    names = _text_frames(0x370, name) if len(name) > 8 else []
    serial = bank.get("name")
    return [
        # the seed: "the contents of 0x35E and 0x370 must match if both are implemented"
        (0x35E, names[0][1] if names else manufacturer.ljust(8, b"\x00")),
        (0x35F, _pad(struct.pack(">HH", 0, firmware_version())
                     + struct.pack("<H", scaled(bank.get("capacity"), 1, UN16)))),
        *names,
        (0x379, _un16(scaled(bank.get("installed_capacity"), 1, UN16))),
        *(_text_frames(0x380, serial) if isinstance(serial, str) and serial else []),
        (0x382, ascii_bytes(FAMILY)),
    ]  # fmt: skip


def frames(
    bank: Mapping[str, Any],
    config: CanConfig,
    *,
    force_charge: bool | None = None,
    energy: tuple[float, float] | None = None,
) -> list[Frame]:
    """All CAN-bus BMS frames for one bank message.

    Args:
        bank: a validated bank message (see :mod:`bmsbank.services.arbiter.bank`).
        config: the CAN section of the configuration (manufacturer name for 0x35E and 0x370).
        force_charge: 0x360's request; None leaves 0x360 out (the rule is off).
        energy: (energy in, energy out) [Wh] for 0x378; None leaves 0x378 out.

    Returns:
        ``[(can_id, 8 data bytes), ...]`` by id, so 0x351 (the lowest) comes first.

    """
    out = _measurements(bank) + _identity(bank, config)
    if force_charge is not None:
        out.append((0x360, force_charge_bytes(force_charge)))
    if energy is not None:
        out.append((0x378, energy_bytes(*energy)))
    return sorted(out, key=lambda f: f[0])
