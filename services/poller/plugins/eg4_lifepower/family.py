"""EG4 LiFePOWER batteries (48 V / 24 V LiFePOWER4 "v1", Tian Power BMS) over RS485, 9600 8N1.

Frames, both ways: ``7E adr cmd len payload[len] chk 0D`` (a request has ``len`` 0). A reply
echoes the address and command. Commands: 0x01 status, 0x42 hardware version, 0x33 firmware
version (ASCII text). The status payload is a run of groups ``id n word[n]`` (big-endian 16-bit
words): 1 cells (mV; the two top bits may be set, masked with 0x3FFF), 2 current (30000 - raw, in
10 mA, + = charge), 3 SoC (0.01 %), 4 full capacity (0.01 Ah), 5 six temperatures (low byte - 50
°C: four cell probes, MOSFET, ambient), 6 five status words (word 2: low byte bit 0 charging,
bit 1 discharging, bit 2 short circuit, 3 over-current, 4 over-voltage, 5 under-voltage, 6 charge
over-temperature, 7 charge under-temperature; high byte bit 0 ambient under-temperature, 1
ambient over-temperature, 2 serious alarm), 7 cycles, 8 voltage (10 mV), 9 SoH (0.01 %), 10
unknown. Sources (short names):

- PSB = slim-bean/powermon README.md (the protocol as read from the vendor's PC tool: request
  ``7E 01 01 00 FE 0D``, a full reply, the groups, the alarm bits) and pkg/eg4/eg4_test.go
  (``TestParse``: a second full reply, discharging at -39.59 A, which fixes the current's sign);
- DSB = mr-manuel/venus-os_dbus-serialbattery dbus-serialbattery/bms/eg4_lifepower.py
  (``EG4_Lifepower``: the requests for every address in ``get_command_general_part``, 0x42 and
  0x33, the 0x3FFF cell mask from its issue #155, the alarm bits in ``read_status_data``) and
  Louisvdw/dbus-serialbattery etc/dbus-serialbattery/bms/lifepower.py (the first driver, address 1
  only); Louisvdw/dbus-serialbattery PR #212 and PR #390 (firmware "3QT-YS00-16SV100A-V3.5",
  hardware "B"); the framing as SolarConvert's "Narada NPFC Tian Power BMS protocol"
  (powerforum.co.za topic 13120) describes it.

The check byte. Its algorithm is not public, and none of the common 8-bit checks fits the
public frames: the byte sum, its one's and two's complement, the XOR of the bytes and its
complement, every CRC-8 (all 255 polynomials, normal and reflected, any init and final XOR), and
either byte of eight common CRC-16s (MODBUS, ARC, CCITT-FALSE, XMODEM, KERMIT, X-25, MAXIM, USB),
each over every range from byte 0-4 to the byte before the check, fail on PSB's two replies (check
0x3C and 0x96) together with the two requests the tools send at address 1 (``7E 01 01 00 FE 0D``,
``7E 01 42 00 FC 0D``); DSB's per-address request table follows ``adr XOR -adr`` (0x00, 0xFE,
0xFC, 0xFE, 0xF8, ...), a pattern no CRC can give (it is not affine in the address). So a reply
is NOT checked by that byte; it is validated by its structure instead: the start byte, the
length byte, the ``0D`` end at the place the length gives, the address and command echoed, and
(status) groups that fill the payload exactly, each group once, in order, with the word counts
the protocol has (1-32 cells, one word for current, SoC, capacity, cycles, voltage, SoH, six
temperatures, five status words). Requests are sent with the bytes DSB sends (``adr XOR -adr``
for 0x01 and 0x33, 0xFC for 0x42).

FET states are not in the protocol (DSB reports both on); this family infers them from the
protection bits: charging stops on over-voltage, charge over- or under-temperature and short
circuit, discharging on under-voltage and short circuit. Remaining capacity is not reported: it is
SoC x full capacity. No balancing flags, no serial number command is public (hardware text only),
and no writes: the family has no controls. Timing: DSB polls every 2 s ("polling every second
seems to create some error messages"); nothing more is published.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from bmsbank.errors import FrameError
from bmsbank.native.spec import Binary
from bmsbank.schema import CELL_BOUNDS, TEMPERATURE_BOUNDS
from bmsbank.services.poller.plugins.base import Plugin, Query, alarms_from_bits
from bmsbank.services.poller.plugins.eg4_lifepower import INFO

START, END = 0x7E, 0x0D
HEADER = 4  # 7E adr cmd len
OVERHEAD = HEADER + 2  # and chk 0D
CMD_STATUS, CMD_HARDWARE, CMD_FIRMWARE = 0x01, 0x42, 0x33
PARTS = {CMD_STATUS: "status", CMD_HARDWARE: "hardware", CMD_FIRMWARE: "firmware"}
HARDWARE_CHECK = 0xFC  # DSB sends 7E adr 42 00 FC 0D at every address
CELL_MASK = 0x3FFF
CURRENT_ZERO = 30000
TEMPERATURE_OFFSET = 50
NO_PROBE = 0  # a probe byte of 0 (-50 °C): no probe fitted
CELL_PROBES, MOSFET_PROBE = 4, 4  # probes 1-4 are cells; the fifth (index 4) the MOSFETs
MAX_CELLS = 32
ALARM_WORD = 1  # the second word of group 6

FRAMING = Binary(
    header=bytes((START,)),
    length_offset=3,
    length_fmt="u8",
    length_adjust=OVERHEAD,
    max_length=0xFF + OVERHEAD,
    trailer=bytes((END,)),  # no check: see the module docstring
)


@dataclass(frozen=True)
class Group:
    """One group of the status payload.

    Attributes:
        name: the decoded field.
        words: (fewest, most) words it may have.
        scale: multiply each word by this (None: raw integers).
        zero: a word's raw value meaning 0 (subtracted first; the current counts down from it).

    """

    name: str
    words: tuple[int, int]
    scale: float | None = None
    zero: int = 0


#: group id -> what it holds (PSB); every group but 10 is needed
GROUPS: dict[int, Group] = {
    1: Group("cells", (1, MAX_CELLS), 0.001),
    2: Group("current", (1, 1), -0.01, CURRENT_ZERO),  # (30000 - raw) / 100, + = charge
    3: Group("soc", (1, 1), 0.01),
    4: Group("capacity", (1, 1), 0.01),
    5: Group("temperature_words", (6, 6)),
    6: Group("status_words", (5, 5)),
    7: Group("cycles", (1, 1)),
    8: Group("voltage", (1, 1), 0.01),
    9: Group("soh", (1, 1), 0.01),
    10: Group("group_10", (0, 255)),
}
OPTIONAL_GROUPS = {10}

#: word 2 of group 6: bit -> alarm (protections, reported as alarms); bits 0/1 are the state
ALARM_BITS: dict[int, str] = {
    2: "short_circuit",
    3: "high_current",  # over-current, either direction
    4: "high_voltage",
    5: "low_voltage",
    6: "high_charge_temperature",
    7: "low_charge_temperature",
    8: "low_temperature",  # ambient
    9: "high_temperature",  # ambient
    10: "internal_failure",  # "serious alarm"
}
CHARGING_BIT, DISCHARGING_BIT = 0, 1
CHARGE_STOPS = 1 << 2 | 1 << 4 | 1 << 6 | 1 << 7
DISCHARGE_STOPS = 1 << 2 | 1 << 5


def request_check(address: int, command: int) -> int:
    """The check byte DSB sends: 0xFC for 0x42, else ``adr XOR -adr`` (see the docstring)."""
    if command == CMD_HARDWARE:
        return HARDWARE_CHECK
    return (address ^ -address) & 0xFF


def request(address: int, command: int) -> bytes:
    """The request ``7E adr cmd 00 chk 0D``."""
    return bytes((START, address, command, 0, request_check(address, command), END))


def parse_request(frame: bytes) -> tuple[int, int] | None:
    """(address, command) of a request of this family, or None (its check byte is not judged)."""
    if len(frame) != OVERHEAD or frame[0] != START or frame[-1] != END or frame[3] != 0:
        return None
    if frame[2] not in PARTS:
        return None
    return frame[1], frame[2]


def split_groups(payload: bytes) -> dict[int, list[int]]:
    """The groups ``id n word[n]`` of a status payload, by id.

    Raises:
        FrameError: a group that runs past the payload, a repeated or out-of-order id, an
            unknown id, a word count the group cannot have, or a needed group missing
            ("malformed").

    """
    groups: dict[int, list[int]] = {}
    pos, last = 0, 0
    while pos < len(payload):
        if pos + 2 > len(payload):
            raise FrameError("eg4_lifepower: a group header cut off", payload)
        gid, n = payload[pos], payload[pos + 1]
        end = pos + 2 + 2 * n
        group = GROUPS.get(gid)
        if group is None or gid <= last:
            raise FrameError(f"eg4_lifepower: group {gid} after group {last}", payload)
        if end > len(payload) or not group.words[0] <= n <= group.words[1]:
            raise FrameError(f"eg4_lifepower: group {gid} with {n} words", payload)
        groups[gid] = [payload[i] << 8 | payload[i + 1] for i in range(pos + 2, end, 2)]
        pos, last = end, gid
    missing = sorted(set(GROUPS) - OPTIONAL_GROUPS - set(groups))
    if missing:
        raise FrameError(f"eg4_lifepower: status without group(s) {missing}", payload)
    return groups


def group_values(groups: Mapping[int, Sequence[int]]) -> dict[str, Any]:
    """The named, scaled values of the groups (lists for multi-word groups)."""
    out: dict[str, Any] = {}
    for gid, words in groups.items():
        g = GROUPS[gid]
        raw = [w & CELL_MASK for w in words] if gid == 1 else list(words)
        values = raw if g.scale is None else [round((w - g.zero) * g.scale, 3) + 0.0 for w in raw]
        out[g.name] = values if g.words[1] > 1 else values[0]
    return out


def text(payload: bytes) -> str:
    """The printable ASCII of a version reply's payload (DSB drops the rest too)."""
    return "".join(chr(c) for c in payload if 32 <= c < 127).strip()


