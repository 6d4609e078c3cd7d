r"""Pace BMS (PBmsTools, protocol version 2.5) over RS485 or RS232: Pylon-style ASCII-hex frames.

Frames, both ways: ``~`` VER ADR CID1 CID2 LENGTH INFO CHKSUM ``\r``, every byte as two uppercase
hex digits; VER 0x25, CID1 0x46 ("lithium iron"); in a request CID2 is the command, in a reply the
RTN code (0 = normal). LENGTH = LCHKSUM nibble + LENID (INFO characters); CHKSUM = 65536 minus
the sum of the ASCII characters after ``~`` (the toolkit's :class:`~bmsbank.native.spec.AsciiHex`
checks both; the helpers are Seplos V2's, the same Pylon framing with VER 0x20). Several packs
share one bus, told apart by ADR (DIP switches); a reply's ADR echoes the request's.

Requests, per cycle: 0x42 analog values and 0x44 warnings/protections/faults, INFO = the pack's
address (``~25014642E00201FD30``); once: 0xC1 hardware version and 0xC2 serial number, no INFO
(``~250146C10000FD9A``). The first, 0x42, is the read ``bmsbank scan`` identifies the family with.

- 0x42 INFO: a byte (0 as a rule, not checked), the responding address, cell count M, M cells
  (mV), sensor count K, K temperatures (0.1 K, 2730 = 0 °C), current (s16 10 mA, + = charge),
  pack voltage (mV), remaining capacity (10 mAh), a "user-defined" constant (2, 3 or 4 by
  vendor), full-charge capacity (10 mAh), cycles, design capacity (10 mAh): 19 + 2M + 2K
  bytes. Of K = 6 sensors the first 4 are cell sensors, the 5th the MOSFET, the 6th the
  environment; with other K the last two are taken as MOSFET and environment as well (K = 1:
  a cell sensor). The BMS reports no SoC: it is remaining / full-charge capacity (both public
  drivers), SoH full / design capacity, at most 100 %.
- 0x44 INFO: a byte (as in 0x42), the address, M cell warning bytes, K temperature warning bytes (00
  normal, 01 below, 02 above the limit), charge-current, total-voltage and discharge-current
  warning bytes, protection status 1 and 2, system status (bit 1 charge MOSFET on, bit 2
  discharge MOSFET on, bit 3 discharging, bit 5 charging), configuration status, fault status,
  balancing (u16, bit 0 = cell 1), warning status 1 and 2: 16 + M + K bytes.
- 0xC1 / 0xC2 INFO: 20 ASCII bytes of hardware version; 20 or 40 ASCII bytes of serial number
  (space and NUL padded).

Some vendors append bytes after the documented fields (the "user-defined" value tells which);
with its request, a reply may carry such bytes (kept as ``extension``), without it the counts
must walk to the end of INFO exactly. A bare reply (the decode CLI) is recognised by its shape:
analog and status by their counts, text of 20 bytes as the hardware version, of 40 as the serial.
A reply with RTN != 0 is malformed, naming the RTN; one that fits another part than the
request's is unexpected.

Writes (``controls``: charge, discharge): 0x9A switches the charge MOSFET, 0x9B the discharge
MOSFET, INFO 01 = close (conduct), 00 = open (``~2500469AE00201FD1D``); the pack answers with one
byte of INFO whose meaning is undocumented. The captured acks carry RTN 00, except the one to
"discharge close", which carries RTN 09: both are taken as acknowledgements; any other RTN is a
refusal. No SoC reset or balancer switch is documented.

Sources (facts only, no code copied):

- NK = nkinnan/esphome-pace-bms components/pace_bms/pace_bms_protocol_v25.{h,cpp} (the layouts
  of 0x42/0x44/0xC1/0xC2 and every status bit, read from PBmsTools 2.4 traffic and the vendor's
  protocol document; ``ProcessReadAnalogInformationResponse``, ``ProcessReadStatusInformation
  Response``, ``CreateWriteMosfetSwitchCommandRequest``), with captured request/reply pairs
  (``example*V25``, also in "Test PACE BMS/Test PACE BMS.cpp"): the frames in tests/test_pace.py.
  README.md: 9600 Bd (some packs 19200), address set by DIP switch, most often 0 or 1.
- DSB = mr-manuel/venus-os_dbus-serialbattery dbus-serialbattery/bms/pace.py (``command_*``,
  ``read_status_data``, ``read_fuses_data``, ``get_settings``): the same 0x42 offsets (cell
  count, cells, sensors 0-3 cells and 4 the MOSFET, current, voltage, capacities, cycles), SoC
  computed as remaining / full capacity, the same protection and warning bit meanings,
  the 0xC1/0xC2 requests and text replies.
- Current sign: NK's captures of one session hold a 0x42 reply with -2.25 A and a 0x44 reply
  whose system status 0x0E says "discharging"; NK computes power as V x I with charging positive.

Where sources disagree:

- Temperatures: NK decodes (raw - 2730) / 10 °C (0.1 K, as every Pylon-style protocol, and as
  the vendor tool shows); DSB divides the raw value by 100 without an offset, which reads 0 °C
  (2730) as 27.3 "°C" and cannot be a temperature scale. NK's is used; no option is offered.
- 0x44 offsets: DSB reads the status bytes at odd character offsets (half a byte off NK's
  byte-aligned layout, which the captured 0x44 reply fits exactly): NK's layout is used.
- 0x42 INFO: DSB asks every pack at once (ADR 00, INFO FF) and reads the first; NK and this
  family ask one address, so that several packs on one bus are read one by one.
- Protection status 1 bit 7: DSB calls it "discharge under voltage", NK undefined: not mapped.
  Warning status 2 bit 7 ("low power") has no protection counterpart: not mapped either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bmsbank.errors import ControlError, FrameError
from bmsbank.native.spec import AsciiHex, Field, Layout
from bmsbank.services.poller.plugins.base import (
    Link,
    LinkStats,
    Plugin,
    Query,
    ascii_hex_frame,
    bits,
    counted_length,
    graded_alarms,
    require,
)
from bmsbank.services.poller.plugins.pace import INFO

VER, CID1 = 0x25, 0x46
CMD_ANALOG, CMD_STATUS, CMD_HARDWARE, CMD_SERIAL = 0x42, 0x44, 0xC1, 0xC2
CMD_CHARGE_FET, CMD_DISCHARGE_FET = 0x9A, 0x9B
FET_OPEN, FET_CLOSE = 0x00, 0x01  # INFO of a MOSFET switch request (close = conduct)
ANALOG, STATUS, HARDWARE, SERIAL = "analog", "status", "hardware", "serial"
PARTS: dict[int, str] = {
    CMD_ANALOG: ANALOG, CMD_STATUS: STATUS, CMD_HARDWARE: HARDWARE, CMD_SERIAL: SERIAL,
}  # fmt: skip
#: control action -> the CID2 that switches its MOSFET
SWITCHES: dict[str, int] = {"charge": CMD_CHARGE_FET, "discharge": CMD_DISCHARGE_FET}
INFO_AT = 6  # payload: VER ADR CID1 CID2 LENGTH(2) INFO
RTN_OK = 0x00
#: RTN codes an ack to a MOSFET switch carries (NK's captures: 00, and 09 for discharge close)
RTN_ACK = (0x00, 0x09)
#: RTN code -> meaning (the Pylon table NK's protocol base uses)
RTN: dict[int, str] = {
    0x01: "VER error", 0x02: "CHKSUM error", 0x03: "LCHKSUM error", 0x04: "CID2 invalid",
    0x05: "command format error", 0x06: "invalid data", 0x90: "ADR error",
    0x91: "communication error",
}  # fmt: skip
KELVIN_0C = -273.0  # 0 °C is 2730 x 0.1 K (NK)
#: system status bits (NK ``StatusInformation_SystemFlags``)
SYSTEM_CHARGE_FET, SYSTEM_DISCHARGE_FET = 0x02, 0x04
SYSTEM_DISCHARGING, SYSTEM_CHARGING = 0x08, 0x20
#: configuration status bits set while a MOSFET is switched off by command (NK)
CONFIG_CHARGE_OFF, CONFIG_DISCHARGE_OFF = 0x02, 0x04
TEXT_LENGTHS: dict[str, tuple[int, ...]] = {HARDWARE: (20,), SERIAL: (20, 40)}

#: 0x42 INFO: counts, then as many values as they say
ANALOG_FIELDS: tuple[Field, ...] = (
    Field("dataflag", 0, "u8"),  # 0 on the wire (NK: not always; never checked)
    Field("group", 0, "u8"),  # the responding address (decoded, not checked: ADR is)
    Field("cell_count", 0, "u8"),  # M
    Field("cells", 0, "u16be", scale=0.001, count_from="cell_count"),  # V
    Field("sensor_count", 0, "u8"),  # K
    Field("sensors", 0, "u16be", scale=0.1, bias=KELVIN_0C, count_from="sensor_count"),  # °C
    Field("current", 0, "s16be", scale=0.01),  # A, + = charge
    Field("voltage", 0, "u16be", scale=0.001),  # V
    Field("remaining", 0, "u16be", scale=0.01),  # Ah
    Field("user_defined", 0, "u8"),  # 2, 3 or 4 by vendor (NK's protocol variants)
    Field("capacity", 0, "u16be", scale=0.01),  # Ah, full charge
    Field("cycles", 0, "u16be"),
    Field("design_capacity", 0, "u16be", scale=0.01),  # Ah
    Field("extension", 0, "u8", count=0),  # bytes some vendors append
)
#: 0x44 INFO
STATUS_FIELDS: tuple[Field, ...] = (
    Field("dataflag", 0, "u8"),
    Field("group", 0, "u8"),
    Field("cell_count", 0, "u8"),
    Field("cell_alarms", 0, "u8", count_from="cell_count"),  # 00 normal, 01 below, 02 above
    Field("sensor_count", 0, "u8"),
    Field("sensor_alarms", 0, "u8", count_from="sensor_count"),
    Field("charge_current_alarm", 0, "u8"),
    Field("voltage_alarm", 0, "u8"),
    Field("discharge_current_alarm", 0, "u8"),
    Field("protection1", 0, "u8"),
    Field("protection2", 0, "u8"),
    Field("system", 0, "u8"),
    Field("configuration", 0, "u8"),
    Field("fault", 0, "u8"),
    Field("balance", 0, "u16be"),  # bit 0 = cell 1
    Field("warning1", 0, "u8"),
    Field("warning2", 0, "u8"),
    Field("extension", 0, "u8", count=0),
)
TEXT_FIELDS: tuple[Field, ...] = (Field("text", 0, "str", count=0),)
#: per counted part, the INFO walk (bytes before a count, bytes per counted item) and the fixed
#: bytes after the last counted list
COUNTED: dict[str, tuple[tuple[tuple[int, int], ...], int]] = {
    ANALOG: (((2, 2), (0, 2)), 13),  # M cells x u16, K sensors x u16, 13 B
    STATUS: (((2, 1), (0, 1)), 12),  # M cell bytes, K sensor bytes, 12 B
}

# The status bytes as one number: protection 1 bits 0-7, protection 2 bits 8-15, fault bits
# 16-23, warning 1 bits 24-31, warning 2 bits 32-39 (NK's flag enums; DSB agrees on the bits).
#: protection and fault bits -> alarm (level 2)
PROTECTIONS: dict[int, str] = {
    0: "high_cell_voltage", 1: "low_cell_voltage", 2: "high_voltage", 3: "low_voltage",
    4: "high_charge_current", 5: "high_discharge_current", 6: "short_circuit",
    8: "high_charge_temperature", 9: "high_temperature",  # cells while charging, discharging
    10: "low_charge_temperature", 11: "low_temperature",
    12: "high_internal_temperature",  # MOSFET
    13: "high_temperature", 14: "low_temperature",  # environment
    16: "internal_failure", 17: "internal_failure",  # charge / discharge MOSFET fault
    18: "internal_failure", 20: "internal_failure",  # NTC, cell fault
    21: "internal_failure",  # sampling fault
}  # fmt: skip
#: warning bits -> alarm (level 1)
WARNINGS: dict[int, str] = {
    24: "high_cell_voltage", 25: "low_cell_voltage", 26: "high_voltage", 27: "low_voltage",
    28: "high_charge_current", 29: "high_discharge_current",
    32: "high_charge_temperature", 33: "high_temperature", 34: "low_charge_temperature",
    35: "low_temperature", 36: "high_temperature", 37: "low_temperature",  # environment
    38: "high_internal_temperature",
}  # fmt: skip

FRAMING = AsciiHex()


def frame(address: int, cid2: int, info: bytes = b"") -> bytes:
    """Build a frame (a request: ``cid2`` = command; a reply: ``cid2`` = RTN)."""
    return ascii_hex_frame(b"~", bytes((VER, address, CID1, cid2)), info)


def request(address: int, command: int) -> bytes:
    """The read of ``command`` for the pack at ``address`` (0x42/0x44 carry the address)."""
    info = bytes((address,)) if command in (CMD_ANALOG, CMD_STATUS) else b""
    return frame(address, command, info)


def switch_request(address: int, action: str, on: bool) -> bytes:
    """The MOSFET switch of ``action`` ("charge"/"discharge"): close (``on``) or open it."""
    return frame(address, SWITCHES[action], bytes((FET_CLOSE if on else FET_OPEN,)))


def is_text(info: bytes) -> bool:
    """Whether ``info`` is printable ASCII padded with spaces or NULs (a version or serial)."""
    return bool(info) and 32 <= info[0] < 127 and all(b == 0 or 32 <= b < 127 for b in info)


def fits(part: str, info: bytes, exact: bool) -> bool:
    """Whether ``info`` has ``part``'s shape (``exact``: no bytes after the known ones)."""
    if part in TEXT_LENGTHS:
        return len(info) in TEXT_LENGTHS[part] and is_text(info)
    steps, tail = COUNTED[part]
    counted = counted_length(info, steps)
    if counted < 0:
        return False
    return counted + tail == len(info) if exact else counted + tail <= len(info)


