r"""Seplos BMS V2 ("Protocol 2.0", 10C/10E/16E boards) over RS485: Pylon-style ASCII-hex frames.

Frames, both ways: ``~`` VER ADR CID1 CID2 LENGTH INFO CHKSUM ``\r``, every byte as two uppercase
hex digits; VER 0x20, CID1 0x46; in a request CID2 is the command, in a reply the RTN code (0 =
normal). LENGTH = LCHKSUM nibble + LENID (INFO characters); CHKSUM = 65536 minus the sum of the
ASCII characters after ``~``. The toolkit's :class:`~bmsbank.native.spec.AsciiHex` checks both.
Requests: 0x42 telemetry and 0x44 alarms/status, INFO = one COMMAND_GROUP byte = the address
(``~20004642E00200FD37``).

Sources (facts only, no code copied):

- PDF20 = "SEPLOS BMS Communication Protocol V2.0" (2019-10-15), in syssi/esphome-seplos-bms
  docs/ and BrucePerens/seplos_c seplos_manuals/: frame format and checks (sections 2-3), CID2 and
  RTN tables (Tables 3-5), requests for ADR 00-0F (Tables 7 and 10), 0x42 layout (Tables 8-9:
  counts, 0.1 K temperatures with 0 °C = 2731, "INFO is 75 bytes"), 0x44 layout and every alarm
  bit (Tables 11-13). Same offsets in mr-manuel/venus-os_dbus-serialbattery
  dbus-serialbattery/bms/seplos.py, Privatecoder/seplos-mqtt-remote-rs485 src/fetch_bms_data.py,
  privatecoder/openbms-monitor crates/openbms-proto/src/{telemetry,status}.rs and
  syssi/esphome-seplos-bms components/seplos_bms/seplos_bms.cpp.
- Current sign + = charge: openbms-monitor telemetry.rs (+ = charging); esphome-seplos-bms
  publishes power > 0 as charging power; the Enjie EMU1101 notes (protocol-485.md §10, a
  Seplos-derived board) list -11.30 A and system state "discharge" from one live poll.
- Temperatures: the last two of the K sensors are ambient ("environment") and power (MOSFET), the
  rest are cell sensors (PDF20 Table 8; vendor XML in ichernev/seplos-bms-tool
  protocol/16S_V20_ADDR_EN.xml; dbus-serialbattery seplos.py). With K < 2 every sensor counts as
  a cell sensor (no ambient or MOSFET reading). 2731 is 0 °C in every implementation; unplugged
  sensors read 2231 = -50.0 °C (kscholty/SolarControl capture) and are passed on as such.
- Switch byte bit 0 = discharge FET on, bit 1 = charge FET on (PDF20 Table 13; openbms-monitor
  status.rs; esphome-seplos-bms).
- Link: PDF20 §1.1 says 8N1 at 9600 by default; the RS485-1/2 host ports of 10C/10E boards run at
  19200 (openbms-monitor README "The two buses", Privatecoder README, ichernev notes.md), which
  is this family's default; the CAN-socket RS485 pins (inter-pack bus) run at 9600: set the
  port's baudrate. Addresses 0-15 by DIP switch; all off = 0, a single pack or the bank master
  (Enjie notes §1.3 from the vendor's dips.pdf; the PDF's own example polls ADR 00).
- The reply's ADR echoes the request's (captures in tests/test_seplos.py: ADR 01 and 03); the
  INFO group byte does not always (esphome-seplos-bms README pairs group 00 with 01), so it is
  decoded but never checked.

Replies do not say which command they answer. :meth:`Family.identify` uses the request's CID2
when it has one; for a bare reply (the decode CLI) it walks the counts of each layout (cells M,
sensors K, custom P) and takes the one whose length matches INFO exactly: 0x42 INFO is
11 + 2M + 2K + 2P bytes, 0x44 INFO is 7 + M + K + P. A reply that fits neither (or, without a
request, both) is malformed; with the request, bytes after the last field are allowed (newer
firmware appends some), fewer are not. A reply with RTN != 0 is malformed, naming the RTN.

Not decoded: 0x47 parameters, 0x51 vendor info (the hardware string is the title), writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bmsbank.errors import FrameError
from bmsbank.native.spec import AsciiHex, Field, Layout
from bmsbank.services.poller.plugins.base import (
    Plugin,
    Query,
    ascii_hex_frame,
    bits,
    counted_length,
    graded_alarms,
    require,
)
from bmsbank.services.poller.plugins.seplos import INFO

VER, CID1 = 0x20, 0x46
CMD_TELEMETRY, CMD_STATUS = 0x42, 0x44
TELEMETRY, STATUS = "telemetry", "status"
PARTS: dict[int, str] = {CMD_TELEMETRY: TELEMETRY, CMD_STATUS: STATUS}
INFO_AT = 6  # payload: VER ADR CID1 CID2 LENGTH(2) INFO
RTN_OK = 0x00
#: RTN code -> meaning (PDF20 Table 5)
RTN: dict[int, str] = {
    0x01: "VER error", 0x02: "CHKSUM error", 0x03: "LCHKSUM error", 0x04: "CID2 invalid",
    0x05: "command format error", 0x06: "invalid data", 0x07: "no data", 0xE1: "CID1 invalid",
    0xE2: "command execution failure", 0xE3: "device fault", 0xE4: "invalid permissions",
}  # fmt: skip
KELVIN_0C = -273.1  # 0 °C is 2731 x 0.1 K
SWITCH_DISCHARGE, SWITCH_CHARGE = 0x01, 0x02

#: 0x42 INFO: counts, then as many values as they say
TELEMETRY_FIELDS: tuple[Field, ...] = (
    Field("dataflag", 0, "u8"),
    Field("group", 0, "u8"),  # COMMAND_GROUP; not reliable, never checked
    Field("cell_count", 0, "u8"),  # M
    Field("cells", 0, "u16be", scale=0.001, count_from="cell_count"),  # V
    Field("sensor_count", 0, "u8"),  # K
    Field("sensors", 0, "u16be", scale=0.1, bias=KELVIN_0C, count_from="sensor_count"),  # °C
    Field("current", 0, "s16be", scale=0.01),  # A, + = charge
    Field("voltage", 0, "u16be", scale=0.01),  # V
    Field("remaining", 0, "u16be", scale=0.01),  # Ah
    Field("custom_count", 0, "u8"),  # P: u16 values that follow (10)
    Field("capacity", 0, "u16be", scale=0.01),  # Ah, full-charge capacity
    Field("soc", 0, "u16be", scale=0.1),  # %
    Field("rated_capacity", 0, "u16be", scale=0.01),  # Ah
    Field("cycles", 0, "u16be"),
    Field("soh", 0, "u16be", scale=0.1),  # %
    Field("port_voltage", 0, "u16be", scale=0.01),  # V
    Field("extension", 0, "u16be", count=0),  # "reserved" x4 (newer firmware: offsets, energy)
)
#: 0x44 INFO; per-item alarm bytes: 00 normal, 01 below lower limit, 02 above upper limit
STATUS_FIELDS: tuple[Field, ...] = (
    Field("dataflag", 0, "u8"),
    Field("group", 0, "u8"),
    Field("cell_count", 0, "u8"),
    Field("cell_alarms", 0, "u8", count_from="cell_count"),
    Field("sensor_count", 0, "u8"),
    Field("sensor_alarms", 0, "u8", count_from="sensor_count"),
    Field("current_alarm", 0, "u8"),
    Field("voltage_alarm", 0, "u8"),
    Field("custom_count", 0, "u8"),  # P: bytes that follow (20)
    Field("events", 0, "u8", count=6),  # alarm events 1-6
    Field("switches", 0, "u8"),  # bit 0 discharge, 1 charge, 2 current limit, 3 heater
    Field("balance", 0, "u8", count=2),  # cells 1-8, 9-16 (bit 0 = first)
    Field("system_state", 0, "u8"),  # 1 discharge, 2 charge, 4 float, 0x10 standby, 0x20 off
    Field("disconnected", 0, "u8", count=2),  # cells 1-8, 9-16
    Field("more_events", 0, "u8", count=2),  # alarm events 7-8
    Field("extension", 0, "u8", count=0),  # reserved
)
#: per part, the INFO walk: (bytes before a count, bytes per counted item), three times
COUNTED: dict[str, tuple[tuple[int, int], ...]] = {
    TELEMETRY: ((2, 2), (0, 2), (6, 2)),  # M cells x u16, K sensors x u16, 6 B, P x u16
    STATUS: ((2, 1), (0, 1), (2, 1)),  # M cell alarms, K sensor alarms, 2 B, P bytes
}

# Alarm events 1-8 as one number: event n bit b is bit 8 (n - 1) + b (PDF20 Table 13).
#: protection / fault bits -> alarm (level 2)
PROTECTIONS: dict[int, str] = {
    0: "internal_failure", 1: "internal_failure", 2: "internal_failure",  # V / T / I sensor
    3: "internal_failure", 4: "cell_imbalance", 5: "internal_failure",  # key switch, cell diff.,
    6: "internal_failure", 7: "internal_failure",  # charge / discharge / limit switch fault
    9: "high_cell_voltage", 11: "low_cell_voltage", 13: "high_voltage", 15: "low_voltage",
    17: "high_charge_temperature", 19: "low_charge_temperature",  # cell temperature, charging
    21: "high_temperature", 23: "low_temperature",  # cell temperature, discharging
    25: "high_temperature", 27: "low_temperature",  # environment
    28: "high_internal_temperature",  # power (MOSFET) over-temperature
    33: "high_charge_current", 35: "high_discharge_current",
    36: "high_current", 38: "high_current",  # transient overcurrent, its lockout
    37: "short_circuit", 39: "short_circuit",  # output short circuit, its lockout
    40: "high_voltage",  # charge high-voltage protection
    43: "low_soc",  # residual capacity protection
    44: "low_cell_voltage",  # charging forbidden: cell voltage too low
    45: "internal_failure", 46: "internal_failure",  # output reverse polarity / connection fault
    56: "internal_failure",  # EEPROM fault
}  # fmt: skip
#: alarm (pre-warning) bits -> alarm (level 1)
WARNINGS: dict[int, str] = {
    8: "high_cell_voltage", 10: "low_cell_voltage", 12: "high_voltage", 14: "low_voltage",
    16: "high_charge_temperature", 18: "low_charge_temperature", 20: "high_temperature",
    22: "low_temperature", 24: "high_temperature", 26: "low_temperature",
    29: "high_internal_temperature", 32: "high_charge_current", 34: "high_discharge_current",
    42: "low_soc",
}  # fmt: skip

FRAMING = AsciiHex()


def frame(address: int, cid2: int, info: bytes = b"") -> bytes:
    """Build a frame (a request: ``cid2`` = command; a reply: ``cid2`` = RTN)."""
    return ascii_hex_frame(b"~", bytes((VER, address, CID1, cid2)), info)


def poll_request(address: int, command: int) -> bytes:
    """The 0x42 / 0x44 request for the pack at ``address`` (COMMAND_GROUP = the address)."""
    return frame(address, command, bytes((address,)))


class Family(Plugin):
    """Seplos V2: telemetry (0x42) and alarms/status (0x44) every cycle."""

    info = INFO
    framing = FRAMING
    #: the PDF's master waits 500 ms; a 0x42 reply is 168 characters (88 ms at 19200)
    reply_timeout: ClassVar[float] = 0.5
    layouts: ClassVar[Mapping[str, Layout]] = {
        TELEMETRY: Layout(TELEMETRY_FIELDS, INFO_AT, mode="cursor"),
        STATUS: Layout(STATUS_FIELDS, INFO_AT, mode="cursor"),
    }
    address_at = 1  # the reply's ADR echoes the request's

    def queries(self, address: int) -> Sequence[Query]:
        """0x42 then 0x44, both required, every cycle."""
        return (
            Query(TELEMETRY, poll_request(address, CMD_TELEMETRY)),
            Query(STATUS, poll_request(address, CMD_STATUS)),
        )

    def identify(self, payload: bytes, request: bytes | None) -> tuple[str, int]:
        """The part: the request's CID2 when given, else the layout whose counts fit INFO.

        Raises:
            FrameError: not a BMS reply ("unexpected"), an RTN error code, INFO that fits no
                layout, or the other part's shape for this request ("malformed"/"unexpected").

        """
        if len(payload) < INFO_AT or payload[2] != CID1:
            raise FrameError(f"{self.name}: not a CID1 0x46 reply", payload, kind="unexpected")
        if payload[3] != RTN_OK:
            meaning = RTN.get(payload[3], "unknown code")
            raise FrameError(f"{self.name}: BMS answered RTN 0x{payload[3]:02X} ({meaning})",
                             payload)  # fmt: skip
        info = payload[INFO_AT:]
        fits = [p for p, steps in COUNTED.items() if counted_length(info, steps) == len(info)]
        if request is None:
            if len(fits) != 1:
                raise FrameError(f"{self.name}: {len(info)}-byte INFO fits "
                                 f"{' and '.join(fits) or 'no layout'}", payload)  # fmt: skip
            return fits[0], 0
        part = PARTS.get(self.framer.payload(request)[3])
        if part is None:
            raise FrameError(f"{self.name}: reply to an unknown request", payload,
                             kind="unexpected")  # fmt: skip
        if part not in fits and not 0 <= counted_length(info, COUNTED[part]) <= len(info):
            # bytes after the last field are allowed (firmware adds some); fewer are not
            raise FrameError(f"{self.name}: {len(info)}-byte INFO is not a {part} reply", payload,
                             kind="unexpected" if fits else "malformed")  # fmt: skip
        return part, 0

    def refine(self, part: str, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Split the sensors (cells..., ambient, MOSFET); FETs and event bits of the status."""
        if part == TELEMETRY:
            sensors = fields["sensors"]
            cut = len(sensors) - 2 if len(sensors) >= 2 else len(sensors)
            fields["temperatures"] = sensors[:cut]
            fields["ambient_temperature"] = sensors[cut] if cut < len(sensors) else None
            fields["mosfet_temperature"] = sensors[cut + 1] if cut < len(sensors) else None
        else:
            events = fields["events"] + fields["more_events"]
            fields["event_bits"] = sum(b << 8 * i for i, b in enumerate(events))
            fields["discharge_fet"] = bool(fields["switches"] & SWITCH_DISCHARGE)
            fields["charge_fet"] = bool(fields["switches"] & SWITCH_CHARGE)
        return fields

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Map telemetry and status (both required) to state fields.

        Raises:
            FrameError: a part is missing ("truncated").

        """
        require(parts, TELEMETRY, STATUS)
        tele, status = parts[TELEMETRY], parts[STATUS]
        cells = list(tele["cells"])
        low, high = status["balance"]
        alarms = graded_alarms(status["event_bits"], PROTECTIONS, WARNINGS)
        return {
            "voltage": tele["voltage"],
            "current": tele["current"],
            "soc": tele["soc"],
            "soh": tele["soh"],
            "capacity": tele["capacity"],
            "remaining": tele["remaining"],
            "cycles": tele["cycles"],
            "cells": cells,
            "balancing": bits(low | high << 8, len(cells)),
            "temperatures": list(tele["temperatures"]),
            "mosfet_temperature": tele["mosfet_temperature"],
            "charge_fet": status["charge_fet"],
            "discharge_fet": status["discharge_fet"],
            "alarms": alarms,
            "hardware": self.title,
        }
