"""Daly smart BMS on the UART/RS485 "A5" protocol (PC tool "BMS Monitor"), 9600 baud 8N1.

Every frame, both ways, is 13 bytes: ``A5 <addr> <cmd> 08 <data[8]> <sum8 of bytes 0-11>``, one
command per request, values big endian. Not covered: Daly CAN, the Modbus-like ``D2 03`` protocol
of newer BLE/H-series boards (patman15/aiobmsble aiobmsble/bms/daly_bms.py) and Sinowealth-based
3-4S boards speaking ``DD A5`` (dreadnought/python-daly-bms README "Compatibility").

Sources (short names): DOC1.2 = jblance/mpp-solar docs/protocols/DALY-UART_485_Communications_
Protocol_V1.2.pdf; DOC1.0 = same folder, DALY-Daly_RS485_UART_Protocol.pdf; DSB = mr-manuel/
venus-os_dbus-serialbattery dbus-serialbattery/bms/daly.py; PDB = dreadnought/python-daly-bms
dalybms/daly_bms.py; ESPH = esphome/esphome esphome/components/daly_bms/daly_bms.cpp; MPP =
jblance/mpp-solar mppsolar/protocols/daly.py; D2M = softwarecrash/Daly2MQTT src/daly.cpp; AIR =
ai-republic/bms-to-inverter bms-daly-common/.../DalyMessageHandler.java and bms-daly-rs485/.../
DalyBmsRS485Processor.java; MAL = maland16/daly-bms-uart daly-bms-uart.cpp.

- Framing, sum8, 9600 8N1, data length 08 (DSB rejects any other): DOC1.2 §1.1/§2.3, DSB
  ``generate_command``/``read_sentence``, ESPH. Request data bytes are reserved: zeros (DOC1.2,
  ESPH, PDB; DSB fills 0xAA "to sync better").
- Addresses: a request carries 0x3F + board number (board 1 = 0x40, the PC tool's "Board No"), the
  reply the board number: DSB ``generate_command`` ("Board No 1 = 0x40; Board No 2 = 0x41") and
  ``read_sentence`` (``63 + id``), AIR (``getBmsId() + 0x3F``, reply byte 1 == id), the log in
  esphome/esphome#12445 (TX ``A5 41 90 ..`` -> RX ``A5 02 90 ..``). Old UART firmware answering
  only host 0x80 (DOC1.0 §2.2, ESPH default) is not addressable this way.
- 0x90 voltage 0.1 V, acquired voltage (always 0), current 0.1 A offset 30000, SoC 0.1 %; 0x93
  state (0 idle, 1 charging, 2 discharging), charge/discharge FET, a heartbeat ("BMS life", wraps:
  not cycles), remaining u32 mAh; 0x94 cells, sensors, charger, load, DIO, cycles u16 (DOC1.0;
  "reserved" in DOC1.2; DSB, PDB, MPP read it); 0x95 frame number (1 first in every capture) + 3
  cells mV; 0x96 frame number + 7 x (°C + 40); 0x97 balancing bits, data byte 0 bit 0 = cell 1
  (DOC1.2, D2M; DSB's and PDB's orders contradict the doc); 0x98 failure bits, byte 7 a fault
  code: DOC1.2, DOC1.0, ESPH, DSB, PDB, D2M. 0x91/0x92 (the BMS's own min/max) decode for the
  offline tool but are not polled. 0x50 rated capacity u32 mAh + nominal cell u32 mV: DSB
  ``read_capacity``, AIR ``getRatedCapacityAndCellVoltage``; no raw 0x50 capture is public.
- Bytes the doc leaves undefined repeat the previous reply's (0x91 6-7, 0x92 4-7, 0x94 7, 0x95/0x96
  7), and slots past the cell/sensor count may carry non-zero junk (two captures in
  tests/test_daly.py): only the counts of 0x94 are used; 0x94 is read every cycle so the split of
  0x95/0x96 always follows the board answering now (it costs one frame).
- 0x95 sends ceil(cells / 3) frames on most RS485 firmware but all 16 on some (the mpp-solar#83
  capture; PDB: "via Bluetooth the BMS returns all frames"): option ``cell_frames``. For 1 sensor
  0x96 sends 2 frames in three captures (set K, two in mpp-solar#83), 1 in another (the 8S demo
  payload): ceil(sensors / 7) are read, a spare frame is drained (counted as noise) after
  ``command_gap`` (DSB sleeps 20 ms before every request, "else the Daly is not ready").

Current sign. Everyone but DSB decodes ``(raw - 30000) / 10`` (ESPH, MPP, PDB, D2M, AIR); DSB
``(raw - 30000) / -10`` (+ = charge, with INVERT_CURRENT_MEASUREMENT). Where the direction is
known, DSB is right: the 16S/360 Ah log in tests/test_daly.py (five cycles, 0x93 state 2 =
discharging, raw 30187-30526, pack sagging to 51.5 V at 80 % SoC) and the mpp-solar#83 cycle
(state 2, raw 30021) are discharges with raw > 30000; python-daly-bms's README example, 57.7 V
(4.12 V/cell) at 99.1 %, a charge, reads -11.1 A with its formula, i.e. raw < 30000. Users of
other units report the opposite (Louisvdw/dbus-serialbattery#36, #65, #1075), so polarity is
firmware-dependent: the default is DSB's, ``invert_current`` flips it and, as DSB does
(mr-manuel/venus-os_dbus-serialbattery#378), the BMS's own over-current bits.

Writes (``controls``): charge -> 0xDA, discharge -> 0xD9, data byte 0 = 1 on / 0 off; the BMS
answers with the same command and byte 0 = the new state (MAL, D2M, PDB ``set_*_mosfet`` and its
comment ``0101000002006cbe``; DSB compares byte 0). No public capture shows a whole ack frame: the
documented shape is accepted. :meth:`Family.set_soc` (0x21, SoC x 10 in data bytes 6-7, reply byte
0 = 1; DSB ``write_soc_and_datetime``, PDB ``set_soc``, D2M ``setSOC``) sets a given SoC; the
control channel's ``reset_soc`` takes none, so it is not offered there. Bytes 0-5 are zeros as in
PDB (DSB writes the date there, D2M copies 0x61's bytes 1-5: the layout is not agreed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bmsbank.errors import ControlError, FrameError
from bmsbank.native.frames import sum8
from bmsbank.native.spec import Binary, Check, Field, Layout
from bmsbank.services.poller.plugins.base import (
    Collect,
    Link,
    LinkStats,
    Plugin,
    Query,
    bits,
    graded_alarms,
    require,
    run_query,
    swap_current_alarms,
)
from bmsbank.services.poller.plugins.daly import INFO

START, DATA_LENGTH, FRAME_LENGTH, DATA_AT = 0xA5, 8, 13, 4
HOST = 0x3F  # request address byte = HOST + board number
MAX_CELLS, MAX_SENSORS = 48, 21  # DOC1.2: 16 frames x 3 cells, 3 frames x 7 sensors
MAX_CURRENT = 1000.0  # A; DSB rejects readings beyond (a raw 0 reads 3000 A)
RATED, SOC, FETS, STATUS, CELLS, TEMPERATURES, BALANCE, FAILURE = (
    0x50, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98,
)  # fmt: skip
SET_SOC, DISCHARGE_MOS, CHARGE_MOS = 0x21, 0xD9, 0xDA
#: command byte -> part name
PARTS: dict[int, str] = {
    RATED: "rated", SOC: "soc", 0x91: "cell_range", 0x92: "temperature_range", FETS: "fets",
    STATUS: "status", CELLS: "cells", TEMPERATURES: "temperatures", BALANCE: "balance",
    FAILURE: "failure", SET_SOC: "set_soc", DISCHARGE_MOS: "discharge_mos",
    CHARGE_MOS: "charge_mos",
}  # fmt: skip
WRITES = {"charge": CHARGE_MOS, "discharge": DISCHARGE_MOS}

FRAMING = Binary(bytes((START,)), fixed_length=FRAME_LENGTH, check=Check("sum8", end=-1, at=-1))


def celsius(name: str, offset: int, count: int = 1) -> Field:
    """A temperature sent as °C + 40 in one byte."""
    return Field(name, offset, "u8", scale=1.0, bias=-40.0, count=count)


#: data-byte offsets of each reply (the layouts start at frame byte 4)
FIELDS: dict[str, tuple[Field, ...]] = {
    "rated": (Field("capacity", 0, "u32be", scale=0.001), Field("cell_voltage", 4, "u32be", 0.001)),
    "soc": (
        Field("voltage", 0, "u16be", scale=0.1),
        Field("acquired_voltage", 2, "u16be", scale=0.1),
        Field("current", 4, "u16be", scale=-0.1, bias=3000.0),  # (30000 - raw) / 10, + = charge
        Field("soc", 6, "u16be", scale=0.1),
    ),
    "cell_range": (
        Field("max_cell", 0, "u16be", 0.001), Field("max_cell_no", 2, "u8"),
        Field("min_cell", 3, "u16be", 0.001), Field("min_cell_no", 5, "u8"),
    ),
    "temperature_range": (
        celsius("max_temperature", 0), Field("max_sensor_no", 1, "u8"),
        celsius("min_temperature", 2), Field("min_sensor_no", 3, "u8"),
    ),
    "fets": (
        Field("mode", 0, "u8"),  # 0 idle, 1 charging, 2 discharging
        Field("charge_fet", 1, "u8"),
        Field("discharge_fet", 2, "u8"),
        Field("life", 3, "u8"),  # heartbeat 0-255
        Field("remaining", 4, "u32be", scale=0.001),  # mAh -> Ah
    ),
    "status": (
        Field("cell_count", 0, "u8"), Field("sensor_count", 1, "u8"), Field("charger", 2, "u8"),
        Field("load", 3, "u8"), Field("dio", 4, "u8"), Field("cycles", 5, "u16be"),
    ),
    "cells": (Field("frame", 0, "u8"), Field("cells", 1, "u16be", scale=0.001, count=3)),
    "temperatures": (Field("frame", 0, "u8"), celsius("temperatures", 1, count=7)),
    "balance": (Field("balance", 0, "u8", count=6),),  # byte 0 bit 0 = cell 1
    "failure": (Field("failure", 0, "u8", count=7), Field("fault_code", 7, "u8")),
    "set_soc": (Field("state", 0, "u8"),),  # 1 = done
    "discharge_mos": (Field("state", 0, "u8"),),  # the FET's new state
    "charge_mos": (Field("state", 0, "u8"),),
}  # fmt: skip

#: 0x98 bit (data byte x 8 + bit) -> alarm: the "level 1" bits, reported as warnings
WARNING_BITS: dict[int, str] = {
    0: "high_cell_voltage", 2: "low_cell_voltage", 4: "high_voltage", 6: "low_voltage",
    8: "high_charge_temperature", 10: "low_charge_temperature", 12: "high_temperature",
    14: "low_temperature", 16: "high_charge_current", 18: "high_discharge_current",
    22: "low_soc", 24: "cell_imbalance",
}  # fmt: skip
#: the "level 2" (protection) bits and the hardware faults, reported as alarms. Not mapped: SoC
#: high (20/21), temperature difference (26/27), external communication failure (46), the
#: reserved bits and the fault code byte.
ALARM_BITS: dict[int, str] = {
    **{bit + 1: name for bit, name in WARNING_BITS.items()},
    32: "high_internal_temperature", 33: "high_internal_temperature",  # charge/discharge MOS
    **dict.fromkeys(range(34, 40), "internal_failure"),  # MOS sensor error, MOS stuck or open
    # AFE, cell sampling, cell NTC, EEPROM, RTC, precharge, internal communication, current and
    # pack-voltage sensing
    **dict.fromkeys((40, 41, 42, 43, 44, 45, 47, 48, 49), "internal_failure"),
    50: "short_circuit",
    51: "low_voltage",  # charging refused: voltage too low
}  # fmt: skip


def pack_frame(address: int, command: int, data: bytes = b"") -> bytes:
    """One frame: ``A5 address command 08 data (zero-padded to 8) sum8``."""
    if len(data) > DATA_LENGTH:
        raise ValueError(f"daly: {len(data)} data bytes, at most {DATA_LENGTH}")
    head = bytes((START, address, command, DATA_LENGTH)) + bytes(data).ljust(DATA_LENGTH, b"\0")
    return head + bytes((sum8(head),))


def request(board: int, command: int, data: bytes = b"") -> bytes:
    """The request of ``command`` for ``board`` (address byte 0x3F + board)."""
    return pack_frame(HOST + board, command, data)


class Family(Plugin):
    """Daly smart BMS boards 1-16 on one UART/RS485 bus."""

    info = INFO
    #: silence before each request: DSB waits 20 ms; 50 ms also lets the spare 0x96 frame arrive
    #: so that it is drained before the next request
    command_gap: ClassVar[float] = 0.05
    reply_timeout: ClassVar[float] = 0.5  # DSB ``read_sentence``
    framing = FRAMING
    layouts: ClassVar[Mapping[str, Layout]] = {
        part: Layout(fields, DATA_AT, -1) for part, fields in FIELDS.items()
    }
    key_at = 2  # the command byte
    keys = PARTS
    address_at = 1  # the board number

    def queries(self, address: int) -> Sequence[Query]:
        """Rated capacity once; 0x90, 0x93, 0x94, cells, temperatures; balancing, failures.

        0x97 and 0x98 are optional: DSB notes "no reply" to them from some firmware, and a pack
        is worth showing without them (its alarms then read as "not supported").

        Raises:
            ValueError: ``address`` is not a board number 1-16.

        """
        if address not in self.addresses:
            raise ValueError(f"daly: board {address} outside 1-16")
        frames = self.options["cell_frames"]
        counted = Collect("frame", 3, ("status", "cell_count"))
        cells = Collect("frame", frames=frames) if frames else counted
        temperatures = Collect("frame", 7, ("status", "sensor_count"))
        return (
            Query("rated", request(address, RATED), every=0, required=False),
            Query("soc", request(address, SOC)),
            Query("fets", request(address, FETS)),
            Query("status", request(address, STATUS)),
            Query("cells", request(address, CELLS), collect=cells),
            Query("temperatures", request(address, TEMPERATURES), collect=temperatures),
            Query("balance", request(address, BALANCE), required=False),
            Query("failure", request(address, FAILURE), required=False),
        )

    def identify(self, payload: bytes, request: bytes | None) -> tuple[str, int]:
        """The part of the command byte; the data length must be 8 (as DSB checks).

        Raises:
            FrameError: another data length ("malformed"), an unknown command ("unexpected").

        """
        if len(payload) != FRAME_LENGTH or payload[3] != DATA_LENGTH:
            raise FrameError(f"daly: data length {payload[3:4].hex()}, not 08", payload)
        return super().identify(payload, request)

    def refine(self, part: str, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Apply ``invert_current``; reject impossible SoC, current and counts.

        Raises:
            FrameError: SoC > 100 %, |current| >= 1000 A, cells not 1-48 or sensors > 21.

        """
        if part == "soc":
            fields["current"] = round(fields["current"], 1)  # 0.1 A steps, no float tail
            if self.options["invert_current"]:
                fields["current"] = -fields["current"]
            if fields["soc"] > 100.0 or abs(fields["current"]) >= MAX_CURRENT:
                raise FrameError(f"daly: implausible SoC {fields['soc']:.1f} % or current "
                                 f"{fields['current']:.1f} A", payload)  # fmt: skip
        if part == "status" and not (
            1 <= fields["cell_count"] <= MAX_CELLS and fields["sensor_count"] <= MAX_SENSORS
        ):
            raise FrameError(f"daly: {fields['cell_count']} cells, {fields['sensor_count']} "
                             "sensors", payload)  # fmt: skip
        return fields

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Map one cycle's parts to state fields, cells and sensors cut to 0x94's counts.

        Raises:
            FrameError: a required part is missing, or fewer cells or sensors than 0x94 counts.

        """
        require(parts, "soc", "fets", "status", "cells", "temperatures")
        soc, fets, status = parts["soc"], parts["fets"], parts["status"]
        n, sensors = status["cell_count"], status["sensor_count"]
        cells = list(parts["cells"]["cells"][:n])
        temperatures = list(parts["temperatures"]["temperatures"][:sensors])
        if len(cells) < n or len(temperatures) < sensors:
            raise FrameError(f"daly: {len(cells)} of {n} cells, {len(temperatures)} of "
                             f"{sensors} temperatures", kind="truncated")  # fmt: skip
        balance = bytes(parts.get("balance", {}).get("balance", ()))
        failure = parts.get("failure")
        return {
            "voltage": soc["voltage"],
            "current": soc["current"],
            "soc": soc["soc"],
            "capacity": self.capacity(parts),
            "remaining": fets["remaining"],
            "cycles": status["cycles"],
            "cells": cells,
            "balancing": bits(int.from_bytes(balance, "little"), n),
            "temperatures": temperatures,
            "mosfet_temperature": None,
            "charge_fet": bool(fets["charge_fet"]),
            "discharge_fet": bool(fets["discharge_fet"]),
            "alarms": self.alarms(bytes(failure["failure"])) if failure else {},
        }

    @staticmethod
    def capacity(parts: Mapping[str, Mapping[str, Any]]) -> float:
        """Rated capacity [Ah] from 0x50; before or without it remaining / SoC.

        Daly counts SoC as remaining / rated (the 360 Ah log: 296.64 Ah at 82.4 %).
        """
        rated = parts.get("rated", {}).get("capacity") or 0.0
        if rated > 0:
            return float(rated)
        remaining, soc = parts["fets"]["remaining"], parts["soc"]["soc"]
        return remaining * 100.0 / soc if soc >= 1.0 else remaining

    def alarms(self, failure: bytes) -> dict[str, int]:
        """Alarm levels from the 7 bytes of 0x98 (swapped over-current bits when inverted)."""
        out = graded_alarms(int.from_bytes(failure, "little"), ALARM_BITS, WARNING_BITS)
        return swap_current_alarms(out) if self.options["invert_current"] else out

    # -- writes -----------------------------------------------------------------------------
    def control(self, link: Link, address: int, action: str, value: Any,
                parts: Mapping[str, Mapping[str, Any]]) -> None:  # fmt: skip
        """Switch the charge (0xDA) or discharge (0xD9) FET; the reply must echo the state.

        Raises:
            ControlError: an unsupported action, or the board reports the other state.

        """
        command = WRITES.get(action)
        if command is None:
            super().control(link, address, action, value, parts)
            return
        wanted = 1 if value else 0
        state = self._write(link, address, command, bytes((wanted,)))
        if state != wanted:
            raise ControlError(f"daly: board {address} kept the {action} FET "
                               f"{'on' if state else 'off'}")  # fmt: skip

    def set_soc(self, link: Link, address: int, soc_percent: float) -> None:
        """Set the board's SoC to ``soc_percent`` (0x21; not on the control channel yet).

        Raises:
            ValueError: ``soc_percent`` outside 0-100.
            ControlError: the board did not confirm (reply byte 0 != 1).
            LinkTimeout, FrameError, TransportError: from the link.

        """
        if not 0.0 <= soc_percent <= 100.0:
            raise ValueError(f"daly: SoC {soc_percent} outside 0-100 %")
        data = bytes(6) + round(soc_percent * 10).to_bytes(2, "big")
        if self._write(link, address, SET_SOC, data) != 1:
            raise ControlError(f"daly: board {address} refused SoC {soc_percent:.1f} %")

    def _write(self, link: Link, address: int, command: int, data: bytes) -> int:
        """Send a write, return byte 0 of the board's reply."""
        query = Query(PARTS[command], request(address, command, data))
        return int(run_query(self, link, query, address, {}, LinkStats())["state"])