def bare_part(info: bytes) -> str | None:
    """The one part whose shape ``info`` has exactly, without vendor bytes (None: none or two)."""
    if is_text(info):
        return HARDWARE if len(info) == 20 else SERIAL if len(info) == 40 else None
    shapes = [p for p in COUNTED if fits(p, info, exact=True)]
    return shapes[0] if len(shapes) == 1 else None


class Family(Plugin):
    """Pace: analog values (0x42) and status (0x44) every cycle, version and serial once."""

    info = INFO
    framing = FRAMING
    #: a 0x42 reply of 16 cells is 140 characters (146 ms at 9600 Bd); the Pylon-style master
    #: waits 500 ms for the first byte
    reply_timeout: ClassVar[float] = 1.0
    layouts: ClassVar[Mapping[str, Layout]] = {
        ANALOG: Layout(ANALOG_FIELDS, INFO_AT, mode="cursor"),
        STATUS: Layout(STATUS_FIELDS, INFO_AT, mode="cursor"),
        HARDWARE: Layout(TEXT_FIELDS, INFO_AT),
        SERIAL: Layout(TEXT_FIELDS, INFO_AT),
    }
    address_at = 1  # the reply's ADR echoes the request's

    def queries(self, address: int) -> Sequence[Query]:
        """0x42 and 0x44 (required) every cycle; 0xC1 and 0xC2 once (all reads)."""
        return (
            Query(ANALOG, request(address, CMD_ANALOG)),
            Query(STATUS, request(address, CMD_STATUS)),
            Query(HARDWARE, request(address, CMD_HARDWARE), every=0, required=False),
            Query(SERIAL, request(address, CMD_SERIAL), every=0, required=False),
        )

    def identify(self, payload: bytes, request: bytes | None) -> tuple[str, int]:
        """The part: the request's CID2 when given, else the one part whose shape fits INFO.

        Raises:
            FrameError: not a Pace reply ("unexpected"), an RTN error code, INFO that fits no
                part ("malformed"), another part's reply to this request ("unexpected").

        """
        if len(payload) < INFO_AT or payload[0] != VER or payload[2] != CID1:
            raise FrameError(f"{self.name}: not a VER 0x25 CID1 0x46 reply", payload,
                             kind="unexpected")  # fmt: skip
        if payload[3] != RTN_OK:
            meaning = RTN.get(payload[3], "unknown code")
            raise FrameError(f"{self.name}: BMS answered RTN 0x{payload[3]:02X} ({meaning})",
                             payload)  # fmt: skip
        info = payload[INFO_AT:]
        if not info:
            raise FrameError(f"{self.name}: empty INFO", payload)
        if request is None:
            part = bare_part(info)
            if part is None:
                raise FrameError(f"{self.name}: {len(info)}-byte INFO fits no single reply",
                                 payload)  # fmt: skip
            return part, 0
        asked = self.framer.payload(request)
        part = PARTS.get(asked[3]) if len(asked) > 3 else None
        if part is None:
            raise FrameError(f"{self.name}: reply to an unknown request", payload,
                             kind="unexpected")  # fmt: skip
        if fits(part, info, exact=True):
            return part, 0
        other = bare_part(info)
        if other is not None or not fits(part, info, exact=False):
            # another part's exact shape beats this part's with vendor bytes appended
            raise FrameError(f"{self.name}: {len(info)}-byte INFO is not a {part} reply", payload,
                             kind="unexpected" if other else "malformed")  # fmt: skip
        return part, 0

    def refine(self, part: str, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Split the sensors, compute SoC and SoH; FETs and alarm bits of the status.

        Raises:
            FrameError: no cells, or a full-charge capacity of 0 (no SoC) ("malformed").

        """
        if part == ANALOG:
            if not fields["cells"]:
                raise FrameError(f"{self.name}: no cells", payload)
            if fields["capacity"] <= 0:
                raise FrameError(f"{self.name}: full-charge capacity 0, no SoC", payload)
            sensors = fields["sensors"]
            cut = len(sensors) - 2 if len(sensors) >= 2 else len(sensors)
            fields["temperatures"] = sensors[:cut]
            fields["mosfet_temperature"] = sensors[cut] if cut < len(sensors) else None
            fields["ambient_temperature"] = sensors[cut + 1] if cut < len(sensors) else None
            fields["soc"] = min(100.0, 100.0 * fields["remaining"] / fields["capacity"])
            design = fields["design_capacity"]
            fields["soh"] = min(100.0, 100.0 * fields["capacity"] / design) if design else None
        elif part == STATUS:
            fields["event_bits"] = (
                fields["protection1"] | fields["protection2"] << 8 | fields["fault"] << 16
                | fields["warning1"] << 24 | fields["warning2"] << 32
            )  # fmt: skip
            fields["charge_fet"] = bool(fields["system"] & SYSTEM_CHARGE_FET)
            fields["discharge_fet"] = bool(fields["system"] & SYSTEM_DISCHARGE_FET)
        return fields

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Map analog values and status (both required), version and serial to state fields.

        Raises:
            FrameError: a required part is missing ("truncated").

        """
        require(parts, ANALOG, STATUS)
        analog, status = parts[ANALOG], parts[STATUS]
        cells = list(analog["cells"])
        alarms = graded_alarms(status["event_bits"], PROTECTIONS, WARNINGS)
        version = parts.get(HARDWARE, {}).get("text")
        return {
            "voltage": analog["voltage"],
            "current": analog["current"],
            "soc": analog["soc"],
            "soh": analog["soh"],
            "capacity": analog["capacity"],
            "remaining": analog["remaining"],
            "cycles": analog["cycles"],
            "cells": cells,
            "balancing": bits(status["balance"], len(cells)),
            "temperatures": list(analog["temperatures"]),
            "mosfet_temperature": analog["mosfet_temperature"],
            "charge_fet": status["charge_fet"],
            "discharge_fet": status["discharge_fet"],
            "alarms": alarms,
            "hardware": f"{self.title} {version}" if version else self.title,
            "serial": str(parts.get(SERIAL, {}).get("text", ""))[:64],
        }

    def control(self, link: Link, address: int, action: str, value: Any,
                parts: Mapping[str, Mapping[str, Any]]) -> None:  # fmt: skip
        """Switch the charge or discharge MOSFET and check the pack's acknowledgement.

        Raises:
            ControlError: the action is not supported, or the pack answered an error RTN.
            LinkTimeout, FrameError, TransportError: from the link.

        """
        if action not in SWITCHES:
            super().control(link, address, action, value, parts)
            return
        sent = switch_request(address, action, bool(value))
        stats = LinkStats()
        reply = link.exchange(sent, lambda buf: self.extract(buf, stats))
        if reply == sent:  # an adapter's echo of the request: the ack follows
            reply = link.receive(lambda buf: self.extract(buf, stats))
        payload = self.framer.payload(reply)
        if payload[0] != VER or payload[1] != address or payload[2] != CID1:
            raise FrameError(f"{self.name}: no ack from pack {address} to the {action} switch",
                             reply, kind="unexpected")  # fmt: skip
        if payload[3] not in RTN_ACK:
            meaning = RTN.get(payload[3], "unknown code")
            raise ControlError(f"{self.name}: pack {address} refused the {action} switch "
                               f"(RTN 0x{payload[3]:02X}, {meaning})")  # fmt: skip
