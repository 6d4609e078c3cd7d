"""Daly smart BMS over Bluetooth LE: the Modbus-like "D2" protocol of the Daly app.

Requests are Modbus RTU frames to device address 0xD2, written to characteristic 0xFFF2 of
service 0xFFF0 without response: a read ``D2 03 start(2) count(2) crc16``, a write ``D2 06
register(2) value(2) crc16``. Replies arrive as notifications on 0xFFF1: ``D2 03 n data[n]
crc16`` (CRC-16/MODBUS, low byte first), a write acknowledged by echoing the request, an error
as ``D2 83 code crc16``. A reply longer than the link's MTU is split across notifications and
reassembled by the framer. Values are big-endian registers. Advertised names start with "DL-"
(the MAC follows) or "JHB-".

Sources (short names): AIO = patman15/aiobmsble aiobmsble/bms/daly_bms.py with tests/bms/
test_daly_bms.py and aiobmsble/test_data/daly_bms.json (advertisements); ESPH = syssi/
esphome-daly-bms components/daly_bms_ble/daly_bms_ble.cpp, switch/__init__.py, README.md,
docs/dalyModbusProtocol.xlsx (Daly's register sheet, "DOC" below), docs/protocol-register-map.md
and the captures in docs/pdus/ (daly_bms_24cells.txt, esphome-daly-bms#60;
daly_bms_blue_series_80_registers.txt, esphome-daly-bms#55); SNOOP = the same folder's
btsnoop_daly_balancer.log, an HCI log of the Daly app with a Daly balancer board (its requests
and notifications are quoted in tests/test_daly_ble.py); BAT = fl4p/batmon-ha
bmslib/models/daly2.py (notification reassembly, writes checked against an HCI snoop of the
Daly app, batmon-ha#356); ROC = roccotsi2/esp32-smart-bms-simulation README.md (the app's
requests, the status and string layouts, from a Sterling Power battery's Daly board).

- GATT service 0xFFF0, notify 0xFFF1, write 0xFFF2, write without response: AIO, ESPH, BAT.
  BAT notes that newer DL/JHB firmware refuses notifications on 0xFFF1 and serves service 0xFF00
  (0xFF01 notify, 0xFF02 write) instead: not covered (one service per family).
- Device address 0xD2, FC 03 reads, FC 06 single writes echoed back, CRC-16/MODBUS: DOC, AIO,
  ESPH, BAT, SNOOP (the app reads 0x00 x 62, 0x3E x 9, 0x80 x 41 and 0xA9 x 32, as this family
  does). One notification may carry several replies and a reply may come late, after the next
  request (SNOOP): replies are taken from a byte stream and checked against the read they
  answer. The reply does not say which registers it carries: it is decoded with that read, or,
  without one (``bmsbank decode`` of bare notifications), by its byte count when that is the
  count of one of the reads below (124/160, 18, 82, 64).
- Registers (DOC, AIO ``_FIELDS``, ESPH ``decode_status_data_``): 0x00-0x1F cells mV, 0x20-0x27
  temperatures (value - 40 °C), 0x28 voltage 0.1 V, 0x29 current 0.1 A with offset 30000, 0x2A
  SoC 0.1 %, 0x2B/0x2C max/min cell mV, 0x2D/0x2E max/min temperature, 0x2F state (0 idle, 1
  charging, 2 discharging), 0x30 remaining 0.1 Ah, 0x31 cells, 0x32 sensors, 0x33 cycles, 0x34
  balancer (0 off), 0x35/0x36 charge/discharge FET, 0x37 average cell mV, 0x38 delta mV, 0x39
  power W (unsigned), 0x3A-0x3D fault bits. Boards that answer 80 registers (ESPH's option,
  the #55 captures) add 0x3E/0x3F balancing bits (cells 1-16, 17-32; no capture shows one set:
  bit 0 = cell 1 is assumed), 0x40 balance current (offset 30000, mA), 0x42 MOSFET and 0x43
  board temperature (value - 40); AIO reads 0x3E x 9 for the MOSFET temperature and takes
  0x0000/0xFFFF for "no sensor". Settings (DOC, ESPH ``decode_settings_data_``): 0x80 rated
  capacity 0.1 Ah, 0x89 cell type, 0xA5/0xA6 charge/discharge FET switch; 0xA9 x 32 strings:
  software 0xA9-0xB0, hardware 0xB1-0xB8 and a 32-byte "machine version" from 0xB9 (DOC, AIO,
  ROC); some firmware leaves 0xB1 empty and names the board at 0xB9 (ESPH reads 32 + 32 bytes).
- Fault bits (DOC "fault status 1-4", ESPH ``ERRORS``): the sheet's "Byte 0" is a register's
  low byte, as ESPH reads it; esphome-daly-bms#20 (a probe put in ice water raised bits 42 and
  43 of the 64-bit value 0x3A..0x3D, the temperature-difference pair) agrees with that order.
  Level-1 bits are warnings, level-2 bits and hardware faults alarms; the MOSFET over-temperature
  bits (the board's only MOSFET temperature signal, behind its 0xA8 protection setting) are
  alarms, as in the UART family. Not mapped: SoC too high, temperature difference, "vehicle
  communication failed" (outside the pack) and the reserved bits.

Polling, as AIO: the 62 status registers every cycle, the MOSFET block 0x3E x 9 (optional, port
option ``mos_temperature``), the settings (rated capacity) and the strings once.

Current sign. AIO, ESPH and BAT all decode ``(raw - 30000) / 10`` as + = charge; DOC's sheet
says "discharge current = 0.1 * (register value - 30000)". The captures side with the drivers:
all nine #55 frames report the board's own state 2 (discharging) with raw 29969-29975, and the
#60 frames state 0 (idle) with raw 30000, so raw < 30000 is discharge. ``invert_current`` flips
the sign (and the over-current bits) for firmware that follows the sheet.

Writes (``controls``): charge -> 0xA5, discharge -> 0xA6, balance -> 0xCF, value 1 on / 0 off,
FC 06, the BMS echoes the request (ESPH switch registers, BAT ``SWITCH_REGISTERS`` from the
app's snoop, DOC "the response frame has the same format as the request frame"; SNOOP shows the
app's 0xCF writes echoed and 0xCF read back changed); no password is written (BAT: the app only
reads it). 0xA7 sets a given SoC, which the control channel's
``reset_soc`` cannot express: not offered. Not covered: the "p81" protocol of ESS-DL and "100
balance" boards (requests to 0x81, replies from 0x51: ESPH docs/protocol-register-map.md), which
some boards advertising "DL-" speak on the same service (patman15/BMS_BLE-HA#806): their 0x51
frames are skipped as noise here, so such a pack reads as silent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bmsbank.errors import FrameError
from bmsbank.native.spec import Field, Layout, ModbusRtu
from bmsbank.services.poller.plugins.base import (
    Link,
    LinkStats,
    Plugin,
    Query,
    answered_read,
    bits,
    graded_alarms,
    modbus_frame,
    modbus_read,
    require,
    run_query,
    swap_current_alarms,
)
from bmsbank.services.poller.plugins.daly_ble import INFO

DEVICE = 0xD2
FC_READ, FC_WRITE = 0x03, 0x06
MAX_CELLS, MAX_SENSORS = 32, 8
MAX_CURRENT = 1000.0  # A; a register left at 0 reads -3000 A (the UART family's bound)
TEMPERATURE_OFFSET = 40.0  # °C subtracted from every temperature register
#: polled part -> (first register, count)
BLOCKS: dict[str, tuple[int, int]] = {
    "status": (0x0000, 62),
    "mos": (0x003E, 9),
    "settings": (0x0080, 41),
    "version": (0x00A9, 32),
}
PART_AT = {start: part for part, (start, _) in BLOCKS.items()}
#: a reply's byte count -> its part, for replies decoded without their request: the reads above
#: and the 80-register status read (ESPH)
PART_OF_SIZE = {2 * count: part for part, (_, count) in BLOCKS.items()} | {160: "status"}
#: the registers a board answers (this family's choice of extent: the map below)
REGISTER_SPAN = (0x0000, 0x00CF)
#: control action -> the register its FC 06 write sets
SWITCHES = {"charge": 0x00A5, "discharge": 0x00A6, "balance": 0x00CF}


def celsius(name: str, register: int, count: int = 1, unknown: int | None = None) -> Field:
    """A temperature register: value - 40 °C (``unknown``: the raw value of "no sensor")."""
    return Field(name, register, "u16be", scale=1.0, bias=-TEMPERATURE_OFFSET, count=count,
                 unknown=unknown)  # fmt: skip


REGISTERS: tuple[Field, ...] = (
    Field("cells", 0x00, "u16be", scale=0.001, count=MAX_CELLS),
    celsius("temperatures", 0x20, MAX_SENSORS),
    Field("voltage", 0x28, "u16be", scale=0.1),
    Field("current", 0x29, "u16be", scale=0.1, bias=-3000.0),  # (raw - 30000) / 10, + = charge
    Field("soc", 0x2A, "u16be", scale=0.1),
    Field("max_cell", 0x2B, "u16be", scale=0.001),
    Field("min_cell", 0x2C, "u16be", scale=0.001),
    celsius("max_temperature", 0x2D),
    celsius("min_temperature", 0x2E),
    Field("mode", 0x2F, "u16be"),  # 0 idle, 1 charging, 2 discharging
    Field("remaining", 0x30, "u16be", scale=0.1),
    Field("cell_count", 0x31, "u16be"),
    Field("sensor_count", 0x32, "u16be"),
    Field("cycles", 0x33, "u16be"),
    Field("balancer", 0x34, "u16be"),
    Field("charge_fet", 0x35, "u16be"),
    Field("discharge_fet", 0x36, "u16be"),
    Field("fault_high", 0x3A, "u32be"),  # registers 0x3A, 0x3B
    Field("fault_low", 0x3C, "u32be"),  # registers 0x3C, 0x3D
    Field("balance_bits", 0x3E, "u32ws"),  # 0x3E cells 1-16 (low word), 0x3F cells 17-32
    Field("balance_current", 0x40, "u16be", scale=0.001, bias=-30.0),
    celsius("mosfet_temperature", 0x42, unknown=0xFFFF),
    celsius("board_temperature", 0x43, unknown=0xFFFF),
    Field("capacity", 0x80, "u16be", scale=0.1),
    Field("cell_type", 0x89, "u16be"),  # 0 LiFePO4, 1 ternary, 2 LTO
    Field("charge_switch", 0xA5, "u16be"),
    Field("discharge_switch", 0xA6, "u16be"),
    Field("software", 0xA9, "str", count=16),
    Field("hardware_version", 0xB1, "str", count=16),
    Field("machine_code", 0xB9, "str", count=32),
    Field("balancer_switch", 0xCF, "u16be"),
)
#: the write echo: ``D2 06 register value crc``
WRITE_ECHO: tuple[Field, ...] = (Field("register", 0, "u16be"), Field("value", 2, "u16be"))

#: fault bit (of the 64-bit value of registers 0x3A..0x3D, 0x3D's low byte bit 0 = bit 0) ->
#: alarm, level-1 bits: reported as warnings
WARNING_BITS: dict[int, str] = {
    48: "high_cell_voltage", 50: "low_cell_voltage", 52: "high_voltage", 54: "low_voltage",
    56: "high_charge_temperature", 58: "low_charge_temperature", 60: "high_temperature",
    62: "low_temperature", 32: "high_charge_current", 34: "high_discharge_current",
    38: "low_soc", 40: "cell_imbalance",
}  # fmt: skip
#: level-2 bits and hardware faults, reported as alarms
ALARM_BITS: dict[int, str] = {
    **{bit + 1: name for bit, name in WARNING_BITS.items()},
    16: "high_internal_temperature", 17: "high_internal_temperature",  # charge/discharge MOS
    # MOS sensor, stuck (adhesion) and circuit faults; AFE, cell sampling offline, probe,
    # EEPROM, RTC, precharge, internal communication module
    **dict.fromkeys((*range(18, 30), 31), "internal_failure"),
}  # fmt: skip
#: decoded value -> decimals of its register's step
ROUNDED = {"voltage": 1, "soc": 1, "remaining": 1, "capacity": 1, "balance_current": 3}
#: what decides a state (the status block)
NEEDED = ("cells", "temperatures", "voltage", "current", "soc", "remaining", "cell_count",
          "sensor_count", "cycles", "charge_fet", "discharge_fet", "fault_high",
          "fault_low")  # fmt: skip


def read_request(start: int, count: int) -> bytes:
    """The FC 03 request for ``count`` registers from ``start``."""
    return modbus_read(DEVICE, FC_READ, start, count)


def write_request(register: int, value: int) -> bytes:
    """The FC 06 request setting ``register`` to ``value``."""
    return modbus_frame(bytes((DEVICE, FC_WRITE)) + register.to_bytes(2, "big")
                        + value.to_bytes(2, "big"))  # fmt: skip


def text(*parts: str) -> str:
    """The non-empty ``parts`` joined by spaces."""
    return " ".join(p for p in parts if p)


class Family(Plugin):
    """Daly smart BMS, one board per Bluetooth device."""

    info = INFO
    #: ESPH waits 3 s for a reply, BAT 8 s; a whole status reply is ~9 notifications
    reply_timeout: ClassVar[float] = 2.0
    framing = ModbusRtu(functions=(FC_READ, FC_WRITE), addresses=(DEVICE, DEVICE))
    layouts: ClassVar[Mapping[str, Layout]] = {
        **{part: Layout(REGISTERS, 3, -2, "registers") for part in (*BLOCKS, "registers")},
        "write": Layout(WRITE_ECHO, 2, -2),
    }
    address_at = 0

    def queries(self, address: int) -> Sequence[Query]:
        """Status every cycle, the MOSFET block (optional), settings and strings once.

        Raises:
            ValueError: ``address`` is not 0xD2.

        """
        if address not in self.addresses:
            raise ValueError(f"daly_ble: device address {address}, not {DEVICE} (0xD2)")
        out = [Query("status", read_request(*BLOCKS["status"]))]
        if self.options["mos_temperature"]:
            out.append(Query("mos", read_request(*BLOCKS["mos"]), required=False))
        out += [
            Query("settings", read_request(*BLOCKS["settings"]), every=0, required=False),
            Query("version", read_request(*BLOCKS["version"]), every=0, required=False),
        ]
        return out

    def identify(self, payload: bytes, request: bytes | None) -> tuple[str, int]:
        """The part and first register of a reply: from its read, else from its byte count.

        Raises:
            FrameError: a write echo that is not the write sent, a reply that does not answer
                its read ("unexpected", "address", "malformed"), or a reply of no known size
                without its read ("unexpected").

        """
        if payload[1] == FC_WRITE:
            if request is not None and bytes(payload) != request:
                raise FrameError(f"daly_ble: write echo {bytes(payload).hex(' ')} does not "
                                 f"repeat {request.hex(' ')}", payload,
                                 kind="unexpected")  # fmt: skip
            return "write", 0
        if request is not None:
            _function, start, _count = answered_read(self.name, payload, request, (FC_READ,))
            return PART_AT.get(start, "registers"), start
        part = PART_OF_SIZE.get(payload[2])
        if part is None:
            raise FrameError(f"daly_ble: a {payload[2]}-byte reply answers none of the reads "
                             "this family sends; give its request", payload,
                             kind="unexpected")  # fmt: skip
        return part, BLOCKS[part][0]

    def refine(self, part: str, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Round to the registers' steps, sign the current, drop "no sensor" temperatures.

        Raises:
            FrameError: cells not 1-32, sensors above 8, SoC above 100 % or |current| of
                1000 A or more ("malformed").

        """
        for name, digits in ROUNDED.items():  # the registers' steps, without float tails
            if name in fields:
                fields[name] = round(fields[name], digits)
        if "cells" in fields:
            fields["cells"] = [round(v, 3) for v in fields["cells"]]
        if "current" in fields:
            current = round(fields["current"], 1) + 0.0  # 0.1 A steps, never -0.0
            fields["current"] = -current + 0.0 if self.options["invert_current"] else current
            if abs(current) >= MAX_CURRENT:
                raise FrameError(f"daly_ble: current {current:.1f} A", payload)
        if fields.get("soc", 0.0) > 100.0:
            raise FrameError(f"daly_ble: SoC {fields['soc']:.1f} %", payload)
        if "cell_count" in fields and not 1 <= fields["cell_count"] <= MAX_CELLS:
            raise FrameError(f"daly_ble: {fields['cell_count']} cells", payload)
        if fields.get("sensor_count", 0) > MAX_SENSORS:
            raise FrameError(f"daly_ble: {fields['sensor_count']} temperature sensors", payload)
        for name in ("mosfet_temperature", "board_temperature"):
            if fields.get(name) == -TEMPERATURE_OFFSET:
                fields[name] = None  # raw 0: no sensor (AIO)
        return fields

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Map one cycle's parts to state fields, cells and sensors cut to the board's counts.

        Raises:
            FrameError: no status block, or one without the values a state needs
                ("truncated").

        """
        require(parts, "status")
        f: dict[str, Any] = {}
        for part in ("version", "settings", "mos", "status"):  # the status block wins
            f.update(parts.get(part, {}))
        missing = [name for name in NEEDED if name not in f]
        if missing:
            raise FrameError(f"daly_ble: no {', '.join(missing)} read", kind="truncated")
        n, sensors = f["cell_count"], f["sensor_count"]
        return {
            "voltage": f["voltage"],
            "current": f["current"],
            "soc": f["soc"],
            "capacity": self.capacity(f),
            "remaining": f["remaining"],
            "cycles": f["cycles"],
            "cells": list(f["cells"][:n]),
            "balancing": bits(f.get("balance_bits", 0) if f.get("balancer", 1) else 0, n),
            "temperatures": list(f["temperatures"][:sensors]),
            "mosfet_temperature": f.get("mosfet_temperature"),
            "charge_fet": bool(f["charge_fet"]),
            "discharge_fet": bool(f["discharge_fet"]),
            "alarms": self.alarms(f["fault_high"] << 32 | f["fault_low"]),
            "hardware": self.hardware(f),
        }

    @staticmethod
    def hardware(f: Mapping[str, Any]) -> str:
        """``Daly <hardware> <machine code> sw <software>`` with the strings the board sent."""
        software = f"sw {f['software']}" if f.get("software") else ""
        return text("Daly", f.get("hardware_version", ""), f.get("machine_code", ""), software)

    @staticmethod
    def capacity(f: Mapping[str, Any]) -> float:
        """Rated capacity [Ah] from register 0x80; before or without it remaining / SoC."""
        rated = f.get("capacity") or 0.0
        if rated > 0:
            return float(rated)
        remaining, soc = f["remaining"], f["soc"]
        return round(remaining * 100.0 / soc, 1) if soc >= 1.0 else remaining

    def alarms(self, faults: int) -> dict[str, int]:
        """Alarm levels from the 64 fault bits (over-current bits swapped when inverted)."""
        out = graded_alarms(faults, ALARM_BITS, WARNING_BITS)
        return swap_current_alarms(out) if self.options["invert_current"] else out

    # -- writes -----------------------------------------------------------------------------
    def control(self, link: Link, address: int, action: str, value: Any,
                parts: Mapping[str, Mapping[str, Any]]) -> None:  # fmt: skip
        """Switch the charge or discharge FET or the balancer; the BMS must echo the write.

        Raises:
            ControlError: an unsupported action.
            FrameError: the echo is not the write sent ("unexpected").
            LinkTimeout, TransportError: from the link.

        """
        register = SWITCHES.get(action)
        if register is None:
            super().control(link, address, action, value, parts)
            return
        # identify() holds the reply to the request: only the exact echo confirms the write
        query = Query("write", write_request(register, 1 if value else 0))
        run_query(self, link, query, address, {}, LinkStats())
