"""A battery that itself speaks the Victron CAN-bus BMS protocol (Pylontech, BYD, Pytes, ...).

Such a battery (or the master of a stack) broadcasts its readings once a second on 11-bit ids at
500 kbit/s; nothing is requested. It is the protocol bmsbank's own publisher speaks to the GX, so
the scales here are read from the publisher's DBC (``services/publisher/victron_canbms.dbc``,
:data:`bmsbank.services.publisher.canbms.DBC`) when this module is imported, never typed again:
a frame the publisher encodes decodes here to the same values (tests/test_victron_can.py).

Decoded (little endian; the DBC's scales):

- 0x351 CVL 0.1 V, CCL 0.1 A, DCL 0.1 A (the pack's ``bms_cvl``/``bms_ccl``/``bms_dcl``: the
  battery's own limits, which the bank honours and names in its reasons), discharge voltage
  0.1 V (bytes 6-7, optional).
- 0x355 SoC 1 % (required), SoH 1 % (bytes 2-3, optional: Pylontech's old firmware sends 4
  bytes, the newer 6, BYD 8).
- 0x356 voltage 0.01 V, current 0.1 A signed (+ = charge), temperature 0.1 °C signed.
- 0x35A alarm pairs (bytes 0-3) and warning pairs (bytes 4-7), 2 bits each: 01 active, 10 ok,
  00 not supported; pair k maps to the first bank alarm of the publisher's
  :data:`~bmsbank.services.publisher.canbms.PAIRS` row k, the pairs the publisher leaves out to
  :data:`EXTRA_PAIRS` (general and contactor: internal_failure; short circuit).
- 0x35E manufacturer, ASCII, NUL/space padded (``hardware``).
- 0x35F online capacity Ah (bytes 4-5) and 0x379 installed capacity Ah: the pack's capacity
  (0x379 first) unless the ``capacity`` option sets it.
- 0x372 modules online / blocking charge / blocking discharge / offline (kept, not in the state).
- 0x373 min and max cell voltage 1 mV, min and max cell temperature 1 K (0 = unknown, as the
  publisher sends it).

Frames of the protocol that carry nothing the state has (0x359 and 0x35C of Pylontech's older
firmware, 0x35B, 0x360, 0x370/0x371 names, 0x374-0x377 cell ids, 0x378 energy, 0x380-0x382) and
the GX's own 0x305/0x306/0x307 on a shared bus are ignored without counting; any other id is not
this family's (:meth:`Family.address_of` returns None: the input counts it).

Cells. The protocol carries no cell voltages, only the lowest and highest (0x373), and no cell
count. The state needs a list of cells whose sum is the pack voltage, so with ``cells`` = N
(the option, default 16) the pack reports N cells: the lowest, N - 2 cells at the mean of the
rest ((voltage - min - max) / (N - 2)) and the highest. The lowest, the highest, the delta, the
count and the sum the bank works with are the battery's own; the N - 2 middle values are not
measurements (the per-pack service shows them as the mean they are). A mean outside [min, max]
means N (or the frame) is wrong: that state is refused ("malformed") and logged, so a wrong
``cells`` never passes silently. A battery that sends no 0x373 (Pylontech's US series) has no
cell figures at all: it is not used unless ``even_cells = true``, which spreads the voltage
evenly over N cells and leaves cell protection to the battery's own CVL/CCL/DCL; nothing is
otherwise invented. The FET states are not in the protocol either: both are reported on, and a
battery that stops a direction does so through its own limit (CCL or DCL 0 A), which the bank
applies and names ("the BMS allows 0 A") rather than a FET state nobody reported.

Facts and where they were confirmed (public sources, repository + path):

- ids, layouts, scales, sign (+ = charge), 2-bit alarm pairs: the Victron "CAN-bus BMS protocol"
  as the publisher implements it (services/publisher/canbms.py docstring and DBC), checked
  against the captures below.
- BYD Battery-Box Premium LVS capture with the values Venus showed: dfch/BydCanProtocol
  README.md (0x351 ``48 02 00 05 00 05 AE 01`` = 58.4 V / 128 A / 128 A / 43.0 V; 0x355
  ``43 00 64 00`` = 67 % / 100 %; 0x356 ``BE 14 F9 FF 8C 00`` = 53.1 V, -0.7 A discharging,
  14.0 °C; 0x35A ``AA`` x 8 = every pair OK; 0x373 ``EA 0C 01 0D 1F 01 22 01`` = 3.306 /
  3.329 V and 287 / 290 K). That README reads the two temperatures as 15 / 18 °C ("K + 1K");
  the protocol and the publisher say kelvin (13.85 / 16.85 °C), which agrees with the same
  capture's 0x356 14.0 °C: kelvin is kept.
- Pytes V5α capture with the values Venus showed and the 0x35A bit table: AndreasBoehm/
  PytesCANProtocol README.md (0x356 ``8E 14 ..`` = 52.62 V: 10 mV, not the README's "mV"
  label; 0x373 289 / 291 K shown as 16 / 18 °C: kelvin; the alarm pairs where the publisher
  puts them). Pytes sends 00 ("not supported") for a pair that is ok, where BYD sends 10: a 00
  pair is left out of ``alarms`` (nothing claimed either way), an 01 pair is always reported.
- Pylontech US5000 captures, old and new firmware, frames of 4-8 bytes (setfirelabs.com,
  "Pylontech Battery CAN comms - V1.2 vs V1.3"; the 0x355 example ``1A 00 64 00`` =
  SoC 26 %, SoH 100 % is quoted in OpenDTU's Pytes commit): the order is SoC then SoH although
  that page labels the frame "SOH / SOC"; Pylontech sends no 0x373.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bmsbank.errors import FrameError
from bmsbank.native.frames import FieldTable
from bmsbank.native.spec import Field
from bmsbank.schema import ALARM, OK, WARNING
from bmsbank.services.poller.can_family import CanFamily, CanFrame
from bmsbank.services.poller.plugins.base import require
from bmsbank.services.poller.plugins.victron_can import INFO
from bmsbank.services.publisher.canbms import ACTIVE, DBC, KELVIN, NOT_SUPPORTED, PAIRS, UN16

ADDRESS = 0  #: the one battery of a bus

#: id -> part name, for the frames decoded
PARTS: dict[int, str] = {
    0x351: "limits", 0x355: "soc", 0x356: "measurements", 0x35A: "alarms", 0x35E: "name",
    0x35F: "info", 0x372: "modules", 0x373: "extremes", 0x379: "installed",
}  # fmt: skip
#: the protocol's frames that carry nothing for the state, and the GX's own: ignored, not counted
IGNORED = frozenset({0x305, 0x306, 0x307, 0x359, 0x35B, 0x35C, 0x360, 0x370, 0x371, 0x374,
                     0x375, 0x376, 0x377, 0x378, 0x380, 0x381, 0x382})  # fmt: skip
#: signals of the publisher's DBC decoded here, by part (the DBC's names)
SIGNALS: dict[str, tuple[str, ...]] = {
    "limits": ("ChargeVoltageLimit", "ChargeCurrentLimit", "DischargeCurrentLimit",
               "DischargeVoltage"),
    "soc": ("SoC", "SoH"),
    "measurements": ("BatteryVoltage", "BatteryCurrent", "BatteryTemperature"),
    "info": ("OnlineCapacity",),
    "modules": ("ModulesOnline", "ModulesBlockingCharge", "ModulesBlockingDischarge",
                "ModulesOffline"),
    "extremes": ("MinCellVoltage", "MaxCellVoltage", "MinCellTemperature", "MaxCellTemperature"),
    "installed": ("InstalledCapacity",),
}  # fmt: skip
#: bytes a frame must carry at least (a shorter one is "truncated"); fields beyond are optional
MIN_DLC: dict[str, int] = {
    "limits": 6, "soc": 2, "measurements": 6, "alarms": 8, "name": 1, "info": 6, "modules": 8,
    "extremes": 4, "installed": 2,
}  # fmt: skip
#: 0x35A pairs the publisher does not send, and what they mean here
EXTRA_PAIRS: dict[int, str] = {0: "internal_failure", 9: "internal_failure", 10: "short_circuit"}
_SG = re.compile(
    r"^\s*SG_\s+(\w+)\s*:\s*(\d+)\|(\d+)@([01])([+-])\s*\(([^,]+),([^)]+)\)", re.MULTILINE
)
_BO = re.compile(r"^BO_\s+(\d+)\s+\w+\s*:", re.MULTILINE)


def dbc_fields(text: str, wanted: Mapping[str, tuple[str, ...]]) -> dict[int, tuple[Field, ...]]:
    """Fields of the wanted DBC signals, by frame id: 16-bit little-endian, byte aligned.

    Args:
        text: a DBC file's text.
        wanted: part -> signal names (each must be found once).

    Raises:
        ValueError: a wanted signal is missing or not a byte-aligned little-endian 16-bit
            field (the table would not decode what the DBC says).

    """
    found: dict[str, tuple[int, Field]] = {}
    starts = [(m.start(), int(m.group(1))) for m in _BO.finditer(text)]
    names = {n for sigs in wanted.values() for n in sigs}
    for m in _SG.finditer(text):
        frame_id = max((s for s in starts if s[0] < m.start()), default=(0, -1))[1]
        name, start, length, order, sign = m.group(1), *map(int, m.group(2, 3, 4)), m.group(5)
        if name not in names or (name, frame_id) in {(n, i) for n, (i, _) in found.items()}:
            continue
        if length != 16 or order != 1 or start % 8:
            raise ValueError(f"DBC signal {name}: {start}|{length}@{order} is not u16/s16 le")
        fmt = "s16le" if sign == "-" else "u16le"
        scale, offset = float(m.group(6)), float(m.group(7))
        found[name] = (frame_id, Field(name, start // 8, fmt, scale=scale, bias=offset))
    out: dict[int, list[Field]] = {}
    for sigs in wanted.values():
        for name in sigs:
            if name not in found:
                raise ValueError(f"DBC signal {name} not found")
            frame_id, f = found[name]
            out.setdefault(frame_id, []).append(f)
    return {k: tuple(v) for k, v in out.items()}


#: id -> the fields the DBC gives for it
FIELDS: dict[int, tuple[Field, ...]] = dbc_fields(Path(DBC).read_text(encoding="ascii"), SIGNALS)


def alarm_levels(data: bytes) -> dict[str, int]:
    """The alarms of a 0x35A frame: {name: 0 ok / 1 warning / 2 alarm} for supported pairs."""
    out: dict[str, int] = {}
    for k in range(16):
        name = PAIRS[k][0] if PAIRS[k] else EXTRA_PAIRS.get(k)
        shift = 2 * (k % 4)
        alarm = (data[k // 4] >> shift) & 3
        warning = (data[4 + k // 4] >> shift) & 3
        if name is None or (alarm == NOT_SUPPORTED and warning == NOT_SUPPORTED):
            continue
        level = ALARM if alarm == ACTIVE else WARNING if warning == ACTIVE else OK
        out[name] = max(out.get(name, OK), level)
    return out


def text(data: bytes) -> str:
    """ASCII text of a name frame, NUL and space padding dropped, anything else as "?"."""
    return "".join(chr(b) if 0x20 <= b < 0x7F else "?" for b in data.rstrip(b"\x00 "))


class Family(CanFamily):
    """A Victron-protocol battery: one per bus, broadcasting; decoded by the publisher's DBC."""

    info = INFO

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        #: (part, frame length) -> the table of the fields such a frame carries
        self.tables = {(PARTS[i], 8): FieldTable(f) for i, f in FIELDS.items()}
        # 0x373's unknown value is 0 (the publisher and the protocol); 0x372's is 0xFFFF
        self.unknown = {"extremes": 0, "modules": UN16[1]}

    def address_of(self, frame: CanFrame) -> int | None:
        """0 for the protocol's 11-bit ids (and the GX's), None for anything else."""
        if frame.extended or (frame.id not in PARTS and frame.id not in IGNORED):
            return None
        return ADDRESS

    def accept(self, frame: CanFrame, parts: dict[str, dict[str, Any]]) -> None:
        """Decode one frame into ``parts`` (frames without state data are ignored).

        Raises:
            FrameError: a frame shorter than its required fields ("truncated").

        """
        part = PARTS.get(frame.id)
        if part is None:
            return
        data = frame.data
        if len(data) < MIN_DLC[part]:
            raise FrameError(f"victron_can: 0x{frame.id:03X} with {len(data)} bytes, "
                             f"{MIN_DLC[part]} needed", data, "truncated")  # fmt: skip
        if part == "alarms":
            parts[part] = {"alarms": alarm_levels(data)}
        elif part == "name":
            parts[part] = {"hardware": text(data)}
        else:
            parts[part] = self._fields(part, data)

    def _fields(self, part: str, data: bytes) -> dict[str, Any]:
        """The DBC fields of ``part`` that fit in ``data`` (optional ones beyond are left out)."""
        key = (part, min(len(data), 8))
        table = self.tables.get(key)
        if table is None:  # a short frame's table, made once per length
            fit = tuple(f for f in self.tables[part, 8].fields if f.offset + 2 <= len(data))
            table = self.tables[key] = FieldTable(fit)
        out = table.decode(data)
        unknown = self.unknown.get(part)
        if unknown is not None:
            raw = {f.name: int.from_bytes(data[f.offset : f.offset + 2], "little")
                   for f in table.fields}  # fmt: skip
            out = {k: (None if raw[k] == unknown else v) for k, v in out.items()}
        return out

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The state fields: measurements, SoC, the battery's limits and its cell extremes.

        Raises:
            FrameError: 0x351, 0x355 or 0x356 has not arrived ("truncated"), no 0x373 without
                ``even_cells`` ("truncated"), or cell extremes that ``cells`` cells cannot
                make ("malformed").

        """
        require(parts, "limits", "soc", "measurements")
        lim, m = parts["limits"], parts["measurements"]
        voltage, soc = m["BatteryVoltage"], float(parts["soc"]["SoC"])
        capacity = self.options["capacity"] or (
            parts.get("installed", {}).get("InstalledCapacity")
            or parts.get("info", {}).get("OnlineCapacity")
            or 0.0
        )
        extremes = parts.get("extremes", {})
        temperatures = [m["BatteryTemperature"]] + [
            t - KELVIN for t in (extremes.get("MinCellTemperature"),
                                 extremes.get("MaxCellTemperature")) if t is not None
        ]  # fmt: skip
        ccl, dcl = lim["ChargeCurrentLimit"], lim["DischargeCurrentLimit"]
        return {
            "voltage": voltage,
            "current": m["BatteryCurrent"],
            "soc": soc,
            "soh": parts["soc"].get("SoH"),
            "capacity": float(capacity),
            "remaining": float(capacity) * min(soc, 100.0) / 100.0,
            "cells": self.cells(voltage, extremes),
            "balancing": [0] * self.options["cells"],
            "temperatures": temperatures,
            "mosfet_temperature": None,
            "charge_fet": True,  # not in the protocol: see the module docstring
            "discharge_fet": True,
            "bms_cvl": lim["ChargeVoltageLimit"],
            "bms_ccl": ccl,
            "bms_dcl": dcl,
            "alarms": dict(parts.get("alarms", {}).get("alarms", {})),
            "hardware": parts.get("name", {}).get("hardware", ""),
        }

    def cells(self, voltage: float, extremes: Mapping[str, Any]) -> list[float]:
        """N cells: the lowest, the mean of the rest N - 2 times, the highest (module docstring).

        Raises:
            FrameError: no extremes and not ``even_cells`` ("truncated"); extremes that N cells
                summing to ``voltage`` cannot have ("malformed").

        """
        n = self.options["cells"]
        low, high = extremes.get("MinCellVoltage"), extremes.get("MaxCellVoltage")
        if low is None or high is None:
            if not self.options["even_cells"]:
                why = "no cell voltages (0x373) from this battery; even_cells = true uses it"
                raise FrameError(f"victron_can: {why}", kind="truncated")
            return [voltage / n] * n
        rest = (voltage - low - high) / (n - 2) if n > 2 else None
        tolerance = 0.002  # V: the mV resolution of 0x373 and the 10 mV of the voltage, per cell
        if low > high or (rest is not None and not low - tolerance <= rest <= high + tolerance):
            raise FrameError(f"victron_can: {n} cells cannot make {voltage:.2f} V with cells "
                             f"{low:.3f}-{high:.3f} V (is cells = {n} right?)")  # fmt: skip
        if rest is None:
            return [low, high]
        rest = min(high, max(low, rest))
        return [low, *([rest] * (n - 2)), high]
