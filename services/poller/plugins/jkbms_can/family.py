"""JK BMS on its CAN port: 250 kbit/s, the BMS broadcasts; nothing is requested.

Sources (short names): DOC = JK's "CAN BMS_BB_PKG V1.0" protocol (a markdown copy in the public
code index, id 57104495051: ids, cycles, scales, the per-cell frames 0x18E0..0x18E7); DSB =
mr-manuel/venus-os_dbus-serialbattery dbus-serialbattery/bms/jkbms_can.py (tested on a
JK-PB2A16S20P, mr-manuel/venus-os_dbus-serialbattery#108); AIR = ai-republic/bms-to-inverter
bms-jk-can/src/main/java/com/airepublic/bmstoinverter/bms/jk/can/JKBmsCANProcessor.java.

- 250 kbit/s, CAN 2.0A/B, multi-byte values little endian (DOC §3; DSB and AIR unpack "<H").
- Addresses: the BMS adds its DIP-switch address (0-15) to every id: address 2 sends 0x2F6,
  0x4F6, 0x5F6 (mr-manuel/venus-os_dbus-serialbattery#288; DSB ``frame_id - device_address``).
- 0x02F4 BATT_ST1 (20 ms): voltage u16 0.1 V, current u16 0.1 A offset -400 A, SoC u8 1 %
  (DOC §5.1, DSB, AIR, which keeps deci-amperes: raw - 4000). Everyone reads the result as
  + = charge (DSB's convention); no public capture with a known direction exists, so
  ``invert_current`` flips it for a BMS that disagrees.
- 0x04F4 CELL_VOLT: max cell mV, its number, min cell mV, its number (DOC §5.2, DSB, AIR). A
  PB-series capture in ai-republic/bms-to-inverter#99 reads max 3281 mV (#1) under min 3282 mV
  (#4): the pair is not checked against each other, and the state does not use it.
- 0x05F4 CELL_TEMP: max °C + 50, its sensor, min °C + 50, its sensor, average °C + 50 (DOC
  §5.3, DSB, AIR agree). The state's temperatures are the hottest and the coldest sensor (one
  value when they are the same sensor): the broadcast names no other.
- 0x07F4 ALM_INFO: 2-bit levels (0 none, 1 warning, 2-3 alarm: AIR), sent only while an alarm
  is active (DOC §5.4), so the part is ``transient``. The order of the pairs disagrees: DOC
  gives low pack V, low cell V, high pack V, high cell V, charge/discharge high/low
  temperature, relay temperature, charge/discharge over-current, cell difference, low SoC;
  DSB and AIR give high cell V, low cell V, high pack V, low pack V, cell difference,
  discharge/charge over-current, high/low temperature, temperature difference, low SoC and four
  failures (an older document; the temperature difference has no alarm of its own here).
  Option ``protocol``: "bb_pkg" (DOC, the default: the firmware this family needs, see
  "Cells") or "v1".
- 0x18F128F4 BATT_ST2 (100 ms): remaining and full capacity u16 0.1 Ah (all agree); then DOC:
  cycles u16 at byte 4, SoH u8 at byte 6; DSB and AIR: cycles u16 at byte 6 (DSB reads bytes
  4-5 as Ah drawn). Chosen by ``protocol`` as the alarms are.
- 0x18F528F4 BmsSwSta: byte 0 bit 0 charge FET, bit 1 discharge FET, bit 2 balancer active
  (DSB; DOC's table of this frame gives every bit the start position 0).
- 0x18E028F4 + n * 0x10000, n = 0..7, CELL_VOLT_FULL (1 s): cells 4n+1..4n+4 u16 mV (DOC §5.9;
  its example ``AD 0E AB 0E A3 0E A6 0E`` = 3757, 3755, 3747, 3750 mV; DSB, AIR). Frames past
  the cell count are not sent (DSB) and unused slots are 0.

Cells. The state carries every cell (the bank checks their sum against the pack voltage and
their count against the configuration), and only the per-cell frames give them: BMSs whose
firmware broadcasts just the min/max (DSB's "JKBMS CAN V1"; DSB fills the other cells with the
mean of min and max) get no state here ("truncated": read such a BMS over RS485 instead), since
made-up cells would pass every check the bank makes. The cell count is option ``cells``, or, when
0, the slots of the frames received up to the last non-zero one, accepted only once their sum
falls short of BATT_ST1's voltage by less than half a cell (a frame still missing would
otherwise shorten the pack).

Not decoded (accepted, ignored): 0x18F228F4 CELL_TEMP_FULL (DOC: relay, shunt, cells 1-6; DSB:
a count, T1, T2, MOSFET, T4, T5; AIR: a presence mask then up to five: no two agree),
0x18F328F4 BMSERR_INFO and 0x18F428F4 BMS_INFO (no public layout), 0x1806E5F4 (a charger
request, big endian in some implementations and little in others).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from bmsbank.errors import FrameError
from bmsbank.native.frames import FieldTable
from bmsbank.native.spec import Field
from bmsbank.schema import ALARM, WARNING
from bmsbank.services.poller.can_family import CanFamily, CanFrame
from bmsbank.services.poller.plugins.base import require
from bmsbank.services.poller.plugins.jkbms_can import INFO

STATUS, CELL_RANGE, TEMPERATURE, ALARMS = 0x02F4, 0x04F4, 0x05F4, 0x07F4
CAPACITY, TEMPERATURES, ERRORS, BMS_INFO, SWITCHES = (
    0x18F128F4, 0x18F228F4, 0x18F328F4, 0x18F428F4, 0x18F528F4,
)  # fmt: skip
CHARGE_REQUEST = 0x1806E5F4
CELLS_BASE, CELL_FRAMES, CELLS_PER_FRAME = 0x18E028F4, 8, 4
#: id of CELL_VOLT_FULL frame n (0 first)
CELL_IDS = tuple(CELLS_BASE + (n << 16) for n in range(CELL_FRAMES))
#: base id (address 0) -> part it decodes into
PARTS: dict[int, str] = {
    STATUS: "status", CELL_RANGE: "cell_range", TEMPERATURE: "temperature", ALARMS: "alarms",
    CAPACITY: "capacity", SWITCHES: "switches",
    **{cid: f"cells{n + 1}" for n, cid in enumerate(CELL_IDS)},
}  # fmt: skip
#: this family's frames that carry nothing the state uses (see the module docstring)
IGNORED = frozenset((TEMPERATURES, ERRORS, BMS_INFO, CHARGE_REQUEST))
BASES = tuple(sorted((*PARTS, *IGNORED)))
MAX_ADDRESS = 15

MAX_CELL_MV = 5000  # DOC's scope of CELL_VOLT; no cell reads more
MAX_CURRENT, MIN_CURRENT = 1000.0, -400.0  # A, DOC §5.1's scope
MAX_VOLTAGE = 1000.0  # V, DOC §5.1

#: data bytes of each part (a frame with fewer is "truncated")
FIELDS: dict[str, tuple[Field, ...]] = {
    "status": (
        Field("voltage", 0, "u16le", 0.1),
        Field("current", 2, "u16le", 0.1, bias=-400.0),  # + = charge
        Field("soc", 4, "u8", 1.0),
    ),
    "cell_range": (
        Field("max_cell", 0, "u16le", 0.001), Field("max_cell_no", 2, "u8"),
        Field("min_cell", 3, "u16le", 0.001), Field("min_cell_no", 5, "u8"),
    ),
    "temperature": (
        Field("max_temperature", 0, "u8", 1.0, bias=-50.0), Field("max_sensor_no", 1, "u8"),
        Field("min_temperature", 2, "u8", 1.0, bias=-50.0), Field("min_sensor_no", 3, "u8"),
        Field("average_temperature", 4, "u8", 1.0, bias=-50.0),
    ),
    "alarms": (Field("alarms", 0, "u32le"),),
    "capacity": (
        Field("remaining", 0, "u16le", 0.1), Field("capacity", 2, "u16le", 0.1),
        Field("word4", 4, "u16le"), Field("word6", 6, "u16le"), Field("byte6", 6, "u8"),
    ),
    "switches": (Field("switches", 0, "u8"),),
    **{f"cells{n + 1}": (Field("cells", 0, "u16le", 0.001, count=CELLS_PER_FRAME),)
       for n in range(CELL_FRAMES)},
}  # fmt: skip
#: data length each part needs: its last field's end
SIZES: dict[str, int] = {
    part: max(f.offset + f.size * max(f.count, 1) for f in fields)
    for part, fields in FIELDS.items()
}

#: ALM_INFO 2-bit pair number -> alarm, per ``protocol``
ALARM_PAIRS: dict[str, dict[int, str]] = {
    "bb_pkg": {
        0: "low_voltage", 1: "low_cell_voltage", 2: "high_voltage", 3: "high_cell_voltage",
        4: "high_charge_temperature", 5: "high_temperature", 6: "low_charge_temperature",
        7: "low_temperature", 8: "high_internal_temperature", 9: "high_charge_current",
        10: "high_discharge_current", 11: "cell_imbalance", 12: "low_soc",
    },
    "v1": {
        0: "high_cell_voltage", 1: "low_cell_voltage", 2: "high_voltage", 3: "low_voltage",
        4: "cell_imbalance", 5: "high_discharge_current", 6: "high_charge_current",
        7: "high_temperature", 8: "low_temperature", 10: "low_soc",
        # insulation, high-voltage interlock, external and internal communication
        11: "internal_failure", 12: "internal_failure", 13: "internal_failure",
        14: "internal_failure",
    },
}  # fmt: skip
LEVELS = (0, WARNING, ALARM, ALARM)  # a pair's value -> alarm level


def base_of(frame: CanFrame) -> tuple[int, int] | None:
    """(base id, address) of a frame of this family, or None (another device's frame)."""
    for base in BASES:
        if 0 <= frame.id - base <= MAX_ADDRESS and frame.extended == (base > 0x7FF):
            return base, frame.id - base
    return None


class Family(CanFamily):
    """JK BMSs at DIP-switch addresses 0-15 broadcasting on one CAN bus."""

    info = INFO
    transient: ClassVar[frozenset[str]] = frozenset({"alarms"})
    tables: ClassVar[dict[str, Any]] = {p: FieldTable(f) for p, f in FIELDS.items()}

    def address_of(self, frame: CanFrame) -> int | None:
        """The DIP-switch address: the id minus its base id (None: not a JK CAN id)."""
        found = base_of(frame)
        return None if found is None else found[1]

    def accept(self, frame: CanFrame, parts: dict[str, dict[str, Any]]) -> None:
        """Decode ``frame`` into ``parts[part]``; frames the state does not use are skipped.

        Raises:
            FrameError: an id this family does not send ("unexpected"), fewer data bytes than
                the frame carries ("truncated"), values outside the protocol's scope
                ("malformed").

        """
        found = base_of(frame)
        if found is None:
            raise FrameError(f"jkbms_can: id 0x{frame.id:X} is not a JK CAN frame", frame.data,
                             kind="unexpected")  # fmt: skip
        base = found[0]
        if base in IGNORED:
            return
        part = PARTS[base]
        if len(frame.data) < SIZES[part]:
            raise FrameError(f"jkbms_can: {part} frame 0x{frame.id:X} with {len(frame.data)} "
                             f"data bytes, needs {SIZES[part]}", frame.data,
                             kind="truncated")  # fmt: skip
        fields = self.tables[part].decode(frame.data)
        self.check(part, fields, frame.data)
        if part == "status" and self.options["invert_current"]:
            fields["current"] = -fields["current"]
        parts[part] = fields

    @staticmethod
    def check(part: str, fields: Mapping[str, Any], data: bytes) -> None:
        """Reject values outside the protocol's scope (a corrupt or foreign frame).

        Raises:
            FrameError(kind="malformed"): SoC over 100 %, voltage over 1000 V, current outside
                -400..1000 A, a cell over 5 V, a temperature over 200 °C.

        """
        bad = ""
        if part == "status":
            if fields["soc"] > 100 or fields["voltage"] > MAX_VOLTAGE:
                bad = f"SoC {fields['soc']:g} %, {fields['voltage']:g} V"
            elif not MIN_CURRENT <= fields["current"] <= MAX_CURRENT:
                bad = f"current {fields['current']:g} A"
        elif part.startswith("cell"):
            cells = fields.get("cells") or [fields["max_cell"], fields["min_cell"]]
            if max(cells) > MAX_CELL_MV / 1000:
                bad = f"a cell of {max(cells):g} V"
        elif part == "temperature":
            hottest = max(v for k, v in fields.items() if k.endswith("temperature"))
            if hottest > 200:
                bad = f"{hottest:g} °C"
        if bad:
            raise FrameError(f"jkbms_can: {part}: {bad}", data)

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The state fields: BATT_ST1, BATT_ST2, CELL_TEMP, BmsSwSta and the per-cell frames.

        Raises:
            FrameError(kind="truncated"): a part has not arrived, or not every cell has.

        """
        require(parts, "status", "capacity", "temperature", "switches")
        status, capacity, temp = parts["status"], parts["capacity"], parts["temperature"]
        cells = self.cells(parts, status["voltage"])
        switches = parts["switches"]["switches"]
        bb_pkg = self.options["protocol"] == "bb_pkg"
        soh = capacity["byte6"] if bb_pkg and capacity["byte6"] <= 100 else None
        hottest = (temp["max_sensor_no"], temp["max_temperature"])
        coldest = (temp["min_sensor_no"], temp["min_temperature"])
        sensors = dict(sorted((hottest, coldest)))  # one entry when it is the same sensor
        return {
            "voltage": round(status["voltage"], 1),  # 0.1 V and 0.1 A steps, no float tail
            "current": round(status["current"], 1),
            "soc": float(status["soc"]),
            "soh": float(soh) if soh is not None else None,
            "capacity": capacity["capacity"],
            "remaining": capacity["remaining"],
            "cycles": capacity["word4"] if bb_pkg else capacity["word6"],
            "cells": cells,
            "balancing": [0] * len(cells),  # the broadcast says only "balancer active"
            "temperatures": list(sensors.values()),
            "charge_fet": bool(switches & 1),
            "discharge_fet": bool(switches & 2),
            "alarms": self.alarms(parts.get("alarms", {}).get("alarms", 0)),
            "hardware": "JK BMS CAN",
        }

    def cells(self, parts: Mapping[str, Mapping[str, Any]], voltage: float) -> list[float]:
        """Every cell voltage [V] from the per-cell frames (see "Cells" in the docstring).

        Raises:
            FrameError(kind="truncated"): a frame of the cells is missing, or (cell count
                from the frames) their sum falls short of the pack voltage by half a cell.

        """
        wanted = self.options["cells"]
        received = [n for n in range(1, CELL_FRAMES + 1) if f"cells{n}" in parts]
        frames = -(-wanted // CELLS_PER_FRAME) if wanted else max(received, default=0)
        missing = [n for n in range(1, frames + 1) if n not in received]
        if not frames or missing:
            raise FrameError(f"jkbms_can: no per-cell frame{'s' if missing else ''} "
                             f"{missing or ''} (firmware that broadcasts only the min/max cell "
                             "gives no state)", kind="truncated")  # fmt: skip
        cells = [round(v, 3) for n in range(1, frames + 1) for v in parts[f"cells{n}"]["cells"]]
        if wanted:
            return cells[:wanted]
        while cells and cells[-1] == 0.0:
            cells.pop()
        if not cells or voltage - sum(cells) > sum(cells) / len(cells) / 2:
            raise FrameError(f"jkbms_can: {len(cells)} cells sum to {sum(cells):.2f} V of "
                             f"{voltage:.1f} V: a cell frame is still due",
                             kind="truncated")  # fmt: skip
        return cells

    def alarms(self, value: int) -> dict[str, int]:
        """Alarm levels from ALM_INFO's 2-bit pairs (every alarm of the layout present)."""
        pairs = ALARM_PAIRS[self.options["protocol"]]
        out = dict.fromkeys(pairs.values(), 0)
        for pair, name in pairs.items():
            out[name] = max(out[name], LEVELS[(value >> 2 * pair) & 3])
        return out
