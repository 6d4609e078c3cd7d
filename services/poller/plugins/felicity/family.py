"""Felicity Solar LiFePO4 batteries over RS485, Modbus RTU function 03 at 9600 baud 8N1.

Requests are reads of holding registers ``addr 03 start(2) count(2) crc16`` (CRC-16/MODBUS, low
byte first); replies ``addr 03 n data[n] crc16``; an exception ``addr 83 code crc16``. A reply
does not say which registers it carries, so every reply is decoded with the request it answers,
by one register map per block (any read window decodes). No vendor document is public; the facts
come from these drivers (short names):

- DSB = mr-manuel/venus-os_dbus-serialbattery dbus-serialbattery/bms/felicity.py (PR #116, tested
  on an LPBF48250 with firmware 418; PR #484 on an 8S FLA pack): ``Felicity`` and its
  ``command_*`` reads.
- FSR = davidded/dbus-serialbattery etc/dbus-serialbattery/bms/felicity.py, ``FelicitySolarRS485``
  (``read_soc_data``: the bit meanings of 0x1302 and 0x1304 in its comments).
- ESS = a dbus-serialbattery fork's ``FelicityEss`` driver by "bc_engineering" (BATTERYTYPE
  "Felicity_ESS_modbus"; ``readBatInfo``, ``readCellData``, ``readLimits``,
  ``processBatteryProtection``), found by its text; its repository is not named in the index.
- CONV = DM6JM/FelicityConverter LPBAMon.ino (an LPBA48100-OL: 9600 baud, slave id 1 or 0x10 as
  Felicity's EDMS tool uses, reads 0xF80B, 0x132A x 0x14, 0x1302 x 10, 0x131C x 4).
- ESPH = tgfuellner/Esphome-FelicityESS felicity-speicher.yaml (two 48100LCG01 modules at ids 1
  and 2 on one bus, 100 ms between commands; voltage 0x1306, current 0x1307 S_WORD, SoC 0x130B).

Registers: 0x1302 status (bit 0 charge enabled, bit 1 charge requested, bit 2 discharge enabled;
FSR, DSB, ESS), 0x1304 faults (bits 2/3 cell voltage high/low, 4/5 charge/discharge current high,
6 BMS temperature high, 8/9 cell temperature high/low; FSR, DSB, ESS), 0x1306 voltage u16 10 mV,
0x1307 current s16 100 mA, 0x130A BMS temperature s16 °C, 0x130B SoC u16 % (all four drivers),
0x131C-0x131F charge/discharge voltage limit 10 mV and charge/discharge current limit 100 mA (FSR,
ESS, CONV), 0x132A-0x1339 cells u16 mV, 0x133A-0x133D cell temperatures s16 °C (FSR, ESS, CONV;
DSB reads 0x1339 x 5 and skips its first), 0xF804 x 5 serial number, 0xF80B firmware version
(DSB, FSR, CONV). Unpopulated cell and probe slots read 0x7FFF (DSB, PR #484: an 8S pack answers
16 cell slots, 8 of them 0x7FFF): such slots decode to None and are left out. The BMS temperature
is reported as the MOSFET temperature, as DSB, FSR and ESS do. The serial number is DSB's
``unique_identifier``: the five registers in decimal, joined. Balancing, cycles, SoH and capacity
are not in any public register map: capacity is the port option ``capacity`` (DSB needs
BATTERY_CAPACITY set for the same reason), remaining is capacity x SoC; balancing reads 0.

Where the drivers disagree:

- Current sign. DSB and FSR negate the register ("negative current for felicity means charging
  from the BMS perspective", FSR); ESS and ESPH take it as it is (ESS even unsigned). No raw
  capture with a known direction is public; DSB is the driver in use on real packs, so the
  default negates (+ = charge) and ``invert_current`` takes the register's own sign.
- The fault bits 8/9 (cell temperature): DSB reports them as charge temperature alarms, FSR and
  ESS as both charge and discharge: both are raised here (the BMS stops charge and discharge).
- Bit 1 of 0x1302 ("charge necessary"): FSR raises a low-voltage alarm on it, nobody else does;
  it is a request to charge, not a fault, and raises nothing here.
- ESS clears the FET states on fault bits 2/3; here ``charge_fet``/``discharge_fet`` are bits 0/2
  as DSB reads them, the faults being in ``alarms``.

Frames in tests/test_felicity.py are built from this description (no public capture of a raw
Felicity frame was found) and say so. No writes: no public driver has any.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bmsbank.errors import FrameError
from bmsbank.native.spec import Field, Layout, ModbusRtu
from bmsbank.services.poller.plugins.base import (
    Plugin,
    Query,
    alarms_from_bits,
    answered_read,
    modbus_read,
    parse_modbus_read,
)
from bmsbank.services.poller.plugins.felicity import INFO

FC_HOLDING = 0x03
#: polled part -> (first register, count), as CONV reads them
BLOCKS: dict[str, tuple[int, int]] = {
    "info": (0x1302, 10),
    "limits": (0x131C, 4),
    "cells": (0x132A, 0x14),
    "serial": (0xF804, 5),
    "version": (0xF80B, 1),
}
PART_AT = {start: part for part, (start, _) in BLOCKS.items()}
#: register blocks (first, last) a pack has: the battery data and the device information
DATA, DEVICE = (0x1300, 0x1341), (0xF800, 0xF80F)
CELLS, PROBES = 16, 4  # register slots
NONE = 0x7FFF  # an unpopulated cell or probe slot

#: every register of the data block (offset = register number)
REGISTERS: tuple[Field, ...] = (
    Field("status", 0x1302, "u16be"),
    Field("faults", 0x1304, "u16be"),
    Field("voltage", 0x1306, "u16be", scale=0.01),
    Field("current", 0x1307, "s16be", scale=-0.1),  # the register is negative while charging
    Field("bms_temperature", 0x130A, "s16be", scale=1.0, unknown=NONE),
    Field("soc", 0x130B, "u16be", scale=1.0),
    Field("charge_voltage_limit", 0x131C, "u16be", scale=0.01),
    Field("discharge_voltage_limit", 0x131D, "u16be", scale=0.01),
    Field("charge_current_limit", 0x131E, "u16be", scale=0.1),
    Field("discharge_current_limit", 0x131F, "u16be", scale=0.1),
    Field("cells", 0x132A, "u16be", scale=0.001, count=CELLS, unknown=NONE),
    Field("cell_temperatures", 0x133A, "s16be", scale=1.0, count=PROBES, unknown=NONE),
)
#: every register of the device block (offset = register number)
DEVICE_REGISTERS: tuple[Field, ...] = (
    Field("serial_words", 0xF804, "u16be", count=5),
    Field("version", 0xF80B, "u16be"),
)
CHARGE_ENABLED, DISCHARGE_ENABLED = 0, 2  # bits of 0x1302
#: 0x1304 bit -> alarm name
FAULT_BITS: dict[int, str] = {
    2: "high_cell_voltage",
    3: "low_cell_voltage",
    4: "high_charge_current",
    5: "high_discharge_current",
    6: "high_internal_temperature",  # the BMS board
    8: "high_temperature",  # the cells
    9: "low_temperature",
}
#: the cell temperature bits again, as the charge temperature alarms
CHARGE_FAULT_BITS: dict[int, str] = {8: "high_charge_temperature", 9: "low_charge_temperature"}
#: fields a state needs
NEEDED = ("status", "faults", "voltage", "current", "soc", "cells", "cell_temperatures")


def read_request(address: int, start: int, count: int) -> bytes:
    """The FC03 request for ``count`` holding registers from ``start``."""
    return modbus_read(address, FC_HOLDING, start, count)


def parse_request(request: bytes) -> tuple[int, int, int] | None:
    """(address, start, count) of an FC03 read request, or None."""
    read = parse_modbus_read(request, (FC_HOLDING,))
    return None if read is None else (read[0], read[2], read[3])


def serial_text(words: Sequence[int]) -> str:
    """The serial number as DSB shows it: the registers in decimal, joined."""
    return "".join(str(w) for w in words)


class Family(Plugin):
    """Felicity: status, cells and limits every cycle; serial number and firmware once."""

    info = INFO
    #: ESPH leaves 100 ms between two commands
    command_gap: ClassVar[float] = 0.1
    reply_timeout: ClassVar[float] = 0.5  # ESS waits 0.4 s
    framing = ModbusRtu(functions=(FC_HOLDING,), addresses=(1, 247))
    layouts: ClassVar[Mapping[str, Layout]] = {
        **{part: Layout(REGISTERS, 3, -2, "registers")
           for part in ("info", "limits", "cells", "registers")},
        **{part: Layout(DEVICE_REGISTERS, 3, -2, "registers")
           for part in ("serial", "version", "device")},
    }  # fmt: skip
    address_at = 0

    def queries(self, address: int) -> Sequence[Query]:
        """Status and cells (required), limits (optional), serial and version (once)."""
        return (
            Query("info", read_request(address, *BLOCKS["info"])),
            Query("cells", read_request(address, *BLOCKS["cells"])),
            Query("limits", read_request(address, *BLOCKS["limits"]), required=False),
            Query("serial", read_request(address, *BLOCKS["serial"]), every=0, required=False),
            Query("version", read_request(address, *BLOCKS["version"]), every=0, required=False),
        )

    def identify(self, payload: bytes, request: bytes | None) -> tuple[str, int]:
        """The part and first register of a reply, from the read request it answers.

        Raises:
            FrameError: no request or not an FC03 read ("unexpected"), a reply from another
                address than asked ("address"), a byte count that does not answer the read
                ("malformed").

        """
        _function, start, _count = answered_read(self.name, payload, request, (FC_HOLDING,))
        generic = "device" if start >= DEVICE[0] else "registers"
        return PART_AT.get(start, generic), start

    def refine(self, part: str, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Apply ``invert_current``, join the serial number, reject an SoC above 100 %.

        Raises:
            FrameError: an SoC above 100 % ("malformed").

        """
        if "current" in fields:
            current = round(fields["current"], 1)  # 0.1 A steps, no float tail
            current = -current if self.options["invert_current"] else current
            fields["current"] = current + 0.0  # never -0.0
        if fields.get("soc", 0.0) > 100.0:
            raise FrameError(f"{self.name}: SoC {fields['soc']:g} %", payload)
        if "serial_words" in fields:
            fields["serial"] = serial_text(fields["serial_words"])
        return fields

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Merge the fields of every part and map them to state fields.

        Raises:
            FrameError: a value the state needs was in no part ("truncated"); no populated cell
                slot, or an unpopulated one between populated ones ("malformed").

        """
        f: dict[str, Any] = {}
        for fields in parts.values():
            f.update(fields)
        missing = [name for name in NEEDED if name not in f]
        if missing:
            raise FrameError(f"{self.name}: no {', '.join(missing)} read", kind="truncated")
        cells = populated(f["cells"])
        capacity = self.options["capacity"]
        status = f["status"]
        alarms = alarms_from_bits(f["faults"], FAULT_BITS)
        alarms.update(alarms_from_bits(f["faults"], CHARGE_FAULT_BITS))
        return {
            "voltage": f["voltage"],
            "current": f["current"],
            "soc": f["soc"],
            "capacity": capacity,
            "remaining": capacity * f["soc"] / 100.0,
            "cells": cells,
            "balancing": [0] * len(cells),
            "temperatures": [t for t in f["cell_temperatures"] if t is not None],
            "mosfet_temperature": f.get("bms_temperature"),
            "charge_fet": bool(status >> CHARGE_ENABLED & 1),
            "discharge_fet": bool(status >> DISCHARGE_ENABLED & 1),
            "bms_ccl": f.get("charge_current_limit"),
            "bms_dcl": f.get("discharge_current_limit"),
            "bms_cvl": f.get("charge_voltage_limit"),
            "alarms": alarms,
            "hardware": self.hardware(f),
            "serial": f.get("serial") or "",
        }

    def hardware(self, f: Mapping[str, Any]) -> str:
        """``Felicity Solar``, its firmware version and serial number where read."""
        text = self.title
        if f.get("version") is not None:
            text += f" fw {f['version']}"
        if f.get("serial"):
            text += f" sn {f['serial']}"
        return text


def populated(slots: Sequence[float | None]) -> list[float]:
    """The cell voltages up to the last populated slot (unpopulated slots decode to None).

    Raises:
        FrameError(kind="malformed"): no populated slot, or an unpopulated one before the last
            populated one (a broken reading, not a shorter pack).

    """
    last = max((i for i, v in enumerate(slots) if v is not None), default=-1)
    if last < 0:
        raise FrameError("felicity: every cell slot reads 0x7FFF")
    cells = list(slots[: last + 1])
    if None in cells:
        raise FrameError(f"felicity: cell {cells.index(None) + 1} reads 0x7FFF, cell {last + 1} "
                         "does not")  # fmt: skip
    return cells  # type: ignore[return-value]