class Family(Plugin):
    """EG4 LiFePOWER: the status every cycle, hardware and firmware versions once."""

    info = INFO
    #: no published timing; a margin (DSB polls every 2 s, and 1 s gave it errors)
    command_gap: ClassVar[float] = 0.1
    reply_timeout: ClassVar[float] = 1.0
    framing = FRAMING
    key_at = 2  # the command echoed
    keys = PARTS
    address_at = 1

    def queries(self, address: int) -> Sequence[Query]:
        """The status (it identifies the pack), then hardware and firmware versions once."""
        return (
            Query("status", request(address, CMD_STATUS)),
            Query("hardware", request(address, CMD_HARDWARE), every=0, required=False),
            Query("firmware", request(address, CMD_FIRMWARE), every=0, required=False),
        )

    def refine(self, part: str, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Decode the groups of a status reply, or the text of a version reply.

        Raises:
            FrameError: a length byte that is not the payload's length, or a status payload
                whose groups do not have the protocol's structure ("malformed").

        """
        data = payload[HEADER:-2]
        if payload[3] != len(data):
            raise FrameError(f"eg4_lifepower: length {payload[3]} for {len(data)} bytes", payload)
        if part != "status":
            return {**fields, part: text(data)}
        return {**fields, **group_values(split_groups(data))}

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Map the status (and the versions, when read) to state fields.

        Raises:
            FrameError: no status read ("truncated"); a value no pack can have ("malformed":
                without a known check byte, that is how a corrupted reply shows).

        """
        if "status" not in parts:
            raise FrameError(f"{self.name}: no status read", kind="truncated")
        f = parts["status"]
        probes = [None if w & 0xFF == NO_PROBE else float((w & 0xFF) - TEMPERATURE_OFFSET)
                  for w in f["temperature_words"]]  # fmt: skip
        temperatures = [t for t in probes[:CELL_PROBES] if t is not None]
        check_ranges(f, temperatures)
        alarm_bits = f["status_words"][ALARM_WORD]
        cells = list(f["cells"])
        hardware = [parts.get(p, {}).get(p, "") for p in ("firmware", "hardware")]
        return {
            "voltage": f["voltage"],
            "current": f["current"],
            "soc": f["soc"],
            "soh": f["soh"],
            "capacity": f["capacity"],
            "remaining": round(f["capacity"] * f["soc"] / 100.0, 3),
            "cycles": f["cycles"],
            "cells": cells,
            "balancing": [0] * len(cells),  # not reported
            "temperatures": temperatures,
            "mosfet_temperature": probes[MOSFET_PROBE],
            "charge_fet": not alarm_bits & CHARGE_STOPS,
            "discharge_fet": not alarm_bits & DISCHARGE_STOPS,
            "bms_ccl": None,
            "bms_dcl": None,
            "bms_cvl": None,
            "alarms": alarms_from_bits(alarm_bits, ALARM_BITS),
            "hardware": hardware_text(*hardware),
            "serial": "",
        }


def check_ranges(f: Mapping[str, Any], temperatures: Sequence[float]) -> None:
    """Refuse a SoC or SoH above 100 %, a cell above 6 V or a probe above 150 °C.

    Raises:
        FrameError: such a value ("malformed").

    """
    if (f["soc"] > 100 or f["soh"] > 100 or max(f["cells"]) > CELL_BOUNDS[1]
            or max(temperatures, default=0.0) > TEMPERATURE_BOUNDS[1]):  # fmt: skip
        raise FrameError(f"eg4_lifepower: a value out of range (SoC {f['soc']}, SoH {f['soh']}, "
                         f"cells up to {max(f['cells'])} V, probes {temperatures})")  # fmt: skip


def hardware_text(firmware: str, hardware: str) -> str:
    """The text "EG4 LiFePOWER <firmware> hw <hardware>" ("" when neither was read)."""
    if not firmware and not hardware:
        return ""
    words = ["EG4 LiFePOWER", firmware] + ([f"hw {hardware}"] if hardware else [])
    return " ".join(w for w in words if w)
